"""What a replay runs against: the simulated station (micropython, console on a
pseudo-terminal) or a board on a serial port. Both are reached the same way, with pyserial."""

import functools
import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from host import mpy
from host.bench.link import CONSOLE_FD_ENV, open_pty
from host.bench.session import DEFAULT_SPEED, Session
from host.sim import STEP_MS, format_speed

STATION_ID = "BENCH1"

# The simulated station's clock (firmware/board/sim.py): board time moves by one sim step per
# control step, as fast as the host allows, capped at `speed` times real time ("max": no cap).
# Its resolution is the step, whatever the speed or the host's load, so the speed can only make a
# replay slower or faster, never judge it differently. A deadline is judged as on a board when it
# spans at least RESOLUTION_STEPS steps; the sim's step is the coarsest that allows it for every
# deadline of the session, between STEP_MS (a board's control period) and MAX_STEP_MS (the
# coarsest the sim allows): coarser steps mean fewer control steps per station hour, so speed.
MAX_STEP_MS = 50
RESOLUTION_STEPS = 10


def step_for(session: Session) -> int:
    """The sim step (board ms per control step) for `session`: every deadline spans at least
    RESOLUTION_STEPS steps, or the step is a board's control period."""
    tightest = min([s.within_ms for s in session.steps if s.within_ms], default=MAX_STEP_MS * 10)
    return max(STEP_MS, min(MAX_STEP_MS, tightest // RESOLUTION_STEPS))


@functools.cache
def firmware_path() -> Path:
    """The firmware compiled to .mpy as for a board (`evse build --target unix`), once per
    process: it imports many times faster than source, so the simulated station is up before
    its watchdog, even at high speed on a busy machine."""
    from host.tools.build import build

    out = Path(tempfile.mkdtemp(prefix="evse-bench-fw-"))
    build("unix", out)
    return out / "fs"


class Target:
    name = "target"
    speed = 1.0
    features: frozenset = frozenset()  # "sim": power cuts; "ev": EV and fault controls
    cs_url = ""

    def prepare(self, session: Session) -> None:
        """Set up for `session` before the first start (the sim picks its step)."""

    def start(self, cs_url: str) -> str:
        """Bring the station up (if the bench can) with its OCPP link pointed at cs_url; the
        path of its console port."""
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError(f"{self.name} cannot cut the power")

    def alive(self) -> bool | None:
        return None

    def output(self) -> str:
        return ""

    def stop(self) -> None:
        pass


class SerialTarget(Target):
    """A board on a serial port. Its OCPP link must already point at the bench's relay
    (`--listen`); `fixture=True` when an EV-simulator fixture answers the `ev` commands."""

    def __init__(self, port: str, fixture: bool = False):
        self.port = port
        self.name = f"serial:{port}"
        self.features = frozenset({"ev"} if fixture else ())

    def start(self, cs_url: str) -> str:
        self.cs_url = cs_url
        return self.port


class SimTarget(Target):
    """The firmware under micropython with the simulated board, in a fresh data directory. Its
    step is `step_for(session)` once `prepare(session)` has run, else STEP_MS."""

    def __init__(self, speed: float = DEFAULT_SPEED, data_dir: str | None = None):
        if not speed > 0:
            raise ValueError("the sim's speed must be positive")
        self.speed = speed
        self.step_ms = STEP_MS
        self.name = "sim"
        self.features = frozenset({"sim", "ev"})
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="evse-bench-sim-")
        self.data_dir = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]
        self.proc: subprocess.Popen | None = None

    def prepare(self, session: Session) -> None:
        self.step_ms = step_for(session)

    def _write_config(self, cs_url: str) -> None:
        board = self.data_dir / "board.json"
        if not board.exists():
            config = {
                "board": "sim",
                "max_current_a": 32,
                "phases": 3,
                "meter": {"model": "SDM630"},
            }
            board.write_text(json.dumps(config))
        station = {"id": STATION_ID, "url": cs_url}
        (self.data_dir / "station.json").write_text(json.dumps(station))

    def start(self, cs_url: str) -> str:
        self.cs_url = cs_url
        self._write_config(cs_url)
        master, path = open_pty()
        try:
            self.spawn(master)
        finally:
            os.close(master)
        return path

    def spawn(self, console_fd: int, stdout: int | None = None) -> None:
        """Run the firmware with its console on console_fd (a pseudo-terminal's master) and
        what it prints to stdout (default: stderr.log)."""
        fs = firmware_path()
        env = dict(
            os.environ,
            MICROPYPATH=f"{fs}:.frozen",
            EVSE_SIM_SPEED=format_speed(self.speed),
            EVSE_SIM_STEP_MS=str(self.step_ms),
        )
        env[CONSOLE_FD_ENV] = str(console_fd)
        with open(self.data_dir / "stderr.log", "ab") as stderr:  # the child keeps its own
            self.proc = subprocess.Popen(
                mpy.command(fs / "main.py", str(self.data_dir)),
                env=env,
                pass_fds=[console_fd],
                stdin=subprocess.PIPE,  # the sim's stdin control stays quiet
                stdout=stderr if stdout is None else stdout,
                stderr=stderr,
                cwd=self.data_dir,
            )

    def output(self) -> str:
        """What the station printed on stderr (tracebacks, resets)."""
        try:
            return (self.data_dir / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """Power cut: the process dies at once, whatever it was doing."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            if self.proc.stdin:
                self.proc.stdin.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
