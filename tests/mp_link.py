"""Test-only driver, run under micropython: firmware/ocpp/link.py + rpc.py against a server
started by the test. The first line of stdin is a JSON config with the link settings and a
list of steps (not argv: this micropython build crashes creating an SSLContext when argv is
a few hundred bytes long); each step prints one JSON line. Inbound CALLs of "Echo",
"Refuse" and "Crash" are handled."""

import asyncio
import json
import sys
import time

from ocpp.link import Link
from ocpp.rpc import Rpc

from protocol import ocppj


class Board:
    """The part of the board interface the link uses, on real time; the config's "dns"
    [address, port] is the DNS server (else the host resolves names)."""

    simulated = True

    def __init__(self, dns=None):
        self.dns = dns

    def dns_server(self):
        return self.dns and tuple(self.dns)

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, ticks, delta):
        return time.ticks_add(ticks, delta)

    real_ms = ticks_ms

    def time(self):
        return int(time.time())

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms)

    real_sleep_ms = sleep_ms


def out(**fields):
    print(json.dumps(fields))


def error(e):
    return {
        "type": type(e).__name__,
        "code": getattr(e, "code", None),
        "status": getattr(e, "status", None),
    }


def read(path):
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def answer(action, payload):
    if action == "Echo":
        return payload
    if action == "Refuse":
        raise ocppj.RpcError(ocppj.NOT_SUPPORTED, None, "refused")
    if action == "Crash":
        raise ValueError("a bug")
    raise ocppj.RpcError(ocppj.NOT_IMPLEMENTED, None, "unknown action")


async def tick(gap):
    last = time.ticks_ms()
    while True:
        await asyncio.sleep_ms(10)
        now = time.ticks_ms()
        gap[0] = max(gap[0], time.ticks_diff(now, last))
        last = now


async def main(config):
    board = Board(config.get("dns"))
    link = Link(
        config["url"],
        "CP1",
        config.get("profile", 0),
        config.get("auth_key"),
        read(config.get("ca")),
        read(config.get("cert")),
        read(config.get("key")),
        board,
        config.get("max_size", 16384),
    )
    link.ping_interval_s = config.get("ping_interval_s", 0)
    link.backoff_base_ms = 50
    link.handshake_timeout_ms = 1000
    rpc = Rpc(link, board, answer)
    gap = [0]  # longest time the event loop went without running a task (ms)
    asyncio.create_task(tick(gap))
    for step in config["steps"]:
        name = step[0]
        try:
            if name == "connect":  # up to step[1] attempts, with back-off between them
                for attempt in range(step[1]):
                    try:
                        await link.connect()
                        break
                    except Exception as e:
                        if attempt == step[1] - 1:
                            raise
                        out(step=name, retry=error(e))
                        await link.backoff()
                out(step=name, ok=True)
            elif name == "call":
                out(step=name, result=await rpc.call(step[1], step[2], step[3]))
            elif name == "wait_down":  # until the link is down, at most step[1] ms
                start = board.ticks_ms()
                while link.connected and board.ticks_diff(board.ticks_ms(), start) < step[1]:
                    await board.sleep_ms(10)
                out(step=name, ok=not link.connected)
            elif name == "gap":
                out(step=name, ms=gap[0])
            elif name == "close":
                await link.close()
                out(step=name, ok=True)
        except Exception as e:
            out(step=name, error=error(e))


asyncio.run(main(json.loads(sys.stdin.readline())))
