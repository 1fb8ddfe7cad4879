"""Central-system storage: one code path for SQLite (default) and PostgreSQL (by URL).

Every query is a plain function of a `Db` (a DB-API connection plus its dialect), so the
CLI calls them directly while the server runs them in batches in its database process
(host/cs/store.py): one transaction per batch, many messages per commit.
"""

import datetime
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

import orjson

COMMAND_STATES = ("queued", "sent", "answered", "expired", "failed")
APPROVALS = ("accepted", "pending", "rejected")


MIGRATION_LOCK = 0x65767365  # PostgreSQL advisory lock key ("evse") taken by Db.migrate
SQLITE_TIMEOUT_S = 10  # how long an SQLite connection waits for another's lock
STREAM_ROWS = 1000  # rows read at a time by Db.pages


class StorageError(Exception):
    """A database URL or stored record that cannot be used."""


# The last formatted second and millisecond, reused: the server asks for the time several
# times per message, many messages per millisecond, and formatting costs more than the rest.
_second_text: list[Any] = [None, ""]
_milli_text: list[Any] = [None, ""]


def now_iso(seconds: float | None = None) -> str:
    """UTC time as ISO-8601 text with milliseconds; sorts in time order as text."""
    t = time.time() if seconds is None else seconds
    return _milli_iso(int(t * 1000))


def _milli_iso(milli: int) -> str:
    """Milliseconds since 1970 as stored time text."""
    if milli == _milli_text[0]:
        return _milli_text[1]
    whole = milli // 1000
    if whole != _second_text[0]:
        _second_text[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    text = f"{_second_text[1]}.{milli % 1000:03d}Z"
    _milli_text[:] = [milli, text]
    return text


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MILLISECOND = datetime.timedelta(milliseconds=1)


def normalize_time(text: str) -> str:
    """Any ISO-8601 time (naive = UTC) in the stored format, so text comparison is time
    order. Raises ValueError naming the text when it is not a time."""
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    # Whole milliseconds counted exactly (a float of seconds is off by one now and then)
    normalized = _milli_iso((parsed - _EPOCH) // _MILLISECOND)
    if len(normalized) != len("2026-01-01T00:00:00.000Z"):  # years before 1000
        raise ValueError(f"{text!r} is out of range")
    return normalized


# Stations write times with their zone's offset: less than a day (the schema's hh:mm).
_WIDEST_OFFSET = datetime.timedelta(hours=24)


def _local_bounds(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """Bounds on station times as sent (any zone offset), compared as text, that keep those
    that may be in [since, until) (normalize_time): their local time within the widest
    offset either side, as a prefix of the forms stations send. `in_window` then decides.
    (A time written with a lowercase "t", which RFC 3339 allows and no station seems to
    send, sorts after every "T" of its day and may miss the upper bound.)"""

    def shifted(bound: str | None, by: datetime.timedelta) -> str | None:
        if bound is None:
            return None
        try:
            moved = datetime.datetime.fromisoformat(bound.replace("Z", "+00:00")) + by
        except OverflowError:  # past year 9999 or before 1: no bound on that side
            return None
        return moved.strftime("%Y-%m-%dT%H:%M:%S")

    later = _WIDEST_OFFSET + datetime.timedelta(seconds=1)  # the second `until` falls in
    return shifted(since, -_WIDEST_OFFSET), shifted(until, later)


def in_window(text: str, since: str | None, until: str | None) -> bool:
    """Whether a station's time is in [since, until) (normalize_time; None: unbounded). A
    time that Python cannot read (a leap second, 23:59:60Z) is compared as text."""
    if since is None and until is None:
        return True
    try:
        moment = normalize_time(text)
    except ValueError:
        moment = text
    return (since is None or moment >= since) and (until is None or moment < until)


def conditions(pairs: Iterable[tuple[str, Any]]) -> tuple[list[str], list[Any]]:
    """The clauses of the (clause, value) pairs whose value is not None, and their
    parameters: the values of the clauses with a `?` (a clause without one takes True)."""
    clauses, params = [], []
    for clause, value in pairs:
        if value is not None:
            clauses.append(clause)
            if "?" in clause:
                params.append(value)
    return clauses, params


def where(clauses: list[str]) -> str:
    return ("WHERE " + " AND ".join(clauses)) if clauses else ""


def holding(column: str, part: str | None) -> tuple[str, str | None]:
    """A (clause, value) pair for `conditions`: `column` holds `part` as written, in any
    (ASCII) case, the same on both databases. SQLite's LIKE ignores case and has no escape
    character; PostgreSQL's minds case and takes a backslash as one. So both get the case
    folded and an explicit escape, and `part`'s own %, _ and backslashes are escaped."""
    clause = f"lower({column}) LIKE lower(?) ESCAPE '\\'"
    if not part:
        return clause, None
    return clause, f"%{like_literal(part)}%"


def like_literal(part: str) -> str:
    """`part` as itself in a LIKE pattern with ESCAPE '\\': its %, _ and backslashes escaped."""
    return part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Each migration is a list of statements (or (dialect, statement) for one dialect only);
# `{id}` becomes the dialect's auto-increment key, `{without_rowid}` SQLite's clause for a
# table that is its primary key's index.
MIGRATIONS: list[list[str | tuple[str, str]]] = [
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
    # The frame log's index by station is filled in bulk, not row by row.
    [
        "DROP INDEX messages_station_ts",
        "CREATE INDEX messages_ts ON messages (ts)",
        """CREATE TABLE message_index (
            station TEXT NOT NULL, id BIGINT NOT NULL, PRIMARY KEY (station, id)){without_rowid}""",
        "INSERT INTO message_index (station, id) SELECT station, id FROM messages",
        "CREATE TABLE message_index_upto (upto BIGINT NOT NULL)",
        "INSERT INTO message_index_upto (upto) SELECT COALESCE(MAX(id), 0) FROM messages",
    ],
    # The log index keyed by pass first (index_log): what was indexed becomes one pass.
    [
        "CREATE TABLE message_passes (upto BIGINT PRIMARY KEY)",
        "INSERT INTO message_passes (upto) SELECT upto FROM message_index_upto WHERE upto > 0",
        """CREATE TABLE message_index_by_pass (
            pass BIGINT NOT NULL, station TEXT NOT NULL, id BIGINT NOT NULL,
            PRIMARY KEY (pass, station, id)){without_rowid}""",
        "INSERT INTO message_index_by_pass (pass, station, id)"
        " SELECT u.upto, i.station, i.id FROM message_index i, message_index_upto u"
        " WHERE i.id <= u.upto",  # not those of a pass cut short
        "DROP TABLE message_index",
        "DROP TABLE message_index_upto",
        "ALTER TABLE message_index_by_pass RENAME TO message_index",
    ],
    # Meter values unique by time first. Stations keep their clocks near the central
    # system's, so new rows go to the end of the index. Keyed by station first, every commit
    # dirtied an index page per station, and that cost grew with the table: at 5,000 msg/s
    # after two minutes of full load, p99 was 57-73 ms, against 43-50 ms with time first
    # (README, Central system). A station's export now reads the whole table; the dashboard
    # reads by transaction.
    [
        """CREATE TABLE meter_values_by_time (
            station TEXT NOT NULL, connector_id INTEGER NOT NULL, transaction_id INTEGER,
            timestamp TEXT NOT NULL, digest TEXT NOT NULL, sampled TEXT NOT NULL,
            CONSTRAINT meter_values_key UNIQUE (timestamp, station, connector_id, digest))""",
        "INSERT INTO meter_values_by_time"
        " SELECT station, connector_id, transaction_id, timestamp, digest, sampled"
        " FROM meter_values",
        "DROP TABLE meter_values",
        "ALTER TABLE meter_values_by_time RENAME TO meter_values",
        "CREATE INDEX meter_values_transaction ON meter_values (transaction_id)",
    ],
    # Each pass notes when its frames were logged, so that a station's search in a time
    # window seeks only the passes that overlap it. Passes indexed before have no times and
    # are always searched.
    [
        "ALTER TABLE message_passes ADD COLUMN first_ts TEXT",
        "ALTER TABLE message_passes ADD COLUMN last_ts TEXT",
    ],
    # Id tags are looked up case-insensitively (OCPP CiString). A meter's register passes
    # 2^31 Wh within years on a busy charger: PostgreSQL's INTEGER is 32-bit (SQLite's
    # takes 64 bits).
    [
        "CREATE INDEX id_tags_folded ON id_tags (lower(id_tag))",
        (
            "postgresql",
            "ALTER TABLE transactions ALTER COLUMN meter_start TYPE BIGINT,"
            " ALTER COLUMN meter_stop TYPE BIGINT",
        ),
    ],
    # OCPP's integers have no bound: a reservationId an operator chose, a connectorId past
    # 2^31 (a station's bug). SQLite kept them; PostgreSQL failed the message (its INTEGER
    # is 32 bits), an InternalError at each retry, its batch retried row by row, and the
    # station's offline queue gave it up. Meter values refer to transactions, whose ids are
    # BIGINT there. (One statement per table: each rewrites its table once.)
    [
        (
            "postgresql",
            "ALTER TABLE transactions ALTER COLUMN reservation_id TYPE BIGINT,"
            " ALTER COLUMN connector_id TYPE BIGINT",
        ),
        (
            "postgresql",
            "ALTER TABLE meter_values ALTER COLUMN transaction_id TYPE BIGINT,"
            " ALTER COLUMN connector_id TYPE BIGINT",
        ),
        *(
            ("postgresql", f"ALTER TABLE {table} ALTER COLUMN connector_id TYPE BIGINT")
            for table in ("connectors", "status_history")
        ),
    ],
    # A new key or security profile the station answered RebootRequired: pending until it
    # connects with it (pending_settings). The key salted and hashed as the current one.
    [
        "ALTER TABLE stations ADD COLUMN pending_security_profile INTEGER",
        "ALTER TABLE stations ADD COLUMN pending_auth_salt TEXT",
        "ALTER TABLE stations ADD COLUMN pending_auth_hash TEXT",
    ],
]


# PostgreSQL's text cannot hold U+0000 (SQLite's can): a station's string with one failed
# its message there (an InternalError, retransmitted for ever), and a frame with a raw one
# lost its log row. So on PostgreSQL every string parameter, written or looked up, has the
# character as its JSON escape, six characters: what a station sent as "\u0000" in its JSON,
# and what JSON columns hold already. A lookup then finds what was stored (an id tag with
# the character); reads return the escape (a station's own text `\u0000` reads the same).
NUL_ESCAPE = "\\u0000"


def without_nul(params: Iterable[Any]) -> tuple:
    """The parameters with each U+0000 in a string as NUL_ESCAPE (for PostgreSQL)."""
    return tuple(
        value.replace("\x00", NUL_ESCAPE) if isinstance(value, str) and "\x00" in value else value
        for value in params
    )


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
            self.conn = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S, check_same_thread=False)
            self._use_wal()
            # Every commit reaches the disk before it returns (the WAL is synced), so what a
            # station was answered survives a power cut too. The server commits in its
            # database process, many messages at a time (host/cs/store.py). The WAL is
            # copied into the database at SQLite's default 4 MiB: a commit that does it
            # takes ~10 ms; at 40 MiB it took 100+ ms, every answer waiting on it.
            self.conn.execute("PRAGMA synchronous=FULL")
            self.auto_id = "INTEGER PRIMARY KEY AUTOINCREMENT"
        self._sql: dict[str, str] = {}
        try:
            self.migrate(MIGRATIONS, "schema_version")
        except BaseException:
            self.conn.close()  # and with it the failed migration's transaction and locks
            raise

    def _use_wal(self) -> None:
        """Put the SQLite database in WAL mode, waiting for another connection's write lock
        as for any other. A new database's switch fails at once when another holds the lock
        (SQLite calls no busy handler for it): the server and a CLI command started at once
        on a new data directory, one of them migrating, and the other ended with "database
        is locked"."""
        deadline = time.monotonic() + SQLITE_TIMEOUT_S
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def sql(self, text: str) -> str:
        """Our statements use `?` placeholders; psycopg wants `%s`."""
        if self.dialect == "sqlite":
            return text
        converted = self._sql.get(text)
        if converted is None:
            converted = self._sql[text] = text.replace("%", "%%").replace("?", "%s")
        return converted

    def execute(self, text: str, params: Iterable[Any] = ()) -> Any:
        if self.dialect == "sqlite":
            return self.conn.execute(text, tuple(params))
        return self.conn.execute(self.sql(text), without_nul(params))

    def executemany(self, text: str, rows: list[tuple]) -> None:
        cursor = self.conn.cursor()
        if self.dialect != "sqlite":
            rows = [without_nul(row) for row in rows]
        cursor.executemany(self.sql(text), rows)

    def all(self, text: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.execute(text, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def pages(
        self,
        select: str,
        clauses: list[str],
        params: list[Any],
        key: tuple[str, ...],
        start: Any = None,
    ) -> Iterator[dict[str, Any]]:
        """The rows of `select` ("SELECT ... FROM table", the `key` columns among them) that
        match `clauses`, from `start` (on the key's first column) on, in the order of `key`
        (unique, not null), STREAM_ROWS at a time: an export of any size holds one page.
        Each page seeks the key where the last ended (a bound of its own on the key would
        make it scan from there), in a transaction of its own: a slow reader holds no
        snapshot (SQLite's WAL would grow, PostgreSQL's vacuum wait)."""
        order = ", ".join(key)
        after = f"({order}) > ({', '.join('?' * len(key))})"
        page_clauses, page_params = conditions(((f"{key[0]} >= ?", start),))
        page_clauses, page_params = [*clauses, *page_clauses], [*params, *page_params]
        while True:
            rows = self.all(
                f"{select} {where(page_clauses)} ORDER BY {order} LIMIT ?",
                [*page_params, STREAM_ROWS],
            )
            self.commit()  # ends the read (PostgreSQL opens a transaction for it)
            if len(rows) < STREAM_ROWS:
                yield from rows
                return
            last = [rows[-1][column] for column in key]  # before the reader changes the row
            yield from rows
            page_clauses, page_params = [*clauses, after], [*params, *last]

    def one(self, text: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
        rows = self.all(text, params)
        return rows[0] if rows else None

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        self.conn.close()

    def migrate(self, migrations: Sequence[Sequence[str | tuple[str, str]]], table: str) -> None:
        """Run the migrations not run yet, counted in `table` (one per set of tables), each
        whole or not at all. Processes that open the database at once (say the server and a
        CLI command after an upgrade) take turns: a migration runs under a lock (SQLite's
        write lock, a PostgreSQL advisory lock) and reads the version again under it, so none
        runs twice. An up-to-date database is only read: nothing waits for the lock."""
        without_rowid = " WITHOUT ROWID" if self.dialect == "sqlite" else ""
        while self._version(table) < len(migrations):
            self.commit()  # the lock's transaction starts afresh
            if self.dialect == "sqlite":  # and its DDL joins the transaction
                self.execute("BEGIN IMMEDIATE")
            else:  # released at the commit; the version read again sees what is committed
                self.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                self.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            self.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
            version = self._version(table) + 1  # another process may have run it meanwhile
            if version <= len(migrations):
                for statement in migrations[version - 1]:
                    if isinstance(statement, tuple):  # (dialect, statement): that one's only
                        dialect, statement = statement
                        if dialect != self.dialect:
                            continue
                    self.execute(
                        statement.replace("{id}", self.auto_id).replace(
                            "{without_rowid}", without_rowid
                        )
                    )
                self.execute(f"INSERT INTO {table} (version) VALUES (?)", (version,))
            self.commit()
        self.commit()  # ends the read (PostgreSQL opens a transaction for it)

    def _version(self, table: str) -> int:
        """The last migration run (counted in `table`), 0 for a new database."""
        if self.dialect == "sqlite":
            catalog = "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            catalog = (
                "SELECT COUNT(*) AS n FROM pg_tables"
                " WHERE schemaname = current_schema() AND tablename = ?"
            )
        found = self.one(catalog, (table,))
        if not (found and found["n"]):
            return 0
        row = self.one(f"SELECT MAX(version) AS v FROM {table}")
        return (row or {}).get("v") or 0


def database_file(data_dir: str | None) -> str:
    """The SQLite file of a data directory (default ./cs-data)."""
    return os.path.join(data_dir or "cs-data", "cs.sqlite3")


def database_url(data_dir: str | None, db_url: str | None) -> str:
    if db_url:
        return db_url
    path = database_file(data_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return "sqlite:///" + path


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


def pending_settings(station: dict[str, Any]) -> dict[str, Any] | None:
    """The security settings of the station's row once its pending changes are made (those
    the connection checks read: its profile, its key's salt and hash), or None when no
    change is pending."""
    profile, key_hash = station["pending_security_profile"], station["pending_auth_hash"]
    if profile is None and key_hash is None:
        return None
    settings = {name: station[name] for name in ("security_profile", "auth_salt", "auth_hash")}
    # Never a lower profile: the whitepaper has the station reject one, and a connection
    # passing it (profile 0: anyone's) would lower the station's for good (PROMOTE_SQL too)
    if profile is not None and profile > settings["security_profile"]:
        settings["security_profile"] = profile
    if key_hash is not None:
        settings["auth_salt"], settings["auth_hash"] = station["pending_auth_salt"], key_hash
    return settings


# The pending settings a connection passed with become the station's current ones, only if
# still pending: another change may have been made pending since its row was read.
# (COALESCE, not IS NOT DISTINCT FROM: SQLite has that only since 3.39.)
PROMOTE_SQL = (
    "UPDATE stations SET security_profile = CASE WHEN pending_security_profile > security_profile"
    " THEN pending_security_profile ELSE security_profile END,"
    " auth_salt = COALESCE(pending_auth_salt, auth_salt),"
    " auth_hash = COALESCE(pending_auth_hash, auth_hash), pending_security_profile = NULL,"
    " pending_auth_salt = NULL, pending_auth_hash = NULL WHERE id = ?"
    " AND COALESCE(pending_security_profile, -1) = ? AND COALESCE(pending_auth_hash, '') = ?"
)


def promotion(station: dict[str, Any]) -> tuple:
    """PROMOTE_SQL's parameters for the station's row as read."""
    profile, key_hash = station["pending_security_profile"], station["pending_auth_hash"]
    return (station["id"], -1 if profile is None else profile, key_hash or "")


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


def set_approval(db: Db, station: str, approval: str) -> bool:
    """Set a station's approval. One accepted while it waits (its BootNotification answered
    Pending) is asked to boot again now, not at its next retry: returns whether that
    TriggerMessage was queued."""
    set_station(db, station, approval=approval)
    row = get_station(db, station)
    if approval != "accepted" or row is None or row["registration"] != "Pending":
        return False
    trigger = {"requestedMessage": "BootNotification"}
    enqueue_command(db, station, "TriggerMessage", trigger, 600)
    return True


def set_station(db: Db, station_id: str, **fields: Any) -> None:
    """Set a station's columns; `auth_key` and `pending_auth_key` are stored as their
    salt and hash (None: no key). A key or profile set ends a pending one of its kind, unless
    that is set too: the operator's word, or the station's Accepted, is the last."""
    for field in ("auth_key", "security_profile"):
        if field in fields:
            fields.setdefault(f"pending_{field}", None)
    for prefix in ("", "pending_"):
        if prefix + "auth_key" in fields:
            key = fields.pop(prefix + "auth_key")
            salt = secrets.token_hex(8) if key is not None else None
            fields[prefix + "auth_salt"] = salt
            fields[prefix + "auth_hash"] = hash_key(key, salt) if key is not None and salt else None
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


# What an operator sees of a station's pending changes: the profile, and whether a key is
# pending (never the key, nor its hash).
PENDING_COLUMNS = "pending_security_profile, pending_auth_hash IS NOT NULL AS auth_key_pending"


def with_bools(row: dict[str, Any], *names: str) -> dict[str, Any]:
    """`row` with its `names` columns as booleans (SQLite's are 0 or 1)."""
    for name in names:
        row[name] = bool(row[name])
    return row


def list_stations(db: Db) -> list[dict[str, Any]]:
    """Every station with all it shows (not its key's salt and hash)."""
    rows = db.all(
        "SELECT id, approval, registration, online, security_profile, vendor, model, serial,"
        " firmware, iccid, imsi, meter_type, meter_serial, boot_at, last_seen, created,"
        f" {PENDING_COLUMNS} FROM stations ORDER BY id"
    )
    return [with_bools(row, "online", "auth_key_pending") for row in rows]


def list_connectors(db: Db, station_id: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE station = ?", (station_id,)) if station_id else ("", ())
    return db.all(f"SELECT * FROM connectors {where} ORDER BY station, connector_id", params)


# ---- id tags and authorization ------------------------------------------------------------


# OCPP id tags (IdToken, CiString20) are case-insensitive: each is kept as the operator
# first spelled it, and looked up as spelled (the commonest case, and the one of tags saved
# by earlier versions apart by case), else by its folded text (the id_tags_folded index).
def find_id_tag(db: Db, id_tag: str) -> dict[str, Any] | None:
    return db.one("SELECT * FROM id_tags WHERE id_tag = ?", (id_tag,)) or db.one(
        "SELECT * FROM id_tags WHERE lower(id_tag) = lower(?) LIMIT 1", (id_tag,)
    )


# The most concurrent transactions a tag may have: the column is an INTEGER, 32 bits on
# PostgreSQL (SQLite's 64 bits, and nothing beyond)
MAX_ACTIVE = 2**31 - 1


def set_id_tag(
    db: Db,
    id_tag: str,
    parent: str | None = None,
    expiry: str | None = None,
    blocked: bool = False,
    max_active: int = 1,
) -> None:
    """Add or change a tag; `expiry` is any ISO-8601 time (stored normalized)."""
    existing = find_id_tag(db, id_tag)
    db.execute(
        "INSERT INTO id_tags (id_tag, parent, expiry, blocked, max_active) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (id_tag) DO UPDATE SET parent = excluded.parent, expiry = excluded.expiry,"
        " blocked = excluded.blocked, max_active = excluded.max_active",
        (
            existing["id_tag"] if existing else id_tag,
            parent,
            expiry and normalize_time(expiry),
            int(blocked),
            max_active,
        ),
    )


def delete_id_tag(db: Db, id_tag: str) -> bool:
    tag = find_id_tag(db, id_tag)
    return tag is not None and (
        db.execute("DELETE FROM id_tags WHERE id_tag = ?", (tag["id_tag"],)).rowcount > 0
    )


def list_id_tags(db: Db) -> list[dict[str, Any]]:
    return [with_bools(row, "blocked") for row in db.all("SELECT * FROM id_tags ORDER BY id_tag")]


# A tag with what decides its status: its parent's blocked flag and its active transactions.
# One query (for every StartTransaction and Authorize), looked up as find_id_tag does.
_TAG_STATE_SQL = (
    "SELECT t.id_tag, t.parent, t.expiry, t.blocked, t.max_active,"
    " COALESCE((SELECT blocked FROM id_tags WHERE id_tag = t.parent),"
    " (SELECT blocked FROM id_tags WHERE lower(id_tag) = lower(t.parent) LIMIT 1))"
    " AS parent_blocked,"
    " (SELECT COUNT(*) FROM transactions WHERE id_tag = t.id_tag AND stop_time IS NULL)"
    " AS active"
    " FROM id_tags t WHERE "
)


def _tag_state(db: Db, id_tag: str) -> dict[str, Any] | None:
    return db.one(_TAG_STATE_SQL + "t.id_tag = ?", (id_tag,)) or db.one(
        _TAG_STATE_SQL + "lower(t.id_tag) = lower(?) LIMIT 1", (id_tag,)
    )


def id_tag_info(db: Db, id_tag: str) -> dict[str, Any]:
    """OCPP idTagInfo for a tag."""
    return _tag_info(_tag_state(db, id_tag))


def _tag_info(tag: dict[str, Any] | None) -> dict[str, Any]:
    if tag is None:
        return {"status": "Invalid"}
    info: dict[str, Any] = {}
    if tag["parent"]:
        info["parentIdTag"] = tag["parent"]
    expiry = tag["expiry"]
    # A tag saved by an earlier version may hold its expiry as typed: compared as a time,
    # and sent as the date-time OCPP requires, once normalized (set_id_tag's are already).
    if expiry and not (len(expiry) == 24 and expiry[19] == "." and expiry[-1] == "Z"):
        expiry = normalize_time(expiry)
    if expiry:
        info["expiryDate"] = expiry
    if tag["blocked"] or tag["parent_blocked"]:
        status = "Blocked"
    elif expiry and expiry < now_iso():
        status = "Expired"
    else:
        status = "ConcurrentTx" if tag["active"] >= tag["max_active"] else "Accepted"
    info["status"] = status
    return info


# ---- transactions and meter values --------------------------------------------------------


_INSERT_TRANSACTION_SQL = (
    "INSERT INTO transactions (station, connector_id, id_tag, start_time, meter_start,"
    " reservation_id, auth_status) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def start_transaction(db: Db, station: str, p: dict[str, Any]) -> dict[str, Any]:
    """Record a StartTransaction once: a retransmission returns the first answer. A known
    tag is recorded as the operator spelled it, so that its transactions count against its
    limit whatever case the station sends."""
    tag = _tag_state(db, p["idTag"])
    id_tag = tag["id_tag"] if tag else p["idTag"]
    info = _tag_info(tag)
    key = (station, p["connectorId"], id_tag, p["timestamp"], p["meterStart"])
    values = key + (p.get("reservationId"), info["status"])
    if id_tag == p["idTag"]:  # a retransmission is the same row: the insert does nothing
        row = db.execute(
            _INSERT_TRANSACTION_SQL + " ON CONFLICT DO NOTHING RETURNING id", values
        ).fetchone()
        if row:
            return {"transactionId": row[0], "idTagInfo": info}
    # Either spelling: the tag may have been added since the first one
    spellings = {id_tag, p["idTag"]}
    existing = db.one(
        "SELECT id, auth_status FROM transactions WHERE station = ? AND connector_id = ?"
        f" AND id_tag IN ({', '.join('?' * len(spellings))}) AND start_time = ?"
        " AND meter_start = ?",
        (station, p["connectorId"], *spellings, p["timestamp"], p["meterStart"]),
    )
    if existing:
        info["status"] = existing["auth_status"]
        return {"transactionId": existing["id"], "idTagInfo": info}
    row = db.execute(_INSERT_TRANSACTION_SQL + " RETURNING id", values).fetchone()
    return {"transactionId": row[0], "idTagInfo": info}


# An operator ends a transaction its station will never stop (replaced or broken mid-charge):
# else it counted against its tag's max_active for ever. A StopTransaction the station sends
# after all still records the real end.
CLOSED_BY_OPERATOR = "ClosedByOperator"


def close_transaction(db: Db, transaction_id: int) -> bool | None:
    """End an open transaction as the operator's (CLOSED_BY_OPERATOR, now, its meter stop
    unknown): True if it was open, False if it had ended, None if there is none."""
    closed = db.execute(
        "UPDATE transactions SET stop_time = ?, stop_reason = ? WHERE id = ? AND stop_time IS NULL",
        (now_iso(), CLOSED_BY_OPERATOR, transaction_id),
    )
    if closed.rowcount == 1:
        return True
    return False if transaction_exists(db, transaction_id) else None


def stop_transaction(db: Db, station: str, p: dict[str, Any]) -> dict[str, Any]:
    """Close a transaction (one an operator closed too); a repeated StopTransaction changes
    nothing."""
    stopped = db.execute(
        "UPDATE transactions SET meter_stop = ?, stop_time = ?, stop_reason = ?, stop_id_tag = ?"
        " WHERE id = ? AND station = ?"
        f" AND (stop_time IS NULL OR stop_reason = '{CLOSED_BY_OPERATOR}')",
        (
            p["meterStop"],
            p["timestamp"],
            p.get("reason", "Local"),
            p.get("idTag"),
            p["transactionId"],
            station,
        ),
    ).rowcount
    # Its transactionData belongs to the transaction only if it is this station's; else
    # (an id from another central system, say) the values are kept, linked to none.
    data = p.get("transactionData")
    row = None
    if data or not stopped:
        row = db.one(
            "SELECT connector_id FROM transactions WHERE id = ? AND station = ?",
            (p["transactionId"], station),
        )
    if data:
        connector, transaction = (row["connector_id"], p["transactionId"]) if row else (0, None)
        store_meter_values(db, station, connector, transaction, data)
    if row is None and not stopped:
        # Nor is its meter stop, time, reason and tag lost: a station's billing record of a
        # transaction unknown here (a database restored from a backup, say) is kept for the
        # operator (evse cs events), once however often it comes.
        text = json.dumps({k: v for k, v in p.items() if k != "transactionData"}, sort_keys=True)
        event = (station, "StopTransaction", text)
        db.execute(NOTIFICATION_ONCE_SQL, (*event, now_iso(), *event))
    if "idTag" in p:
        info = id_tag_info(db, p["idTag"])
        # ConcurrentTx is "Only relevant for a StartTransaction.req" (OCPP 1.6): the tag
        # that stops this transaction may have one of its own elsewhere
        if info["status"] == "ConcurrentTx":
            info["status"] = "Accepted"
        return {"idTagInfo": info}
    return {}


METER_VALUES_KEY = ("timestamp", "station", "connector_id", "digest")  # unique, time first
METER_VALUE_SQL = (
    "INSERT INTO meter_values (station, connector_id, transaction_id, timestamp, digest, sampled)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# A MeterValues message's rows (meter_value_rows, the station again after the transaction):
# its transactionId is kept only if the station started that transaction here, as a
# StopTransaction's transactionData (stop_transaction); else the values are linked to none.
METER_VALUES_MESSAGE_SQL = (
    "INSERT INTO meter_values (station, connector_id, transaction_id, timestamp, digest, sampled)"
    " VALUES (?, ?, (SELECT id FROM transactions WHERE id = ? AND station = ?), ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
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


def with_defaults(sample: dict[str, Any]) -> dict[str, Any]:
    """A sampled value with the OCPP defaults of its optional fields (SAMPLE_DEFAULTS). The
    unit's, Wh, is the default only "if the (default) measurand is an Energy type" (OCPP 1.6,
    SampledValue): a voltage sent without a unit has none, not Wh."""
    full = SAMPLE_DEFAULTS | sample
    if "unit" not in sample and not full["measurand"].startswith("Energy."):
        full["unit"] = ""
    return full


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


def table_columns(db: Db, table: str) -> list[str]:
    """The names of a table's columns, in order: the keys of its `SELECT *` rows."""
    return [column[0] for column in db.execute(f"SELECT * FROM {table} LIMIT 0").description]


def with_energy(tx: dict[str, Any]) -> dict[str, Any]:
    """A transaction with the energy it delivered (Wh, its meter's stop less its start;
    None while it runs)."""
    stop = tx["meter_stop"]
    tx["energy_wh"] = None if stop is None else stop - tx["meter_start"]
    return tx


def transaction_exists(db: Db, transaction_id: int) -> bool:
    return db.one("SELECT 1 AS x FROM transactions WHERE id = ?", (transaction_id,)) is not None


def transactions(
    db: Db,
    station: str | None = None,
    active: bool = False,
    since: str | None = None,
    until: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Transactions in the order they started (their ids), with their energy (with_energy),
    read a page at a time (Db.pages); `since`/`until` (normalize_time) bound their start,
    the station's time."""
    low, high = _local_bounds(since, until)
    clauses, params = conditions(
        (
            ("station = ?", station or None),
            ("stop_time IS NULL", True if active else None),
            ("start_time >= ?", low),
            ("start_time < ?", high),
        )
    )
    for row in db.pages("SELECT * FROM transactions", clauses, params, ("id",)):
        if in_window(row["start_time"], since, until):
            yield with_energy(row)


# The columns of meter_value_samples' dicts, in this order
SAMPLE_COLUMNS = (
    *("station", "connector_id", "transaction_id", "timestamp"),
    *SAMPLE_DEFAULTS,
    "value",
)


def meter_value_samples(
    db: Db,
    station: str | None = None,
    transaction: int | None = None,
    since: str | None = None,
    until: str | None = None,
) -> Iterator[dict[str, Any]]:
    """One dict per sampled value (SAMPLE_COLUMNS, optional fields filled with their OCPP
    defaults), read a page at a time (Db.pages), in the order of the meter values' key:
    their timestamps as the stations wrote them, which for UTC times is time order to the
    second. `since`/`until` (normalize_time) bound those times, whatever their zone; the
    query reads a range of the key."""
    low, high = _local_bounds(since, until)
    clauses, params = conditions(
        (
            ("station = ?", station or None),
            ("transaction_id = ?", transaction),
            ("timestamp < ?", high),
        )
    )
    select = (
        "SELECT station, connector_id, transaction_id, timestamp, digest, sampled FROM meter_values"
    )
    for row in db.pages(select, clauses, params, METER_VALUES_KEY, start=low):
        if not in_window(row["timestamp"], since, until):
            continue
        del row["digest"]
        for sample in orjson.loads(row.pop("sampled")):
            yield row | with_defaults(sample)


# ---- message log and notifications --------------------------------------------------------

ONLINE_SQL = "UPDATE stations SET online = ?, last_seen = ? WHERE id = ?"
LAST_SEEN_SQL = "UPDATE stations SET last_seen = ? WHERE id = ?"
LOG_SQL = "INSERT INTO messages (station, ts, direction, text) VALUES (?, ?, ?, ?)"

# The raw frame log is written in arrival order and indexed by time only. An index by
# station, updated row by row, cost each frame a random page of the index in its commit:
# 60% of the database's work under load. The station index (message_index) is filled in
# passes instead (index_log). Its key starts with the pass (its last frame's id, listed in
# message_passes once done), so a pass appends at the end of the index, however long the
# history: keyed by station first, each pass wrote a page per station all over the index
# (benchmarks/bench_log_index.py). A search (station_frames) takes the frames after the
# last pass, then seeks the station in the passes, newest first, until it has enough.
INDEX_PASS_FRAMES = 5_000  # frames per pass: a statement of a few ms
PASSES_PER_QUERY = 500  # passes a search seeks in one query


def _indexed_upto(db: Db) -> int:
    """The last frame the finished passes cover (0: none yet)."""
    done = db.one("SELECT COALESCE(MAX(upto), 0) AS upto FROM message_passes")
    return done["upto"] if done else 0


def index_log(db: Db) -> bool:
    """Index the next INDEX_PASS_FRAMES frames, if that many wait: one statement, sorted by
    the database so that it appends, and one transaction with the pass's entry in
    message_passes. Returns whether a pass was done (a backlog takes several)."""
    upto = _indexed_upto(db)
    # From the first frame waiting: a jump in ids (a sequence set forward) makes no passes
    # without frames, which every search would seek. (MIN and MAX apart: each is then one
    # seek; together they read every frame waiting.)
    first = db.one("SELECT MIN(id) AS id FROM messages WHERE id > ?", (upto,))
    if not first or first["id"] is None:
        return False
    end = first["id"] - 1 + INDEX_PASS_FRAMES
    newest = db.one("SELECT MAX(id) AS id FROM messages")
    if not newest or newest["id"] < end:
        return False
    db.execute(
        "INSERT INTO message_index (pass, station, id) SELECT ?, station, id FROM messages"
        " WHERE id > ? AND id <= ? ORDER BY station, id",
        (end, upto, end),
    )
    db.execute(
        "INSERT INTO message_passes (upto, first_ts, last_ts)"
        " SELECT ?, MIN(ts), MAX(ts) FROM messages WHERE id > ? AND id <= ?",
        (end, upto, end),
    )
    return True


PRUNE_FRAMES = 1_000  # frames a retention step deletes: about 15 ms with its synced commit


def prune_log(db: Db, days: float) -> bool:
    """Delete the oldest frames logged more than `days` ago, at most PRUNE_FRAMES, and the
    index of the passes they leave without frames. Returns whether more may be due (a full
    step). A pass that keeps a frame keeps its entries: searches join them to the frames."""
    deleted = [
        row[0]
        for row in db.execute(
            "DELETE FROM messages WHERE id IN"
            " (SELECT id FROM messages WHERE ts < ? ORDER BY ts, id LIMIT ?) RETURNING id",
            (now_iso(time.time() - days * 86400), PRUNE_FRAMES),
        ).fetchall()
    ]
    if deleted:
        _drop_empty_passes(db, min(deleted), max(deleted))
    return len(deleted) == PRUNE_FRAMES


def _drop_empty_passes(db: Db, low: int, high: int) -> None:
    """Delete the index of the passes that held frames `low` to `high` and hold none now.
    (Not only the oldest passes: a frame stamped by a clock set ahead outlives the frames
    logged after it, and must not keep their passes.)"""
    before = db.one(
        "SELECT COALESCE(MAX(upto), 0) AS upto FROM message_passes WHERE upto < ?", (low,)
    )
    after = db.one("SELECT MIN(upto) AS upto FROM message_passes WHERE upto >= ?", (high,))
    previous = before["upto"] if before else 0
    last = after["upto"] if after and after["upto"] is not None else _indexed_upto(db)
    for row in db.all(
        "SELECT upto FROM message_passes WHERE upto > ? AND upto <= ? ORDER BY upto",
        (previous, last),
    ):
        upto = row["upto"]
        if not db.one("SELECT id FROM messages WHERE id > ? AND id <= ? LIMIT 1", (previous, upto)):
            db.execute("DELETE FROM message_index WHERE pass = ?", (upto,))
            db.execute("DELETE FROM message_passes WHERE upto = ?", (upto,))
        previous = upto


def logged_in(since: str | None, until: str | None) -> tuple[list[str], list[Any]]:
    """The conditions on frames logged in [since, until) (normalize_time; None: unbounded)."""
    return conditions((("ts >= ?", since), ("ts < ?", until)))


def station_frames(
    db: Db,
    station: str,
    clauses: list[str],
    params: list[Any],
    count: int,
    skip: int = 0,
    since: str | None = None,
    until: str | None = None,
) -> list[dict[str, Any]]:
    """The newest `count` frames of a station logged in [since, until) (normalize_time) that
    match `clauses` (on the messages table's other columns), newest first, after skipping
    the `skip` newest: those after the last pass, then the passes that overlap the window,
    newest first, PASSES_PER_QUERY at a time, until there are enough. So a station's recent
    frames, or those of a window, cost the same however long the log; a part wholly skipped
    is only counted."""
    window, window_params = logged_in(since, until)
    params = [*params, *window_params]
    filters = "".join(f" AND {clause}" for clause in clauses + window)
    rows: list[dict[str, Any]] = []

    def take(from_where: str, part_params: list[Any]) -> None:
        nonlocal skip
        if skip:
            found = db.one(f"SELECT COUNT(*) AS n {from_where}", part_params)
            if found is not None and found["n"] <= skip:
                skip -= found["n"]
                return
        query = f"SELECT m.* {from_where} ORDER BY m.id DESC LIMIT ? OFFSET ?"
        rows.extend(db.all(query, [*part_params, count - len(rows), skip]))
        skip = 0

    upto = _indexed_upto(db)
    take(f"FROM messages m WHERE m.id > ? AND m.station = ?{filters}", [upto, station, *params])
    # Always as many placeholders (the last pass repeated): one statement text to prepare
    marks = ", ".join("?" * PASSES_PER_QUERY)
    while len(rows) < count:
        overlapping, pass_params = conditions(
            (
                ("upto <= ?", upto),
                ("(last_ts IS NULL OR last_ts >= ?)", since),
                ("(first_ts IS NULL OR first_ts < ?)", until),
            )
        )
        passes = [
            row["upto"]
            for row in db.all(
                f"SELECT upto FROM message_passes {where(overlapping)} ORDER BY upto DESC LIMIT ?",
                (*pass_params, PASSES_PER_QUERY),
            )
        ]
        if not passes:
            break
        padded = passes + passes[-1:] * (PASSES_PER_QUERY - len(passes))
        take(
            "FROM message_index i CROSS JOIN messages m"  # CROSS: the index first
            f" WHERE i.pass IN ({marks}) AND i.station = ? AND m.id = i.id{filters}",
            [*padded, station, *params],
        )
        upto = passes[-1] - 1
    return rows


def search_messages(
    db: Db,
    station: str | None = None,
    since: str | None = None,
    until: str | None = None,
    contains: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The newest `limit` frames that match, oldest first."""
    clauses, params = conditions((holding("text", contains),))
    return frames(db, station, clauses, params, limit, 0, since, until)[::-1]


def frames(
    db: Db,
    station: str | None,
    clauses: list[str],
    params: list[Any],
    count: int,
    skip: int = 0,
    since: str | None = None,
    until: str | None = None,
) -> list[dict[str, Any]]:
    """The newest `count` frames (of `station`, if given) logged in [since, until) (any
    ISO-8601 times) that match `clauses`, newest first, after skipping the `skip` newest."""
    since, until = since and normalize_time(since), until and normalize_time(until)
    if station is not None:
        return station_frames(db, station, clauses, params, count, skip, since, until)
    window, window_params = logged_in(since, until)
    return db.all(
        f"SELECT * FROM messages {where(clauses + window)} ORDER BY id DESC LIMIT ? OFFSET ?",
        [*params, *window_params, count, skip],
    )


NOTIFICATION_SQL = (
    "INSERT INTO notifications (station, kind, payload, received) VALUES (?, ?, ?, ?)"
)
# A message a station sends again until it is answered (a critical security event, queued
# while offline): stored once, however often it comes. Parameters: NOTIFICATION_SQL's, then
# the station, kind and payload again.
NOTIFICATION_ONCE_SQL = (
    "INSERT INTO notifications (station, kind, payload, received) SELECT ?, ?, ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM notifications WHERE station = ? AND kind = ?"
    " AND payload = ?)"
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


# A ChangeConfiguration of AuthorizationKey (the security whitepaper's way to change a
# station's Basic-auth key) carries the new key: it goes to the station, and is never shown
# or logged; its command keeps it only until it ends (_mark_commands).
SECRET = "(secret)"


def configures(action: str, payload: dict[str, Any], key: str) -> bool:
    """Whether a command is a ChangeConfiguration of `key` (keys are CiStrings)."""
    return action == "ChangeConfiguration" and str(payload.get("key")).lower() == key.lower()


def sets_authorization_key(action: str, payload: dict[str, Any]) -> bool:
    return configures(action, payload, "AuthorizationKey")


SECURITY_PROFILES = ("0", "1", "2", "3")


def station_changes(action: str, payload: dict[str, Any], status: str | None) -> dict[str, Any]:
    """The station's fields (set_station) a command changes by the station's answer
    `status`: the whitepaper's new AuthorizationKey or SecurityProfile. Accepted, the station
    uses it from its next connection (so must we); RebootRequired, after its next reboot, so
    it is pending until the station connects with it (pending_settings). Either replaces a
    pending change of the same kind."""
    if sets_authorization_key(action, payload):
        field, value = "auth_key", payload["value"]
    elif configures(action, payload, "SecurityProfile") and payload["value"] in SECURITY_PROFILES:
        field, value = "security_profile", int(payload["value"])
    else:
        return {}
    if status == "Accepted":
        return {field: value}
    if status == "RebootRequired":
        return {f"pending_{field}": value}
    return {}


def unanswered_changes(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The station's fields a command changes when its answer never came (the connection
    closed, no answer in time, the server stopped): the station may have taken the change,
    and uses it from its next connection (our firmware connects again at once), or not. So
    it is pending, as after RebootRequired: a connection passes with either, and the first
    with the new settings makes them current. (Dropped, a station that took a new key was
    locked out, 401; made current, one that did not take it would be.)"""
    return station_changes(action, payload, "RebootRequired")


def _pend_unanswered(db: Db, clauses: list[str], params: list[Any]) -> None:
    """Make pending the changes of the sent commands that match `clauses`, about to be
    failed without their answer (unanswered_changes)."""
    for row in db.all(
        f"SELECT station, action, payload FROM commands {where(clauses)}"
        " AND state = 'sent' AND action = 'ChangeConfiguration'",
        params,
    ):
        changes = unanswered_changes(row["action"], json.loads(row["payload"]))
        if changes:
            set_station(db, row["station"], **changes)


def without_secret(action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as it may be shown: a new authorization key hidden."""
    if sets_authorization_key(action, payload):
        return {**payload, "value": SECRET}
    return payload


def _lists_authorization_key(entry: Any) -> bool:
    return (
        type(entry) is dict
        and "value" in entry
        and str(entry.get("key")).lower() == "authorizationkey"  # a CiString
    )


def answer_without_secret(payload: Any) -> Any:
    """A station's answer as it may be kept and shown. The whitepaper makes AuthorizationKey
    write-only, but a GetConfiguration answer that lists it anyway has its value hidden."""
    keys = payload.get("configurationKey") if type(payload) is dict else None
    if type(keys) is not list or not any(_lists_authorization_key(entry) for entry in keys):
        return payload
    hidden = [{**e, "value": SECRET} if _lists_authorization_key(e) else e for e in keys]
    return {**payload, "configurationKey": hidden}


ENDED_STATES = ("answered", "expired", "failed")


def _mark_commands(db: Db, clauses: list[str], params: list[Any], **fields: Any) -> None:
    """Set `fields` (`state` among them) on the commands that match `clauses`; those that
    end keep a new authorization key no longer."""
    found = where(clauses)
    with_keys = []
    if fields["state"] in ENDED_STATES:
        with_keys = db.all(
            f"SELECT id, action, payload FROM commands {found} AND action = 'ChangeConfiguration'",
            params,
        )
    names = sorted(fields)
    db.execute(
        f"UPDATE commands SET {', '.join(f'{name} = ?' for name in names)} {found}",
        [*(fields[name] for name in names), *params],
    )
    for row in with_keys:
        payload = json.loads(row["payload"])
        if sets_authorization_key(row["action"], payload):
            shown = json.dumps(without_secret(row["action"], payload))
            db.execute("UPDATE commands SET payload = ? WHERE id = ?", (shown, row["id"]))


def shown_command(row: dict[str, Any]) -> dict[str, Any]:
    """A command's row as it may be shown (its payload without a secret)."""
    payload = json.loads(row["payload"])
    return {**row, "payload": json.dumps(without_secret(row["action"], payload))}


def get_command(db: Db, command_id: int) -> dict[str, Any] | None:
    row = db.one("SELECT * FROM commands WHERE id = ?", (command_id,))
    return shown_command(row) if row else None


def list_commands(db: Db, station: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE station = ?", (station,)) if station else ("", ())
    rows = db.all(f"SELECT * FROM commands {where} ORDER BY id", params)
    return [shown_command(row) for row in rows]


def after_restart(db: Db) -> None:
    """What the server finds left by its last run: no station is connected yet, and a
    command sent without an answer failed (the station may have carried it out: sent again,
    a reset or a remote start could happen twice), a key or profile it sets made pending."""
    db.execute("UPDATE stations SET online = 0 WHERE online = 1")
    _pend_unanswered(db, ["state = 'sent'"], [])
    _mark_commands(
        db,
        ["state = 'sent'"],
        [],
        state="failed",
        answered_at=now_iso(),
        error="no answer: the central system stopped before it came",
    )


def expire_commands(db: Db) -> None:
    _mark_commands(db, ["state = 'queued'", "expires < ?"], [now_iso()], state="expired")


def queued_commands(db: Db, station: str | None = None) -> list[dict[str, Any]]:
    """The commands waiting to be sent, a station's (through the commands_state index) or
    all, oldest first."""
    expire_commands(db)
    clauses, params = conditions((("state = 'queued'", True), ("station = ?", station)))
    return db.all(f"SELECT * FROM commands {where(clauses)} ORDER BY id", params)


def take_command(db: Db, command_id: int, uid: str) -> bool:
    """Mark a queued command sent, unless it expired or ended meanwhile: a delivery sends
    from a list read before the station answered the commands ahead, which may take long."""
    expire_commands(db)
    taken = db.execute(
        "UPDATE commands SET state = 'sent', uid = ?, sent_at = ?"
        " WHERE id = ? AND state = 'queued'",
        (uid, now_iso(), command_id),
    )
    return taken.rowcount == 1


def mark_command(db: Db, command_id: int, state: str, **fields: Any) -> None:
    _mark_commands(db, ["id = ?"], [command_id], state=state, **fields)


# A command can stay sent with nothing waiting for its answer: the database process died
# between take_command and mark_command (the answer's record failed with it), or after a
# kill -9 the old database process committed its last batch (a take) after the new server's
# after_restart. The command queue's poll fails such commands (CommandQueue._poll).
ANSWER_LOST = "no answer recorded: lost with the database process or an earlier server run"


def fail_lost_commands(db: Db, older_than_s: float, waiting: Collection[int]) -> list[int]:
    """Fail the commands sent more than `older_than_s` seconds ago but those in `waiting`
    (the ids the server's deliveries hold); returns the ids failed. One look through the
    commands_state index: few commands are sent at a time."""
    before = now_iso(time.time() - older_than_s)
    lost = [
        row["id"]
        for row in db.all("SELECT id FROM commands WHERE state = 'sent' AND sent_at < ?", (before,))
        if row["id"] not in waiting
    ]
    for command_id in lost:
        _pend_unanswered(db, ["id = ?"], [command_id])
        mark_command(db, command_id, "failed", answered_at=now_iso(), error=ANSWER_LOST)
    return lost
