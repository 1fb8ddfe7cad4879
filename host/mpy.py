"""Running firmware code under the unix port of MicroPython (the `micropython` command)."""

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"


def executable() -> str:
    """The `micropython` beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise FileNotFoundError("micropython not found: run `make` to create .venv")
    return found


def environ(*extra_paths: Path) -> dict[str, str]:
    """Environment whose MICROPYPATH lays out modules as on the board: firmware/ at the top,
    protocol/ importable as a package, frozen modules (asyncio) kept."""
    paths = [str(p) for p in extra_paths] + [str(FIRMWARE), str(ROOT), ".frozen"]
    return dict(os.environ, MICROPYPATH=":".join(paths))


def command(script: str | Path, *args: str, heapsize: int | None = None) -> list[str]:
    """argv that runs `script` under micropython, optionally with a bounded heap (bytes)."""
    argv = [executable()]
    if heapsize:
        argv += ["-X", f"heapsize={heapsize}"]
    return argv + [str(script), *args]


def smallest_heap(
    works: Callable[[int], bool], low: int, high: int, step: int = 1024
) -> int | None:
    """The smallest `-X heapsize` in (low, high] for which `works(heapsize)` holds, to `step`
    bytes, by bisection (the benchmarks' memory figures); None when it fails even at `high`."""
    if not works(high):
        return None
    while high - low > step:
        middle = (low + high) // 2
        if works(middle):
            high = middle
        else:
            low = middle
    return high
