"""Contactor-open latency of the station firmware after a trigger (EV to B, pilot E, diode
fault, RCD trip, over-temperature), measured on the simulated board in real time under
micropython: from the trigger to the contactor output going low, in real ms.

Baseline: the control loop alone. Under load: other asyncio tasks keep the CPU busy, each
running up to BUSY_MS between yields (as OCPP/JSON work would). Target: well inside the
100 ms of IEC 61851-1; aim <= 20 ms.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host import mpy  # noqa: E402

SCRIPT = Path(__file__).with_name("mp_latency.py")
CYCLES = 150
LOADS = ((0, 0), (3, 2), (3, 4))  # (tasks, busy ms) — the first is the baseline


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    print(f"contactor-open latency, {CYCLES} triggers per row (real ms, sim board, speed 1)")
    print(f"{'load':<26} {'p50':>4} {'p99':>4} {'max':>4}   per trigger (max)")
    for tasks, busy in LOADS:
        done = subprocess.run(
            mpy.command(SCRIPT, str(CYCLES), str(tasks), str(busy)),
            capture_output=True,
            text=True,
            env=mpy.environ(),
            timeout=600,
        )
        if done.returncode:
            sys.exit(f"{SCRIPT.name} failed: {done.stderr}")
        by_trigger = json.loads(done.stdout)
        every = [v for values in by_trigger.values() for v in values]
        label = "control loop alone" if not tasks else f"{tasks} tasks busy <= {busy} ms"
        worst = " ".join(f"{k}={max(v)}" for k, v in sorted(by_trigger.items()))
        print(
            f"{label:<26} {percentile(every, 50):>4} {percentile(every, 99):>4} "
            f"{max(every):>4}   {worst}"
        )


if __name__ == "__main__":
    main()
