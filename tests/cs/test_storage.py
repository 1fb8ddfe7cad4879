"""Storage against real SQLite and a real PostgreSQL server, through the same code path."""

import asyncio
import json

import pytest

from host.cs import storage
from tests.cs.conftest import run

T0 = "2026-11-26T10:00:00Z"


@pytest.fixture
def db(db_url):
    database = storage.Db(db_url)
    yield database
    database.close()


def test_migrations_run_once_and_reopen_cleanly(db_url):
    first = storage.Db(db_url)
    storage.add_station(first, "CP1")
    first.commit()
    first.close()
    again = storage.Db(db_url)
    assert again.one("SELECT COUNT(*) AS n FROM schema_version")["n"] == len(storage.MIGRATIONS)
    assert storage.get_station(again, "CP1")["approval"] == "accepted"
    again.close()


def test_sqlite_commits_reach_the_disk_and_checkpoint_seldom(tmp_path):
    db = storage.Db(f"sqlite:///{tmp_path}/cs.sqlite3")
    pragma = {
        name: db.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "synchronous", "wal_autocheckpoint")
    }
    db.close()
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL: the WAL is synced at every commit
        "wal_autocheckpoint": storage.WAL_CHECKPOINT_PAGES,
    }


def test_id_tag_info_covers_every_status(db):
    storage.set_id_tag(db, "OK", expiry="2099-01-01T00:00:00Z", max_active=2)
    storage.set_id_tag(db, "OLD", expiry="2000-01-01T00:00:00Z")
    storage.set_id_tag(db, "BAD", blocked=True)
    storage.set_id_tag(db, "KID", parent="BAD")
    assert storage.id_tag_info(db, "OK") == {
        "status": "Accepted",
        "expiryDate": "2099-01-01T00:00:00Z",
    }
    assert storage.id_tag_info(db, "OLD")["status"] == "Expired"
    assert storage.id_tag_info(db, "BAD")["status"] == "Blocked"
    assert storage.id_tag_info(db, "KID") == {"status": "Blocked", "parentIdTag": "BAD"}
    assert storage.id_tag_info(db, "WHO") == {"status": "Invalid"}
    for connector in (1, 2):
        start = {"connectorId": connector, "idTag": "OK", "meterStart": 0, "timestamp": T0}
        assert storage.start_transaction(db, "CP1", start)["idTagInfo"]["status"] == "Accepted"
    assert storage.id_tag_info(db, "OK")["status"] == "ConcurrentTx"  # limit of 2 reached
    assert storage.delete_id_tag(db, "OK") and not storage.delete_id_tag(db, "OK")


def test_transactions_and_meter_values_are_deduplicated(db):
    start = {"connectorId": 1, "idTag": "T", "meterStart": 7, "timestamp": T0}
    first = storage.start_transaction(db, "CP1", start)
    assert storage.start_transaction(db, "CP1", start)["transactionId"] == first["transactionId"]
    other = storage.start_transaction(db, "CP2", start)
    assert other["transactionId"] != first["transactionId"]
    values = [{"timestamp": T0, "sampledValue": [{"value": "1"}, {"value": "2", "phase": "L1"}]}]
    for _ in range(3):
        storage.store_meter_values(db, "CP1", 1, first["transactionId"], values)
    stop = {"transactionId": first["transactionId"], "meterStop": 9, "timestamp": T0}
    storage.stop_transaction(db, "CP1", stop)
    storage.stop_transaction(db, "CP1", dict(stop, meterStop=99))  # retransmitted, ignored
    db.commit()
    (tx,) = storage.list_transactions(db, "CP1")
    assert (tx["meter_start"], tx["meter_stop"], tx["stop_reason"]) == (7, 9, "Local")
    rows = storage.list_meter_values(db, "CP1")
    assert [(r["measurand"], r["phase"], r["value"]) for r in rows] == [
        ("Energy.Active.Import.Register", "", "1"),
        ("Energy.Active.Import.Register", "L1", "2"),
    ]
    assert storage.list_transactions(db, active=True) == [
        t for t in storage.list_transactions(db) if t["station"] == "CP2"
    ]


def test_message_log_is_searchable_by_station_time_and_text(db):
    rows = [
        ("CP1", "2026-11-26T10:00:00.000Z", "in", '[2,"1","Heartbeat",{}]'),
        ("CP2", "2026-11-26T10:00:01.000Z", "in", '[2,"2","Heartbeat",{}]'),
        ("CP1", "2026-11-26T10:00:02.000Z", "out", '[3,"1",{"currentTime":"x"}]'),
    ]
    db.executemany(storage.LOG_SQL, rows)
    assert len(storage.search_messages(db, "CP1")) == 2
    assert len(storage.search_messages(db, since="2026-11-26T10:00:01Z")) == 2
    assert len(storage.search_messages(db, until="2026-11-26T10:00:01Z")) == 1
    assert storage.search_messages(db, contains="currentTime")[0]["direction"] == "out"
    assert [r["station"] for r in storage.search_messages(db, limit=2)] == ["CP2", "CP1"]


def test_command_lifecycle_and_expiry(db):
    live = storage.enqueue_command(db, "CP1", "Reset", {"type": "Soft"}, 60)
    storage.enqueue_command(db, "CP1", "ClearCache", {}, -1)
    storage.enqueue_command(db, "CP2", "ClearCache", {}, 60)
    assert [c["id"] for c in storage.queued_commands(db, ["CP1"])] == [live]
    storage.mark_command(db, live, "sent", uid="u1", sent_at=storage.now_iso())
    storage.mark_command(db, live, "answered", response=json.dumps({"status": "Accepted"}))
    states = [c["state"] for c in storage.list_commands(db, "CP1")]
    assert states == ["answered", "expired"]


def test_station_keys_are_salted_hashes(db):
    storage.add_station(db, "CP1")
    storage.set_station(db, "CP1", security_profile=1, auth_key="secret-key-0001")
    station = storage.get_station(db, "CP1")
    assert "secret-key-0001" not in json.dumps(station)
    assert storage.key_matches(station, "secret-key-0001")
    assert not storage.key_matches(station, "secret-key-0002")


def test_store_batches_and_isolates_a_failing_item(db_url):
    async def scenario():
        store = storage.Store(db_url)
        await store.open()
        try:
            rows = [("CP1", storage.now_iso(), "in", f"frame {i}") for i in range(500)]
            store.write_many(storage.LOG_SQL, rows)

            def broken(db):
                db.execute("INSERT INTO no_such_table VALUES (1)")

            results = await asyncio.gather(
                store.call(storage.add_station, "CP9"),
                store.call(broken),
                store.call(storage.get_station, "CP9"),
                return_exceptions=True,
            )
            assert results[0]["id"] == "CP9"
            assert isinstance(results[1], Exception)
            assert results[2]["id"] == "CP9"
            assert len(await store.call(storage.search_messages, "CP1", limit=1000)) == 500
            assert store.batches < 10  # 503 items, a handful of transactions
        finally:
            await store.close()

    run(scenario())
