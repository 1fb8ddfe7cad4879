import os
import pty
import select
import subprocess
import sys
import time
import tty


def read_until(fd: int, wanted: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} not seen in {seen!r}"
        if select.select([fd], [], [], left)[0]:
            seen += os.read(fd, 1024)
    return seen


def test_console_sends_lines_shows_output_and_quits_on_ctrl_bracket():
    station, station_tty = pty.openpty()  # the station's end of the serial line
    tty.setraw(station_tty)
    console = subprocess.Popen(
        [sys.executable, "-m", "host", "console", "--port", os.ttyname(station_tty)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert console.stdin and console.stdout
        console.stdin.write(b"status 1\n")
        console.stdin.flush()
        assert read_until(station, b"status 1\r\n").endswith(b"status 1\r\n")
        os.write(station, b"event pilot 1 B\r\n")
        line = console.stdout.readline()
        assert line == b"event pilot 1 B\n"
        console.stdin.write(b"\x1d\n")
        console.stdin.flush()
        assert console.wait(timeout=60) == 0
    finally:
        console.kill()
        os.close(station)
        os.close(station_tty)


def test_console_names_a_missing_port(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "host", "console", "--port", str(tmp_path / "ttyUSB7")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot open" in result.stderr


def test_on_a_terminal_ctrl_bracket_quits_without_enter():
    station, station_tty = pty.openpty()
    tty.setraw(station_tty)
    keyboard, terminal = pty.openpty()  # the user's terminal, in its usual line mode
    console = subprocess.Popen(
        [sys.executable, "-m", "host", "console", "--port", os.ttyname(station_tty)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    try:
        read_until(keyboard, b"Ctrl-] quits")
        os.write(keyboard, b"\x1d")
        assert console.wait(timeout=60) == 0
    finally:
        console.kill()
        for fd in (station, station_tty, keyboard, terminal):
            os.close(fd)
