"""Memory of the OCPP charge point under micropython: the real firmware on the simulated board,
run from a bundle made by `evse build --target unix` as a board would run it.

1. The smallest `-X heapsize` that carries a full session: a 1,000-message offline backlog on
   flash delivered first, then a transaction on each of the 2 connectors (remote start, meter
   values, remote stop), per configuration: ws:// or wss:// (TLS), and the code loaded from .mpy
   files (into the heap) or from the ROMFS image (bytecode run in place). The ROMFS image is
   read into the heap by the launcher (benchmarks/mp_cp_rom.py) as its first allocation, one
   block that is never freed; on a board it is in flash, so its exact cost is subtracted
   ("beyond_image"). The TLS share is wss - ws: on the ESP32, mbedtls takes its buffers from the
   IDF heap, not from MicroPython's, so there only the ws figure counts against the GC heap.
   Bisection to 1 KiB, each configuration's bracket starting from what is known (the heap in
   use after start-up, the ws figure for wss), two probes at a time, each in a process of its
   own with its own central system (the machine has 2 cores).
2. Heap in use after 1 and after N sessions (2 connectors each), which must be equal.

The unix port is 64-bit: pointers and object headers take 8 bytes where the ESP32 takes 4. The
figures here are the unix port's; no factor converts them to the ESP32.
"""

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocpp.v16 import call  # noqa: E402

from host import mpy  # noqa: E402
from host.sim import SimError  # noqa: E402
from host.tools import build  # noqa: E402
from tests.cp_centralsystem import CentralSystem, make_tls  # noqa: E402
from tests.cp_station import Firmware  # noqa: E402

BACKLOG = 1000
HERE = Path(__file__).resolve().parent
STEP = 1024  # bisection resolution
ROOMY = 512 * 1024
MARGIN = 64 * 1024  # each bracket's width above what is known to be needed


class Failed(Exception):
    pass


def make_backlog(flash: Path) -> None:
    flash.mkdir(parents=True)
    argv = mpy.command(HERE / "mp_cp_backlog.py", str(flash), str(BACKLOG))
    subprocess.run(argv, check=True, env=mpy.environ(), capture_output=True, timeout=120)


def image_heap(output: str) -> int:
    """The heap the launcher's copy of the ROMFS image takes (0 without one)."""
    for line in output.splitlines():
        if line.startswith("romfs image heap: "):
            return int(line.split()[3])
    return 0


async def full_session(template: Path, bundle: Path, tls: bool, romfs: bool, heapsize: int):
    """None when the firmware with `heapsize` bytes of heap fails to deliver the backlog and
    run a transaction on both connectors; else (heap in use at the end, image heap)."""
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp) / "flash"
        shutil.copytree(template, flash)
        cs = await CentralSystem().start(ssl=make_tls(flash) if tls else None)
        station = {"ca": "ca.der"} if tls else {}
        fw = Firmware(flash, cs.url("wss" if tls else "ws"), **station)

        async def wait(predicate, what, timeout=30.0):
            def ok():  # a MemoryError, or a task that died of anything, fails the run
                out = fw.output()
                if not fw.alive() or "MemoryError" in out or "Traceback" in out:
                    raise Failed(what)
                return predicate()

            return await cs.wait(ok, timeout=timeout, what=what)

        try:
            await fw.start(heapsize=heapsize, bundle=bundle, romfs=romfs, speed=5.0)
            await wait(lambda: len(cs.log) >= BACKLOG, "backlog delivered", timeout=60)
            await cs.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="1"))
            for n in (1, 2):
                await fw.command(f"ev {n} C")
                await cs.call(call.RemoteStartTransaction(id_tag=f"H{n}", connector_id=n))
            await wait(lambda: len(cs.calls("StartTransaction")) >= 3, "both started")
            await wait(lambda: len(cs.calls("MeterValues")) >= BACKLOG + 2, "meter values")
            for tx in [e[1] for e in cs.log if e[0] == "StartTransaction"][1:]:
                await cs.call(call.RemoteStopTransaction(transaction_id=tx))
            await wait(lambda: len(cs.calls("StopTransaction")) >= 3, "both stopped")
            in_use = 0
            return in_use, image_heap(fw.output())
        except (Failed, SimError, TimeoutError, AssertionError, OSError, KeyError) as e:
            print(f"  heapsize {heapsize}: {e!r}", file=sys.stderr)
            return None
        finally:
            await fw.kill()
            await cs.stop()


def probe(template: Path, bundle: Path, tls: bool, romfs: bool, heapsize: int):
    """full_session in a process of its own (run by the pool)."""
    return asyncio.run(full_session(template, bundle, tls, romfs, heapsize))


async def smallest(works, lo: int, hi: int) -> int:
    """The smallest heap size in (lo, hi] for which `await works(size)` is true, to STEP,
    probing two sizes at a time; `hi` must work."""
    while hi - lo > STEP:
        third = (hi - lo) // 3
        a, b = lo + third, lo + 2 * third
        ok_a, ok_b = await asyncio.gather(works(a), works(b))
        if ok_a:
            hi = a
        elif ok_b:
            lo, hi = a, b
        else:
            lo = b
    return hi


async def heap_over_sessions(bundle: Path, sessions: int) -> dict:
    cs = await CentralSystem().start()
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp)
        (flash / "station.json").write_text(json.dumps({"id": "CPH", "url": cs.url()}))
        argv = mpy.command(HERE / "mp_cp_sessions.py", str(flash), str(sessions))
        env = mpy.environ(bundle / "fs")
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, env=env)
        out, _ = await asyncio.wait_for(proc.communicate(), 1800)
    await cs.stop()
    heaps = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    first, last = heaps[0], heaps[-1]
    return {
        "sessions": last["session"],
        "heap_after_session_1": first["heap"],
        "heap_after_last_session": last["heap"],
        "growth_bytes": last["heap"] - first["heap"],
        "messages_received_by_cs": len([f for f in cs.frames if f[0] == "cp"]),
    }


async def smallest_heaps(
    bundle: Path, template: Path, pool: ProcessPoolExecutor, in_use: dict
) -> dict:
    """Per configuration: the smallest heap, and for ROMFS the part beyond the image;
    `in_use`: the heap in use after start-up by "romfs" (the image left out) and "mpy"."""
    found: dict = {}
    image = [0]
    loop = asyncio.get_running_loop()

    async def search(tls: bool, romfs: bool, lo: int, hi: int) -> int:
        """The smallest in (lo, hi], or above hi (up to ROOMY) when hi fails."""

        async def works(size: int) -> bool:
            result = await loop.run_in_executor(pool, probe, template, bundle, tls, romfs, size)
            if result and romfs:
                image[0] = result[1]
            return result is not None

        mid = (lo + hi) // 2
        ok_mid, ok_hi = await asyncio.gather(works(mid), works(hi))
        if ok_mid:
            return await smallest(works, lo, mid)
        if ok_hi:
            return await smallest(works, mid, hi)
        if not await works(ROOMY):
            raise SystemExit(f"fails even with {ROOMY} B of heap")
        return await smallest(works, hi, ROOMY)

    # Brackets from what is known: a run needs at least the heap in use after start-up (and
    # the image), traffic and fragmentation add some tens of KB, and TLS only adds.
    image_size = (bundle / build.ROMFS_IMAGE).stat().st_size
    rom_start = in_use["romfs"] + image_size
    ws_rom = await search(False, True, rom_start, rom_start + MARGIN)
    wss_rom = await search(True, True, ws_rom - STEP, ws_rom + MARGIN)
    ws_mpy = await search(False, False, in_use["mpy"], in_use["mpy"] + MARGIN)
    wss_mpy = await search(True, False, ws_mpy - STEP, ws_mpy + MARGIN)
    found["romfs_image_bytes_in_heap"] = image[0]
    for name, size, rom in (
        ("ws_romfs", ws_rom, True),
        ("wss_romfs", wss_rom, True),
        ("ws_mpy", ws_mpy, False),
        ("wss_mpy", wss_mpy, False),
    ):
        found[name] = {"smallest_heapsize": size}
        if rom:
            found[name]["beyond_image"] = size - image[0]
    found["tls_share_romfs"] = wss_rom - ws_rom
    found["tls_share_mpy"] = wss_mpy - ws_mpy
    return found


def breakdown(bundle: Path, romfs: bool) -> dict:
    """Heap per part of the station (benchmarks/mp_cp_breakdown.py), from the ROMFS image
    (its own size left out) or from the .mpy files."""
    with tempfile.TemporaryDirectory() as tmp:
        image = str(bundle / build.ROMFS_IMAGE) if romfs else "-"
        path = ".frozen" if romfs else f"{bundle / 'fs'}:.frozen"
        out = subprocess.run(
            mpy.command(HERE / "mp_cp_breakdown.py", tmp, image),
            env=dict(mpy.environ(), MICROPYPATH=path),
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout.splitlines()
    found = json.loads(out[0])
    result = dict(found["parts"])
    result["qstr_pool_all_parts"] = int(out[1].rpartition("n_total_bytes=")[2])
    result["total_in_use"] = found["total"]
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=1000, help="for the growth check")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        build.build("unix", bundle)
        template = Path(tmp) / "backlog"
        make_backlog(template)
        in_use = {}
        for mode in ("romfs", "mpy"):
            parts = breakdown(bundle, mode == "romfs")
            print(json.dumps({f"heap_by_part_{mode}": parts}))
            in_use[mode] = parts["total_in_use"]
        with ProcessPoolExecutor(max_workers=2) as pool:
            heaps = await smallest_heaps(bundle, template, pool, in_use)
        heaps["backlog_on_flash_bytes"] = (template / "txqueue.jnl").stat().st_size
        print(json.dumps({"smallest_heap_full_session_2_connectors_1000_backlog": heaps}))
        print(json.dumps(await heap_over_sessions(bundle, args.sessions)))
    print(json.dumps({"unix_port_64_bit": True, "seconds": round(time.monotonic() - started)}))


if __name__ == "__main__":
    asyncio.run(main())
