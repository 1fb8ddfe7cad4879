"""`evse sim`: the station firmware under `micropython` on the simulated board.

`SimStation` runs it as a child process for tests, benchmarks and the demo: it sends the
simulated board's one-line commands (firmware/station/simctl.py) on stdin and reads the JSON
lines the firmware prints (replies, {"watch": status}, {"event": [kind, connector, value]}).
"""

import argparse
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from host import mpy

MAIN = mpy.FIRMWARE / "main.py"
RESET_EXIT = 75  # the simulated board's exit status when its watchdog resets it
STEP_MS = 10  # board time a control step spans by default: a board's period (board/sim.py)


class SimError(Exception):
    """The simulated station did not answer as expected."""


def format_speed(speed):
    """EVSE_SIM_SPEED's form of a speed cap (math.inf: "max")."""
    return "max" if speed == math.inf else f"{speed:g}"


class SimStation:
    """`speed` caps board time per real time (math.inf: no cap); `step_ms` is the board time
    each control step spans (firmware/board/sim.py)."""

    def __init__(self, data_dir, speed=1.0, heapsize=None, env=None, step_ms=STEP_MS):
        self.data_dir = Path(data_dir)
        self.speed = speed
        self.step_ms = step_ms
        self.heapsize = heapsize
        self.env = env or {}
        self.process = None
        self.lines = queue.Queue()  # JSON lines that are not replies (watch, event)
        self.log = []  # every line the firmware printed
        self._replies = queue.Queue()
        self._reader = None

    def argv(self):
        return mpy.command(MAIN, str(self.data_dir), heapsize=self.heapsize)

    def environ(self):
        return dict(
            mpy.environ(),
            EVSE_SIM_SPEED=format_speed(self.speed),
            EVSE_SIM_STEP_MS=str(self.step_ms),
            **self.env,
        )

    def start(self, timeout=10.0):
        """Start the firmware and wait until it reports ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lines, self._replies = queue.Queue(), queue.Queue()  # nothing left from a last run
        self.process = subprocess.Popen(
            self.argv(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=self.environ(),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = self._reply(timeout)
        if "ready" not in ready:
            raise SimError(f"unexpected first line: {ready}")
        return self

    def _read(self):
        assert self.process and self.process.stdout
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.log.append(line)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and ("watch" in message or "event" in message):
                self.lines.put(message)
            elif isinstance(message, dict):
                self._replies.put(message)
        self._replies.put({"exit": True})

    def _reply(self, timeout):
        try:
            reply = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise SimError(f"no answer within {timeout} s; output: {self.log[-5:]}") from None
        if reply.get("exit"):
            raise SimError(f"the firmware ended; output: {self.log[-10:]}")
        return reply

    def send(self, line):
        """Send one command line without waiting for its reply."""
        assert self.process and self.process.stdin
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise SimError(f"the firmware ended; output: {self.log[-10:]}") from None

    def command(self, line, timeout=5.0):
        """Send one command line and return its JSON reply; an {"error"} reply raises."""
        self.send(line)
        reply = self._reply(timeout)
        if "error" in reply:
            raise SimError(reply["error"])
        return reply

    def status(self):
        return self.command("status")["status"]

    def wait_for(self, predicate, timeout=10.0, interval=0.02):
        """Poll status until `predicate(status)` holds; the status, or SimError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise SimError(f"condition not met within {timeout} s; last status {status}")
            time.sleep(interval)

    def next_line(self, predicate, timeout=10.0):
        """The next watch/event line for which `predicate(line)` holds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SimError(f"no matching line within {timeout} s") from None
            if predicate(line):
                return line

    def wait_exit(self, timeout=10.0):
        assert self.process
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SimError(f"still running after {timeout} s") from None

    def stop(self, timeout=5.0):
        """Ask the firmware to quit; kill it if it does not."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.command("quit", timeout=0.5)
        except SimError:
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "sim",
        help="run the station firmware on the simulated board",
        description="Run the station firmware under micropython on the simulated board. "
        "Type the simulated board's commands on stdin (e.g. 'ev 1 C', 'status'; see "
        "firmware/station/simctl.py); it answers JSON lines.",
    )
    parser.add_argument("--data", required=True, help="data directory (board.json, station.json)")
    parser.add_argument(
        "--speed",
        type=_speed,
        default=1.0,
        help="cap on board time per real time, or max: as fast as the host allows (default "
        "1.0; each control step is 10 ms of board time, and supervision keeps real time)",
    )
    parser.add_argument("--id", help="charge point identity for OCPP (with --url)")
    parser.add_argument(
        "--url", help="central system, ws:// or wss://; the station connects to URL/ID"
    )
    parser.add_argument(
        "--console", action="store_true", help="bench console on a pseudo-terminal (path printed)"
    )
    parser.set_defaults(func=run)


def _speed(text):
    if text == "max":
        return math.inf
    try:
        speed = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or max") from None
    if not 0 < speed < math.inf:
        raise argparse.ArgumentTypeError("must be positive")
    return speed


def write_station_config(data_dir, cp_id, url):
    """Set "id" and "url" in data_dir/station.json, keeping its other settings."""
    path = Path(data_dir) / "station.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    config.update(id=cp_id, url=url)
    path.write_text(json.dumps(config, indent=1) + "\n")


def run(args):
    from host.cli import UserError

    if (args.id is None) != (args.url is None):
        raise UserError("--id and --url go together")
    if args.url is not None and not args.url.startswith(("ws://", "wss://")):
        raise UserError("--url must start with ws:// or wss://")
    station = SimStation(args.data, speed=args.speed)
    station.data_dir.mkdir(parents=True, exist_ok=True)
    if args.url is not None:
        try:
            write_station_config(station.data_dir, args.id, args.url)
        except ValueError:
            raise UserError(f"{station.data_dir / 'station.json'} is not valid JSON") from None
    env = station.environ()
    if args.console:  # the bench console, reached with pyserial like a board's serial port
        from host.bench.link import CONSOLE_FD_ENV, open_pty

        master, path = open_pty()
        os.set_inheritable(master, True)
        env[CONSOLE_FD_ENV] = str(master)
        print(f"console: {path}", file=sys.stderr, flush=True)
    # The firmware takes this process's place: signals (Ctrl-C, a supervisor's SIGTERM or
    # SIGKILL) reach it directly and no orphan outlives `evse sim`.
    argv = station.argv()
    os.execve(argv[0], argv, env)
