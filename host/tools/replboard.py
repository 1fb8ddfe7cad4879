"""The unix port's MicroPython REPL standing in for a board on a serial port (tests, bench)."""

import os
import pty
import subprocess
import threading
import tty
from pathlib import Path

from host import mpy


class ReplBoard:
    """The unix port's REPL as a board: its filesystem is `root`, its serial port `port`.

    micropython needs a terminal for its REPL and mpremote a device path: two pseudo-terminals
    joined by two copying threads stand for the board's UART and the USB cable.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        board_side, board_tty = pty.openpty()
        tty.setraw(board_tty)  # no newline translation: the raw REPL protocol is binary
        host_side, host_tty = pty.openpty()
        tty.setraw(host_side)
        self.port = os.ttyname(host_tty)
        self._fds = [board_side, host_side, host_tty]
        self.process = subprocess.Popen(
            [mpy.executable()],
            stdin=board_tty,
            stdout=board_tty,
            stderr=board_tty,
            cwd=root,
            env=mpy.environ(),
            start_new_session=True,
        )
        os.close(board_tty)
        for source, sink in ((board_side, host_side), (host_side, board_side)):
            threading.Thread(target=self._copy, args=(source, sink), daemon=True).start()

    @staticmethod
    def _copy(source: int, sink: int) -> None:
        while True:
            try:
                data = os.read(source, 4096)
                os.write(sink, data)
            except OSError:
                return
            if not data:
                return

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        for fd in self._fds:
            os.close(fd)
