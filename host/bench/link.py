"""The bench end of a station console: pyserial on a real board's port (/dev/ttyUSB0) or on
the simulated station's pseudo-terminal — the same code for both."""

import os
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass

import serial

from protocol import console as proto

CONSOLE_FD_ENV = "EVSE_CONSOLE_FD"


def open_pty() -> tuple[int, str]:
    """A pseudo-terminal for a simulated station's console: (master fd to pass to the
    micropython process in EVSE_CONSOLE_FD, slave path for the bench to open with pyserial)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)  # the bench opens it by path; until then the station's output is dropped
    os.set_inheritable(master, True)
    return master, path


class StationSilent(Exception):
    """The station did not answer in time."""


class StationReset(StationSilent):
    """The station restarted (its console said `hello` again) before it answered: a command
    in flight is lost on a serial line, or ran before the reset; which is unknown."""


class GarbledReply(Exception):
    """A reply whose words are not what its command answers: garbled on the serial line."""


class CommandFailed(Exception):
    def __init__(self, code: str, text: str):
        super().__init__(f"{code}: {text}")
        self.code = code


@dataclass
class Line:
    wall: float  # time.monotonic() when it arrived
    kind: str  # evt, ok, err, log
    parsed: tuple


class ConsoleLink:
    """Reads station lines on a thread; `command()` sends one and waits for its reply.

    `on_line(Line)` is called on the reader thread for every line, in order; it may change
    `offset_ms` for the lines after it (a restarted station's clock)."""

    def __init__(self, port: str, on_line: Callable[[Line], None], baud: int = 115200):
        self.serial = serial.Serial(port, baud, timeout=0.05)
        self.on_line = on_line
        self.offset_ms = 0  # added to event times: a restarted station counts from 0 again
        self._ids = 0
        self._replies: dict[str, tuple[tuple, int]] = {}  # reply and offset_ms when it came
        self._pending: dict[str, int] = {}  # request id -> restarts when it was sent
        self.restarts = 0  # `hello` lines seen: the console (re)started
        self._cond = threading.Condition()
        self._closed = False
        self._reader = proto.LineReader(max_line=4096)
        self._thread = threading.Thread(target=self._read_loop, daemon=True)
        self._thread.start()

    def _read_loop(self) -> None:
        while not self._closed:
            try:
                # At least one byte (or the timeout), then whatever else is waiting: a
                # plain read(4096) would hold every line back until the timeout.
                data = self.serial.read(1)
                if data and self.serial.in_waiting:
                    data += self.serial.read(self.serial.in_waiting)
            except (serial.SerialException, OSError, TypeError):
                if self._closed:
                    return
                time.sleep(0.05)  # the pty may be gone for a moment (power cut in the sim)
                continue
            if not data:
                continue
            for text in self._reader.feed(data):
                if isinstance(text, proto.ConsoleError):
                    continue
                self._dispatch(text)

    def _dispatch(self, text: str) -> None:
        now = time.monotonic()
        parsed = proto.parse_reply(text)
        if parsed[0] == "evt":
            parsed = ("evt", parsed[1] + self.offset_ms, *parsed[2:])
        with self._cond:
            if parsed[0] in ("ok", "err") and parsed[1] is not None:
                self._replies[parsed[1]] = (parsed, self.offset_ms)
            elif parsed[0] == "evt" and parsed[2] == "hello":
                self.restarts += 1
            self._cond.notify_all()
        self.on_line(Line(now, parsed[0], parsed))

    def send(self, name: str, *args: object) -> str:
        with self._cond:
            self._ids += 1
            request_id = str(self._ids)
            self._pending[request_id] = self.restarts
        line = proto.format_command(name, [_word(a) for a in args], request_id)
        self.serial.write((line + "\n").encode())
        return request_id

    def command(self, name: str, *args: object, timeout: float = 5.0) -> list[str]:
        """Send a command and return the words of its `ok`; CommandFailed on `err`,
        StationSilent when no reply comes within `timeout` seconds."""
        return self.reply(self.send(name, *args), name, timeout)

    def reply(self, request_id: str, name: str, timeout: float = 5.0) -> list[str]:
        """The words of the `ok` to a command already sent (as `command()`); StationReset
        when the station restarted before answering."""
        return self._reply(request_id, name, timeout)[0]

    def time(self, request_id: str = "", timeout: float = 5.0) -> int:
        """The station's clock (`time`, asked now or already) plus offset_ms, as it was when
        the answer came: a restart right after it must not move it."""
        words, offset = self._reply(request_id or self.send("time"), "time", timeout)
        if not (words and words[0].isascii() and words[0].isdigit()):
            raise GarbledReply(f"garbled answer to `time`: {' '.join(words)!r}")
        return int(words[0]) + offset

    def _reply(self, request_id: str, name: str, timeout: float) -> tuple[list[str], int]:
        with self._cond:
            sent = self._pending.get(request_id, self.restarts)
            answered = self._cond.wait_for(
                lambda: request_id in self._replies or self.restarts > sent, timeout
            )
            self._pending.pop(request_id, None)
            if request_id not in self._replies:
                if answered:
                    raise StationReset(f"the station reset before answering `{name}`")
                raise StationSilent(f"no reply to `{name}` within {timeout:g} s")
            reply, offset = self._replies.pop(request_id)
        if reply[0] == "err":
            raise CommandFailed(reply[2], reply[3])
        return reply[2], offset

    def reopen(self, port: str, offset_ms: int) -> None:
        """Switch to another port (a restarted simulated station has a new terminal and a
        clock from 0: its events are shifted by offset_ms)."""
        self.offset_ms = offset_ms
        old = self.serial
        self.serial = serial.Serial(port, old.baudrate, timeout=0.05)
        old.close()

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.serial.close()


def _word(value: object) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    if value is None:
        return "clear"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
