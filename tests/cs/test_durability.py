"""A real `evse cs serve` killed with SIGKILL under load, with its database process: what it
answered is stored, and the stations' retransmissions after its restart are stored once."""

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys

import websockets

from host.cs import storage
from host.cs.server import SUBPROTOCOL
from tests.cs.conftest import RAW_BOOT, run, wait_for
from tests.ports import free_port

STATIONS = 8


def serve(url: str, port: int) -> subprocess.Popen:
    """The central system in a process group of its own (it and its database process)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "host", "cs", "serve", "--db", url, "--unknown", "accept"]
        + ["--ocpp-port", str(port), "--http-port", "0", "--web-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert server.stdout is not None
    assert "central system: ws://" in server.stdout.readline()
    return server


async def charge(port: int, station_id: str, sent: list, answered: list) -> None:
    """Transactions one after another, each call recorded when sent and when answered,
    until the connection ends."""
    uids = itertools.count()

    async def call(ws, action, payload):
        request = [2, f"{station_id}-{next(uids)}", action, payload]
        sent.append((station_id, request))
        await ws.send(json.dumps(request))
        answer = json.loads(await ws.recv())
        assert answer[0] == 3, answer
        answered.append((station_id, request, answer[2]))
        return answer[2]

    url = f"ws://127.0.0.1:{port}/ocpp/{station_id}"
    try:
        async with websockets.connect(url, subprotocols=[SUBPROTOCOL]) as ws:
            await ws.send(RAW_BOOT)
            await ws.recv()
            for n in itertools.count():
                time = f"2026-11-26T10:{n // 60 % 60:02d}:{n % 60:02d}Z"
                start = {"connectorId": 1, "idTag": "T", "meterStart": n, "timestamp": time}
                transaction = (await call(ws, "StartTransaction", start))["transactionId"]
                value = [{"timestamp": time, "sampledValue": [{"value": str(n)}]}]
                meter = {"connectorId": 1, "transactionId": transaction, "meterValue": value}
                await call(ws, "MeterValues", meter)
                stop = {"meterStop": n + 1, "timestamp": time, "transactionId": transaction}
                await call(ws, "StopTransaction", stop)
    except (websockets.ConnectionClosed, OSError):
        return


async def retransmit(port: int, station_id: str, requests: list, answered: list) -> None:
    """A station's offline queue, sent again in order once it is back."""
    url = f"ws://127.0.0.1:{port}/ocpp/{station_id}"
    async with websockets.connect(url, subprotocols=[SUBPROTOCOL]) as ws:
        for request in requests:
            await ws.send(json.dumps(request))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert answer[0] == 3, answer
            answered.append((station_id, request, answer[2]))


def stored(url: str) -> tuple[dict, dict]:
    """The transactions by id, and the meter values' samples by (station, timestamp)."""
    db = storage.Db(url)
    try:
        transactions = {t["id"]: t for t in storage.transactions(db)}
        samples: dict = {}
        for sample in storage.meter_value_samples(db):
            samples.setdefault((sample["station"], sample["timestamp"]), []).append(sample)
        return transactions, samples
    finally:
        db.close()


def assert_answered_are_stored(url: str, answered: list) -> dict:
    transactions, samples = stored(url)
    for station_id, (_, _, action, payload), answer in answered:
        if action == "StartTransaction":
            row = transactions[answer["transactionId"]]
            assert (row["station"], row["meter_start"]) == (station_id, payload["meterStart"])
        elif action == "MeterValues":
            (sample,) = samples[(station_id, payload["meterValue"][0]["timestamp"])]
            assert sample["transaction_id"] == payload["transactionId"]
        else:
            assert transactions[payload["transactionId"]]["meter_stop"] == payload["meterStop"]
    return transactions


def test_a_killed_server_loses_nothing_it_answered_and_stores_retransmissions_once(db_url):
    port = free_port()
    sent: list = []
    answered: list = []
    server = serve(db_url, port)
    try:

        async def load_then_kill():
            stations = [
                asyncio.ensure_future(charge(port, f"CP{i}", sent, answered))
                for i in range(STATIONS)
            ]
            await wait_for(lambda: len(answered) >= 30 * STATIONS, timeout=30)
            os.killpg(server.pid, signal.SIGKILL)  # the server and its database process
            await asyncio.wait_for(asyncio.gather(*stations), 10)

        run(load_then_kill())
        server.wait(timeout=10)
        assert_answered_are_stored(db_url, answered)

        server = serve(db_url, port)
        first_answers = {json.dumps(request): answer for _, request, answer in answered}
        queues: dict = {}
        for station_id, request in sent:
            queues.setdefault(station_id, []).append(request)
        again: list = []

        async def stations_return():
            await asyncio.gather(
                *(retransmit(port, s, requests, again) for s, requests in queues.items())
            )

        run(stations_return())
        for _, request, answer in again:
            if json.dumps(request) in first_answers and request[2] == "StartTransaction":
                assert answer == first_answers[json.dumps(request)]  # the same transaction
        transactions = assert_answered_are_stored(db_url, again)
        _, samples = stored(db_url)
        sent_once = {(s, r[2], json.dumps(r[3])) for s, r in sent}  # each call, as first sent
        assert [len(transactions), sum(map(len, samples.values()))] == [
            sum(action == kind for _, action, _ in sent_once)
            for kind in ("StartTransaction", "MeterValues")
        ]
        stopped = {t["id"] for t in transactions.values() if t["stop_time"] is not None}
        assert stopped == {r[3]["transactionId"] for _, r in sent if r[2] == "StopTransaction"}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
