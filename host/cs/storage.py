"""Central-system storage: one code path for SQLite (default) and PostgreSQL (by URL).

Every query is a plain function of a `Db` (a DB-API connection plus its dialect), so the
CLI calls them directly while the server runs them in `Store`, which owns one database thread
and applies queued work in batches: one transaction per batch, many messages per commit.
"""

import asyncio
import concurrent.futures
import datetime
import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

log = logging.getLogger("evse.cs")

COMMAND_STATES = ("queued", "sent", "answered", "expired", "failed")
APPROVALS = ("accepted", "pending", "rejected")


class StorageError(Exception):
    """A database URL or stored record that cannot be used."""


# The last formatted second and millisecond, reused: the server asks for the time several
# times per message, many messages per millisecond, and formatting costs more than the rest.
_second_text = [-1, ""]
_milli_text = [-1, ""]


def now_iso(seconds: float | None = None) -> str:
    """UTC time as ISO-8601 text with milliseconds; sorts in time order as text."""
    t = time.time() if seconds is None else seconds
    milli = int(t * 1000)
    if milli == _milli_text[0]:
        return _milli_text[1]
    whole = milli // 1000
    if whole != _second_text[0]:
        _second_text[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    text = f"{_second_text[1]}.{milli % 1000:03d}Z"
    _milli_text[:] = [milli, text]
    return text


def normalize_time(text: str) -> str:
    """Any ISO-8601 time (naive = UTC) in the stored format, so text comparison is time
    order. Raises ValueError naming the text when it is not a time."""
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return now_iso(parsed.timestamp())


# Each migration is a list of statements; `{id}` becomes the dialect's auto-increment key.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE stations (
            id TEXT PRIMARY KEY, approval TEXT NOT NULL, registration TEXT,
            security_profile INTEGER NOT NULL DEFAULT 0, auth_salt TEXT, auth_hash TEXT,
            vendor TEXT, model TEXT, serial TEXT, firmware TEXT, iccid TEXT, imsi TEXT,
            meter_type TEXT, meter_serial TEXT, boot_at TEXT, last_seen TEXT,
            online INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL)""",
        """CREATE TABLE connectors (
            station TEXT NOT NULL, connector_id INTEGER NOT NULL, status TEXT, error_code TEXT,
            info TEXT, vendor_id TEXT, vendor_error_code TEXT, timestamp TEXT,
            PRIMARY KEY (station, connector_id))""",
        """CREATE TABLE status_history (
            id {id}, station TEXT NOT NULL, connector_id INTEGER NOT NULL, status TEXT,
            error_code TEXT, info TEXT, vendor_id TEXT, vendor_error_code TEXT,
            timestamp TEXT, received TEXT NOT NULL)""",
        "CREATE INDEX status_history_station ON status_history (station, received)",
        """CREATE TABLE id_tags (
            id_tag TEXT PRIMARY KEY, parent TEXT, expiry TEXT,
            blocked INTEGER NOT NULL DEFAULT 0, max_active INTEGER NOT NULL DEFAULT 1)""",
        """CREATE TABLE transactions (
            id {id}, station TEXT NOT NULL, connector_id INTEGER NOT NULL, id_tag TEXT NOT NULL,
            meter_start INTEGER NOT NULL, start_time TEXT NOT NULL, reservation_id INTEGER,
            auth_status TEXT NOT NULL, meter_stop INTEGER, stop_time TEXT, stop_reason TEXT,
            stop_id_tag TEXT,
            UNIQUE (station, connector_id, id_tag, start_time, meter_start))""",
        "CREATE INDEX transactions_active ON transactions (id_tag, stop_time)",
        # One row per MeterValue (a timestamp and its sampled values, as JSON): ten times
        # fewer rows than one per sample; `digest` recognises a retransmitted MeterValue.
        """CREATE TABLE meter_values (
            station TEXT NOT NULL, connector_id INTEGER NOT NULL, transaction_id INTEGER,
            timestamp TEXT NOT NULL, digest TEXT NOT NULL, sampled TEXT NOT NULL,
            UNIQUE (station, connector_id, timestamp, digest))""",
        "CREATE INDEX meter_values_transaction ON meter_values (transaction_id)",
        """CREATE TABLE messages (
            id {id}, station TEXT NOT NULL, ts TEXT NOT NULL, direction TEXT NOT NULL,
            text TEXT NOT NULL)""",
        "CREATE INDEX messages_station_ts ON messages (station, ts)",
        """CREATE TABLE notifications (
            id {id}, station TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
            received TEXT NOT NULL)""",
        "CREATE INDEX notifications_station ON notifications (station, kind)",
        """CREATE TABLE commands (
            id {id}, station TEXT NOT NULL, action TEXT NOT NULL, payload TEXT NOT NULL,
            state TEXT NOT NULL, created TEXT NOT NULL, expires TEXT NOT NULL, uid TEXT,
            sent_at TEXT, answered_at TEXT, response TEXT, error TEXT)""",
        "CREATE INDEX commands_state ON commands (state, station)",
    ],
]


WAL_CHECKPOINT_PAGES = 10_000  # SQLite's default is 1,000 (pages of 4 KiB)


class Db:
    """A DB-API connection and the few dialect differences between SQLite and PostgreSQL."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith(("postgresql://", "postgres://")):
            import psycopg

            self.dialect = "postgresql"
            self.conn: Any = psycopg.connect(url)
            self.auto_id = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
        else:
            path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else url
            if not path:
                raise StorageError(f"no database file in {url!r}")
            self.dialect = "sqlite"
            self.conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # Every commit reaches the disk before it returns (the WAL is synced), so what a
            # station was answered survives a power cut too. The server commits off the
            # event loop, many messages at a time (Store), so this costs it no CPU.
            self.conn.execute("PRAGMA synchronous=FULL")
            # Copy the WAL into the database every 40 MiB instead of 4: the raw frame log's
            # per-station index changes leaf pages all over, and a page rewritten by many
            # commits between two checkpoints is copied once (a third less commit CPU).
            self.conn.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self.auto_id = "INTEGER PRIMARY KEY AUTOINCREMENT"
        self._sql: dict[str, str] = {}
        self.migrate()

    def sql(self, text: str) -> str:
        """Our statements use `?` placeholders; psycopg wants `%s`."""
        if self.dialect == "sqlite":
            return text
        converted = self._sql.get(text)
        if converted is None:
            converted = self._sql[text] = text.replace("%", "%%").replace("?", "%s")
        return converted

    def execute(self, text: str, params: Iterable[Any] = ()) -> Any:
        return self.conn.execute(self.sql(text), tuple(params))

    def executemany(self, text: str, rows: list[tuple]) -> None:
        cursor = self.conn.cursor()
        cursor.executemany(self.sql(text), rows)

    def all(self, text: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.execute(text, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def one(self, text: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        rows = self.all(text, params)
        return rows[0] if rows else None

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> None:
        self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = self.one("SELECT MAX(version) AS v FROM schema_version")
        current = (row or {}).get("v") or 0
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                self.execute(statement.replace("{id}", self.auto_id))
            self.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        self.commit()


def database_url(data_dir: str | None, db_url: str | None) -> str:
    if db_url:
        return db_url
    directory = data_dir or "cs-data"
    os.makedirs(directory, exist_ok=True)
    return "sqlite:///" + os.path.join(directory, "cs.sqlite3")


# ---- stations -----------------------------------------------------------------------------


def hash_key(key: str, salt: str) -> str:
    # Authorization keys are random secrets (OCPP: 16-20 bytes), so one salted SHA-256 suffices
    # and keeps 10,000 reconnecting stations cheap to check.
    return hashlib.sha256((salt + key).encode()).hexdigest()


def key_matches(station: dict[str, Any], key: str) -> bool:
    if not station.get("auth_hash"):
        return False
    return hmac.compare_digest(hash_key(key, station["auth_salt"]), station["auth_hash"])


def get_station(db: Db, station_id: str) -> dict[str, Any] | None:
    return db.one("SELECT * FROM stations WHERE id = ?", (station_id,))


def add_station(db: Db, station_id: str, approval: str = "accepted") -> dict[str, Any]:
    db.execute(
        "INSERT INTO stations (id, approval, created) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (station_id, approval, now_iso()),
    )
    station = get_station(db, station_id)
    assert station is not None
    return station


def station_for_connection(db: Db, station_id: str, unknown: str | None) -> dict[str, Any] | None:
    """The station's row; an unknown station is added with approval `unknown` unless None."""
    station = get_station(db, station_id)
    if station is None and unknown is not None:
        station = add_station(db, station_id, unknown)
    return station


def rejected_online(db: Db) -> list[str]:
    """Stations an operator rejected while they were connected."""
    rows = db.execute("SELECT id FROM stations WHERE approval = 'rejected' AND online = 1")
    return [row[0] for row in rows.fetchall()]


def set_station(db: Db, station_id: str, **fields: Any) -> None:
    if "auth_key" in fields:
        key = fields.pop("auth_key")
        salt = secrets.token_hex(8) if key is not None else None
        fields["auth_salt"] = salt
        fields["auth_hash"] = hash_key(key, salt) if key is not None and salt else None
    names = sorted(fields)
    assignments = ", ".join(f"{name} = ?" for name in names)
    db.execute(
        f"UPDATE stations SET {assignments} WHERE id = ?",
        [fields[name] for name in names] + [station_id],
    )


BOOT_FIELDS = (
    "vendor",
    "model",
    "serial",
    "firmware",
    "iccid",
    "imsi",
    "meter_type",
    "meter_serial",
)
# One statement: the answer's status follows the approval as it is now (an operator may have
# approved the station since it connected).
_BOOT_SQL = (
    "UPDATE stations SET registration = CASE approval WHEN 'accepted' THEN 'Accepted'"
    " WHEN 'pending' THEN 'Pending' ELSE 'Rejected' END, boot_at = ?, "
    + ", ".join(f"{name} = ?" for name in BOOT_FIELDS)
    + " WHERE id = ? RETURNING registration"
)


def record_boot(db: Db, station_id: str, fields: dict[str, Any]) -> str:
    """Store what a BootNotification says (`fields`: BOOT_FIELDS); return its answer's
    status, from the station's approval."""
    params = (now_iso(), *(fields[name] for name in BOOT_FIELDS), station_id)
    row = db.execute(_BOOT_SQL, params).fetchone()
    return row[0] if row else "Rejected"


def list_stations(db: Db) -> list[dict[str, Any]]:
    return db.all(
        "SELECT id, approval, registration, online, security_profile, vendor, model, firmware,"
        " boot_at, last_seen FROM stations ORDER BY id"
    )


def list_connectors(db: Db, station_id: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE station = ?", (station_id,)) if station_id else ("", ())
    return db.all(f"SELECT * FROM connectors {where} ORDER BY station, connector_id", params)


# ---- id tags and authorization ------------------------------------------------------------


def set_id_tag(
    db: Db,
    id_tag: str,
    parent: str | None = None,
    expiry: str | None = None,
    blocked: bool = False,
    max_active: int = 1,
) -> None:
    db.execute(
        "INSERT INTO id_tags (id_tag, parent, expiry, blocked, max_active) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (id_tag) DO UPDATE SET parent = excluded.parent, expiry = excluded.expiry,"
        " blocked = excluded.blocked, max_active = excluded.max_active",
        (id_tag, parent, expiry, int(blocked), max_active),
    )


def delete_id_tag(db: Db, id_tag: str) -> bool:
    return db.execute("DELETE FROM id_tags WHERE id_tag = ?", (id_tag,)).rowcount > 0


def list_id_tags(db: Db) -> list[dict[str, Any]]:
    return db.all("SELECT * FROM id_tags ORDER BY id_tag")


def id_tag_info(db: Db, id_tag: str, active_allowed: int = 0) -> dict[str, Any]:
    """OCPP idTagInfo for a tag. `active_allowed` transactions of the tag are not counted
    against its concurrent-transaction limit (the one being stopped, for instance)."""
    tag = db.one("SELECT * FROM id_tags WHERE id_tag = ?", (id_tag,))
    if tag is None:
        return {"status": "Invalid"}
    info: dict[str, Any] = {}
    if tag["parent"]:
        info["parentIdTag"] = tag["parent"]
    if tag["expiry"]:
        info["expiryDate"] = tag["expiry"]
    parent = db.one("SELECT blocked FROM id_tags WHERE id_tag = ?", (tag["parent"],))
    if tag["blocked"] or (parent and parent["blocked"]):
        status = "Blocked"
    elif tag["expiry"] and tag["expiry"] < now_iso():
        status = "Expired"
    else:
        row = db.one(
            "SELECT COUNT(*) AS n FROM transactions WHERE id_tag = ? AND stop_time IS NULL",
            (id_tag,),
        )
        active = (row or {"n": 0})["n"] - active_allowed
        status = "ConcurrentTx" if active >= tag["max_active"] else "Accepted"
    info["status"] = status
    return info


# ---- transactions and meter values --------------------------------------------------------


def start_transaction(db: Db, station: str, p: dict[str, Any]) -> dict[str, Any]:
    """Record a StartTransaction once: a retransmission returns the first answer."""
    key = (station, p["connectorId"], p["idTag"], p["timestamp"], p["meterStart"])
    existing = db.one(
        "SELECT id, auth_status FROM transactions WHERE station = ? AND connector_id = ?"
        " AND id_tag = ? AND start_time = ? AND meter_start = ?",
        key,
    )
    if existing:
        info = id_tag_info(db, p["idTag"], active_allowed=1)
        info["status"] = existing["auth_status"]
        return {"transactionId": existing["id"], "idTagInfo": info}
    info = id_tag_info(db, p["idTag"])
    row = db.execute(
        "INSERT INTO transactions (station, connector_id, id_tag, start_time, meter_start,"
        " reservation_id, auth_status) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        key + (p.get("reservationId"), info["status"]),
    ).fetchone()
    return {"transactionId": row[0], "idTagInfo": info}


def stop_transaction(db: Db, station: str, p: dict[str, Any]) -> dict[str, Any]:
    """Close a transaction; a repeated StopTransaction changes nothing."""
    db.execute(
        "UPDATE transactions SET meter_stop = ?, stop_time = ?, stop_reason = ?, stop_id_tag = ?"
        " WHERE id = ? AND station = ? AND stop_time IS NULL",
        (
            p["meterStop"],
            p["timestamp"],
            p.get("reason", "Local"),
            p.get("idTag"),
            p["transactionId"],
            station,
        ),
    )
    row = db.one("SELECT connector_id FROM transactions WHERE id = ?", (p["transactionId"],))
    connector = row["connector_id"] if row else 0
    store_meter_values(db, station, connector, p["transactionId"], p.get("transactionData", []))
    if "idTag" in p:
        return {"idTagInfo": id_tag_info(db, p["idTag"])}
    return {}


METER_VALUE_SQL = (
    "INSERT INTO meter_values (station, connector_id, transaction_id, timestamp, digest, sampled)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)

# OCPP defaults of the optional sampledValue fields, filled in when listing.
SAMPLE_DEFAULTS = {
    "measurand": "Energy.Active.Import.Register",
    "phase": "",
    "location": "Outlet",
    "context": "Sample.Periodic",
    "unit": "Wh",
    "format": "Raw",
}


def meter_value_rows(
    station: str, connector: int, transaction: int | None, meter_values: list[dict[str, Any]]
) -> list[tuple]:
    rows = []
    for meter_value in meter_values:
        sampled = orjson.dumps(meter_value["sampledValue"], option=orjson.OPT_SORT_KEYS)
        digest = hashlib.blake2b(sampled, digest_size=12).hexdigest()
        rows.append(
            (station, connector, transaction, meter_value["timestamp"], digest, sampled.decode())
        )
    return rows


def store_meter_values(
    db: Db, station: str, connector: int, transaction: int | None, values: list[dict[str, Any]]
) -> None:
    rows = meter_value_rows(station, connector, transaction, values)
    if rows:
        db.executemany(METER_VALUE_SQL, rows)


def list_transactions(
    db: Db, station: str | None = None, active: bool = False
) -> list[dict[str, Any]]:
    clauses, params = [], []
    if station:
        clauses.append("station = ?")
        params.append(station)
    if active:
        clauses.append("stop_time IS NULL")
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return db.all(f"SELECT * FROM transactions {where} ORDER BY id", params)


def list_meter_values(
    db: Db, station: str | None = None, transaction: int | None = None
) -> list[dict[str, Any]]:
    """One dict per sampled value, optional fields filled with their OCPP defaults."""
    clauses, params = [], []
    if station:
        clauses.append("station = ?")
        params.append(station)
    if transaction is not None:
        clauses.append("transaction_id = ?")
        params.append(transaction)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = db.all(
        "SELECT station, connector_id, transaction_id, timestamp, sampled FROM meter_values"
        f" {where} ORDER BY station, connector_id, timestamp",
        params,
    )
    samples = []
    for row in rows:
        sampled = orjson.loads(row.pop("sampled"))
        for sample in sampled:
            samples.append(row | SAMPLE_DEFAULTS | sample)
    return samples


# ---- message log and notifications --------------------------------------------------------

ONLINE_SQL = "UPDATE stations SET online = ?, last_seen = ? WHERE id = ?"
LOG_SQL = "INSERT INTO messages (station, ts, direction, text) VALUES (?, ?, ?, ?)"


def search_messages(
    db: Db,
    station: str | None = None,
    since: str | None = None,
    until: str | None = None,
    contains: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    clauses, params = [], []
    for clause, value in (
        ("station = ?", station),
        ("ts >= ?", since and normalize_time(since)),
        ("ts < ?", until and normalize_time(until)),
        ("text LIKE ?", f"%{contains}%" if contains else None),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = db.all(f"SELECT * FROM messages {where} ORDER BY id DESC LIMIT ?", params + [limit])
    return rows[::-1]


NOTIFICATION_SQL = (
    "INSERT INTO notifications (station, kind, payload, received) VALUES (?, ?, ?, ?)"
)


def list_notifications(db: Db, station: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE station = ?", (station,)) if station else ("", ())
    return db.all(f"SELECT * FROM notifications {where} ORDER BY id", params)


# ---- command queue ------------------------------------------------------------------------


def enqueue_command(
    db: Db, station: str, action: str, payload: dict[str, Any], ttl_s: float
) -> int:
    row = db.execute(
        "INSERT INTO commands (station, action, payload, state, created, expires)"
        " VALUES (?, ?, ?, 'queued', ?, ?) RETURNING id",
        (station, action, json.dumps(payload), now_iso(), now_iso(time.time() + ttl_s)),
    ).fetchone()
    return row[0]


def get_command(db: Db, command_id: int) -> dict[str, Any] | None:
    return db.one("SELECT * FROM commands WHERE id = ?", (command_id,))


def list_commands(db: Db, station: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE station = ?", (station,)) if station else ("", ())
    return db.all(f"SELECT * FROM commands {where} ORDER BY id", params)


def expire_commands(db: Db) -> None:
    db.execute(
        "UPDATE commands SET state = 'expired' WHERE state = 'queued' AND expires < ?",
        (now_iso(),),
    )


def queued_commands(db: Db, stations: Iterable[str] | None = None) -> list[dict[str, Any]]:
    expire_commands(db)
    rows = db.all("SELECT * FROM commands WHERE state = 'queued' ORDER BY id")
    if stations is None:
        return rows
    wanted = set(stations)
    return [row for row in rows if row["station"] in wanted]


def mark_command(db: Db, command_id: int, state: str, **fields: Any) -> None:
    names = sorted(fields)
    assignments = "".join(f", {name} = ?" for name in names)
    db.execute(
        f"UPDATE commands SET state = ?{assignments} WHERE id = ?",
        [state] + [fields[name] for name in names] + [command_id],
    )


# ---- the server's batching writer ---------------------------------------------------------

# Batches start at most this often: a commit costs about as much as twenty messages' rows
# (each writes its dirty pages), so under load a few milliseconds more latency buy back a
# fifth of the CPU; when idle, the next batch starts at once.
BATCH_INTERVAL_S = 0.003

Done = Callable[[bool, Any], None]  # called with (True, result) or (False, exception)


class Store:
    """Applies database work in batches: everything queued during a turn of the event loop
    (or a few milliseconds of them, see BATCH_INTERVAL_S) goes into one transaction. `write`
    queues a statement, `submit` a function of the Db whose result (or exception) goes to a
    callback once the batch is committed, `call` is `submit` for coroutines, and
    `after_commit` runs a callback once everything queued before it is committed.

    SQLite statements run on the event loop itself: they are short and local, and a database
    thread would make both threads queue for the GIL at every row (sqlite3 releases it per
    statement step), which measured 5x slower. Only the commit, one call that writes the
    pages and now and then checkpoints the WAL, runs on a thread, beside the loop; the next
    batch waits for it. PostgreSQL batches wait on the network, so they run whole on one
    database thread, one batch at a time."""

    def __init__(self, url: str):
        self._url = url
        # PostgreSQL: the whole batch; SQLite: the commit
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cs-db")
        self._thread = self._worker if url.startswith(("postgresql://", "postgres://")) else None
        self.db: Db | None = None
        self._pending: list[tuple[str | Callable | None, Any, Done | None]] = []
        self._busy = False  # a batch is scheduled or running
        self._last_batch = 0.0  # loop time the last batch started
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0

    async def _on_db(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._thread is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.db = await self._on_db(Db, self._url)

    async def close(self) -> None:
        if self.db:
            await self.flush()
            await self._on_db(self.db.close)
            self.db = None
        self._worker.shutdown()

    @property
    def queued(self) -> int:
        """Statements and calls waiting for the next batch (the dashboard's metric)."""
        return len(self._pending)

    def _queue(self, item: tuple[str | Callable | None, Any, Done | None]) -> None:
        self._pending.append(item)
        if not self._busy:
            self._schedule()

    def _schedule(self) -> None:
        self._busy = True
        assert self._loop is not None, "Store.open() first"
        delay = self._last_batch + BATCH_INTERVAL_S - self._loop.time()
        if delay > 0:
            self._loop.call_later(delay, self._start_batch)
        else:
            self._loop.call_soon(self._start_batch)

    def write(self, sql: str, params: tuple) -> None:
        self._pending.append((sql, params, None))  # _queue inlined: several per message
        if not self._busy:
            self._schedule()

    def write_many(self, sql: str, rows: list[tuple]) -> None:
        self._pending.extend([(sql, row, None) for row in rows])
        if not self._busy:
            self._schedule()

    def submit(self, fn: Callable[..., Any], args: tuple, done: Done) -> None:
        self._queue((fn, args, done))

    def after_commit(self, done: Done) -> None:
        self._queue((None, None, done))

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        self.submit(fn, args, functools.partial(_settle, future))
        return await future

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        future = asyncio.get_running_loop().create_future()
        self.after_commit(functools.partial(_settle, future))
        await future

    def _start_batch(self) -> None:
        assert self._loop is not None
        self._last_batch = self._loop.time()
        batch, self._pending = self._pending, []
        if self._thread is not None:
            running = self._loop.run_in_executor(self._thread, self._apply, batch)
            running.add_done_callback(functools.partial(self._finish_threaded, batch))
            return
        db = self.db
        assert db is not None
        try:
            results = self._run(db, batch)
        except Exception:  # noqa: BLE001 - isolate the failing item, keep the others
            db.rollback()
            self._finish(batch, self._one_by_one(db, batch))
            return
        committing = self._loop.run_in_executor(self._worker, db.commit)
        committing.add_done_callback(functools.partial(self._committed, batch, results))

    def _committed(self, batch: list, results: list, committing: asyncio.Future) -> None:
        if committing.exception() is not None:
            db = self.db
            assert db is not None
            db.rollback()
            results = self._one_by_one(db, batch)
        self._finish(batch, results)

    def _finish_threaded(self, batch: list, running: asyncio.Future) -> None:
        try:
            results = running.result()
        except Exception as error:  # noqa: BLE001 - the database is gone: every item failed
            results = [(False, error)] * len(batch)
        self._finish(batch, results)

    def _finish(self, batch: list, results: list[tuple[bool, Any]]) -> None:
        self.batches += 1
        self._busy = False
        if self._pending:  # queued while the batch ran or committed
            self._schedule()
        for (_, _, done), (ok, value) in zip(batch, results, strict=True):
            if done is not None:
                try:
                    done(ok, value)
                except Exception:  # noqa: BLE001 - one failing callback must not stop the rest
                    log.exception("database callback failed")

    def _apply(self, batch: list) -> list[tuple[bool, Any]]:
        db = self.db
        assert db is not None
        try:
            results = self._run(db, batch)
            db.commit()
            return results
        except Exception:  # noqa: BLE001 - isolate the failing item, keep the others
            db.rollback()
        return self._one_by_one(db, batch)

    def _one_by_one(self, db: Db, batch: list) -> list[tuple[bool, Any]]:
        results = []
        for item in batch:
            try:
                (result,) = self._run(db, [item])
                db.commit()
                results.append(result)
            except Exception as error:  # noqa: BLE001
                db.rollback()
                results.append((False, error))
        return results

    @staticmethod
    def _run(db: Db, batch: list) -> list[tuple[bool, Any]]:
        """Statements queued between two functions run as one executemany per statement
        (rows of one statement keep their order); a function sees every write queued
        before it. Commit markers (None) only wait for the commit."""
        results: list[tuple[bool, Any]] = [(True, None)] * len(batch)
        writes: dict[str, list[tuple]] = {}
        for index, (what, args, _) in enumerate(batch):
            if isinstance(what, str):
                writes.setdefault(what, []).append(args)
            elif what is not None:
                for sql, rows in writes.items():
                    db.executemany(sql, rows)
                writes = {}
                results[index] = (True, what(db, *args))
        for sql, rows in writes.items():
            db.executemany(sql, rows)
        return results


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.done():  # its waiter was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
