# Under micropython: the firmware (app + charge point, simulated board at 10x speed) runs argv[2]
# sessions on both connectors against the central system of <argv[1]>/station.json, printing
# {"session": n, "heap": bytes in use after a collection} after the first, every 100th and the
# last session, once every message of that session reached the central system.
import asyncio
import gc
import json
import sys

import app as firmware_app
from board import sim
from ocpp import chargepoint

data_dir, count = sys.argv[1], int(sys.argv[2])
board = sim.Board(data_dir, speed=10.0, config={"board": "sim", "watchdog_ms": 60000})
app = firmware_app.App(data_dir, board)


async def until(condition, what, limit_ms=600000):
    waited = 0
    while not condition():
        await board.sleep_ms(20)
        waited += 20
        if waited > limit_ms:
            raise OSError("timed out: " + what)


async def main():
    app.start()
    cp = chargepoint.start(app)
    sessions = cp.sessions[1:]
    await until(lambda: cp.online, "online")
    for n in range(1, count + 1):
        for s in sessions:
            board.ev(s.id).set_state("C")
        await until(lambda: all(s.connector.pilot_state == "C" for s in sessions), "plugged")
        for s in sessions:
            cp.authorize(s, f"TAG{s.id}")
        await until(lambda: all(s.connector.contactor_closed for s in sessions), "charging")
        for s in sessions:
            board.ev(s.id).set_state("A")
        await until(
            lambda: (
                not cp.queue.pending()
                and all(s.tx is None for s in sessions)
                and all(s.status == s.reported and s.status[0] == "Available" for s in cp.sessions)
            ),
            "delivered",
        )
        if n == 1 or n == count or n % 100 == 0:
            gc.collect()
            print(json.dumps({"session": n, "heap": gc.mem_alloc()}))
    sys.exit(0)


asyncio.run(main())
