# Runs under micropython (tests/firmware/test_app.py starts it): the app on a simulated board
# capped at argv[1] times real time ("max": no cap) with a step of argv[4] ms. Prints one JSON
# line: how many control steps ran in half a second of real time and how much board time
# passed, then whether a short and a long block of the event loop (argv[2], argv[3] real ms)
# opened the contactor with a 'hang' fault.
import asyncio
import json
import sys
import time

from app import App
from board import sim

SPEED = sim.INFINITY if sys.argv[1] == "max" else float(sys.argv[1])
SHORT_MS, LONG_MS, STEP_MS = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])


def block(board, real_ms):
    """Keep the CPU for `real_ms` of real time, reading board time (which delivers the sim's
    interrupts, as the hardware timer would fire)."""
    end = time.ticks_add(time.ticks_ms(), real_ms)
    while time.ticks_diff(end, time.ticks_ms()) > 0:
        board.ticks_ms()


def hang(app):
    return [f.message for f in app.station.faults() if f.code == "hang"]


async def main():
    board = sim.Board(
        "/tmp", speed=SPEED, config={"board": "sim", "free_vend": True}, step_ms=STEP_MS
    )
    app = App("/tmp/evse-test-no-such-dir", board)
    steps = [0]
    step = app.station.step

    def counted(now):
        steps[0] += 1
        step(now)

    app.station.step = counted
    app.start()
    started = board.now()
    await asyncio.sleep_ms(500)
    result = {"steps": steps[0], "board_ms": board.now() - started}
    board.ev(1).set_state("B")
    board.ev(1).set_state("C")
    hw = board.connectors[0]
    deadline = time.ticks_add(time.ticks_ms(), 5000)
    while not hw.contactor and time.ticks_diff(deadline, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(5)
    result["closed"] = hw.contactor
    for name, real_ms in (("short", SHORT_MS), ("long", LONG_MS)):
        block(board, real_ms)
        result[name] = {"closed": hw.contactor, "hang": hang(app)}
        await asyncio.sleep_ms(50)  # steps resume: the stall fault clears
    print(json.dumps(result))


asyncio.run(main())
