"""Runs under `micropython`: plays scenarios through the real station on the simulated board.

One scenario per stdin line (JSON), one result per stdout line (JSON):
  {"config": board.json dict, "script": [[op, args...], ...], "trace": bool, "esp32_ticks": bool}
"esp32_ticks": ticks wrap as the ESP32's do (every 2**30 ms, about 12.4 days).
Ops: ["run", ms] steps the station every 10 ms of a manual clock; ["heap_lock", ms] does so
with the heap locked around every step (a MemoryError is reported as the result's "error");
["idle", ms] moves the clock on by ms at once, then steps once (days of uptime in which
steps would change nothing: no meter, no EV or fault changing);
["ev", n, state] / ["power", n, w] / ["diode", n, 0|1] / ["vent", n, 0|1] / ["obey", n, 0|1];
["leak", n, ma] / ["rcddead", n, 0|1] / ["weld", n, 0|1] / ["temp", c] / ["meter", n, fault];
["noise", n, mv] / ["pilot_mv", n, high|null, low]; ["proximity", n, ohms];
["permit", n, 0|1] / ["available", n, 0|1] / ["limit", n, amps|null] / ["clear", n];
["snap", label] records the status under `label`.
Result: {"snaps": {...}, "trace": [[t, n, ev, out, duty, pilot, faults, permitted, available,
rcd_input], ...], "end": t, "events": [[kind, n, value], ...], "error": null | text}. The trace
holds a connector's entry only when it differs from its previous one (it holds until the next).
"""

import json
import sys

import micropython
from board import sim
from station import Station

PERIOD_MS = 10
TICKS_PERIOD = 1 << 30  # the ESP32 port's time.ticks_ms() period


class Esp32TicksBoard(sim.Board):
    """The sim board with the ESP32's ticks: ticks_diff is right only for intervals under
    2**29 ms (about 6.2 days), as time.ticks_diff on the board."""

    def ticks_ms(self):
        return super().ticks_ms() & (TICKS_PERIOD - 1)

    def ticks_diff(self, a, b):
        return ((a - b + TICKS_PERIOD // 2) & (TICKS_PERIOD - 1)) - TICKS_PERIOD // 2

    def ticks_add(self, ticks, delta):
        return (ticks + delta) & (TICKS_PERIOD - 1)


def fault_text(faults):
    return ",".join(f.code + ("!" if f.latched else "") for f in faults)


def snapshot(board, station):
    return {
        "faults": fault_text(station.faults()),
        "thermal": station.thermal_a10,
        "connectors": [
            {
                "pilot": c.pilot_state,
                "duty": c.duty,
                "contactor": c.contactor_closed,
                "out": board.connectors[c.id - 1].contactor,
                "limit": c.limit_a,
                "faults": fault_text(c.faults()),
                "energy": c.reading.energy_wh if c.reading else None,
                "rcd_test": board.connectors[c.id - 1].rcd_test,
            }
            for c in station.connectors
        ],
    }


def play(scenario):
    config = scenario["config"]
    board_class = Esp32TicksBoard if scenario.get("esp32_ticks") else sim.Board
    board = board_class("/tmp", speed=None, config=config)
    station = Station(board, config)
    events = []
    station.listener = lambda kind, n, value: events.append(
        [kind, n, value.code if kind.startswith("fault") else value]
    )
    trace = [] if scenario.get("trace") else None
    last = [None] * (len(station.connectors) + 1)
    snaps = {}

    def run(ms, locked):
        for _ in range(ms // PERIOD_MS):
            board.advance(PERIOD_MS)
            now = board.ticks_ms()
            if locked:
                micropython.heap_lock()
                try:
                    station.step(now)
                finally:
                    micropython.heap_unlock()
            else:
                station.step(now)
            station.service(now)
            if trace is not None:
                station_faults = fault_text(station.faults())
                for c in station.connectors:
                    hw = board.connectors[c.id - 1]
                    entry = [
                        c.id,
                        hw.ev.presented(),
                        hw.contactor,
                        c.duty,
                        c.pilot_state,
                        station_faults + "|" + fault_text(c.faults()),
                        c.permitted,
                        c.available,
                        hw.rcd_tripped(),
                    ]
                    if entry != last[c.id]:
                        last[c.id] = entry
                        trace.append([now] + entry)

    for op in scenario["script"]:
        name, args = op[0], op[1:]
        if name == "run":
            run(args[0], False)
        elif name == "heap_lock":
            run(args[0], True)
        elif name == "idle":
            board.advance(args[0] - PERIOD_MS)
            run(PERIOD_MS, False)
        elif name == "snap":
            snaps[args[0]] = snapshot(board, station)
        elif name == "ev":
            board.ev(args[0]).set_state(args[1])
        elif name == "power":
            board.ev(args[0]).set_power(args[1])
        elif name == "diode":
            board.ev(args[0]).set_diode_fault(args[1])
        elif name == "vent":
            board.ev(args[0]).set_ventilation(args[1])
        elif name == "obey":
            board.ev(args[0]).set_obey_limit(args[1])
        elif name == "leak":
            board.set_rcd_leak(args[0], args[1])
        elif name == "rcddead":
            board.set_rcd_dead(args[0], args[1])
        elif name == "weld":
            board.set_weld(args[0], args[1])
        elif name == "temp":
            board.set_temperature(args[0])
        elif name == "meter":
            board.meter_fault(args[0], args[1])
        elif name == "noise":
            board.set_pilot_noise(args[0], args[1])
        elif name == "pilot_mv":
            board.set_pilot_mv(args[0], args[1], args[2])
        elif name == "proximity":
            board.set_proximity(args[0], args[1])
        elif name == "permit":
            station.connectors[args[0] - 1].permit(args[1])
        elif name == "available":
            station.connectors[args[0] - 1].available = bool(args[1])
        elif name == "limit":
            station.connectors[args[0] - 1].external_limit_a = args[1]
        elif name == "clear":
            station.clear(args[0])
        else:
            raise ValueError("unknown op " + name)
    return {"snaps": snaps, "trace": trace, "end": board.ticks_ms(), "events": events}


def main():
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        if not line.strip():
            continue
        try:
            result = play(json.loads(line))
            result["error"] = None
        except Exception as error:
            result = {"error": type(error).__name__ + ": " + str(error)}
        print(json.dumps(result))


main()
