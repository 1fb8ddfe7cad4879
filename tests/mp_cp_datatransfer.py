# Driver for test_cp_interop.py's DataTransfer test, under micropython: the firmware (app +
# charge point, simulated board) sends one DataTransfer once online and prints the answer.
import asyncio
import json
import sys

import app as firmware_app
from board import sim
from ocpp import chargepoint

data_dir = sys.argv[1]
board = sim.Board(data_dir, config={"board": "sim"})
app = firmware_app.App(data_dir, board)


async def main():
    app.start()
    cp = chargepoint.start(app)
    try:
        await cp.data_transfer("evse", "early")
    except OSError:
        print(json.dumps({"before_accepted": "refused"}))
    for _ in range(500):
        if cp.online:
            break
        await board.sleep_ms(20)
    print(json.dumps(await cp.data_transfer("evse", "ping", "hello")))
    sys.exit(0)


asyncio.run(main())
