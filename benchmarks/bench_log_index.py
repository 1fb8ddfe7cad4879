"""The frame log's station index (host/cs/storage.py: index_log, station_frames) after a
long history.

The index is keyed by pass first, so that a pass appends at its end. The baseline is the
same index keyed by station first (the layout before), where each pass writes into every
station's pages, all over an index that grows with the history. Both run the same
index_log; only the table's key differs, and each is searched its own way (ours: the passes
newest first until there are enough; the baseline: one seek by station, all its frames).

For each history (frames logged and indexed, over 10,000 stations) it indexes 100,000 more
frames, a committed and synced pass at a time as in the server's database process, and
prints the wall and CPU time per 100,000 frames, the median and longest pass (the time a
batch may wait behind one), and how long a search for a station's newest 100 frames takes.
Both layouts must find the same frames. Then, on ours, a station's frames in a ten-second
window a fifth of the way into the history (frames logged at 20,000 a second): seeking only
the passes that overlap the window, against every pass newer than it, as when passes did
not note their times (the same search with the times removed).

    .venv/bin/python benchmarks/bench_log_index.py                      # about 6 min
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
SEARCHES = 20
RATE = 20_000  # frames logged per second, at 10,000 msg/s
WINDOW_S = 10
TEXT = '[2,"1","Heartbeat",{}]'
# The baseline's search, as before: one seek by station, then the frames after the passes
STATION_FIRST_SQL = (
    "SELECT * FROM messages WHERE id IN (SELECT id FROM message_index WHERE station = ?"
    " UNION ALL SELECT id FROM messages WHERE station = ?"
    " AND id > (SELECT COALESCE(MAX(upto), 0) FROM message_passes)) ORDER BY id DESC LIMIT 100"
)
LAYOUTS = {"pass first": "pass, station, id", "station first (baseline)": "station, id, pass"}


def prepared(path: str, key: str, history: int) -> storage.Db:
    """A log of `history` frames, indexed in passes, then MEASURED frames to index."""
    db = storage.Db(f"sqlite:///{path}")
    db.execute("DROP TABLE message_index")
    db.execute(
        "CREATE TABLE message_index (pass BIGINT NOT NULL, station TEXT NOT NULL,"
        f" id BIGINT NOT NULL, PRIMARY KEY ({key})) WITHOUT ROWID"
    )
    rng = random.Random(1)  # the same frames for each layout
    size = storage.INDEX_PASS_FRAMES
    order = [("pass", "station", "id").index(name) for name in key.split(", ")]
    for first in range(1, history + MEASURED + 1, FILL_FRAMES):
        ids = range(first, min(first + FILL_FRAMES, history + MEASURED + 1))
        stations = [f"CP{rng.randrange(STATIONS):05d}" for _ in ids]
        db.executemany(
            "INSERT INTO messages (id, station, ts, direction, text) VALUES (?, ?, ?, 'in', ?)",
            [(i, name, logged(i), TEXT) for i, name in zip(ids, stations, strict=True)],
        )
        if first <= history:  # indexed as the passes would have
            entries = [(-(-i // size) * size, s, i) for i, s in zip(ids, stations, strict=True)]
            entries.sort(key=lambda entry: [entry[k] for k in order])
            db.executemany("INSERT INTO message_index VALUES (?, ?, ?)", entries)
            passes = range(-(-ids[0] // size) * size, ids[-1] + 1, size)
            db.executemany(
                "INSERT INTO message_passes (upto, first_ts, last_ts) VALUES (?, ?, ?)",
                [(p, logged(p - size + 1), logged(p)) for p in passes],
            )
        db.commit()
    return db


def logged(frame: int) -> str:
    """When the frame was logged: RATE frames a second from the first."""
    return storage.now_iso(1_793_000_000 + frame / RATE)


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


def searched(db: storage.Db, key: str) -> tuple[float, list[list[int]]]:
    """Milliseconds per search of a station's newest 100 frames, and the ids found."""
    stations = [f"CP{n:05d}" for n in random.Random(2).sample(range(STATIONS), SEARCHES)]
    found = []
    start = time.perf_counter()
    for name in stations:
        if key == LAYOUTS["pass first"]:
            rows = storage.search_messages(db, name, limit=100)[::-1]
        else:
            rows = db.all(STATION_FIRST_SQL, (name, name))
        found.append([row["id"] for row in rows])
    return (time.perf_counter() - start) * 1000 / SEARCHES, found


def searched_window(db: storage.Db, history: int) -> tuple[float, list[list[int]]]:
    """Milliseconds per search of a station's frames in a window of WINDOW_S seconds a
    fifth of the way into the history, and the ids found."""
    stations = [f"CP{n:05d}" for n in random.Random(3).sample(range(STATIONS), SEARCHES)]
    since = history // 5
    window = {"since": logged(since), "until": logged(since + WINDOW_S * RATE)}
    found = []
    start = time.perf_counter()
    for name in stations:
        found.append([row["id"] for row in storage.search_messages(db, name, **window)])
    return (time.perf_counter() - start) * 1000 / SEARCHES, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--history", type=int, nargs="+", default=[1_000_000, 10_000_000])
    args = parser.parse_args()
    print(
        f"log index: passes of {storage.INDEX_PASS_FRAMES:,} frames over {STATIONS:,} stations,"
        " each committed and synced"
    )
    for history in args.history:
        results = []
        for name, key in LAYOUTS.items():
            with tempfile.TemporaryDirectory() as scratch:
                db = prepared(os.path.join(scratch, "cs.sqlite3"), key, history)
                wall, cpu, passes = timed_passes(db)
                search_ms, found = searched(db, key)
                print(
                    f"log index: after {history:,} frames, {name}: {MEASURED:,} frames indexed"
                    f" in {wall * 1000:.0f} ms (CPU {cpu * 1000:.0f} ms), a pass"
                    f" {passes[len(passes) // 2] * 1000:.1f} ms (longest"
                    f" {passes[-1] * 1000:.1f}); a station's newest 100 frames in"
                    f" {search_ms:.1f} ms",
                    flush=True,
                )
                if key == LAYOUTS["pass first"]:
                    window_ms, in_window = searched_window(db, history)
                    db.execute("UPDATE message_passes SET first_ts = NULL, last_ts = NULL")
                    every_ms, in_every = searched_window(db, history)
                    if in_window != in_every or not all(in_window):
                        sys.exit("log index: the window searches found different frames")
                    print(
                        f"log index: after {history:,} frames, a station's frames in"
                        f" {WINDOW_S} s a fifth of the way in: {window_ms:.1f} ms seeking"
                        f" the passes that overlap the window, {every_ms:.1f} ms seeking"
                        " every newer pass (passes without times)",
                        flush=True,
                    )
                db.close()
            results.append(found)
        if results[0] != results[1] or not all(results[0]):
            sys.exit("log index: the two layouts found different frames")


if __name__ == "__main__":
    main()
