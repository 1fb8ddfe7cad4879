# Driver for test_cp_offline.py, under micropython: the firmware (app + charge point, simulated
# board) with no central system reachable; an idTag presented at connector 1 with an EV plugged
# in; prints one JSON line: did a transaction start, and what was queued.
import asyncio
import json
import sys

import app as firmware_app
from board import sim
from ocpp import chargepoint

data_dir, tag = sys.argv[1], sys.argv[2]
board = sim.Board(data_dir, speed=10.0, config={"board": "sim"})
app = firmware_app.App(data_dir, board)


async def main():
    app.start()
    cp = chargepoint.start(app)
    s = cp.sessions[1]
    board.ev(1).set_state("C")
    for _ in range(200):
        if s.connector.pilot_state == "C":
            break
        await board.sleep_ms(20)
    cp.authorize(s, tag)
    for _ in range(100):  # 2 s of board time for the station to follow
        await board.sleep_ms(20)
    result = {"online": cp.online, "tx": s.tx is not None, "pending": cp.queue.pending()}
    result["contactor"] = s.connector.contactor_closed
    print(json.dumps(result))
    sys.exit(0)


asyncio.run(main())
