# Under micropython: the heap each part of the station takes, imports (code, module tables,
# interned names) and objects, measured as gc.mem_alloc() after a collection, in the order the
# firmware starts them. argv[1]: a data directory (its station.json is not read), argv[2]: a
# ROMFS image to import from (mounted at /rom, its own size left out), or "-" for the path's
# .mpy files. Prints one JSON object ([part, bytes] in order, the total in use without the
# image), then the qstr
# pool's line (the interned names of every part together, counted in the parts above).
import gc
import json
import os
import sys

import micropython
import vfs

data_dir, image_path = sys.argv[1], sys.argv[2]
gc.collect()
image_heap = gc.mem_alloc()
if image_path != "-":
    image = bytearray(os.stat(image_path)[6])
    with open(image_path, "rb") as f:
        f.readinto(image)
    vfs.mount(vfs.VfsRom(image), "/rom")
    sys.path.insert(0, "/rom")
gc.collect()
image_heap = gc.mem_alloc() - image_heap if image_path != "-" else 0
parts = []


def used():
    gc.collect()
    return gc.mem_alloc()


last = used()


def part(name):
    global last
    now = used()
    parts.append([name, now - last])
    last = now


import asyncio  # noqa: E402

part("asyncio (frozen)")
import app as firmware_app  # noqa: E402

part("import app, board, station (protocol.pilot, modbus)")
from board import sim  # noqa: E402

part("import board.sim, board.sim_meter (simulator only)")
import console  # noqa: E402, F401

part("import console (only with a console port: bench)")
from station import simctl  # noqa: E402, F401

part("import station.simctl (simulator only)")
board = sim.Board(data_dir, config={"board": "sim", "watchdog_ms": 60000})
station_app = firmware_app.App(data_dir, board)
part("objects: simulated board, station, app")
import net  # noqa: E402, F401
from ocpp import chargepoint, core, link, queue, rpc  # noqa: E402, F401 (and what they import)

part("import OCPP: net, ocpp.*, protocol.websocket/ocppj")


async def main():
    q = queue.Queue(data_dir)
    cp = core.ChargePoint(board, station_app.station, q, 3)
    part("objects: ChargePoint (2 connectors), queue, config, auth cache")
    lk = link.Link("ws://127.0.0.1:9/ocpp", "CP1", 0, None, None, None, None, board)
    cp.register(rpc.Rpc(lk, board))
    part("objects: Link, Rpc (no connection)")
    for _ in range(10):
        cp.tick()
    part("10 ticks")
    print(json.dumps({"parts": parts, "total": used() - image_heap}))
    micropython.qstr_info()  # "qstr pool: ... n_total_bytes=N": the interned names, all parts


asyncio.run(main())
