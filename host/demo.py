"""`evse demo`: a short scripted EV session on the simulated station, with its live state.

The station firmware runs under micropython (host.sim.SimStation); the script plays the EV
and the operator through the simulated board's commands and prints the station's state once
a second of board time: pilot state, contactor, current limit, power and energy.
"""

import json
import tempfile
from pathlib import Path

from host.sim import SimStation

BOARD = {
    "board": "sim",
    "max_current_a": 32,
    "phases": 3,
    "connectors": [{"meter_address": 1}, {"meter_address": 2}],
    "meter": {"model": "SDM630"},
    "rcd": {"type": "A"},
}

# (seconds of board time to wait first, what happens, commands)
SCRIPT = (
    (2, "EV plugged in (state B); RCD self-test, then the station waits", ["ev 1 B"]),
    (3, "driver authorized: PWM offers 32 A", ["permit 1 1"]),
    (2, "EV asks for charge (state C): contactor closes", ["power 1 11000", "ev 1 C"]),
    (10, "smart charging limits the station to 10 A", ["limit 1 10"]),
    (6, "EV pauses (state B): contactor opens at once", ["ev 1 B"]),
    (4, "EV resumes; the limit is lifted", ["limit 1 none", "ev 1 C"]),
    (8, "EV is full (state B)", ["ev 1 B"]),
    (2, "EV unplugged (state A)", ["ev 1 A"]),
    (3, "", []),
)
WATCH_TIMEOUT_S = 10.0  # real seconds for the next status line (one a second of board time)
HEADER = f"{'time':>6}  {'pilot':5}  {'contactor':9}  {'PWM':>6}  {'limit':>6}  "
HEADER += f"{'power':>9}  {'energy':>10}  faults"


def row(status):
    c = status["connectors"][0]
    power = f"{c['power'] or 0:7.0f} W"
    energy = f"{c['energy'] or 0:7.1f} Wh"
    faults = ",".join(f["code"] for f in status["faults"] + c["faults"]) or "-"
    contactor = "closed" if c["contactor"] else "open"
    return (
        f"{status['t'] / 1000:5.1f}s  {c['pilot']:5}  {contactor:9}  {c['duty']:>5}%  "
        f"{c['limit']:>4} A  {power:>9}  {energy:>10}  {faults}"
    )


def play(station, out=print):
    """Play SCRIPT in board time, which the station's watch lines tell (the sim runs at most
    at its speed, slower on a busy host)."""
    out(HEADER)
    now = station.status()["t"]
    station.command("watch 1000")
    for wait_s, what, commands in SCRIPT:
        until = now + wait_s * 1000
        while now < until:
            status = station.next_line(lambda m: "watch" in m, timeout=WATCH_TIMEOUT_S)["watch"]
            now = status["t"]
            out(row(status))
        if what:
            out(f"  -> {what}")
        for command in commands:
            station.command(command)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="a scripted EV session on the simulated station",
        description="Start the simulated station and show its live state while a short "
        "scripted EV session plays: plug, authorize, charge, smart-charging limit, pause, "
        "resume, unplug. About 40 s; Ctrl-C stops it.",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="board time per real time (default 1.0)"
    )
    parser.set_defaults(func=run)


def run(args):
    from host.cli import UserError

    if args.speed <= 0:
        raise UserError("--speed must be positive")
    with tempfile.TemporaryDirectory(prefix="evse-demo-") as data:
        Path(data, "board.json").write_text(json.dumps(BOARD))
        station = SimStation(data, speed=args.speed)
        try:
            station.start()
            print(f"Simulated station on micropython (data in {data}), connector 1:")
            play(station)
        finally:
            station.stop()
    print("Demo finished.")
    return 0
