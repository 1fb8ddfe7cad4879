"""Heap of the station on a 32-bit MicroPython next to the 64-bit unix port, from the same .mpy
files (`evse build --target unix`): the ESP32 is 32-bit, the unix port we measure on is not.

The 32-bit port is MicroPython 1.27 for WebAssembly (wasm32, npm package pinned in
benchmarks/package.json, run by benchmarks/heap32.mjs under node). Both run
benchmarks/mp_heap32.py, which prints the heap each part of the station takes (imports, objects;
no sockets: the 32-bit port has none) and the interned names (qstr pool) so far. Also the
smallest heap size that carries the control core's full two-connector session of
benchmarks/mp_session.py (benchmarks/mp_heap32_session.py: the same in steps of one control
period, as the 32-bit port collects garbage only between steps), by bisection to 1 KiB.

Then a DERIVED estimate for a 32-bit board running from ROMFS: the unix port's ROMFS figure per
part times that part's measured 32/64 ratio. The 32-bit port has no ROMFS, so its ratios are
those of .mpy imports, whose bytecode (kept in flash with ROMFS) hardly shrinks: the estimate
is an upper bound; the lower bound takes the bytecode's 64-bit heap off the 32-bit .mpy figure.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host import mpy  # noqa: E402
from host.tools import build  # noqa: E402

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "heap32.mjs"
PACKAGE = HERE / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
PARTS = HERE / "mp_heap32.py"
SESSION = HERE / "mp_heap32_session.py"
ROOMY = 1 << 20
STEP = 1024
# The unix port's smallest heap for a full OCPP session from ROMFS (2 connectors, 1,000-message
# backlog), beyond the image, on a station without a console: README "OCPP charge point"
# (bench_cp_heap.py).
FULL_SESSION_64 = 130.8 * 1024
CONSOLE = "import console"  # not imported in that session (no console port)


def run_unix(script: Path, paths: str, *args: str, heapsize: int | None = None, cwd=None):
    done = subprocess.run(
        mpy.command(script, *args, heapsize=heapsize),
        env=dict(mpy.environ(), MICROPYPATH=f"{paths}:.frozen"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    return done.returncode == 0, done.stdout


def run_wasm(script: Path, paths: str, *args: str, heapsize: int = ROOMY):
    """(finished without growing the heap past `heapsize`, output without the driver's line)."""
    done = subprocess.run(
        ["node", str(DRIVER), str(heapsize), paths, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out, _, last = done.stdout.rstrip("\n").rpartition("\n")
    heap = json.loads(last.removeprefix("heap32: "))
    return done.returncode == 0 and heap["peak"] == heap["first_area"], out + "\n"


def parts(output: str) -> dict:
    """{part: [heap bytes, qstr pool bytes added]} and the total, from mp_heap32.py's output."""
    found, qstr = {}, 0
    name = None
    for line in output.splitlines():
        if line.startswith("qstr pool:"):
            now = int(re.search(r"n_total_bytes=(\d+)", line)[1])
            found[name][1], qstr = now - qstr, now
        elif line.startswith("{"):
            record = json.loads(line)
            if "total" in record:
                found["total in use"] = [record["total"], qstr]
            else:
                name = record["part"]
                found[name] = [record["heap"], 0]
    del found["start"]
    return found


def smallest(works, low: int, high: int = ROOMY) -> int:
    heap = mpy.smallest_heap(works, low, high, STEP)
    if heap is None:
        raise SystemExit(f"fails even with {high} bytes of heap")
    return heap


def ensure_package() -> None:
    if not PACKAGE.exists():
        raise SystemExit(f"{PACKAGE} missing: run `make benchmarks` (npm ci in benchmarks/)")


def kb(n: float) -> str:
    return f"{n / 1024:7.1f}"


def main() -> None:
    ensure_package()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        build.build("unix", bundle)
        fs = str(bundle / "fs")
        image = str(bundle / build.ROMFS_IMAGE)
        ok64, out64 = run_unix(PARTS, fs, f"{tmp}/d64")
        okrom, outrom = run_unix(PARTS, "", f"{tmp}/drom", image, cwd=tmp)
        ok32, out32 = run_wasm(PARTS, fs, "/tmp/d32")
        if not (ok64 and okrom and ok32):
            raise SystemExit(f"mp_heap32.py failed:\n{out64}\n{outrom}\n{out32}")
        p64, prom, p32 = parts(out64), parts(outrom), parts(out32)
        session64 = smallest(lambda n: run_unix(SESSION, fs, heapsize=n)[0], 16 * 1024)
        session32 = smallest(lambda n: run_wasm(SESSION, fs, heapsize=n)[0], 8 * 1024)

    print("heap by part, KB (gc.mem_alloc after gc.collect); .mpy imports on both ports")
    print(f"{'part':<64} {'64-bit':>7} {'32-bit':>7} {'ratio':>6} {'qstr64':>7} {'qstr32':>7}")
    for name, (heap64, q64) in p64.items():
        heap32, q32 = p32[name]
        ratio = f"{heap32 / heap64:6.2f}" if heap64 > 0 else "     -"
        print(f"{name:<64} {kb(heap64)} {kb(heap32)} {ratio} {kb(q64)} {kb(q32)}")
    print(
        "control core session (mp_heap32_session.py, .mpy), smallest heapsize: "
        f"64-bit {session64} B, 32-bit {session32} B, ratio {session32 / session64:.2f}"
    )

    print("\nDERIVED, not measured: 32-bit board running from ROMFS, KB")
    print(f"{'part':<64} {'64 rom':>7} {'32 low':>7} {'32 high':>7}")
    low_total = high_total = rom_total = 0.0
    for name, (rom64, _) in prom.items():
        if name == "total in use" or name.startswith(CONSOLE):
            continue
        heap64, heap32 = p64[name][0], p32[name][0]
        ratio = heap32 / heap64 if heap64 > 0 else 1.0
        high = rom64 * ratio
        low = min(high, max(0, heap32 - (heap64 - rom64)))
        low_total, high_total, rom_total = low_total + low, high_total + high, rom_total + rom64
        print(f"{name:<64} {kb(rom64)} {kb(low)} {kb(high)}")
    total = "total in use after start-up, without the console"
    print(f"{total:<64} {kb(rom_total)} {kb(low_total)} {kb(high_total)}")
    session_ratio = session32 / session64
    rest = FULL_SESSION_64 - rom_total
    print(
        f"full OCPP session (README, 64-bit {kb(FULL_SESSION_64).strip()} KB): start-up as above"
        f" + the rest ({kb(rest).strip()} KB) x {session_ratio:.2f} (control core session ratio)"
        f" = {kb(low_total + rest * session_ratio).strip()}"
        f" to {kb(high_total + rest * session_ratio).strip()} KB"
    )


if __name__ == "__main__":
    main()
