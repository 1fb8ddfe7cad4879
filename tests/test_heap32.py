"""The 32-bit MicroPython of benchmarks/bench_heap32.py (WebAssembly, run by
benchmarks/heap32.mjs): it is 32-bit, collects garbage between steps, and measures the
station's parts from the same .mpy files as the unix port, with smaller figures."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_heap32  # noqa: E402

from host.tools import build  # noqa: E402

pytestmark = pytest.mark.skipif(
    not bench_heap32.PACKAGE.exists(), reason="run `make` first (npm ci in benchmarks/)"
)


def test_steps_are_collected_and_the_heap_bound_is_seen(tmp_path):
    script = tmp_path / "steps.py"
    script.write_text(
        "import gc, sys\n"
        "print(sys.maxsize, sys.implementation._mpy & 0xFF, (sys.implementation._mpy >> 8) & 3)\n"
        "gc.collect()\n"
        "made = []\n"
        "def step():\n"
        "    made.append(gc.mem_alloc())\n"
        "    if len(made) == 4:\n"
        "        print(made)\n"
        "        return False\n"
        "    junk = [bytearray(1000) for _ in range(20)]\n"  # garbage once the step returns
        "    gc.collect()\n"
        "    return True\n"
    )
    ok, out = bench_heap32.run_wasm(script, "", heapsize=64 * 1024)
    header, heaps = out.splitlines()[:2]
    assert ok, out
    assert header == f"{2**31 - 1} 6 3"  # 32-bit; .mpy version 6.3, as mpy-cross writes
    first, *rest = eval(heaps)
    assert all(abs(heap - first) < 1024 for heap in rest), heaps  # 20 KB freed each time
    too_small, _ = bench_heap32.run_wasm(script, "", heapsize=16 * 1024)
    assert not too_small  # the heap had to grow past 16 KB: reported as not fitting


def test_parts_smaller_on_32_bit_from_the_same_mpy_files(tmp_path):
    build.build("unix", tmp_path / "bundle")
    fs = str(tmp_path / "bundle" / "fs")
    ok64, out64 = bench_heap32.run_unix(bench_heap32.PARTS, fs, str(tmp_path / "d64"))
    ok32, out32 = bench_heap32.run_wasm(bench_heap32.PARTS, fs, "/tmp/d32")
    assert ok64 and ok32, (out64, out32)
    parts64, parts32 = bench_heap32.parts(out64), bench_heap32.parts(out32)
    assert parts64.keys() == parts32.keys()
    for name, (heap64, qstr64) in parts64.items():
        heap32, qstr32 = parts32[name]
        if heap64 > 2048:
            assert 0.25 * heap64 < heap32 < heap64, name
        if qstr64 > 1024:
            assert qstr32 < qstr64, name
    assert subprocess.run(["node", "--version"], capture_output=True).returncode == 0
