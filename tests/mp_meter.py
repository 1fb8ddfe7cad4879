"""Meter-bus scenarios under micropython: station.meter.MeterBus polls board.sim_meter.SimMeter
slaves through a loopback UART. One JSON scenario per input line, one JSON result per line.

A scenario: {"meters": [[model, address], ...] (sim meters on the wire),
             "polled": [[model, address], ...] (what the bus polls; defaults to "meters"),
             "measure": [[voltages, currents], ...] per sim meter,
             "chunk": bytes per UART read (0 = all at once), "noise": hex bytes before each reply,
             "lag": empty reads before a reply shows, "broken_uart": write raises,
             "timeout_ms", "retries", "interval_ms",
             "phases": [[duration_ms, {sim index: fault or null}], ...]}.
Result: per phase, per polled meter, the Reading's fields, plus whether `step` ever raised.
With "dead_locked_ms", the line goes dead instead and the bus runs with the heap locked.
"""

import json
import sys

from board.sim_meter import SimMeter
from station.meter import MeterBus

STEP_MS = 10


class LoopbackUart:
    """The master's side of an RS-485 line whose slaves are SimMeters."""

    def __init__(self, meters, chunk, noise, lag, broken):
        self.meters = meters
        self.chunk = chunk
        self.noise = noise
        self.lag = lag
        self.broken = broken
        self.pending = b""
        self.wait = 0

    def write(self, buf):
        if self.broken:
            raise OSError(5)
        for meter in self.meters:
            reply = meter.handle(bytes(buf))
            if reply is not None:
                self.pending = self.noise + reply
                self.wait = self.lag

    def read(self):
        if self.wait:
            self.wait -= 1
            return None
        if not self.pending:
            return None
        size = self.chunk or len(self.pending)
        out, self.pending = self.pending[:size], self.pending[size:]
        return out

    def flush_input(self):
        self.pending = b""


def reading_json(reading):
    return {
        "energy_wh": reading.energy_wh,
        "energy_export_wh": reading.energy_export_wh,
        "power_w": reading.power_w,
        "current_a": reading.current_a,
        "voltage_v": reading.voltage_v,
        "frequency_hz": reading.frequency_hz,
        "ok_ms": reading.ok_ms,
        "error": reading.error,
        "failures": reading.failures,
    }


def run(case):
    sims = [SimMeter(model, address) for model, address in case["meters"]]
    for index, (voltages, currents) in enumerate(case.get("measure", [])):
        sims[index].measure(voltages, currents)
    uart = LoopbackUart(
        sims,
        case.get("chunk", 0),
        bytes.fromhex(case.get("noise", "")),
        case.get("lag", 0),
        case.get("broken_uart", False),
    )
    now = 0
    bus = MeterBus(
        uart,
        now,
        timeout_ms=case.get("timeout_ms", 100),
        retries=case.get("retries", 2),
        interval_ms=case.get("interval_ms", 1000),
    )
    readings = [bus.add(model, address) for model, address in case.get("polled", case["meters"])]
    raised = None
    phases = []
    if case.get("dead_locked_ms"):  # a dead line, polled with the heap locked
        return dead_line_under_heap_lock(bus, readings, uart, now, case["dead_locked_ms"])
    for duration, faults in case["phases"]:
        for index, fault in faults.items():
            sims[int(index)].fault = fault
        for _ in range(duration // STEP_MS):
            now += STEP_MS
            for sim in sims:
                sim.advance(STEP_MS)
            try:
                bus.step(now)
            except Exception as error:  # the property under test: this never happens
                raised = repr(error)
        phases.append({"now": now, "readings": [reading_json(r) for r in readings]})
    energies = [sim.energy_wh + sim.energy_export_wh for sim in sims]  # one of them is 0 here
    return {"phases": phases, "raised": raised, "sims": energies}


def dead_line_under_heap_lock(bus, readings, uart, now, duration):
    """Poll a bus where nothing answers with allocation forbidden: requests are prebuilt and
    time-outs use constant codes, so no step may fail with MemoryError ('garbage')."""
    import micropython

    uart.meters = []  # nothing answers, and the loopback itself allocates nothing
    micropython.heap_lock()
    try:
        for _ in range(duration // STEP_MS):
            now += STEP_MS
            bus.step(now)
    finally:
        micropython.heap_unlock()
    return {"readings": [reading_json(r) for r in readings]}


def main():
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))))


if __name__ == "__main__":
    main()
