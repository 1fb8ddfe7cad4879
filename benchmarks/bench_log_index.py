"""The frame log's station index (host/cs/storage.py, index_log) after a long history.

The index is keyed by pass first, so that a pass appends at its end. The baseline is the
same index keyed by station first (the layout before), where each pass writes into every
station's pages, all over an index that grows with the history. Both run the same
index_log; only the table's key differs.

For each history (frames already indexed, over 10,000 stations, added a pass at a time as
the server does) it indexes 100,000 more frames, a committed and synced pass at a time as
in the server's database process, and prints the wall and CPU time per 100,000 frames, the
median and longest pass (the time a batch may wait behind one), and how long a search for
a station's newest 100 frames takes (a seek per pass for the pass-first key).

    .venv/bin/python benchmarks/bench_log_index.py                      # about 5 min
    .venv/bin/python benchmarks/bench_log_index.py --history 1000000
"""

import argparse
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from host.cs import storage  # noqa: E402

STATIONS = 10_000
MEASURED = 100_000  # frames indexed and timed
FILL_FRAMES = 100_000  # the history is written this many frames per transaction
TS = "2026-11-26T10:00:00.000Z"
# The baseline's search, as before: one seek by station
STATION_FIRST_FRAMES = (
    "id IN (SELECT id FROM message_index WHERE station = ? UNION ALL SELECT id FROM messages"
    " WHERE id > (SELECT COALESCE(MAX(upto), 0) FROM message_passes) AND station = ?)"
)
LAYOUTS = {  # name: (the index's key, the search's clause)
    "pass first": ("pass, station, id", storage.STATION_FRAMES),
    "station first (baseline)": ("station, id, pass", STATION_FIRST_FRAMES),
}


def station(rng: random.Random) -> str:
    return f"CP{rng.randrange(STATIONS):05d}"


def prepared(path: str, key: str, history: int, rng: random.Random) -> storage.Db:
    """A database whose log index holds `history` frames, then MEASURED frames to index."""
    db = storage.Db(f"sqlite:///{path}")
    db.execute("DROP TABLE message_index")
    db.execute(
        "CREATE TABLE message_index (pass BIGINT NOT NULL, station TEXT NOT NULL,"
        f" id BIGINT NOT NULL, PRIMARY KEY ({key})) WITHOUT ROWID"
    )
    size = storage.INDEX_PASS_FRAMES
    order = [("pass", "station", "id").index(name) for name in key.split(", ")]
    for first in range(1, history + 1, FILL_FRAMES):  # passes, committed a few at a time
        ids = range(first, min(first + FILL_FRAMES, history + 1))
        entries = [(-(-i // size) * size, station(rng), i) for i in ids]
        entries.sort(key=lambda entry: [entry[k] for k in order])
        db.executemany("INSERT INTO message_index VALUES (?, ?, ?)", entries)
        passes = range(-(-ids[0] // size) * size, ids[-1] + 1, size)
        db.executemany("INSERT INTO message_passes (upto) VALUES (?)", [(p,) for p in passes])
        db.commit()
    frames = [
        (i, station(rng), TS, "in", '[2,"1","Heartbeat",{}]')
        for i in range(history + 1, history + MEASURED + 1)
    ]
    db.executemany(
        "INSERT INTO messages (id, station, ts, direction, text) VALUES (?, ?, ?, ?, ?)", frames
    )
    db.commit()
    return db


def timed_passes(db: storage.Db) -> tuple[float, float, list[float]]:
    """Wall and CPU seconds to index what waits, and each pass's wall seconds, sorted."""
    wall, cpu = time.perf_counter(), time.process_time()
    passes = []
    while True:
        start = time.perf_counter()
        if not storage.index_log(db):
            break
        db.commit()
        passes.append(time.perf_counter() - start)
    return time.perf_counter() - wall, time.process_time() - cpu, sorted(passes)


def search_ms(db: storage.Db, clause: str, rng: random.Random, searches: int = 20) -> float:
    sql = f"SELECT * FROM messages WHERE {clause} ORDER BY id DESC LIMIT 100"
    start = time.perf_counter()
    for _ in range(searches):
        name = station(rng)
        assert db.all(sql, (name, name))
    return (time.perf_counter() - start) * 1000 / searches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    print(
        f"log index: passes of {storage.INDEX_PASS_FRAMES:,} frames over {STATIONS:,} stations,"
        " each committed and synced"
    )
    for history in args.history:
        for name, (key, clause) in LAYOUTS.items():
            with tempfile.TemporaryDirectory() as scratch:
                db = prepared(os.path.join(scratch, "cs.sqlite3"), key, history, random.Random(1))
                wall, cpu, passes = timed_passes(db)
                search = search_ms(db, clause, random.Random(2))
                db.close()
            print(
                f"log index: after {history:,} frames, {name}: 100,000 frames indexed in"
                f" {wall * 1000:.0f} ms (CPU {cpu * 1000:.0f} ms), a pass"
                f" {passes[len(passes) // 2] * 1000:.1f} ms (longest {passes[-1] * 1000:.1f});"
                f" a station's newest 100 frames in {search:.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
