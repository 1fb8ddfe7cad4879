"""Dashboard and REST API latency with 1,000 stations and 100,000 stored transactions.

Seeds a SQLite database directly (stations with connectors, transactions with meter values
for the most recent ones, the message log, id tags, commands), runs `evse cs` with its web
app in a child process, and requests the dashboard's pages and the API's list and detail
views (random pages, so deep offsets too) from `--clients` concurrent clients. Prints p50,
p99 and max per request kind; the target is p99 under 200 ms.

    python benchmarks/bench_web.py                      # about 30 s
    python benchmarks/bench_web.py --transactions 300000 --requests 500
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from host.cs import storage  # noqa: E402
from host.web import auth, schema  # noqa: E402

T0 = 1_780_000_000.0  # seeded history starts here (2026)


def seed(url: str, stations: int, transactions: int, metered: int, messages: int) -> str:
    """Fill the database; returns an operator token."""
    db = storage.Db(url)
    schema.migrate(db)
    auth.add_user(db, "bench", "operator")
    token = auth.new_token(db, "bench")
    ids = [f"CP{i:05d}" for i in range(stations)]
    db.executemany(
        "INSERT INTO stations (id, approval, registration, vendor, model, online, created,"
        " last_seen) VALUES (?, 'accepted', 'Accepted', 'Bench', 'AC22', ?, ?, ?)",
        [(s, int(i % 10 != 0), storage.now_iso(T0), storage.now_iso()) for i, s in enumerate(ids)],
    )
    statuses = ("Available", "Charging", "Available", "Faulted", "SuspendedEV", "Available")
    db.executemany(
        "INSERT INTO connectors (station, connector_id, status, error_code, timestamp)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (s, c, status, "GroundFailure" if status == "Faulted" else "NoError", storage.now_iso())
            for i, s in enumerate(ids)
            for c in (0, 1, 2)
            for status in [statuses[(i * 3 + c) % len(statuses)] if i % 25 == 0 else "Available"]
        ],
    )
    tags = [f"TAG{i:05d}" for i in range(5000)]
    db.executemany(
        "INSERT INTO id_tags (id_tag, blocked, max_active) VALUES (?, 0, 1)", [(t,) for t in tags]
    )
    rows = []
    for n in range(transactions):
        start = T0 + n * 30
        active = n >= transactions - 200
        rows.append(
            (
                ids[n % stations],
                1 + n % 2,
                tags[n % len(tags)],
                n * 10,
                storage.now_iso(start),
                "Accepted",
                None if active else n * 10 + 12_000,
                None if active else storage.now_iso(start + 3600),
                None if active else "Local",
            )
        )
    db.executemany(
        "INSERT INTO transactions (station, connector_id, id_tag, meter_start, start_time,"
        " auth_status, meter_stop, stop_time, stop_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    values = []
    for tx in range(transactions - metered + 1, transactions + 1):
        station = ids[(tx - 1) % stations]
        samples = [
            {
                "timestamp": storage.now_iso(T0 + tx * 30 + k * 60),
                "sampledValue": [
                    {"value": str(tx * 10 + k * 200), "measurand": "Energy.Active.Import.Register"},
                    {"value": "11000", "measurand": "Power.Active.Import", "unit": "W"},
                ],
            }
            for k in range(60)
        ]
        values += storage.meter_value_rows(station, 1 + (tx - 1) % 2, tx, samples)
    db.executemany(storage.METER_VALUE_SQL, values)
    db.executemany(
        storage.LOG_SQL,
        [
            (ids[n % stations], storage.now_iso(T0 + n), "in" if n % 2 else "out",
             f'[2,"{n}","Heartbeat",{{}}]' if n % 2 else f'[3,"{n - 1}",{{"currentTime":"x"}}]')
            for n in range(messages)
        ],
    )  # fmt: skip
    db.commit()
    db.close()
    return token


def serve(url: str, ports: "multiprocessing.Queue") -> None:
    from host.cs import server
    from host.cs.store import Store
    from host.web import api

    async def main() -> None:
        store = Store(url)
        await store.open()
        cs = server.CentralSystem(store)
        await cs.start("127.0.0.1", 0)
        runner = await api.start(cs, url, "127.0.0.1", 0)
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def listener_cost(frames: int = 50_000) -> None:
    """What the web app's listener adds to each station message on the OCPP event loop."""
    from host.web.live import Live

    energy = "Energy.Active.Import.Register"
    sampled = [{"value": str(i), "measurand": energy} for i in range(10)]
    value = {"timestamp": "2026-01-01T00:00:00Z", "sampledValue": sampled}
    body = json.dumps({"connectorId": 1, "transactionId": 5, "meterValue": [value]})
    pairs = [(f'[2,"{i}","MeterValues",{body}]', f'[3,"{i}",{{}}]') for i in range(frames)]
    for listening in (False, True):
        live = Live()
        if listening:
            live.subscribers.add(asyncio.Queue())  # a dashboard that is never behind
        started = time.perf_counter()
        for request, answer in pairs:
            live("in", "CP1", request)
            live("out", "CP1", answer)
        cost = (time.perf_counter() - started) / frames * 1e6
        who = "one dashboard listening" if listening else "no dashboard listening"
        print(f"listener cost per MeterValues CALL and answer, {who}: {cost:.1f} us")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def measure(base: str, token: str, args: argparse.Namespace) -> dict[str, list[float]]:
    import aiohttp

    rng = random.Random(1)
    stations, transactions = args.stations, args.transactions

    def station() -> str:
        return f"CP{rng.randrange(stations):05d}"

    def metered() -> int:
        return transactions - rng.randrange(args.metered)

    kinds = {
        "dashboard page /": lambda: "/",
        "dashboard script": lambda: "/static/app.js",
        "summary": lambda: "/api/summary",
        "stations page": lambda: f"/api/stations?limit=60&offset={rng.randrange(0, stations, 60)}",
        "stations problems": lambda: "/api/stations?problems=true&limit=60",
        "station detail": lambda: f"/api/stations/{station()}",
        "station commands": lambda: f"/api/stations/{station()}/commands",
        "transactions page": lambda: (
            "/api/transactions?limit=50&offset=" + str(rng.randrange(0, transactions, 50))
        ),
        "transactions active": lambda: "/api/transactions?active=true&limit=50",
        "transactions station": lambda: f"/api/transactions?limit=50&station={station()}",
        "transaction + chart": lambda: f"/api/transactions/{metered()}",
        "meter values page": lambda: f"/api/transactions/{metered()}/meter-values?limit=100",
        "message log": lambda: f"/api/messages?limit=100&offset={rng.randrange(0, 5000, 100)}",
        "message log station": lambda: f"/api/messages?limit=100&station={station()}",
        "id tags page": lambda: f"/api/id-tags?limit=50&offset={rng.randrange(0, 5000, 50)}",
        "metrics": lambda: "/metrics",
    }
    latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base, headers=headers) as session:
        for kind, path in kinds.items():
            queue = [path() for _ in range(args.requests)]

            async def client(paths: list[str], kind: str = kind) -> None:
                while paths:
                    started = time.perf_counter()
                    async with session.get(paths.pop()) as response:
                        await response.read()
                        assert response.status == 200, (kind, response.status)
                    latencies[kind].append(time.perf_counter() - started)

            await asyncio.gather(*(client(queue) for _ in range(args.clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--metered", type=int, default=1000, help="recent transactions with values")
    parser.add_argument("--messages", type=int, default=200_000, help="message log rows")
    parser.add_argument("--requests", type=int, default=300, help="per request kind")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-web-")
    url = f"sqlite:///{directory}/cs.sqlite3"
    try:
        started = time.perf_counter()
        token = seed(url, args.stations, args.transactions, args.metered, args.messages)
        size = os.path.getsize(f"{directory}/cs.sqlite3") / 2**20
        print(
            f"seeded {args.stations} stations, {args.transactions} transactions "
            f"({args.metered} with 60 meter values), {args.messages} log messages: "
            f"{size:.0f} MiB in {time.perf_counter() - started:.1f} s"
        )
        spawn = multiprocessing.get_context("spawn")
        ports = spawn.Queue()
        process = spawn.Process(target=serve, args=(url, ports))
        process.start()
        try:
            port = ports.get(timeout=30)
            latencies = asyncio.run(measure(f"http://127.0.0.1:{port}", token, args))
        finally:
            process.terminate()
            process.join(10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    listener_cost()
    print(f"{args.requests} requests per kind, {args.clients} concurrent clients (ms):")
    print(f"{'request':24} {'p50':>7} {'p99':>7} {'max':>7}")
    everything: list[float] = []
    for kind, values in latencies.items():
        everything += values
        p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
        print(f"{kind:24} {p50:7.1f} {p99:7.1f} {max(values) * 1000:7.1f}")
    worst = max(percentile(values, 0.99) for values in latencies.values())
    print(
        f"all requests: p50 {percentile(everything, 0.5) * 1000:.1f} ms, p99 "
        f"{percentile(everything, 0.99) * 1000:.1f} ms; worst kind's p99 {worst * 1000:.1f} ms "
        f"(target < 200 ms: {'met' if worst < 0.2 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
