"""Storage against real SQLite and a real PostgreSQL server, through the same code path."""

import asyncio
import contextlib
import datetime
import functools
import json
import socket
import sqlite3
import threading
import time
import tracemalloc

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from host.cs import schemas, storage
from host.cs import store as store_module
from host.cs.store import Store, _message, _take
from host.web import queries
from tests.cs.conftest import run, wait_for

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


def test_processes_opening_a_database_at_once_run_each_migration_once(db_url):
    """One connection is paused inside a migration when another reads the version (still
    0); the other must wait for it and then skip it, not run it again. (PostgreSQL: with
    transactions that keep their first snapshot, as some servers are set up.)"""
    migrations = [["CREATE TABLE gadgets (id INTEGER)", "SELECT 'pause'"]]
    waiting_for_lock = None
    if db_url.startswith("postgresql"):
        import psycopg

        admin = psycopg.connect(db_url, autocommit=True)
        isolation = "SET default_transaction_isolation = 'repeatable read'"
        admin.execute(f"ALTER DATABASE {db_url.rsplit('/', 1)[1]} {isolation}")

        def waiting_for_lock():
            query = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            return admin.execute(query).fetchone()[0] > 0

    first, second = storage.Db(db_url), storage.Db(db_url)
    paused, read, release = threading.Event(), threading.Event(), threading.Event()
    first_execute, second_one = first.execute, second.one

    def execute_pausing(text, params=()):
        if text == "SELECT 'pause'":
            paused.set()
            release.wait(10)
        return first_execute(text, params)

    def one_noting_reads(text, params=()):
        row = second_one(text, params)
        read.set()  # it has looked, before the first migration is committed
        return row

    first.execute, second.one = execute_pausing, one_noting_reads
    errors = []

    def migrate(db):
        try:
            db.migrate(migrations, "gadget_version")
        except Exception as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=migrate, args=(db,)) for db in (first, second)]
    try:
        threads[0].start()
        assert paused.wait(10)
        threads[1].start()
        assert read.wait(10)
        if waiting_for_lock:  # it waits for the lock, or fails on the table (no lock)
            deadline = time.monotonic() + 10
            while not waiting_for_lock() and time.monotonic() < deadline and not errors:
                time.sleep(0.01)  # polled, bounded
        release.set()
        for thread in threads:
            thread.join(30)  # bounded: SQLite gives up on a lock after 10 s
        assert errors == []
        assert second.all("SELECT version FROM gadget_version") == [{"version": 1}]
    finally:
        release.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(30)
        if not any(thread.is_alive() for thread in threads):  # else closing would crash it
            first.close()
            second.close()
        if waiting_for_lock:
            admin.close()


def test_an_up_to_date_database_opens_while_another_process_writes(sqlite_url):
    """Opening only reads the version: a CLI command does not queue for the write lock that
    the server's database process takes commit after commit (it would give up after 10 s)."""
    storage.Db(sqlite_url).close()  # created and migrated
    writer = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    writer.execute("BEGIN IMMEDIATE")
    try:
        db = storage.Db(sqlite_url)
        assert db.one("SELECT COUNT(*) AS n FROM stations") == {"n": 0}
        db.close()
    finally:
        writer.rollback()
        writer.close()


def test_a_new_database_opens_while_another_program_holds_its_write_lock(sqlite_url, monkeypatch):
    """Two programs starting at once on a new data directory (the server and a CLI command):
    one holds the write lock, migrating, while the other switches the database to WAL, which
    SQLite does not wait for on its own."""
    writer = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("CREATE TABLE elsewhere (x INTEGER)")  # a write in rollback-journal mode
    retried, opened = threading.Event(), []
    real_sleep = time.sleep

    def noting_sleep(seconds):
        retried.set()
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", noting_sleep)
    opening = threading.Thread(target=lambda: opened.append(storage.Db(sqlite_url)))
    opening.start()
    try:
        assert retried.wait(10)  # it waits for the lock
    finally:
        writer.commit()
        writer.close()
        opening.join(30)
    assert opened, "the database did not open"
    db = opened[0]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.one("SELECT COUNT(*) AS n FROM schema_version")["n"] == len(storage.MIGRATIONS)
    db.close()


def test_sqlite_commits_reach_the_disk(tmp_path):
    db = storage.Db(f"sqlite:///{tmp_path}/cs.sqlite3")
    pragma = {
        name: db.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "synchronous", "wal_autocheckpoint")
    }
    db.close()
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,  # FULL: the WAL is synced at every commit
        "wal_autocheckpoint": 1000,  # short checkpoints: no commit waits long on one
    }


def test_id_tag_info_covers_every_status(db):
    storage.set_id_tag(db, "OK", expiry="2099-01-01T00:00:00Z", max_active=2)
    storage.set_id_tag(db, "OLD", expiry="2000-01-01T00:00:00Z")
    storage.set_id_tag(db, "BAD", blocked=True)
    storage.set_id_tag(db, "KID", parent="BAD")
    assert storage.id_tag_info(db, "OK") == {
        "status": "Accepted",
        "expiryDate": "2099-01-01T00:00:00.000Z",
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


def test_tag_expiries_are_times_in_any_zone_or_form(db):
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    local = "%Y-%m-%dT%H:%M:%S"
    # 3 h ago written at +10:00, and 3 h ahead written at -08:00: as text, each sorts
    # on the wrong side of now
    gone = (now - datetime.timedelta(hours=3) + datetime.timedelta(hours=10)).strftime(local)
    valid = (now + datetime.timedelta(hours=3) - datetime.timedelta(hours=8)).strftime(local)
    storage.set_id_tag(db, "EAST", expiry=gone + "+10:00")
    storage.set_id_tag(db, "WEST", expiry=valid + "-08:00")
    storage.set_id_tag(db, "DAY", expiry="2099-01-01")  # a date alone is its midnight, UTC
    assert storage.id_tag_info(db, "EAST")["status"] == "Expired"
    assert storage.id_tag_info(db, "WEST")["status"] == "Accepted"
    day = storage.id_tag_info(db, "DAY")
    assert day["expiryDate"] == "2099-01-01T00:00:00.000Z"
    schemas.check("Authorize", {"idTagInfo": day}, response=True)
    # a tag saved by an earlier version, its expiry as the operator typed it
    db.execute("UPDATE id_tags SET expiry = ? WHERE id_tag = 'EAST'", (gone + "+10:00",))
    assert storage.id_tag_info(db, "EAST")["status"] == "Expired"


def test_id_tags_are_case_insensitive(db):
    storage.set_id_tag(db, "04A1B2C3D4", max_active=1)
    storage.set_id_tag(db, "kid", parent="04a1b2c3d4")
    storage.set_id_tag(db, "04a1b2c3d4", max_active=1, blocked=False)  # the same tag
    assert [t["id_tag"] for t in storage.list_id_tags(db)] == ["04A1B2C3D4", "kid"]
    assert storage.id_tag_info(db, "04a1B2c3d4")["status"] == "Accepted"
    storage.set_id_tag(db, "04a1b2c3d4", blocked=True)
    assert storage.id_tag_info(db, "KID") == {"status": "Blocked", "parentIdTag": "04a1b2c3d4"}
    storage.set_id_tag(db, "04a1b2c3d4")
    start = {"connectorId": 1, "idTag": "04a1b2c3d4", "meterStart": 0, "timestamp": T0}
    first = storage.start_transaction(db, "CP1", start)
    assert first["idTagInfo"]["status"] == "Accepted"
    # the station's other spelling counts against the tag's limit, and a retransmission
    # in either spelling is the same transaction
    again = storage.start_transaction(db, "CP1", dict(start, idTag="04A1B2C3D4"))
    assert again == first
    other = dict(start, connectorId=2, idTag="04A1B2C3D4")
    assert storage.start_transaction(db, "CP1", other)["idTagInfo"]["status"] == "ConcurrentTx"
    assert storage.delete_id_tag(db, "KID") and not storage.delete_id_tag(db, "kid")


def test_tags_saved_apart_by_case_before_stay_apart(db):
    # an earlier version kept 'ABC' and 'abc' as two tags
    for id_tag, blocked in (("ABC", 1), ("abc", 0)):
        db.execute("INSERT INTO id_tags (id_tag, blocked) VALUES (?, ?)", (id_tag, blocked))
    assert storage.id_tag_info(db, "abc")["status"] == "Accepted"  # as spelled, first
    assert storage.id_tag_info(db, "ABC")["status"] == "Blocked"
    assert storage.delete_id_tag(db, "abc")
    assert [t["id_tag"] for t in storage.list_id_tags(db)] == ["ABC"]


def test_a_start_retransmitted_after_its_tag_was_added_is_the_same_transaction(db):
    start = {"connectorId": 1, "idTag": "abc", "meterStart": 0, "timestamp": T0}
    first = storage.start_transaction(db, "CP1", start)
    assert first["idTagInfo"] == {"status": "Invalid"}
    storage.set_id_tag(db, "ABC")  # the operator adds it before the retransmission
    assert storage.start_transaction(db, "CP1", start)["transactionId"] == first["transactionId"]


def test_an_operator_closes_a_transaction_its_station_never_stops(db):
    """A station replaced mid-charge never stops its transaction: its tag counted it against
    max_active for ever (ConcurrentTx at every start elsewhere)."""
    storage.set_id_tag(db, "T")
    start = {"connectorId": 1, "idTag": "T", "meterStart": 100, "timestamp": T0}
    lost = storage.start_transaction(db, "GONE", start)["transactionId"]
    assert storage.id_tag_info(db, "T")["status"] == "ConcurrentTx"
    assert storage.close_transaction(db, lost) is True
    assert storage.close_transaction(db, lost) is False  # ended already
    assert storage.close_transaction(db, lost + 100) is None  # none such
    (closed,) = [t for t in storage.transactions(db) if t["id"] == lost]
    assert (closed["stop_reason"], closed["meter_stop"]) == (storage.CLOSED_BY_OPERATOR, None)
    assert closed["stop_time"] is not None
    elsewhere = dict(start, timestamp="2026-11-03T00:00:00Z")
    assert storage.start_transaction(db, "CP2", elsewhere)["idTagInfo"]["status"] == "Accepted"
    # The station stops it after all (it came back): its real end is recorded, once
    stop = {"transactionId": lost, "meterStop": 900, "timestamp": T0, "reason": "PowerLoss"}
    for _ in range(2):
        storage.stop_transaction(db, "GONE", stop)
        (stopped,) = [t for t in storage.transactions(db) if t["id"] == lost]
        assert (stopped["stop_reason"], stopped["meter_stop"]) == ("PowerLoss", 900)
    later = dict(stop, meterStop=950, reason="Local")
    storage.stop_transaction(db, "GONE", later)  # a repeated stop changes nothing
    assert [t["meter_stop"] for t in storage.transactions(db) if t["id"] == lost] == [900]


def test_a_stop_for_a_transaction_not_of_its_station_links_its_values_to_none(db):
    start = {"connectorId": 2, "idTag": "T", "meterStart": 0, "timestamp": T0}
    theirs = storage.start_transaction(db, "CP_A", start)["transactionId"]
    values = [{"timestamp": T0, "sampledValue": [{"value": "999"}]}]
    # CP_B stops A's transaction id, then an id not started here (an earlier central
    # system's, from its offline queue): neither is changed, the values are kept
    for transaction in (theirs, theirs + 1):
        stop = {"transactionId": transaction, "meterStop": 9, "timestamp": T0}
        assert storage.stop_transaction(db, "CP_B", dict(stop, transactionData=values)) == {}
    later = storage.start_transaction(db, "CP_A", dict(start, timestamp="2026-11-02T00:00:00Z"))
    db.commit()
    assert later["transactionId"] == theirs + 1
    assert [t["stop_time"] for t in storage.transactions(db)] == [None, None]
    assert list(storage.meter_value_samples(db, None, theirs)) == []
    assert list(storage.meter_value_samples(db, None, theirs + 1)) == []
    # each stop's record is kept for the operator, once however often it comes
    storage.stop_transaction(db, "CP_B", dict(stop, transactionData=values))
    kept = storage.list_notifications(db, "CP_B")
    assert [(n["kind"], json.loads(n["payload"])) for n in kept] == [
        ("StopTransaction", {"transactionId": t, "meterStop": 9, "timestamp": T0})
        for t in (theirs, theirs + 1)
    ]
    for _ in range(2):  # a station's stop of its own transaction, and its repeat: no event
        storage.stop_transaction(db, "CP_A", dict(stop, transactionId=theirs))
    assert storage.list_notifications(db, "CP_A") == []
    kept = list(storage.meter_value_samples(db, "CP_B"))
    assert [(r["transaction_id"], r["connector_id"], r["value"]) for r in kept] == [
        (None, 0, "999")
    ]


def test_a_stop_s_id_tag_info_is_never_concurrent_tx(db):
    # ConcurrentTx is "Only relevant for a StartTransaction.req" (OCPP 1.6 AuthorizationStatus):
    # a tag that stops another's transaction may be charging elsewhere, within its limit
    storage.set_id_tag(db, "DRIVER")
    storage.set_id_tag(db, "SUPERVISOR")
    start = {"connectorId": 1, "idTag": "DRIVER", "meterStart": 0, "timestamp": T0}
    theirs = storage.start_transaction(db, "CP1", start)["transactionId"]
    own = storage.start_transaction(db, "CP1", dict(start, connectorId=2, idTag="SUPERVISOR"))
    assert own["idTagInfo"] == {"status": "Accepted"}
    stop = {"transactionId": theirs, "meterStop": 5, "timestamp": T0, "idTag": "SUPERVISOR"}
    assert storage.stop_transaction(db, "CP1", stop) == {"idTagInfo": {"status": "Accepted"}}
    storage.set_id_tag(db, "SUPERVISOR", blocked=True)  # the other statuses still apply
    assert storage.stop_transaction(db, "CP1", stop)["idTagInfo"]["status"] == "Blocked"


def test_meter_registers_beyond_32_bits_are_stored(db):
    start = {"connectorId": 1, "idTag": "T", "meterStart": 5_000_000_000, "timestamp": T0}
    transaction = storage.start_transaction(db, "CP1", start)["transactionId"]
    stop = {"transactionId": transaction, "meterStop": 5_000_123_456, "timestamp": T0}
    storage.stop_transaction(db, "CP1", stop)
    db.commit()
    (tx,) = storage.transactions(db)
    assert (tx["meter_start"], tx["meter_stop"]) == (5_000_000_000, 5_000_123_456)


@example(datetime.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.UTC))
@given(st.datetimes(min_value=datetime.datetime(1000, 1, 1), timezones=st.just(datetime.UTC)))
def test_normalized_times_keep_every_millisecond(moment):
    text = moment.isoformat()
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert storage.normalize_time(text) == expected


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
    (tx,) = storage.transactions(db, "CP1")
    assert (tx["meter_start"], tx["meter_stop"], tx["stop_reason"]) == (7, 9, "Local")
    assert [*storage.table_columns(db, "transactions"), "energy_wh"] == list(tx)  # its header
    assert tx["energy_wh"] == 2
    rows = list(storage.meter_value_samples(db, "CP1"))
    assert [(r["measurand"], r["phase"], r["value"]) for r in rows] == [
        ("Energy.Active.Import.Register", "", "1"),
        ("Energy.Active.Import.Register", "L1", "2"),
    ]
    assert list(storage.transactions(db, active=True)) == [
        t for t in storage.transactions(db) if t["station"] == "CP2"
    ]


def test_only_energy_samples_default_to_wh(db):
    # OCPP 1.6 SampledValue: the unit's default is "Wh" only "if the (default) measurand is
    # an Energy type"; a voltage without a unit has none
    sampled = [
        {"value": "1"},
        {"value": "2", "measurand": "Energy.Reactive.Import.Interval"},
        {"value": "230", "measurand": "Voltage"},
        {"value": "80", "measurand": "SoC", "unit": "Percent"},
    ]
    storage.store_meter_values(db, "CP1", 1, None, [{"timestamp": T0, "sampledValue": sampled}])
    db.commit()
    units = [r["unit"] for r in storage.meter_value_samples(db, "CP1")]
    assert units == ["Wh", "Wh", "", "Percent"]
    shown = queries._samples({"sampled": json.dumps(sampled)})  # the dashboard's
    assert [s["unit"] for s in shown] == units


def test_exports_read_in_key_order_within_half_open_bounds_in_any_zone(db):
    stamps = {  # station times as sent: UTC with and without fractions, a zone, a leap second
        "CP1": ["2026-11-01T09:59:59.999Z", "2026-11-01T10:00:00Z", "2026-11-01T10:59:59.5Z"],
        "CP2": ["2026-11-01T10:00:00.000Z", "2026-11-01T11:00:00Z", "2026-11-01T11:00:00.001Z"],
        "CP3": [  # 10:30, 11:30 and 10:31 UTC
            "2026-11-01T11:30:00+01:00",
            "2026-11-01T10:30:00-01:00",
            "2026-11-02T10:00:00+23:29",
        ],
        "CP4": ["2026-11-01T10:59:60Z"],
    }
    for station, times in stamps.items():
        for n, stamp in enumerate(times):
            start = {"connectorId": n, "idTag": "T", "meterStart": 0, "timestamp": stamp}
            transaction = storage.start_transaction(db, station, start)["transactionId"]
            values = [{"timestamp": stamp, "sampledValue": [{"value": str(n)}, {"value": "x"}]}]
            storage.store_meter_values(db, station, n, transaction, values)
    db.commit()
    since = storage.normalize_time("2026-11-01T10:00:00Z")
    until = storage.normalize_time("2026-11-01T12:00:00+01:00")  # 11:00 UTC

    def samples(**bounds):
        rows = storage.meter_value_samples(db, **bounds)
        return [(r["timestamp"], r["station"]) for r in rows if r["value"] != "x"]

    assert samples(since=since, until=until) == [  # as text: the key's order
        ("2026-11-01T10:00:00.000Z", "CP2"),
        ("2026-11-01T10:00:00Z", "CP1"),
        ("2026-11-01T10:59:59.5Z", "CP1"),
        ("2026-11-01T10:59:60Z", "CP4"),  # unreadable for Python: compared as text
        ("2026-11-01T11:30:00+01:00", "CP3"),
        ("2026-11-02T10:00:00+23:29", "CP3"),
    ]
    # As text, time order to the second: "...00.001Z" sorts before "...00Z"
    assert samples(station="CP2", since=since) == [(t, "CP2") for t in sorted(stamps["CP2"])]
    assert samples(until=since) == [("2026-11-01T09:59:59.999Z", "CP1")]
    assert [r["timestamp"] for r in storage.meter_value_samples(db)] == sorted(
        [t for times in stamps.values() for t in times for _ in "ab"]  # two samples each
    )
    started = storage.transactions(db, "CP3", since=since, until=until)
    assert [t["start_time"] for t in started] == [
        "2026-11-01T11:30:00+01:00",
        "2026-11-02T10:00:00+23:29",
    ]
    last_second = storage.normalize_time("9999-12-31T23:59:59Z")  # no bound past it
    assert len(list(storage.transactions(db, until=last_second))) == 10  # all
    selected = storage.meter_value_samples(db, transaction=transaction)  # the last one
    assert [(r["transaction_id"], r["station"]) for r in selected] == [(transaction, "CP4")] * 2
    next_year = storage.normalize_time("2027-01-01")
    assert not list(storage.meter_value_samples(db, since=next_year))


def test_an_export_reads_a_page_at_a_time_and_holds_no_transaction_between(db, monkeypatch):
    monkeypatch.setattr(storage, "STREAM_ROWS", 2)
    for n in range(5):
        start = {"connectorId": n, "idTag": "T", "meterStart": 0, "timestamp": T0}
        storage.start_transaction(db, "CP1", start)
    db.commit()
    statements = recording(db, monkeypatch)
    rows = storage.transactions(db)
    assert [next(rows)["connector_id"] for _ in range(3)] == [0, 1, 2]
    assert (
        not db.conn.in_transaction
        if db.dialect == "sqlite"
        else db.conn.info.transaction_status == 0
    )
    assert [r["connector_id"] for r in rows] == [3, 4]
    assert [len(found) for _, _, found in statements] == [2, 2, 1]  # pages, by key


def test_each_page_of_a_time_window_seeks_where_the_last_ended(sqlite_url, monkeypatch):
    """Not from the window's start again: a month's export would read its rows once per
    page."""
    db = storage.Db(sqlite_url)
    monkeypatch.setattr(storage, "STREAM_ROWS", 2)
    for second in range(5):
        values = [{"timestamp": f"2026-11-01T10:00:0{second}Z", "sampledValue": [{"value": "1"}]}]
        storage.store_meter_values(db, "CP1", 1, None, values)
    db.commit()
    statements = recording(db, monkeypatch)
    since, until = (storage.normalize_time(t) for t in ("2026-11-01T10:00Z", "2026-11-01T11:00Z"))
    assert len(list(storage.meter_value_samples(db, since=since, until=until))) == 5
    plans = [
        " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        for sql, params, _ in statements
    ]
    db.close()
    assert len(plans) == 3
    assert all("(timestamp,station,connector_id,digest)>(?,?,?,?)" in plan for plan in plans[1:])


def test_an_export_holds_a_few_rows_at_a_time(db):
    """200,000 samples stream through in far less memory than they take held at once."""
    values = [{"value": str(n), "measurand": "Voltage", "phase": "L1-N"} for n in range(10)]
    rows = storage.meter_value_rows("CP1", 1, None, [{"timestamp": T0, "sampledValue": values}])
    station, connector, transaction, _, _, sampled = rows[0]
    db.executemany(
        "INSERT INTO meter_values (station, connector_id, transaction_id, timestamp, digest,"
        " sampled) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (station, connector, transaction, f"2026-11-01T{n // 3600:02d}:{n // 60 % 60:02d}:"
             f"{n % 60:02d}Z", str(n), sampled)
            for n in range(20_000)
        ],
    )  # fmt: skip
    db.commit()
    tracemalloc.start()
    try:
        count = sum(1 for _ in storage.meter_value_samples(db))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 200_000
    assert peak < 4 << 20  # all at once: 20 MB of rows, their samples over 100 MB more


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


def test_the_action_filter_finds_calls_however_their_json_is_spaced(db):
    rows = [  # the station's own spacing: this firmware's json.dumps puts ", " between items
        ("CP1", "2026-11-26T10:00:00.000Z", "in", '[2, "1", "BootNotification", {}]'),
        ("CP2", "2026-11-26T10:00:01.000Z", "in", '[2,"2","BootNotification",{}]'),
        ("CP1", "2026-11-26T10:00:02.000Z", "in", '[2, "3", "StatusNotification", {}]'),
        (
            "CP1",
            "2026-11-26T10:00:03.000Z",
            "out",
            '[2,"4","TriggerMessage",{"requestedMessage": "BootNotification"}]',
        ),
    ]
    db.executemany(storage.LOG_SQL, rows)
    for station, expected in ((None, ["2", "1"]), ("CP1", ["1"])):
        found = queries.list_messages(
            db, station, None, "BootNotification", None, None, None, 10, 0
        )
        assert [row["uid"] for row in found["items"]] == expected

    def uids(action):
        found = queries.list_messages(db, None, None, action, None, None, None, 10, 0)
        return [row["uid"] for row in found["items"]]

    # The same on both databases: in any case (SQLite's LIKE ignores it, PostgreSQL's did
    # not), and the action as written (a '_' or '%' is itself, not a wildcard)
    assert uids("bootnotification") == ["2", "1"]
    assert uids("Boot_otification") == uids("%Notification") == []


def index_all(db):
    """Run the log indexer's passes until none is due."""
    for _ in range(100):
        if not storage.index_log(db):
            return
        db.commit()
    raise AssertionError("the indexer did not finish")


def frame(station, i, text=None):
    return (station, f"2026-11-26T10:{i // 60:02d}:{i % 60:02d}.000Z", "in", text or f"f{i}")


def passes(db):
    return [row["upto"] for row in db.all("SELECT upto FROM message_passes ORDER BY upto")]


def test_station_search_finds_indexed_and_newest_frames(db, monkeypatch):
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 4)
    frames = [frame(f"CP{i % 3}", i) for i in range(9)]
    db.executemany(storage.LOG_SQL, frames)
    db.commit()
    assert [r["text"] for r in storage.search_messages(db, "CP1")] == ["f1", "f4", "f7"]
    index_all(db)  # two passes; the ninth frame waits for the next
    indexed = db.all("SELECT pass, station, id FROM message_index ORDER BY id")
    assert [(r["pass"], r["station"]) for r in indexed] == [
        (4 if i < 4 else 8, station) for i, (station, *_) in enumerate(frames[:8])
    ]
    assert passes(db) == [4, 8]
    db.executemany(storage.LOG_SQL, [("CP1", "2026-11-26T10:01:00.000Z", "out", "f9")])
    index_all(db)  # too few new frames for a pass
    assert db.one("SELECT COUNT(*) AS n FROM message_index")["n"] == 8
    since = storage.search_messages(db, "CP1", since="2026-11-26T10:00:04Z")
    assert [r["text"] for r in since] == ["f4", "f7", "f9"]
    assert [r["text"] for r in storage.search_messages(db, "CP1")] == ["f1", "f4", "f7", "f9"]
    assert [r["text"] for r in storage.search_messages(db, "CP1", limit=2)] == ["f7", "f9"]


def recording(db, monkeypatch):
    """The statements `db.all` runs from now on, with their parameters and rows."""
    statements = []
    all_rows = db.all

    def record(sql, params=()):
        rows = all_rows(sql, params)
        statements.append((sql, list(params), rows))
        return rows

    monkeypatch.setattr(db, "all", record)
    return statements


def test_a_station_search_seeks_only_the_newest_passes_it_needs(db, monkeypatch):
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    monkeypatch.setattr(storage, "PASSES_PER_QUERY", 2)
    db.executemany(storage.LOG_SQL, [frame(f"CP{i % 2}", i) for i in range(12)])
    index_all(db)  # six passes, each with a frame of CP0 and one of CP1
    db.executemany(storage.LOG_SQL, [frame("CP0", 12, "tail")])
    statements = recording(db, monkeypatch)
    assert [r["text"] for r in storage.search_messages(db, "CP0", limit=3)] == ["f8", "f10", "tail"]
    assert sum("message_index" in sql for sql, *_ in statements) == 1  # the newest two passes
    statements.clear()
    found = storage.search_messages(db, "CP0", limit=100)
    assert [r["text"] for r in found] == ["f0", "f2", "f4", "f6", "f8", "f10", "tail"]
    assert sum("message_index" in sql for sql, *_ in statements) == 3  # all six, two by two
    since = storage.search_messages(db, "CP1", since="2026-11-26T10:00:07Z", contains="f")
    assert [r["text"] for r in since] == ["f7", "f9", "f11"]


def test_a_station_search_in_a_time_window_seeks_only_the_passes_that_overlap_it(db, monkeypatch):
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    monkeypatch.setattr(storage, "PASSES_PER_QUERY", 1)
    db.executemany(storage.LOG_SQL, [frame(f"CP{i % 2}", i) for i in range(12)])
    index_all(db)  # six passes of two frames, two seconds: ids 1-2 at 10:00:00-01, ...
    # A pass indexed before passes noted their times: searched whatever the window
    db.execute("UPDATE message_passes SET first_ts = NULL, last_ts = NULL WHERE upto = 2")
    statements = recording(db, monkeypatch)
    window = {"since": "2026-11-26T10:00:04Z", "until": "2026-11-26T11:00:08+01:00"}
    found = storage.search_messages(db, "CP0", **window)
    assert [r["text"] for r in found] == ["f4", "f6"]
    seeks = [params[0] for sql, params, _ in statements if "message_index" in sql]
    assert seeks == [8, 6, 2]  # 10:00:06-07, 10:00:04-05, and the pass without times
    args = {"direction": None, "action": None, "contains": None, "limit": 10, "offset": 0}
    # "...:04Z" includes the frames of 10:00:04.000-.999 (stored with milliseconds)
    expected = {"CP0": ["f6", "f4"], None: ["f7", "f6", "f5", "f4"]}
    for station, texts in expected.items():
        page = queries.list_messages(db, station, **window, **args)
        assert [m["text"] for m in page["items"]] == texts


def test_the_dashboard_pages_a_station_s_log_across_passes(db, monkeypatch):
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    monkeypatch.setattr(storage, "PASSES_PER_QUERY", 2)
    db.executemany(storage.LOG_SQL, [frame(f"CP{i % 2}", i) for i in range(13)])
    index_all(db)  # six passes, then a frame of CP0 after them

    def page(offset, **filters):
        args = {"direction": None, "action": None, "since": None, "until": None}
        args |= {"contains": None, "limit": 3, "offset": offset} | filters
        return queries.list_messages(db, "CP0", **args)

    statements = recording(db, monkeypatch)
    pages = [page(0), page(3), page(6)]
    assert [[m["text"] for m in p["items"]] for p in pages] == [
        ["f12", "f10", "f8"],
        ["f6", "f4", "f2"],
        ["f0"],
    ]
    assert [p["next_offset"] for p in pages] == [3, 6, None]
    # frames skipped are counted, not read: no statement returns more than a page and one
    assert max(len(rows) for sql, _, rows in statements if "COUNT" not in sql) <= 4
    assert [m["text"] for m in page(1, contains="1")["items"]] == ["f10"]


def test_a_station_search_seeks_and_never_scans(tmp_path, monkeypatch):
    db = storage.Db(f"sqlite:///{tmp_path}/cs.sqlite3")
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    db.executemany(storage.LOG_SQL, [frame(f"CP{i % 2}", i) for i in range(5)])
    index_all(db)
    statements = recording(db, monkeypatch)
    storage.search_messages(db, "CP1", since="2026-11-26T10:00:00Z", limit=10)
    skipped = storage.station_frames(db, "CP1", ["ts >= ?"], [T0], 2, skip=1)
    assert [r["text"] for r in skipped] == ["f1"]  # the tail counted, then a pass skipped into
    plans = [
        (sql, [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)])
        for sql, params, _ in statements
    ]
    db.close()
    assert sum("message_index" in sql for sql, _ in plans) == 3  # a search, a count, a page
    assert [(sql, plan) for sql, plan in plans if any(s.startswith("SCAN") for s in plan)] == []


def test_passes_start_at_the_first_frame_waiting(db, monkeypatch):
    """A jump in ids (a sequence set forward) makes no empty passes for searches to seek."""
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    db.executemany(storage.LOG_SQL, [frame("CP1", i) for i in range(3)])
    db.executemany(
        "INSERT INTO messages (id, station, ts, direction, text) VALUES (?, ?, ?, ?, ?)",
        [(1000 + i, *frame("CP1", 3 + i)) for i in range(5)],
    )
    index_all(db)
    assert passes(db) == [2, 4, 1001, 1003]
    assert len(storage.search_messages(db, "CP1")) == 8


def aged(station, days, i, text):
    """A frame logged `days` and `i` seconds ago."""
    return (station, storage.now_iso(time.time() - days * 86400 + i), "in", text)


def test_retention_deletes_the_oldest_frames_and_the_passes_left_empty(db, monkeypatch):
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    monkeypatch.setattr(storage, "PRUNE_FRAMES", 2)
    old = [aged("CP1", 3, i, f"old{i}") for i in range(5)]
    db.executemany(storage.LOG_SQL, old + [aged("CP1", 0, i, f"new{i}") for i in range(3)])
    index_all(db)
    assert passes(db) == [2, 4, 6, 8]
    assert storage.prune_log(db, 2)  # a full step (frames 1 and 2): more may be due
    assert passes(db) == [4, 6, 8]
    assert storage.prune_log(db, 2)
    assert not storage.prune_log(db, 2)  # frame 5, the last old one
    assert not storage.prune_log(db, 2)
    db.commit()
    assert passes(db) == [6, 8]  # pass 6 keeps frame 6, and its entry for frame 5
    assert db.one("SELECT COUNT(*) AS n FROM message_index")["n"] == 4
    assert [r["text"] for r in storage.search_messages(db, "CP1")] == ["new0", "new1", "new2"]
    assert [r["text"] for r in storage.station_frames(db, "CP1", [], [], 5, skip=2)] == ["new0"]


def test_a_frame_from_a_clock_set_ahead_keeps_only_its_own_pass(db, monkeypatch):
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    ahead = aged("CP1", -30, 0, "ahead")  # logged while the server's clock was 30 days ahead
    db.executemany(storage.LOG_SQL, [ahead] + [aged("CP1", 3, i, f"old{i}") for i in range(5)])
    index_all(db)
    assert passes(db) == [2, 4, 6]
    assert not storage.prune_log(db, 2)
    assert passes(db) == [2]
    assert db.all("SELECT id FROM message_index ORDER BY id") == [{"id": 1}, {"id": 2}]
    assert [r["text"] for r in storage.search_messages(db, "CP1")] == ["ahead"]


def test_retention_can_empty_the_log(db, monkeypatch):
    monkeypatch.setattr(storage, "INDEX_PASS_FRAMES", 2)
    db.executemany(storage.LOG_SQL, [aged("CP1", 3, i, f"old{i}") for i in range(3)])
    index_all(db)
    assert not storage.prune_log(db, 2)
    db.executemany(storage.LOG_SQL, [aged("CP1", 0, i, f"new{i}") for i in range(3)])
    index_all(db)  # the passes start again at the first frame waiting
    assert passes(db) == [5]
    assert [r["text"] for r in storage.search_messages(db, "CP1")] == ["new0", "new1", "new2"]


def test_a_migration_is_applied_whole_or_not_at_all(db_url, monkeypatch):
    monkeypatch.setattr(
        storage, "MIGRATIONS", [*storage.MIGRATIONS, ["CREATE TABLE extra (x INTEGER)", "BAD"]]
    )
    with pytest.raises(Exception):  # noqa: B017 - the driver's own syntax error
        storage.Db(db_url)
    monkeypatch.setattr(
        storage, "MIGRATIONS", [*storage.MIGRATIONS[:-1], ["CREATE TABLE extra (x INTEGER)"]]
    )
    db = storage.Db(db_url)  # the first attempt left no table behind
    assert db.all("SELECT x FROM extra") == []
    db.close()


def test_version_1_databases_get_the_log_index(db_url, monkeypatch):
    monkeypatch.setattr(storage, "MIGRATIONS", storage.MIGRATIONS[:1])
    old = storage.Db(db_url)
    old.executemany(storage.LOG_SQL, [("CP1", T0, "in", "a"), ("CP2", T0, "in", "b")])
    old.commit()
    old.close()
    monkeypatch.undo()
    db = storage.Db(db_url)
    assert db.all("SELECT pass, station, id FROM message_index ORDER BY id") == [
        {"pass": 2, "station": "CP1", "id": 1},
        {"pass": 2, "station": "CP2", "id": 2},
    ]
    assert passes(db) == [2]
    assert [r["text"] for r in storage.search_messages(db, "CP2")] == ["b"]
    db.close()


def test_version_2_databases_keep_only_finished_passes(db_url, monkeypatch):
    """Version 2's indexer wrote a pass's entries before moving its mark: a pass cut short
    left entries past the mark, which the next pass writes again."""
    monkeypatch.setattr(storage, "MIGRATIONS", storage.MIGRATIONS[:2])
    old = storage.Db(db_url)
    old.executemany(storage.LOG_SQL, [frame("CP1", i) for i in range(3)])
    old.execute("UPDATE message_index_upto SET upto = 2")
    old.executemany(
        "INSERT INTO message_index (station, id) VALUES (?, ?)",
        [("CP1", 1), ("CP1", 2), ("CP1", 3)],
    )
    old.commit()
    old.close()
    monkeypatch.undo()
    db = storage.Db(db_url)
    assert db.all("SELECT pass, id FROM message_index ORDER BY id") == [
        {"pass": 2, "id": 1},
        {"pass": 2, "id": 2},
    ]
    assert [r["text"] for r in storage.search_messages(db, "CP1")] == ["f0", "f1", "f2"]
    db.close()


def test_version_3_databases_keep_their_meter_values(db_url, monkeypatch):
    monkeypatch.setattr(storage, "MIGRATIONS", storage.MIGRATIONS[:3])
    old = storage.Db(db_url)
    values = [{"timestamp": T0, "sampledValue": [{"value": "5"}]}]
    storage.store_meter_values(old, "CP1", 1, 7, values)
    storage.store_meter_values(old, "CP2", 1, None, values)
    old.commit()
    old.close()
    monkeypatch.undo()
    db = storage.Db(db_url)
    storage.store_meter_values(db, "CP1", 1, 7, values)  # retransmitted: stored once
    storage.store_meter_values(db, "CP1", 1, 7, [dict(values[0], timestamp="2026-11-26T10:00:01Z")])
    db.commit()
    assert [(r["station"], r["timestamp"]) for r in storage.meter_value_samples(db)] == [
        ("CP1", T0),
        ("CP2", T0),
        ("CP1", "2026-11-26T10:00:01Z"),
    ]
    assert len(list(storage.meter_value_samples(db, transaction=7))) == 2
    assert indexed_columns(db, "meter_values") == {
        ("timestamp", "station", "connector_id", "digest"),  # new rows at the index's end
        ("transaction_id",),
    }
    db.close()


def indexed_columns(db, table):
    """The column lists of a table's indexes (its unique constraints' included)."""
    if db.dialect == "sqlite":
        names = [row[1] for row in db.execute(f"PRAGMA index_list({table})")]
        return {tuple(r[2] for r in db.execute(f"PRAGMA index_info({name})")) for name in names}
    rows = db.all("SELECT indexdef FROM pg_indexes WHERE tablename = ?", (table,))
    return {
        tuple(c.strip().strip('"') for c in r["indexdef"].split("(", 1)[1].rstrip(")").split(","))
        for r in rows
    }


def test_command_lifecycle_and_expiry(db):
    live = storage.enqueue_command(db, "CP1", "Reset", {"type": "Soft"}, 60)
    storage.enqueue_command(db, "CP1", "ClearCache", {}, -1)
    storage.enqueue_command(db, "CP2", "ClearCache", {}, 60)
    assert [c["id"] for c in storage.queued_commands(db, "CP1")] == [live]
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


def test_stations_before_pending_changes_keep_their_settings(db_url, monkeypatch):
    monkeypatch.setattr(storage, "MIGRATIONS", storage.MIGRATIONS[:-1])
    old = storage.Db(db_url)
    storage.add_station(old, "CP1")
    salt = "0123456789abcdef"  # as the version before stored a key (no pending columns)
    old.execute(
        "UPDATE stations SET security_profile = 1, auth_salt = ?, auth_hash = ?",
        (salt, storage.hash_key("secret-key-0001", salt)),
    )
    old.commit()
    old.close()
    monkeypatch.undo()
    db = storage.Db(db_url)
    station = storage.get_station(db, "CP1")
    assert storage.pending_settings(station) is None
    assert station["security_profile"] == 1 and storage.key_matches(station, "secret-key-0001")
    db.close()


def changed(db, station_id, key, value, status):
    """What the station's answer `status` to a ChangeConfiguration does to its record."""
    change = {"key": key, "value": value}
    storage.set_station(
        db, station_id, **storage.station_changes("ChangeConfiguration", change, status)
    )
    return storage.get_station(db, station_id)


def test_changes_answered_reboot_required_are_pending_until_promoted(db):
    storage.add_station(db, "CP1")
    storage.set_station(db, "CP1", security_profile=1, auth_key="secret-key-0001")
    station = changed(db, "CP1", "AuthorizationKey", "secret-key-0002", "RebootRequired")
    assert "secret-key-0002" not in json.dumps(station)
    station = changed(db, "CP1", "AuthorizationKey", "secret-key-0003", "RebootRequired")
    assert storage.key_matches(station, "secret-key-0001")  # current until used
    pending = storage.pending_settings(station)
    assert pending["security_profile"] == 1  # the current one: no profile pending
    assert storage.key_matches(pending, "secret-key-0003")  # replaced the earlier pending key
    assert not storage.key_matches(pending, "secret-key-0002")
    assert [
        (r["auth_key_pending"], r["pending_security_profile"]) for r in storage.list_stations(db)
    ] == [(True, None)]

    station = changed(db, "CP1", "SecurityProfile", "2", "RebootRequired")
    pending = storage.pending_settings(station)
    assert pending["security_profile"] == 2 and storage.key_matches(pending, "secret-key-0003")
    stale = storage.promotion(station)
    changed(db, "CP1", "SecurityProfile", "3", "RebootRequired")
    db.execute(storage.PROMOTE_SQL, stale)  # checked against profile 2: no longer pending
    assert storage.get_station(db, "CP1")["pending_security_profile"] == 3
    station = changed(db, "CP1", "SecurityProfile", "2", "RebootRequired")
    db.execute(storage.PROMOTE_SQL, storage.promotion(station))
    station = storage.get_station(db, "CP1")
    assert storage.pending_settings(station) is None
    assert station["security_profile"] == 2 and storage.key_matches(station, "secret-key-0003")
    shown = queries.get_station(db, "CP1")
    assert (shown["auth_key_pending"], shown["pending_security_profile"]) == (False, None)


def test_an_accepted_change_replaces_a_pending_one(db):
    storage.add_station(db, "CP1")
    storage.set_station(db, "CP1", security_profile=1, auth_key="secret-key-0001")
    changed(db, "CP1", "AuthorizationKey", "secret-key-0002", "RebootRequired")
    changed(db, "CP1", "SecurityProfile", "2", "RebootRequired")
    station = changed(db, "CP1", "AuthorizationKey", "secret-key-0003", "Accepted")
    assert storage.key_matches(station, "secret-key-0003")  # taken at once
    pending = storage.pending_settings(station)
    assert pending["security_profile"] == 2 and storage.key_matches(pending, "secret-key-0003")
    shown = queries.get_station(db, "CP1")
    assert (shown["auth_key_pending"], shown["pending_security_profile"]) == (False, 2)
    station = changed(db, "CP1", "SecurityProfile", "3", "Accepted")
    assert station["security_profile"] == 3 and storage.pending_settings(station) is None
    rejected = {"key": "SecurityProfile", "value": "1"}
    assert storage.station_changes("ChangeConfiguration", rejected, "Rejected") == {}


def test_a_change_sent_and_failed_without_its_answer_is_pending(db):
    # its answer's record lost with the database process (CommandQueue's poll), or left sent
    # by a server that stopped: the station may have taken the change, or not
    storage.add_station(db, "CP1")
    storage.set_station(db, "CP1", security_profile=1, auth_key="secret-key-0001")
    sent = []
    for key, value in (("AuthorizationKey", "secret-key-0002"), ("SecurityProfile", "2")):
        change = {"key": key, "value": value}
        sent.append(storage.enqueue_command(db, "CP1", "ChangeConfiguration", change, 60))
        assert storage.take_command(db, sent[-1], "u")
    waited_for = storage.enqueue_command(db, "CP1", "Reset", {"type": "Soft"}, 60)
    assert storage.take_command(db, waited_for, "v")
    assert storage.fail_lost_commands(db, -1, {waited_for}) == sent
    pending = storage.pending_settings(storage.get_station(db, "CP1"))
    assert pending["security_profile"] == 2 and storage.key_matches(pending, "secret-key-0002")
    assert "secret-key-0002" not in json.dumps(storage.list_commands(db))

    storage.add_station(db, "CP2")
    change = {"key": "AuthorizationKey", "value": "secret-key-0003"}
    taken = storage.enqueue_command(db, "CP2", "ChangeConfiguration", change, 60)
    assert storage.take_command(db, taken, "w")
    never_sent = {"key": "AuthorizationKey", "value": "secret-key-0004"}
    storage.enqueue_command(db, "CP2", "ChangeConfiguration", never_sent, 60)
    storage.after_restart(db)
    pending = storage.pending_settings(storage.get_station(db, "CP2"))
    assert storage.key_matches(pending, "secret-key-0003")
    assert [c["state"] for c in storage.list_commands(db, "CP2")] == ["failed", "queued"]


def test_a_key_or_profile_the_operator_sets_ends_a_pending_one(db):
    # `evse cs station ID --auth-key` after a leak: the key pending from before must not
    # stay valid, nor a profile pending be taken over the operator's
    storage.add_station(db, "CP1")
    storage.set_station(db, "CP1", security_profile=1, auth_key="secret-key-0001")
    changed(db, "CP1", "AuthorizationKey", "secret-key-0002", "RebootRequired")
    storage.set_station(db, "CP1", auth_key="secret-key-0003")
    station = storage.get_station(db, "CP1")
    assert storage.key_matches(station, "secret-key-0003")
    assert storage.pending_settings(station) is None
    changed(db, "CP1", "SecurityProfile", "2", "RebootRequired")
    storage.set_station(db, "CP1", security_profile=1)
    assert storage.pending_settings(storage.get_station(db, "CP1")) is None


def broken(db):
    db.execute("INSERT INTO no_such_table VALUES (1)")


@contextlib.asynccontextmanager
async def opened(url, **options):
    store = Store(url, **options)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def test_the_database_process_indexes_the_log_a_pass_at_a_time(db_url):
    size = storage.INDEX_PASS_FRAMES

    async def scenario():
        async with opened(db_url) as store:
            rows = [(f"CP{i % 7}", storage.now_iso(), "in", f"f{i}") for i in range(2 * size + 1)]
            store.write_many(storage.LOG_SQL, rows)

            async def indexed():
                return await store.call(passes) == [size, 2 * size]

            await wait_for(indexed, timeout=20)
            found = await store.call(storage.search_messages, "CP3", limit=10_000)
            assert [r["text"] for r in found] == [r[3] for r in rows if r[0] == "CP3"]

    run(scenario())


def test_the_database_process_deletes_frames_past_the_retention(db_url):
    db = storage.Db(db_url)
    db.executemany(storage.LOG_SQL, [aged("CP1", 3, i, "old") for i in range(3)])
    db.executemany(storage.LOG_SQL, [aged("CP1", 0, 0, "new")])
    db.commit()
    db.close()

    async def scenario():
        async with opened(db_url, log_days=2) as store:

            async def pruned():
                return [r["text"] for r in await store.call(storage.search_messages)] == ["new"]

            await wait_for(pruned, timeout=20)

    run(scenario())


def test_store_batches_and_isolates_a_failing_item(db_url):
    async def scenario():
        async with opened(db_url) as store:
            rows = [("CP1", storage.now_iso(), "in", f"frame {i}") for i in range(500)]
            store.write_many(storage.LOG_SQL, rows)

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

    run(scenario())


def test_a_new_authorization_key_is_kept_no_longer_than_its_command(db):
    key = "fedcba9876543210fedc"
    expiring, sent = (
        storage.enqueue_command(
            db, "CP1", "ChangeConfiguration", {"key": spelling, "value": key}, ttl
        )
        for spelling, ttl in (("AuthorizationKey", -1), ("authorizationkey", 60))
    )
    storage.mark_command(db, sent, "sent", uid="u", sent_at=storage.now_iso())
    assert storage.queued_commands(db) == []  # the first expired
    storage.after_restart(db)  # the second was left sent
    rows = db.all("SELECT id, state, payload FROM commands ORDER BY id")
    assert [(r["id"], r["state"]) for r in rows] == [(expiring, "expired"), (sent, "failed")]
    assert key not in json.dumps(rows)
    assert [json.loads(r["payload"])["value"] for r in rows] == [storage.SECRET] * 2


def test_a_commit_marker_fails_with_its_own_statements_only(db_url):
    """A message is answered "stored" only if its rows are: a statement that fails fails
    the marker it belongs to, and its other statements are not kept; the others in the
    batch are."""
    bad = "INSERT INTO no_such_table (x) VALUES (?)"

    async def scenario():
        async with opened(db_url) as store:
            loop = asyncio.get_running_loop()
            outcomes = [loop.create_future() for _ in range(4)]

            def done(n, ok, value):
                outcomes[n].set_result(ok)

            since = store.mark()  # more rows than a batch holds: still in its marker's batch
            store.write_many(bad, [(n,) for n in range(store_module.BATCH_ITEMS + 1)])
            store.after_commit(functools.partial(done, 3), since)
            since = store.mark()
            store.write(storage.LOG_SQL, ("CP1", storage.now_iso(), "in", "kept"))
            store.after_commit(functools.partial(done, 0), since)
            since = store.mark()
            store.write(storage.LOG_SQL, ("CP2", storage.now_iso(), "in", "not kept"))
            store.write(bad, (1,))
            store.after_commit(functools.partial(done, 1), since)
            store.write(bad, (2,))  # no message's own: logged
            since = store.mark()
            store.after_commit(functools.partial(done, 2), since)
            assert await asyncio.gather(*outcomes) == [True, False, True, False]
            frames = await store.call(storage.search_messages)
            assert [r["text"] for r in frames] == ["kept"]

    run(scenario())


def test_the_store_reports_a_database_it_cannot_open(tmp_path):
    async def scenario():
        store = Store(f"sqlite:///{tmp_path}/no/such/dir/cs.sqlite3")
        with pytest.raises(Exception, match="unable to open"):
            await store.open()

    run(scenario())


def test_closing_the_store_ends_its_database_process(sqlite_url):
    async def scenario():
        store = Store(sqlite_url)
        await store.open()
        process = store._process
        assert process is not None and process.returncode is None
        await store.close()
        assert process.returncode == 0

    run(scenario())


def test_the_store_refuses_functions_the_database_process_cannot_import(sqlite_url):
    async def scenario():
        async with opened(sqlite_url) as store:
            with pytest.raises(TypeError, match="module-level functions only"):
                store.submit(lambda db: None, (), lambda ok, value: None)

    run(scenario())


def slow(db, seconds=0.5):
    time.sleep(seconds)


def test_a_database_process_that_dies_fails_its_work_and_is_replaced(sqlite_url):
    async def scenario():
        async with opened(sqlite_url) as store:
            calls = [asyncio.ensure_future(store.call(slow, 60))]  # until killed
            await wait_for(lambda: len(store._in_flight) == 1)
            for n in range(2, 7):  # each in a batch of its own, behind the slow one
                calls.append(asyncio.ensure_future(store.call(storage.get_station, "CP1")))
                await wait_for(lambda n=n: len(store._in_flight) == n)
            dead = store._process
            assert dead is not None
            dead.kill()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(r, storage.StorageError) for r in results), results
            assert (await store.call(storage.add_station, "CP1"))["id"] == "CP1"
            assert store._process is not dead and dead.returncode is not None

    run(scenario())


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data directory that a test takes away (an unmounted disk, say); the store tries
    to start its database process again every 50 ms."""
    monkeypatch.setattr(store_module, "RESTART_DELAY_S", 0.05)
    data = tmp_path / "data"
    data.mkdir()
    return data


async def take_away(store, data):
    """The data directory goes, and the database process dies."""
    data.rename(data.with_name("away"))
    dead = store._process
    assert dead is not None
    dead.kill()
    await wait_for(lambda: dead.returncode is not None)


def test_the_database_process_is_started_again_until_the_database_is_back(data_dir):
    async def scenario():
        async with opened(f"sqlite:///{data_dir}/cs.sqlite3") as store:
            await take_away(store, data_dir)
            # while it is away, work fails at each failed start (it does not pile up)
            with pytest.raises(storage.StorageError, match="unable to open"):
                await asyncio.wait_for(store.call(storage.get_station, "CP1"), 5)
            data_dir.with_name("away").rename(data_dir)

            async def works():
                try:
                    return await store.call(storage.add_station, "CP1")
                except storage.StorageError:
                    return False

            await wait_for(works, timeout=10)

    run(scenario())


def test_closing_the_store_while_its_database_is_down_fails_what_waits(data_dir):
    async def scenario():
        store = Store(f"sqlite:///{data_dir}/cs.sqlite3")
        await store.open()
        await take_away(store, data_dir)
        await wait_for(lambda: store._restart is not None)
        waiting = asyncio.ensure_future(store.call(storage.get_station, "CP1"))
        await asyncio.wait_for(store.close(), 10)
        with pytest.raises(storage.StorageError):
            await asyncio.wait_for(waiting, 5)

    run(scenario())


def test_the_database_process_takes_batches_while_it_works(sqlite_url, monkeypatch):
    """Batches sent while a transaction runs do not wait in the server for the socket's
    small buffer: the database process takes them at once, and commits them all, in groups
    of at most GROUP_BYTES."""
    monkeypatch.setattr(store_module, "BATCH_ITEMS", 200)

    async def scenario():
        async with opened(sqlite_url) as store:
            busy = asyncio.ensure_future(store.call(slow, 6.0))
            await wait_for(lambda: store._in_flight)  # the slow call's batch is out
            big = "x" * 20_000
            for i in range(600):  # 12 MB in three batches (BATCH_ITEMS), each a group
                store.write(storage.LOG_SQL, ("CP1", T0, "in", f"{i} {big}"))
                if i % 200 == 199:  # a message's marker: a batch starts when enough wait
                    store.after_commit(lambda ok, value: None)
            assert len(store._in_flight) == 4  # the slow call's and three
            assert store.queued == 604  # the metric counts what is sent, not committed
            stored = asyncio.ensure_future(store.call(storage.search_messages, "CP1", limit=700))
            transport = store._transport
            assert transport is not None
            await wait_for(lambda: transport.get_write_buffer_size() == 0, timeout=4.0)
            assert not busy.done()
            await busy
            assert len(await stored) == 600
            assert store.queued == 0

    run(scenario())


def test_the_database_process_holds_a_bounded_backlog(monkeypatch):
    """Its inbox read whatever came: with a server sending faster than it commits (a station
    flooding frames, each logged), the database process grew by gigabytes. It stops reading
    at INBOX_BYTES, so the socket fills (and the server stops reading its stations), and
    reads on at the next take."""
    monkeypatch.setattr(store_module, "INBOX_BYTES", 1 << 20, raising=False)
    ours, theirs = socket.socketpair()
    inbox = store_module._Inbox(theirs)
    inbox.start()
    ours.settimeout(1.0)
    chunk, sent = b"x" * (256 << 10), 0
    with contextlib.suppress(TimeoutError):
        while sent < 64 << 20:
            sent += ours.send(chunk)
    assert sent < 16 << 20  # what the inbox and the socket hold, not all 64 MB
    assert len(inbox._received) <= 2 << 20
    taken = len(inbox.take(1.0) or b"")
    ours.sendall(chunk)  # read on
    ours.close()
    while (data := inbox.take(1.0)) is not None:
        taken += len(data)
    assert taken == sent + len(chunk)
    inbox.join(5)
    theirs.close()


def peak_memory(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmHWM:"))


def test_the_database_process_takes_no_more_than_it_can_commit(sqlite_url, monkeypatch):
    """It took everything its inbox held at each group, GROUP_BYTES committed and the rest
    kept: sent faster than it commits, the batches piled up in its memory (gigabytes with a
    station flooding frames)."""
    monkeypatch.setattr(store_module, "BATCH_ITEMS", 20)  # batches of 2 MB

    async def scenario():
        async with opened(sqlite_url) as store:
            assert store._process is not None
            big = "x" * 100_000
            for i in range(2000):  # 200 MB, sent at once
                store.write(storage.LOG_SQL, ("CP1", T0, "in", f"{i} {big}"))
                store.after_commit(lambda ok, value: None)
            await store.flush()
            assert peak_memory(store._process.pid) < 200 << 20  # not all 200 MB and more

    run(scenario(), 120)


def test_take_cuts_whole_messages_up_to_a_limit():
    partial = _message("partial")[:5]
    buffer = bytearray(b"".join(_message(["batch", n]) for n in range(3)) + partial)
    assert _take(buffer, limit=1) == [["batch", 0]]
    assert _take(buffer, limit=1 << 20) == [["batch", 1], ["batch", 2]]
    assert buffer == partial and _take(buffer) == []


def test_work_that_cannot_be_sent_fails_alone(sqlite_url):
    async def scenario():
        async with opened(sqlite_url) as store:
            with pytest.raises(storage.StorageError, match="could not be sent"):
                await store.call(storage.get_station, threading.Lock())
            assert (await store.call(storage.add_station, "CP1"))["id"] == "CP1"

    run(scenario())


def test_a_failing_statement_costs_only_itself(sqlite_url):
    async def scenario():
        async with opened(sqlite_url) as store:
            store.write("INSERT INTO no_such_table VALUES (?)", (1,))
            store.write(storage.LOG_SQL, ("CP1", T0, "in", "kept"))
            added = store.call(storage.add_station, "CP1")
            assert (await added)["id"] == "CP1"
            assert [r["text"] for r in await store.call(storage.search_messages)] == ["kept"]

    run(scenario())


def test_searches_for_a_part_find_the_same_on_both_databases(db):
    """The dashboard's and the CLI's searches by part of a station id, a tag or a frame's
    text: in any case (ids and tags are CiStrings; SQLite's LIKE ignores case, PostgreSQL's
    does not), and the text as written (PostgreSQL's LIKE takes a backslash as an escape)."""
    for station in ("CP1", "CPX1"):
        storage.add_station(db, station)
    storage.set_id_tag(db, "TagA")
    quoted = '[2,"a","DataTransfer",{"vendorId":"V","data":"say \\"hi\\""}]'
    db.execute(storage.LOG_SQL, ("CP1", storage.now_iso(), "in", quoted))
    db.execute(storage.LOG_SQL, ("CP1", storage.now_iso(), "in", '[2,"b","Heartbeat",{}]'))
    percent = '[2,"c","Heartbeat",{"x":"50%"}]'
    db.execute(storage.LOG_SQL, ("CPX1", storage.now_iso(), "in", percent))
    db.commit()

    def stations(q):
        return [row["id"] for row in queries.list_stations(db, q, None, False, 10, 0)["items"]]

    def texts(contains, station=None):
        return [row["text"] for row in storage.search_messages(db, station, contains=contains)]

    assert stations("cp") == ["CP1", "CPX1"]
    assert stations("P_1") == []  # a '_' is itself, not any character
    assert [row["id_tag"] for row in queries.list_id_tags(db, "taga", 10, 0)["items"]] == ["TagA"]
    assert texts('\\"') == texts("\\") == [quoted]
    assert texts("heartbeat", "CP1") == ['[2,"b","Heartbeat",{}]']
    assert texts("0%") == [percent]
    found = queries.list_messages(db, None, None, None, None, None, '"HI\\"', 10, 0)
    assert [row["text"] for row in found["items"]] == [quoted]


def test_a_lower_profile_pending_is_neither_checked_nor_made_current(db):
    # The whitepaper has a station reject a lower SecurityProfile: one answered
    # RebootRequired anyway must not lower the station's with the key pending beside it
    storage.add_station(db, "CP1")
    storage.set_station(db, "CP1", security_profile=2, auth_key="secret-key-0001")
    changed(db, "CP1", "SecurityProfile", "0", "RebootRequired")
    station = changed(db, "CP1", "AuthorizationKey", "secret-key-0002", "RebootRequired")
    pending = storage.pending_settings(station)
    assert pending["security_profile"] == 2 and storage.key_matches(pending, "secret-key-0002")
    db.execute(storage.PROMOTE_SQL, storage.promotion(station))
    station = storage.get_station(db, "CP1")
    assert station["security_profile"] == 2 and storage.key_matches(station, "secret-key-0002")
    assert storage.pending_settings(station) is None
