"""Driver for firmware/net.py under micropython: `mp_net.py SCENARIO [NTP_PORT DNS_PORT]` prints one
JSON line of observations."""

import asyncio
import json
import sys

import net
import network  # the stand-in from mp_fakes (the unix port has none)
from board import sim


class App:
    def __init__(self, board, station_config):
        self.board = board
        self.station_config = station_config


async def wait_for(board, condition, limit_ms):
    started = board.ticks_ms()
    while not condition():
        if board.ticks_diff(board.ticks_ms(), started) > limit_ms:
            return False
        await board.sleep_ms(10)
    return True


async def simulated():
    board = sim.Board(".", speed=1.0)
    calls = []
    net.start(App(board, {"url": "ws://127.0.0.1:9/ocpp"}), lambda: calls.append(1))
    up = await net.up(board, {})
    called = await wait_for(board, lambda: calls, 1000)
    await board.sleep_ms(100)
    return {"up": up, "called": called, "on_up": len(calls)}


async def wifi(ntp_port, dns_port):
    # board time runs 20 times faster; the test's DNS server tells where time.test is
    board = sim.Board(".", speed=20.0, config={"dns": ["127.0.0.1", dns_port]})
    board.simulated = False  # take the hardware path, with the stand-in network module
    net.NTP_PORT = ntp_port
    clock = []
    board.set_time = clock.append  # record what NTP set
    config = {"network": {"wifi": {"ssid": "depot", "password": "pw"}}, "ntp": "time.test"}
    calls = []
    net.start(App(board, config), lambda: calls.append(board.ticks_ms()))
    first_up = await wait_for(board, lambda: calls, 30000)
    nic = network.WLAN.last
    connects_before_drop = len(nic.connects)
    nic.drop()
    reconnected = await wait_for(board, lambda: len(nic.connects) == 2 and nic.connected, 30000)
    await board.sleep_ms(net.CHECK_MS * 2)
    return {
        "first_up": first_up,
        "connects_before_drop": connects_before_drop,
        "reconnected": reconnected,
        "on_up": len(calls),
        "clock": clock,
        "ssid": nic.connects[0],
    }


scenario = sys.argv[1]
if scenario == "simulated":
    result = asyncio.run(simulated())
else:
    result = asyncio.run(wifi(int(sys.argv[2]), int(sys.argv[3])))
print(json.dumps(result))
