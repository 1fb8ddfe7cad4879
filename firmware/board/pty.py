"""The simulated board's console port: the master side of a pseudo-terminal whose fd
host/sim.py passes in EVSE_CONSOLE_FD (the bench opens the slave side with pyserial, as it
would /dev/ttyUSB0). Non-blocking: reads what is waiting, drops what nobody can take."""

import select

import termios  # pyright: ignore[reportMissingImports] (unix port only)


class PtyPort:
    def __init__(self, fd):
        termios.setraw(fd)  # no echo: our own output must never come back as input
        self._file = open(fd, "r+b")
        self._poll = select.poll()
        self._poll.register(self._file, select.POLLIN | select.POLLOUT)
        self._buf = bytearray(64)

    def _ready(self, flag):
        events = self._poll.poll(0)
        return bool(events) and bool(events[0][1] & flag)

    def read(self):
        n = 0
        try:
            while n < len(self._buf) and self._ready(select.POLLIN):
                byte = self._file.read(1)
                if not byte:
                    break
                self._buf[n] = byte[0]
                n += 1
        except OSError:  # EIO: no bench has the terminal open
            pass
        return bytes(self._buf[:n]) if n else None

    def write(self, data):
        try:
            if self._ready(select.POLLOUT):
                self._file.write(data)
                return True
        except OSError:
            pass
        return False
