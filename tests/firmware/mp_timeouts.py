# Runs under micropython (tests/firmware/test_app.py starts it): an OCPP CALL from a simulated
# board running as fast as the host allows, to a peer that answers after argv[1] ms of real
# time (a central system on a loaded host). Prints one JSON line: the answer or the error, and
# how much board time had passed by then.
import asyncio
import json
import sys

from board import sim
from ocpp.rpc import Rpc

from protocol import ocppj

ANSWER_MS = int(sys.argv[1])


class SlowPeer:
    """A link whose peer answers every CALL after ANSWER_MS of real time."""

    connected = True

    def __init__(self):
        self.answers = []
        self.ready = asyncio.Event()

    async def send(self, text):
        asyncio.create_task(self._answer(json.loads(text)[1]))

    async def _answer(self, uid):
        await asyncio.sleep_ms(ANSWER_MS)
        self.answers.append(ocppj.encode_result(uid, {"ok": True}))
        self.ready.set()

    async def recv(self):
        while not self.answers:
            self.ready.clear()
            await self.ready.wait()
        return self.answers.pop(0)


async def main():
    board = sim.Board("/tmp", speed=sim.INFINITY, config={"board": "sim"}, step_ms=50)
    await board.sleep_ms(0)  # board time runs
    rpc = Rpc(SlowPeer(), board)
    try:
        result = {"answer": await rpc.call("Heartbeat", {}, 30)}
    except Exception as e:
        result = {"error": type(e).__name__}
    result["board_ms"] = board.now()
    print(json.dumps(result))


asyncio.run(main())
