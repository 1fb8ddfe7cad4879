# The OCPP 1.6J charge point: `start(app)` runs it beside the station's control task.
#
# Boot sequence: connect; BootNotification until Accepted (Pending / Rejected: wait the returned
# interval and ask again, sending nothing else meanwhile; the central system's CALLs are still
# answered); then ChargePoint.serve() sends what is due until the link fails, and the link is
# reconnected with back-off. The station keeps charging offline: transactions go to the queue
# on flash and reach the central system once it is back.
import sys

import asyncio
from ocpp.core import CALL_TIMEOUT_S, ChargePoint
from ocpp.link import Link
from ocpp.queue import Queue
from ocpp.rpc import Rpc

VERSION = "0.1.0"
TICK_MS = 250
BOOT_RETRY_S = 30  # when the central system returns interval 0


def start(app):
    board = app.board
    cp = ChargePoint(board, app.station, Queue(board.data_dir), app.config.get("phases", 3))
    app.chargepoint = cp  # for the console
    asyncio.create_task(_follow(cp))
    asyncio.create_task(_connect(cp, app.station_config))
    return cp


async def _follow(cp):
    while True:
        cp.tick()
        await cp.board.sleep_ms(TICK_MS)


def _read(board, name):
    if not name:
        return None
    with open(board.data_dir.rstrip("/") + "/" + name, "rb") as f:
        return f.read()


def _log(*args):
    print("ocpp:", *args, file=sys.stderr)


async def _connect(cp, sc):
    board = cp.board
    try:
        link = Link(
            sc["url"],
            sc["id"],
            sc.get("security_profile", 0),
            sc.get("auth_key"),
            _read(board, sc.get("ca")),
            _read(board, sc.get("cert")),
            _read(board, sc.get("key")),
            board,
        )
    except (KeyError, ValueError, OSError) as e:
        _log("station.json:", repr(e))  # the station charges on without a central system
        return
    cp.link = link
    cp.station_config = sc
    link.ping_interval_s = cp.config.get("WebSocketPingInterval")
    rpc = Rpc(link, board)
    cp.register(rpc)
    model = "evse-" + board.config.get("board", "sim")
    boot = {"chargePointVendor": "evse", "chargePointModel": model, "firmwareVersion": VERSION}
    while True:
        try:
            await link.connect()
            while not cp.accepted:
                reply = await rpc.call("BootNotification", boot, CALL_TIMEOUT_S) or {}
                interval = reply["interval"]
                cp.set_clock(reply.get("currentTime"))
                if reply["status"] == "Accepted":
                    if interval > 0:
                        cp.config.change("HeartbeatInterval", str(interval))
                    cp.accepted = True
                else:
                    await board.sleep_ms((interval or BOOT_RETRY_S) * 1000)
            await cp.serve(rpc)
        except Exception as e:
            _log(repr(e))
        await link.backoff()
