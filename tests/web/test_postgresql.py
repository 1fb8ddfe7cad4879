"""The web app on PostgreSQL: the same queries and flows as on SQLite, through a real server."""

import os
from collections.abc import Iterator

import pytest

from tests.cs.conftest import postgres  # noqa: F401 - the session's PostgreSQL server
from tests.web.conftest import LiveCS, wait_until


@pytest.fixture
def live_pg(postgres: str) -> Iterator[LiveCS]:  # noqa: F811
    import psycopg

    name = f"web{os.getpid()}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    cs = LiveCS(postgres.rsplit("/", 1)[0] + "/" + name)
    try:
        yield cs
    finally:
        cs.close()


def test_dashboard_queries_and_remote_start_on_postgresql(live_pg: LiveCS) -> None:
    live = live_pg
    assert live.request("PUT", "/api/id-tags/PGTAG", {"max_active": 1}).status == 200
    with live.station("PG-1") as station:
        wait_until(lambda: live.request("GET", "/api/stations/PG-1").json()["online"])
        live.run(station.status(2, "Faulted", "GroundFailure"))
        body = {
            "action": "RemoteStartTransaction",
            "payload": {"connectorId": 1, "idTag": "PGTAG"},
            "wait_s": 20,
        }
        command = live.request("POST", "/api/stations/PG-1/commands", body).json()
        tx_id = command["transaction_id"]
        assert command["state"] == "answered" and isinstance(tx_id, int)
        wait_until(lambda: len(live.request("GET", f"/api/transactions/{tx_id}").json()["series"]))
        summary = live.request("GET", "/api/summary").json()
        assert summary["online"] == 1 and summary["faulted_connectors"] == 1
        assert summary["active_transactions"] == 1
        problems = live.request("GET", "/api/stations?problems=true").json()
        assert [s["id"] for s in problems["items"]] == ["PG-1"] and problems["total"] == 1
        assert problems["items"][0]["connectors"][2]["faulted"] is True
        active = live.request("GET", "/api/transactions?active=true").json()["items"]
        assert [t["id"] for t in active] == [tx_id]
        values = live.request("GET", f"/api/transactions/{tx_id}/meter-values").json()
        assert values["items"][0]["sampled"][0]["measurand"] == "Energy.Active.Import.Register"
        log = live.request("GET", "/api/messages?station=PG-1&action=StartTransaction").json()
        assert [m["action"] for m in log["items"]] == ["StartTransaction"]
        commands = live.request("GET", "/api/commands?station=PG-1&state=answered").json()
        assert commands["items"][0]["response"] == {"status": "Accepted"}
        assert live.request("GET", "/metrics").status == 200
        tags = live.request("GET", "/api/id-tags?q=PG").json()
        assert tags["total"] == 1 and tags["items"][0]["blocked"] is False


def test_the_dashboards_reads_come_back_after_the_database_drops_them(postgres: str) -> None:  # noqa: F811
    """A PostgreSQL restart (or failover) breaks every open connection: the reader's threads
    must open new ones rather than answer 500 until the central system is restarted."""
    import asyncio

    import psycopg

    from host.web.api import Reader
    from host.web.queries import summary

    name = f"reader{os.getpid()}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    reader = Reader(postgres.rsplit("/", 1)[0] + "/" + name, threads=1)

    async def scenario() -> None:
        assert (await reader.call(summary))["stations"] == 0
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        with pytest.raises(psycopg.OperationalError):  # the read that finds it lost
            await reader.call(summary)
        assert (await reader.call(summary))["stations"] == 0

    try:
        asyncio.run(scenario())
    finally:
        reader.close()
