# Runs unchanged on the 64-bit unix port and on the 32-bit WebAssembly port (benchmarks/
# heap32.mjs), from the same .mpy files: the heap each part of the station takes, as in
# benchmarks/mp_cp_breakdown.py but without what needs sockets (no connection is made).
# argv[1]: a data directory (made here: the WebAssembly port's filesystem is in memory);
# argv[2] (unix port only): a ROMFS image to import from, mounted at /rom, its size left out.
# Prints per part a JSON line {"part": NAME, "heap": BYTES} (gc.mem_alloc() after a
# collection, minus the one before), then the qstr pool's line (micropython.qstr_info(): the
# interned names so far, counted in the heap figures); last {"total": BYTES}, the heap in use
# at the end, the image left out.
import gc
import json
import os
import sys

import micropython

data_dir = sys.argv[1]
os.mkdir(data_dir)
image_heap = 0
if len(sys.argv) > 2:
    import vfs

    gc.collect()
    before = gc.mem_alloc()
    with open(sys.argv[2], "rb") as f:
        image = f.read()
    vfs.mount(vfs.VfsRom(image), "/rom")
    sys.path.insert(0, "/rom")
    gc.collect()
    image_heap = gc.mem_alloc() - before


def used():
    gc.collect()
    return gc.mem_alloc()


last = used()


def part(name):
    global last
    now = used()
    print(json.dumps({"part": name, "heap": now - last}))
    micropython.qstr_info()
    last = now


part("start")  # the qstr pool before the parts
import asyncio  # noqa: E402, F401

part("asyncio (frozen)")
import app as firmware_app  # noqa: E402

part("import app, board, station")
from board import sim  # noqa: E402

part("import board.sim, board.sim_meter (simulator only)")
import console  # noqa: E402, F401

part("import console")
from station import simctl  # noqa: E402, F401

part("import station.simctl (simulator only)")
board = sim.Board(data_dir, config={"board": "sim", "watchdog_ms": 60000})
station_app = firmware_app.App(data_dir, board)
part("objects: simulated board, station, app")
import net  # noqa: E402, F401
from ocpp import chargepoint, core, link, queue, rpc  # noqa: E402, F401

part("import OCPP")


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
    print(json.dumps({"total": used() - image_heap}))


# main() awaits nothing: run to its end here, on both ports the same way (the WebAssembly port's
# asyncio has no run(), its event loop being JavaScript's; tasks the objects create never run).
try:
    main().send(None)
except StopIteration:
    pass
