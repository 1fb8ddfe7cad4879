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


def parts():
    """Makes the station's parts in start-up order, yielding each one's name once made."""
    yield "start"  # nothing: the qstr pool before the parts
    import asyncio  # noqa: F401

    yield "asyncio (frozen)"
    import app as firmware_app

    yield "import app, board, station"
    from board import sim

    yield "import board.sim, board.sim_meter (simulator only)"
    import console  # noqa: F401

    yield "import console"
    from station import simctl  # noqa: F401

    yield "import station.simctl (simulator only)"
    board = sim.Board(data_dir, config={"board": "sim", "watchdog_ms": 60000})
    station_app = firmware_app.App(data_dir, board)
    yield "objects: simulated board, station, app"
    import net  # noqa: F401
    from ocpp import chargepoint, core, link, queue, rpc  # noqa: F401

    yield "import OCPP"
    cp = core.ChargePoint(board, station_app.station, queue.Queue(data_dir), 3)
    yield "objects: ChargePoint (2 connectors), queue, config, auth cache"
    lk = link.Link("ws://127.0.0.1:9/ocpp", "CP1", 0, None, None, None, None, board)
    cp.register(rpc.Rpc(lk, board))
    yield "objects: Link, Rpc (no connection)"
    for _ in range(10):
        cp.tick()
    yield "10 ticks"


made = parts()
last = None  # the heap in use before the part being made
name = None  # that part


def step():
    """Prints what the part made last took, makes the next; False after the last part.
    Must start after a collection: on the WebAssembly port gc.collect() only asks for one, done
    when the next call from JavaScript starts (its stack cannot be scanned), so heap32.mjs
    calls step() once per part."""
    global last, name
    now = gc.mem_alloc()
    if name is not None:
        print(json.dumps({"part": name, "heap": now - last}))
        micropython.qstr_info()
    last = now
    try:
        name = next(made)
    except StopIteration:
        print(json.dumps({"total": now - image_heap}))
        return False
    gc.collect()
    return True


gc.collect()
if sys.platform != "webassembly":
    while step():
        pass
