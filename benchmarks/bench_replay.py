"""Bench replay figures on the simulated station.

The sim's board time is step-locked (firmware/board/sim.py): one sim step per control step,
as fast as the host allows, capped at the speed; its resolution does not depend on the speed.

1. Speed-up: a ten-minute charge with MeterValues every 10 s replayed at several speed caps:
   station time over wall time (of the session's steps, and of the whole run with the
   station's start and the teardown), whether the run stayed clean (all expectations met, no
   watchdog reset), how many MeterValues reached the central system (60 expected) and how late
   the latest step ran. Baseline: 20x, the most the sim allowed while its clock was real time
   times the speed (a board on a serial port replays at 1x).
2. Suite: the shipped library (sessions/) cycled to N sessions, replayed one after the other at
   each --suite-speeds cap ("session": each session's own, 100x unless it says).

Usage: python benchmarks/bench_replay.py [--speeds 20,100,max] [--suite 20]
                                         [--suite-speeds 20,session]
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
from host.bench.target import SimTarget, firmware_path, format_speed, step_for  # noqa: E402

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
+0s   expect ocpp StopTransaction reason=EVDisconnected within 20s
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
    late = max(result.late_ms.values(), default=0)
    played = result.session_ms / 1000 / result.play_s if result.play_s else 0.0
    print(
        f"cap {format_speed(speed):>4} (step {step_for(s)} ms): {result.session_ms / 1000:4.0f} s "
        f"station time in {result.play_s:5.1f} s = {played:5.1f}x ({result.wall_s:5.1f} s "
        f"= {result.speedup:5.1f}x with start and teardown), MeterValues {meter_values:2d}, "
        f"latest step {late:4d} ms late, resets {resets}, "
        f"{'clean' if not bad else 'NOT clean: ' + '; '.join(bad)[:160]}",
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
        f"suite of {count} sessions at {'their own caps' if not speed else format_speed(speed)}: "
        f"{wall:5.1f} s wall for {station:.0f} s of station time ({station / wall:.1f}x), "
        f"{passed} passed, {wall / count:.2f} s per session"
        + (f"; failed: {' '.join(failed)}" if failed else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speeds", default="20,100,max")
    parser.add_argument("--suite", type=int, default=20)
    parser.add_argument("--suite-speeds", default="20,session")
    args = parser.parse_args()
    started = time.monotonic()
    firmware_path()
    print(f"firmware compiled to .mpy for the sim in {time.monotonic() - started:.1f} s")
    for word in args.speeds.split(","):
        metered(session.parse_speed(word))
    for word in args.suite_speeds.split(",") if args.suite else ():
        suite(args.suite, None if word == "session" else session.parse_speed(word))


if __name__ == "__main__":
    main()
