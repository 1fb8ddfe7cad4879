# Runs under micropython (benchmarks/bench_contactor_latency.py starts it): the firmware's app
# on the simulated board in real time, with other asyncio tasks keeping the CPU busy, measures
# how long the contactor stays closed after a trigger (real ms, 1 ms resolution: the sim's board
# time moves in control steps, so only real time shows what the load costs).
import asyncio
import json
import sys

from app import App
from board import sim

CYCLES, LOAD_TASKS, BUSY_MS = (int(a) for a in sys.argv[1:4])
TRIGGERS = ("ev B", "ev E", "diode", "leak", "overtemp")
CONFIG = {
    "board": "sim",
    "meter": {"model": "SDM630"},
    "free_vend": True,
    "limits": {"rcd_retry_ms": 50},
}


async def load(board, seed):
    """Another task's work: busy for up to BUSY_MS of real time between yields."""
    while True:
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        end = board.real_ms() + seed % (BUSY_MS + 1)
        while board.real_ms() < end:
            pass
        await asyncio.sleep_ms(0)


def apply(board, trigger, on):
    ev = board.ev(1)
    if trigger == "ev B":
        ev.set_state("B" if on else "C")
    elif trigger == "ev E":
        ev.set_state("E" if on else "C")
    elif trigger == "diode":
        if on:
            ev.set_diode_fault(True)
        else:  # held until unplugged
            ev.set_diode_fault(False)
            ev.set_state("A")
    elif trigger == "leak":
        board.set_rcd_leak(1, 40 if on else 0)
    else:
        board.set_temperature(90 if on else 25)


async def wait_until(app, board, closed, limit_ms=20000):
    hw = board.connectors[0]
    start = board.ticks_ms()
    while hw.contactor != closed:
        if board.ticks_diff(board.ticks_ms(), start) > limit_ms:
            c = app.station.connectors[0]
            state = (closed, c.pilot_state, c.duty, c.faults(), app.station.faults())
            raise RuntimeError("contactor stuck: " + repr(state))
        await asyncio.sleep_ms(1)


async def main():
    board = sim.Board("/tmp", speed=1.0, config=CONFIG)
    app = App("/tmp/evse-bench-no-such-dir", board)
    app.start()
    for n in range(LOAD_TASKS):
        asyncio.create_task(load(board, n + 1))
    hw = board.connectors[0]
    seed = 7
    latencies = {t: [] for t in TRIGGERS}
    for cycle in range(CYCLES):
        trigger = TRIGGERS[cycle % len(TRIGGERS)]
        if board.ev(1).state == "A":
            board.ev(1).set_state("B")
        board.ev(1).set_state("C")
        await wait_until(app, board, True)
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        await asyncio.sleep_ms(seed % 30)
        start = board.real_ms()
        apply(board, trigger, True)
        await wait_until(app, board, False)
        latencies[trigger].append(hw.opened_ms - start)
        apply(board, trigger, False)
        while app.station.connectors[0].pilot_state != board.ev(1).state:
            await asyncio.sleep_ms(1)  # e.g. the unplug that ends a diode fault
    print(json.dumps(latencies))


asyncio.run(main())
