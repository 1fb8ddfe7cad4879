"""`evse console`: a line terminal on a station's serial console (Ctrl-] quits)."""

import os
import sys
import termios
import threading

from host.cli import UserError

QUIT = b"\x1d"  # Ctrl-]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "console",
        help="terminal on a station's serial console",
        description="Show what the station prints and send it the lines you type. "
        "Ctrl-] (or end of input) quits.",
    )
    parser.add_argument("--port", required=True, help="serial port of the station")
    parser.add_argument("--baud", type=int, default=115200)
    parser.set_defaults(func=run)


def run(args) -> int:
    import serial

    try:
        port = serial.Serial(args.port, args.baud, timeout=0.2, exclusive=True)
    except (serial.SerialException, OSError) as error:
        raise UserError(f"cannot open {args.port}: {error}") from None
    stop = threading.Event()
    reader = threading.Thread(target=show, args=(port, stop), daemon=True)
    reader.start()
    with quit_key_ends_line(sys.stdin.fileno()):
        print(f"connected to {args.port} at {args.baud} baud; Ctrl-] quits", file=sys.stderr)
        try:
            send_lines(port, sys.stdin.fileno())
        finally:
            stop.set()
            reader.join(timeout=2)
            port.close()
    return 0


def show(port, stop: threading.Event) -> None:
    """Copy what the station sends to our stdout until stopped or the port goes away."""
    out = sys.stdout.buffer
    while not stop.is_set():
        try:
            data = port.read(port.in_waiting or 1)
        except (OSError, TypeError):  # closed under us
            return
        if data:
            out.write(data.replace(b"\r\n", b"\n"))
            out.flush()


def send_lines(port, fd: int) -> None:
    """Send what is typed, line by line, until Ctrl-] or the end of input. Reads the file
    descriptor itself: on a terminal each read returns one line, also one ended by Ctrl-]."""
    while True:
        data = os.read(fd, 4096)
        if not data:
            return
        data, quit_key, _ = data.partition(QUIT)
        port.write(data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        if quit_key:
            return


class quit_key_ends_line:
    """On a terminal, make Ctrl-] end the line being typed, so that it quits at once while
    the terminal keeps its own line editing; anything else (a pipe) is left alone."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd) if os.isatty(fd) else None

    def __enter__(self):
        if self.saved is not None:
            changed = termios.tcgetattr(self.fd)
            changed[6][termios.VEOL] = QUIT
            termios.tcsetattr(self.fd, termios.TCSANOW, changed)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSANOW, self.saved)
