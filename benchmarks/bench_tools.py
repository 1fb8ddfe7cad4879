"""Bundle size per target and deploy times, over a pseudo-terminal to the unix port's REPL.

Prints: source vs .mpy bundle size for each board target and the build time; then the time of
a first deploy (everything), a repeated deploy (nothing changed) and a deploy after one
configuration change. The pseudo-terminal has no baud rate: on a board at 115200 baud add the
transfer time, about 10 s for the whole bundle (printed as an estimate).
"""

import json
import tempfile
import time
from pathlib import Path

from host.tools import build, deploy, station
from host.tools.replboard import ReplBoard

STATION = """
id = "BENCH1"
chip = "sim"
[board]
max_current_a = 16
phases = 1
[board.meter]
model = "SDM120"
uart = 2
tx = 17
rx = 16
[[board.connectors]]
pilot_pwm = 25
pilot_adc = 34
contactor = 26
rcd_trip = 14
meter_address = 1
"""


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="bench-tools-"))
    source = sum(path.stat().st_size for path, _ in build.sources())
    print(f"source: {len(build.sources())} modules, {source} bytes of .py")
    for target in ("esp32", "esp32c3", "unix"):
        bundle, seconds = timed(build.build, target, scratch / target)
        size = sum((scratch / target / "fs" / name).stat().st_size for name in bundle["files"])
        share = f"{size / source:.0%} of source"
        print(f"bundle {target:8}: {size:7} bytes ({share}), built in {seconds:.1f} s")

    station_file = scratch / "bench.toml"
    station_file.write_text(STATION)
    config = station.load(station_file)
    files = deploy.wanted_files(config, scratch / "unix")
    total = sum(len(data) for data in files.values())
    root = scratch / "board"
    root.mkdir()
    board = ReplBoard(root)
    try:
        for label in ("first deploy", "same again", "one change"):
            if label == "one change":
                board_json = json.loads(files["board.json"])
                board_json["max_current_a"] = 10
                files["board.json"] = json.dumps(board_json).encode()
            copied, seconds = timed(deploy.deploy, board.port, files, root=str(root), restart=False)
            print(f"{label:12}: {len(copied):3} of {len(files)} files copied in {seconds:.2f} s")
    finally:
        board.close()
    # repr() of binary data averages about 2.5 characters a byte, 10 bits a character.
    print(f"estimate at 115200 baud: {total * 2.5 * 10 / 115200:.0f} s for {total} bytes")


if __name__ == "__main__":
    main()
