"""Control of the simulated station over stdin/stdout (unix port): the demo, host tests and
benchmarks play EV sessions and faults with one-line commands and read JSON status lines.

Commands (connector N from 1):
  ev N A|B|C|D|E|F   power N WATTS   diode N 0|1   vent N 0|1   obey N 0|1
  leak N MA   rcddead N 0|1   weld N 0|1   temp C   meter N none|silent|garbage|crc|exception
  permit N 0|1   available N 0|1   limit N AMPS|none   clear N (0: station)
  status   watch MS (a status line every MS of board time; 0 stops)   crash
  stall MS (block the event loop for MS of real time)   quit
Every line answers one JSON line: {"ok": ...}, {"error": ...} or {"status": ...}. Besides,
watch prints {"watch": status} and every station event prints {"event": [kind, n, value]}.
"""

import json
import sys

import asyncio


def status(app):
    board, station = app.board, app.station
    connectors = []
    for c in station.connectors:
        reading = c.reading
        connectors.append(
            {
                "id": c.id,
                "pilot": c.pilot_state,
                "duty": c.duty,
                "contactor": c.contactor_closed,
                "limit": c.limit_a,
                "permitted": c.permitted,
                "available": c.available,
                "power": reading.power_w if reading else None,
                "energy": reading.energy_wh if reading else None,
                "faults": [_fault(f) for f in c.faults()],
            }
        )
    return {
        "t": board.ticks_ms(),
        "temperature": board.temperature_c(),
        "faults": [_fault(f) for f in station.faults()],
        "connectors": connectors,
    }


def _fault(fault):
    return {"code": fault.code, "latched": fault.latched, "since": fault.since, "message": fault.message}


def _flag(word):
    if word not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return word == "1"


class Control:
    def __init__(self, app):
        self.app = app
        self.watch_ms = 0

    def execute(self, words):
        board, station = self.app.board, self.app.station
        name, args = words[0], words[1:]
        n = int(args[0]) if args and name not in ("temp", "watch", "stall") else 0
        if n and not 1 <= n <= len(station.connectors):
            raise ValueError("no connector %d" % n)
        value = args[1] if len(args) > 1 else ""
        if name == "ev":
            board.ev(n).set_state(value)
        elif name == "power":
            board.ev(n).set_power(float(value))
        elif name == "diode":
            board.ev(n).set_diode_fault(_flag(value))
        elif name == "vent":
            board.ev(n).set_ventilation(_flag(value))
        elif name == "obey":
            board.ev(n).set_obey_limit(_flag(value))
        elif name == "leak":
            board.set_rcd_leak(n, float(value))
        elif name == "rcddead":
            board.set_rcd_dead(n, _flag(value))
        elif name == "weld":
            board.set_weld(n, _flag(value))
        elif name == "temp":
            board.set_temperature(int(args[0]))
        elif name == "meter":
            board.meter_fault(n, None if value == "none" else value)
        elif name == "permit":
            station.connectors[n - 1].permit(_flag(value))
        elif name == "available":
            station.connectors[n - 1].available = _flag(value)
        elif name == "limit":
            station.connectors[n - 1].external_limit_a = None if value == "none" else float(value)
        elif name == "clear":
            return {"ok": name, "cleared": station.clear(n)}
        elif name == "status":
            return {"status": status(self.app)}
        elif name == "watch":
            self.watch_ms = int(args[0])
        elif name == "crash":
            asyncio.create_task(_crash())
        elif name == "stall":
            _stall(board, int(args[0]))
        elif name == "quit":
            raise SystemExit(0)
        else:
            raise ValueError("unknown command " + name)
        return {"ok": name}

    async def read_commands(self):
        reader = asyncio.StreamReader(sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                return
            words = line.decode().split()
            if not words:
                continue
            try:
                reply = self.execute(words)
            except (ValueError, TypeError, IndexError, AttributeError, OverflowError) as error:
                reply = {"error": "%s: %s" % (" ".join(words), error)}
            _print(reply)

    async def watch(self):
        board = self.app.board
        while True:
            if self.watch_ms:
                _print({"watch": status(self.app)})
                await board.sleep_ms(self.watch_ms)
            else:
                await board.sleep_ms(50)


async def _crash():
    raise RuntimeError("simulated crash")


def _stall(board, ms):
    """Block the event loop for `ms` of real time, as a runaway task would (reading the board's
    clock, which delivers the sim's timer interrupts as the hardware's would fire)."""
    end = board.real_ms() + ms
    while board.real_ms() < end:
        board.ticks_ms()


def _print(obj):
    print(json.dumps(obj))


def _print_events(station):
    """Print every station event, after whoever listened before."""
    previous = station.listener

    def listener(kind, n, value):
        if previous is not None:
            previous(kind, n, value)
        _print({"event": [kind, n, _fault(value) if kind.startswith("fault") else value]})

    station.listener = listener


def start(app):
    _print_events(app.station)
    control = Control(app)
    asyncio.create_task(control.read_commands())
    asyncio.create_task(control.watch())
    _print({"ready": len(app.station.connectors)})
