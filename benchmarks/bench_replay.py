"""Bench replay figures on the simulated station.

1. Speed-up: a charge with MeterValues every 10 s replayed at several sim speeds; station time
   over wall time, whether the run stayed clean (all expectations met, no watchdog reset) and
   how many MeterValues reached the central system (the baseline, real time, is 1x: a
   board on a serial port replays at 1x). Above host/bench/target.py MAX_SPEED the sim's
   meter readings come too seldom and the station sees a failing meter: not clean.
2. Suite: the shipped library (sessions/) cycled to N sessions, replayed one after the other,
   each at its own speed (the fastest that judges its deadlines fairly) or at --suite-speed.

Usage: python benchmarks/bench_replay.py [--speeds 5,20,50] [--suite N] [--suite-speed X]
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host.bench import session  # noqa: E402
from host.bench.replay import Replay  # noqa: E402
from host.bench.target import SimTarget, firmware_path  # noqa: E402

METERED = """
name metered
description Ten minutes of charging with MeterValues every 10 s.
0s    op config MeterValueSampleInterval 10
+1s   ev plug
+1s   user tag 04A1B2C3
+1s   ev state C
+0s   expect contactor closed within 5s
+10m  ev unplug
+0s   expect contactor open within 1s
+0s   expect energy 3%
"""


def metered(speed: float) -> None:
    s = session.parse(METERED, "metered.session")
    result = Replay(s, SimTarget(speed), progress=lambda _: None).run()
    meter_values = sum(
        1
        for e in result.timeline
        if e.kind == "station" and e.value and e.value[0] == 2 and e.value[2] == "MeterValues"
    )
    bad = [f"{v.name}: {v.detail}" for v in result.verdicts if v.outcome != "pass"]
    resets = sum("RESET" in line for line in result.log)
    print(
        f"speed {speed:6g}: {result.session_ms / 1000:6.0f} s station time in "
        f"{result.wall_s:6.1f} s wall = {result.speedup:6.1f}x, MeterValues {meter_values:3d}, "
        f"resets {resets}, {'clean' if not bad else 'NOT clean: ' + '; '.join(bad)[:160]}",
        flush=True,
    )


def suite(count: int, speed: float | None) -> None:
    files = sorted((ROOT / "sessions").glob("*.session"))
    sessions = [session.load(f) for f in itertools.islice(itertools.cycle(files), count)]
    started = time.monotonic()
    results = [
        Replay(s, SimTarget(speed or s.speed), progress=lambda _: None).run() for s in sessions
    ]
    wall = time.monotonic() - started
    station = sum(r.session_ms for r in results) / 1000
    passed = sum(r.passed for r in results)
    failed = sorted({r.session.name for r in results if not r.passed})
    print(
        f"suite of {count} sessions at {f'{speed:g}x' if speed else 'their own speeds'}: "
        f"{wall:.1f} s wall for {station:.0f} s of station time ({station / wall:.1f}x), "
        f"{passed} passed, {wall / count:.1f} s per session"
        + (f"; failed: {' '.join(failed)}" if failed else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speeds", default="5,20,50")
    parser.add_argument("--suite", type=int, default=20)
    parser.add_argument("--suite-speed", type=float, help="default: each session's own")
    args = parser.parse_args()
    started = time.monotonic()
    firmware_path()
    print(f"firmware compiled to .mpy for the sim in {time.monotonic() - started:.1f} s")
    for speed in [float(s) for s in args.speeds.split(",") if s]:
        metered(speed)
    if args.suite:
        suite(args.suite, args.suite_speed)


if __name__ == "__main__":
    main()
