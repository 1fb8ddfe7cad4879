"""`evse deploy`: copy the firmware bundle and a station's configuration to its board.

Talks to the board's raw REPL through mpremote's serial transport. The board keeps
`deployed.json`, the sha256 of every file deploy wrote; only files whose hash differs are
copied, each through a temporary file that is checked on the board before it replaces the old
one. Files of an earlier deploy that are no longer in the bundle are removed; no other file on
the board (journal, OCPP configuration keys) is touched.

With `--romfs` the firmware modules go to the board's ROMFS partition instead (the bundle's
firmware.romfs, written by mpremote's `romfs deploy` code and then checked against its sha256),
where their bytecode runs from flash and takes no heap; the filesystem keeps main.py (which
imports from /rom) and the device files, and the .mpy files of an earlier deploy leave it.
"""

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

from host.cli import UserError
from host.tools import build, station

BOARD_MANIFEST = "deployed.json"
CHUNK = 512  # bytes per write command: fits the raw REPL's buffers on any board

# Run once on the board after the running firmware was interrupted: the firmware no longer
# supervises the charging, so stop it (pins from the board.json in use: pilot steady at +12 V,
# no current offered; contactors open), stretch a running hardware watchdog over the copy, and
# define the helpers deploy calls.
BOARD_HELPERS = """
import os, json, hashlib, binascii
try:
    import machine
    for _c in json.load(open('board.json'))['connectors']:
        machine.Pin(_c['pilot_pwm'], machine.Pin.OUT, value=1)
        machine.Pin(_c['contactor'], machine.Pin.OUT, value=0)
except (ImportError, AttributeError, OSError, ValueError, KeyError, TypeError):
    pass
try:
    _wdt = machine.WDT(timeout=60000)
except (NameError, AttributeError, ValueError):
    _wdt = None
def _feed():
    if _wdt:
        _wdt.feed()
def _sha(p):
    _feed()
    h = hashlib.sha256()
    b = bytearray(512)
    with open(p, 'rb') as f:
        while True:
            n = f.readinto(b)
            if not n:
                break
            h.update(memoryview(b)[:n])
    return binascii.hexlify(h.digest()).decode()
def _mkdirs(p):
    d = ''
    for part in p.split('/')[:-1]:
        d += part
        try:
            os.mkdir(d)
        except OSError:
            pass
        d += '/'
def _w(data):
    _feed()
    _f.write(data)
def _rm(p):
    try:
        os.remove(p)
    except OSError:
        pass
def _cat(p):
    try:
        print(open(p).read())
    except OSError:
        print('{}')
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="copy the firmware and a station's configuration to its board",
        description="Validate the station file, build the bundle for its chip (or use --bundle), "
        "then copy to the board over its serial REPL only the files whose hash changed, verify "
        "them and restart the board.",
    )
    parser.add_argument("--port", required=True, help="serial port of the board")
    parser.add_argument("--station", required=True, type=Path, help="station file (TOML)")
    parser.add_argument("--bundle", type=Path, help="a directory made by `evse build`")
    parser.add_argument("--root", default="/", help="directory on the board (default /)")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--no-restart", action="store_true", help="leave the board at its REPL")
    parser.add_argument(
        "--romfs",
        action="store_true",
        help="put the firmware into the board's ROMFS partition (MicroPython built with "
        "MICROPY_VFS_ROM and a romfs partition): its code then runs from flash, not the heap",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    config = station.load(args.station)
    with tempfile.TemporaryDirectory(prefix="evse-bundle-") as scratch:
        bundle = args.bundle or Path(scratch)
        if args.bundle is None:
            build.build(config.target, bundle)
        files = wanted_files(config, bundle, args.romfs)
        image = (bundle / build.ROMFS_IMAGE).read_bytes() if args.romfs else None
        copied = deploy(
            args.port,
            files,
            root=args.root,
            baud=args.baud,
            restart=not args.no_restart,
            romfs=image,
        )
    state = "restarted" if not args.no_restart else "left at its REPL"
    rom = ", ROMFS image written" if "romfs" in copied else ""
    copied = [name for name in copied if name != "romfs"]
    print(f"{config.id}: {len(copied)} of {len(files)} files copied{rom}, board {state}")
    return 0


def wanted_files(config: station.Station, bundle: Path, romfs: bool = False) -> dict[str, bytes]:
    """Everything deploy puts on the board's filesystem, by path: the bundle (with `romfs`,
    only main.py: the modules are in the ROMFS image) and the device files."""
    try:
        manifest = json.loads((bundle / "bundle.json").read_text())
        target, hashes = manifest["target"], dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{bundle}: not a bundle made by `evse build`") from None
    if target != config.target:
        raise UserError(
            f"{bundle} is built for {target}, station {config.id} needs "
            f"{config.target} (chip {config.chip})"
        )
    names = [n for n in hashes if not romfs or n in build.SOURCE_MODULES]
    files = {}
    for name in names:
        try:
            files[name] = (bundle / "fs" / name).read_bytes()
            intact = hashlib.sha256(files[name]).hexdigest() == hashes[name]
        except OSError:
            intact = False
        if not intact:  # a build cut short, or a file changed since: a mix of versions
            raise UserError(
                f"{bundle}: fs/{name} is missing or not as bundle.json says: build again"
            )
    files.update(config.device_files())
    return files


def deploy(
    port: str,
    files: dict[str, bytes],
    root="/",
    baud=115200,
    restart=True,
    romfs: bytes | None = None,
) -> list[str]:
    """Copy to the board the files whose hash differs from its manifest, and the ROMFS image
    `romfs` when given and different; returns the paths copied ("romfs" for the image)."""
    from mpremote.transport import TransportError, TransportExecError
    from mpremote.transport_serial import SerialTransport

    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    try:
        board = SerialTransport(port, baudrate=baud)
    except TransportError:
        raise UserError(f"cannot open {port}: no such port, or another program has it") from None
    try:
        board.enter_raw_repl(soft_reset=False)
        board.exec(f"import os\nos.chdir({root!r})")
        board.exec(BOARD_HELPERS)
        text = board.exec(f"_cat({BOARD_MANIFEST!r})")
        before = board_manifest(text)
        rom_before = board_manifest(text, "romfs").get("sha256")
        rom_hash = hashlib.sha256(romfs).hexdigest() if romfs is not None else None
        rom_changed = romfs is not None and rom_before != rom_hash
        if rom_changed:
            check_romfs_partition(board, len(romfs))  # before anything changes on the board
        changed = sorted(name for name in files if before.get(name) != hashes[name])
        stale = sorted(set(before) - set(files))
        # Forget the files about to change first: an interrupted deploy then copies them again.
        keep = {
            name: digest for name, digest in before.items() if name in files and name not in changed
        }
        rom_kept = None if rom_changed else rom_before
        write(board, BOARD_MANIFEST, manifest_bytes(keep, rom_kept))
        if rom_changed:
            write_romfs(board, romfs, rom_hash)
            print(f"  wrote the ROMFS image ({len(romfs)} bytes)")
        for name in changed:
            write(board, name, files[name], hashes[name])
            print(f"  copied {name} ({len(files[name])} bytes)")
        for name in stale:
            board.exec(f"_rm({name!r})")  # gone already is fine
            print(f"  removed {name}")
        write(board, BOARD_MANIFEST, manifest_bytes(hashes, rom_hash or rom_kept))
        if restart:
            board.exec_raw_no_follow("import machine\nmachine.reset()")
        else:
            board.exit_raw_repl()
    except TransportExecError as error:
        raise UserError(
            f"{port}: the board refused a command: {error.error_output.strip()}"
        ) from None
    except TransportError as error:
        raise UserError(f"{port}: no MicroPython REPL answering ({error})") from None
    finally:
        board.close()
    return changed + (["romfs"] if rom_changed else [])


def check_romfs_partition(board, size: int) -> None:
    """The board has a ROMFS partition (0) that holds `size` bytes, or a UserError."""
    answer = board.exec(
        "import vfs\n"
        "_d = vfs.rom_ioctl(2, 0) if hasattr(vfs, 'rom_ioctl') else -1\n"
        "print(-1 if isinstance(_d, int) else len(memoryview(_d)))"
    )
    room = int(answer.decode().strip())
    if room < 0:
        raise UserError(
            "the board has no ROMFS partition: flash a MicroPython built with MICROPY_VFS_ROM "
            "and a partition table with a romfs partition, or deploy without --romfs"
        )
    if size > room:
        raise UserError(f"the ROMFS image ({size} bytes) is larger than the partition ({room})")


class _RomfsSession:
    """What mpremote's romfs commands need of its session: our transport, in the raw REPL."""

    def __init__(self, transport) -> None:
        self.transport = transport

    def ensure_raw_repl(self, soft_reset=None) -> None:
        pass  # deploy entered it, without a soft reset (that would restart the firmware)

    def did_action(self) -> None:
        pass


def write_romfs(board, image: bytes, digest: str) -> None:
    """Write `image` into ROMFS partition 0 with mpremote's `romfs deploy`, then check it."""
    from mpremote.commands import CommandError, do_romfs

    with tempfile.TemporaryDirectory(prefix="evse-romfs-") as scratch:
        path = Path(scratch) / build.ROMFS_IMAGE
        path.write_bytes(image)
        options = argparse.Namespace(command=["deploy"], path=str(path), partition=0, mpy=False)
        try:
            do_romfs(_RomfsSession(board), options)
        except CommandError as error:
            raise UserError(f"ROMFS deploy failed: {error}") from None
    board.exec("_feed()")
    on_board = board.exec(
        f"_h = hashlib.sha256(memoryview(vfs.rom_ioctl(2, 0))[:{len(image)}])\n"
        "print(binascii.hexlify(_h.digest()).decode())"
    )
    if on_board.decode().strip() != digest:
        raise UserError("verify failed for the ROMFS image: the partition holds something else")


def write(board, name: str, data: bytes, digest: str | None = None) -> None:
    """Write `name` through a temporary file, checked against `digest` before it replaces it."""
    temporary = name + ".new"
    board.exec(f"_mkdirs({name!r})\n_f = open({temporary!r}, 'wb')")
    for start in range(0, len(data), CHUNK):
        board.exec(f"_w({data[start : start + CHUNK]!r})")
    board.exec("_f.close()")
    digest = digest or hashlib.sha256(data).hexdigest()
    on_board = board.exec(f"print(_sha({temporary!r}))").decode().strip()
    if on_board != digest:
        raise UserError(f"verify failed for {name}: the board holds a different file")
    board.exec(f"os.rename({temporary!r}, {name!r})")


def board_manifest(text: bytes, part: str = "files") -> dict[str, str]:
    """A part of the board's manifest: "files" (their hashes) or "romfs" (the image's sha256);
    an unreadable one means: copy everything."""
    try:
        found = json.loads(text).get(part, {})
    except (ValueError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}


def manifest_bytes(hashes: dict[str, str], romfs_sha256: str | None = None) -> bytes:
    manifest: dict = {"files": hashes}
    if romfs_sha256:
        manifest["romfs"] = {"sha256": romfs_sha256}
    return json.dumps(manifest, sort_keys=True).encode()
