"""Test-only driver, run under micropython: firmware/ocpp/rpc.py fed inbound messages through a
stand-in link. Each stdin line is a JSON string (one inbound message); for each, one stdout line
lists what the Rpc sent in reply. Inbound actions: "Echo", "Refuse", "Crash", "Needs" (checks
its payload with ocppj.field)."""

import asyncio
import json
import sys

from ocpp.rpc import Rpc

from protocol import ocppj


class Board:
    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms)

    real_sleep_ms = sleep_ms


class ScriptedLink:
    """Hands out the stdin messages one by one; when the Rpc asks for the next one, the
    previous one has been fully handled, so its replies are printed then."""

    connected = True

    def __init__(self, done):
        self.sent = []
        self.count = 0
        self.done = done

    async def send(self, text):
        self.sent.append(json.loads(text))

    async def recv(self):
        if self.count:
            print(json.dumps(self.sent))
            self.sent = []
        line = sys.stdin.readline()
        if not line:
            self.done.set()
            await asyncio.Event().wait()  # nothing more: park the receiver
        self.count += 1
        return json.loads(line)


def refuse(payload):
    raise ocppj.RpcError(ocppj.NOT_SUPPORTED, None, "refused")


def crash(payload):
    return payload["missing"]  # KeyError: a handler bug


def needs(payload):
    return {"id": ocppj.field(payload, "id", int)}


HANDLERS = {"Echo": lambda payload: payload, "Refuse": refuse, "Crash": crash, "Needs": needs}


def answer(action, payload):
    handler = HANDLERS.get(action)
    if handler is None:
        raise ocppj.RpcError(ocppj.NOT_IMPLEMENTED, None, "unknown action")
    return handler(payload)


async def main():
    done = asyncio.Event()
    Rpc(ScriptedLink(done), Board(), answer)
    await done.wait()


asyncio.run(main())
