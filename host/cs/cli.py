"""`evse cs`: run the central system and operate it.

Every command works on the same database as the server (`--data DIR` for SQLite, `--db URL`
for PostgreSQL). `evse cs send` queues a command in that database; the running server
delivers it (at once if the station is connected, otherwise when it returns) and the command
prints the station's answer.
"""

import argparse
import csv
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from host.cli import UserError
from host.web import cli as web_cli

MAX_SECONDS = 10 * 365 * 86400  # --wait: longer is a mistake (1e20 s is past any date)
# What `evse cs tag ID` saves for a new tag, before its options
NEW_TAG = {"parent": None, "expiry": None, "blocked": False, "max_active": 1}


def add_parser(subparsers: Any) -> None:
    db_options = argparse.ArgumentParser(add_help=False)
    where = db_options.add_mutually_exclusive_group()
    where.add_argument("--data", metavar="DIR", help="data directory (SQLite; default ./cs-data)")
    where.add_argument("--db", metavar="URL", help="database URL, e.g. postgresql://host/db")
    listing = argparse.ArgumentParser(add_help=False, parents=[db_options])
    listing.add_argument("--json", action="store_true", help="machine-readable output")

    parser = subparsers.add_parser("cs", help="OCPP 1.6J central system")
    commands = parser.add_subparsers(
        dest="cs_command", required=True, metavar="ACTION", parser_class=_CommandParser
    )

    serve = commands.add_parser("serve", parents=[db_options], help="run the central system")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--ocpp-port", type=int, default=9000)
    serve.add_argument("--http-port", type=int, default=9001, help="firmware/diagnostics files")
    serve.add_argument("--web-port", type=int, default=9002, help="dashboard and REST API")
    serve.add_argument(
        "--unknown",
        choices=("reject", "accept", "pending"),
        default="pending",  # nobody gets in unasked: they wait for an operator's approval
        help="stations not in the database: refused, let in, or (default) let in as pending"
        " until an operator accepts them",
    )
    serve.add_argument("--heartbeat", type=int, default=300, metavar="S")
    serve.add_argument("--ping-interval", type=float, default=30, metavar="S")
    serve.add_argument(
        "--tls-cert", metavar="PEM", help="TLS (wss://, profiles 2 and 3; the dashboard's https://)"
    )
    serve.add_argument("--tls-key", metavar="PEM")
    serve.add_argument("--tls-client-ca", metavar="PEM", help="CA for profile-3 client certs")
    serve.add_argument(
        "--log-days",
        type=float,
        default=0,
        metavar="DAYS",
        help="delete logged frames older than this (default 0: keep them all)",
    )
    serve.set_defaults(func=serve_command)

    stations = commands.add_parser("stations", parents=[listing], help="list stations")
    stations.set_defaults(func=list_command, listing="stations")

    station = commands.add_parser("station", parents=[db_options], help="add or change a station")
    station.add_argument("id")
    station.add_argument("--approval", choices=("accepted", "pending", "rejected"))
    station.add_argument("--profile", type=int, choices=(0, 1, 2, 3), help="security profile")
    key = station.add_mutually_exclusive_group()
    key.add_argument("--auth-key", help="Basic-auth key (profiles 1 and 2), stored hashed")
    key.add_argument(
        "--auth-key-stdin",
        action="store_true",
        help="read the Basic-auth key from standard input (not seen in ps or shell history)",
    )
    station.set_defaults(func=station_command)

    connectors = commands.add_parser("connectors", parents=[listing], help="list connectors")
    connectors.add_argument("--station")
    connectors.set_defaults(func=list_command, listing="connectors")

    transactions = commands.add_parser("transactions", parents=[listing], help="transactions")
    transactions.add_argument("--station")
    transactions.add_argument("--active", action="store_true", help="only unfinished ones")
    transactions.set_defaults(func=list_command, listing="transactions")

    transaction = commands.add_parser(
        "transaction", parents=[db_options], help="end a transaction its station will not"
    )
    transaction.add_argument("id", type=int)
    transaction.add_argument(
        "--close",
        action="store_true",
        required=True,
        help="end it now (stop reason ClosedByOperator), so that its id tag may start others;"
        " a StopTransaction from the station later still records the real end",
    )
    transaction.set_defaults(func=transaction_command)

    tags = commands.add_parser("tags", parents=[listing], help="list id tags")
    tags.set_defaults(func=list_command, listing="tags")

    tag = commands.add_parser("tag", parents=[db_options], help="add, change or delete an id tag")
    tag.add_argument("id_tag")
    # A change sets only the options given; the others keep their values.
    tag.add_argument("--parent", help="parent id tag ('' removes it)")
    tag.add_argument(
        "--expiry", metavar="ISO8601", help="e.g. 2027-01-01T00:00:00Z ('' removes it)"
    )
    tag.add_argument(
        "--blocked",
        action=argparse.BooleanOptionalAction,
        help="block the tag (--no-blocked: unblock it)",
    )
    tag.add_argument(
        "--max-active",
        type=int,
        metavar="N",
        help="concurrent transactions allowed (a new tag: 1)",
    )
    tag.add_argument("--delete", action="store_true")
    tag.set_defaults(func=tag_command)

    send = commands.add_parser("send", parents=[db_options], help="send an operation to a station")
    send.add_argument("station")
    send.add_argument("action", help="e.g. Reset, RemoteStartTransaction, TriggerMessage")
    send.add_argument("payload", nargs="?", default="{}", help="JSON payload (default {})")
    send.add_argument(
        "--ttl",
        type=float,
        metavar="S",
        help="expire if not delivered within S seconds (default 3600; 300 for"
        " RemoteStartTransaction, UnlockConnector and Reset, which act on the session at hand)",
    )
    send.add_argument(
        "--wait",
        type=float,
        default=60,
        metavar="S",
        help="wait this long for the answer; 0 = just queue (default 60)",
    )
    send.add_argument("--json", action="store_true")
    send.set_defaults(func=send_command)

    queue = commands.add_parser("commands", parents=[listing], help="list commands and answers")
    queue.add_argument("--station")
    queue.set_defaults(func=list_command, listing="commands")

    messages = commands.add_parser("log", parents=[listing], help="search the message log")
    messages.add_argument("--station")
    messages.add_argument("--since", metavar="ISO8601")
    messages.add_argument("--until", metavar="ISO8601")
    messages.add_argument("--contains", metavar="TEXT")
    messages.add_argument("--limit", type=int, default=100)
    messages.set_defaults(func=list_command, listing="log")

    events = commands.add_parser(
        "events",
        parents=[listing],
        help="firmware/diagnostics/log status, security events, data transfers, CSRs",
    )
    events.add_argument("--station")
    events.set_defaults(func=list_command, listing="events")

    export = commands.add_parser("export", parents=[db_options], help="export as CSV")
    export.add_argument("what", choices=("transactions", "meter-values"))
    export.add_argument("--station")
    export.add_argument("--transaction", type=int, help="meter values of one transaction")
    export.add_argument("--since", metavar="ISO8601", help="from this time on (stations' times)")
    export.add_argument("--until", metavar="ISO8601", help="before this time")
    export.add_argument("--out", metavar="FILE", help="default: standard output")
    export.set_defaults(func=export_command)

    web_cli.add_parsers(commands, db_options)  # `evse cs user ...`


class _CommandParser(argparse.ArgumentParser):
    """The parser of each `evse cs` command, `user` ones too (a parser's subparsers take its
    class): the command it sets runs through `_run_command`."""

    def set_defaults(self, **kwargs: Any) -> None:
        if "func" in kwargs:
            kwargs["func"] = functools.partial(_run_command, kwargs["func"])
        super().set_defaults(**kwargs)


def _run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """What every command shares: a reader that leaves (`| head`) ends it quietly, and a
    failing database is one line that names it."""
    try:
        code = command(args)
        sys.stdout.flush()  # where a closed pipe shows when the output is buffered
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit's flush
        return 141  # as a shell reports SIGPIPE
    except _database_errors() as error:
        raise UserError(_database_problem(args, error)) from None


def _database_errors() -> tuple[type[Exception], ...]:
    """What the databases raise (the server's database process: StorageError)."""
    import sqlite3

    from host.cs import storage

    errors: list[type[Exception]] = [sqlite3.Error, storage.StorageError]
    if "psycopg" in sys.modules:  # PostgreSQL was used (importing it here costs 0.4 s)
        errors.append(sys.modules["psycopg"].Error)
    return tuple(errors)


def _database_problem(args: argparse.Namespace, error: Exception) -> str:
    from host.cs import storage

    if args.db:
        return f"database: {error}"  # not its URL: that may hold a password
    path = storage.database_file(args.data)
    directory = os.path.dirname(path)
    if os.path.isdir(directory) and not os.access(directory, os.W_OK):
        # SQLite writes beside the database (its WAL), even to read
        return f"database {path}: {error} ({directory} is not writable)"
    return f"database {path}: {error}"


def _database_url(args: argparse.Namespace, create: bool) -> str:
    """The command's database; unless `create`, an SQLite one must exist (a mistyped --data
    would otherwise make an empty one, and show nothing in it)."""
    from host.cs import storage

    if args.db and args.db.startswith(("postgresql://", "postgres://")):
        return args.db
    if args.db:  # SQLite's URL; anything else (a path, mysql://) is not one
        path = args.db.removeprefix("sqlite:///")
        if path == args.db or not path:
            # not echoed: a mistyped URL may hold a password
            raise UserError(
                "--db takes postgresql://[USER@]HOST[:PORT]/DATABASE or sqlite:///PATH"
                " (an SQLite data directory: --data DIR)"
            )
        option = "--db"
    else:
        path, option = storage.database_file(args.data), "--data"
    if not (create or os.path.exists(path)):
        raise UserError(f"no database {path} (a mistyped {option}? `evse cs serve` creates it)")
    if args.db:
        return args.db
    try:
        return storage.database_url(args.data, args.db)
    except OSError as error:  # the data directory could not be made
        raise UserError(f"--data: {error}") from None


def open_database(args: argparse.Namespace, create: bool) -> Any:
    """The command's database (`--data`/`--db`); see `_database_url` for `create`."""
    from host.cs import storage

    return storage.Db(_database_url(args, create))


def _time(text: str | None, option: str) -> str | None:
    """`text` as a stored time (storage.normalize_time), or a UserError naming the option."""
    from host.cs import storage

    if text is None:
        return None
    try:
        return storage.normalize_time(text)
    except ValueError as error:
        raise UserError(f"{option}: {error}") from None


def _check_selection(db: Any, args: argparse.Namespace) -> None:
    """Refuse a --station or --transaction that names none: a mistyped one would select
    nothing, and look like a station or transaction without records."""
    from host.cs import storage

    station = getattr(args, "station", None)
    if station is not None and storage.get_station(db, station) is None:
        raise UserError(f"unknown station {station!r} (see `evse cs stations`)")
    transaction = getattr(args, "transaction", None)
    if transaction is not None and not (
        0 < transaction < 2**63  # what the databases hold
        and storage.transaction_exists(db, transaction)
    ):
        raise UserError(f"no transaction {transaction} (see `evse cs transactions`)")


def _rows(db: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    from host.cs import storage

    _check_selection(db, args)
    match args.listing:
        case "stations":
            return storage.list_stations(db)
        case "connectors":
            return storage.list_connectors(db, args.station)
        case "transactions":
            return list(storage.transactions(db, args.station, args.active))
        case "tags":
            return storage.list_id_tags(db)
        case "commands":
            return storage.list_commands(db, args.station)
        case "log":
            if args.limit < 1:
                raise UserError("--limit must be at least 1")
            return storage.search_messages(
                db,
                args.station,
                _time(args.since, "--since"),
                _time(args.until, "--until"),
                args.contains,
                args.limit,
            )
        case _:
            return storage.list_notifications(db, args.station)


# Control characters, which a station's text (an id tag, a frame) may hold, shown escaped in
# tables: as they are, a newline breaks a row and an escape sequence reaches the terminal.
ESCAPED_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\t"): "\\t",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
}


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("(none)")
        return
    names = list(rows[0])
    cells = [
        ["" if row[n] is None else str(row[n]).translate(ESCAPED_CONTROLS) for n in names]
        for row in rows
    ]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


# What a table shows of a listing wider than a screen (--json shows every column)
TABLE_COLUMNS = {
    "stations": (
        *("id", "approval", "registration", "online", "security_profile", "vendor", "model"),
        *("firmware", "boot_at", "last_seen", "pending_security_profile", "auth_key_pending"),
    ),
}
# Columns of JSON text: --json shows their values as JSON, as the REST API does
JSON_COLUMNS = {"commands": ("payload", "response"), "events": ("payload",)}


def with_json_values(row: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {**row, **{n: None if row[n] is None else json.loads(row[n]) for n in names}}


def list_command(args: argparse.Namespace) -> int:
    db = open_database(args, create=False)
    try:
        rows = _rows(db, args)
    finally:
        db.close()
    if args.json:
        names = JSON_COLUMNS.get(args.listing, ())
        json.dump([with_json_values(row, names) for row in rows], sys.stdout, indent=1)
        print()
    else:
        names = TABLE_COLUMNS.get(args.listing)
        print_table([{n: row[n] for n in names} for row in rows] if names else rows)
    return 0


def station_command(args: argparse.Namespace) -> int:
    from host.cs import storage
    from host.tools import station as station_file

    if args.auth_key_stdin:
        args.auth_key = sys.stdin.readline().rstrip("\n")
    if args.auth_key is not None and not station_file.auth_key_ok(args.auth_key):
        option = "--auth-key-stdin" if args.auth_key_stdin else "--auth-key"
        raise UserError(f"{option} {station_file.AUTH_KEY_RULE}")
    db = open_database(args, create=True)
    try:
        # The rule of station files and `evse provision`; a station the server let in
        # (1 to 48 printable ASCII characters, no '/' or ':') keeps its id.
        if not station_file.ID_PATTERN.fullmatch(args.id) and not storage.get_station(db, args.id):
            raise UserError(f"station id {args.id!r}: use {station_file.ID_RULE}")
        storage.add_station(db, args.id, args.approval or "accepted")
        fields: dict[str, Any] = {}
        if args.profile is not None:
            fields["security_profile"] = args.profile
        if args.auth_key is not None:
            fields["auth_key"] = args.auth_key
        if fields:
            storage.set_station(db, args.id, **fields)
        if args.approval and storage.set_approval(db, args.id, args.approval):
            print(f"{args.id}: asked to send BootNotification again (TriggerMessage queued)")
        station = storage.get_station(db, args.id)
        assert station is not None
        db.commit()
    finally:
        db.close()
    if station["security_profile"] in (1, 2) and not station["auth_hash"]:
        print(
            f"warning: {args.id} uses profile {station['security_profile']} but has no "
            "--auth-key yet; it cannot connect",
            file=sys.stderr,
        )
    print(
        f"{args.id}: approval {station['approval']}, security profile {station['security_profile']}"
    )
    return 0


def transaction_command(args: argparse.Namespace) -> int:
    from host.cs import storage

    if not 0 < args.id < 2**63:  # what the database holds
        raise UserError(f"no transaction {args.id}")
    db = open_database(args, create=False)
    try:
        closed = storage.close_transaction(db, args.id)
        db.commit()
    finally:
        db.close()
    if closed is None:
        raise UserError(f"no transaction {args.id}")
    if not closed:
        raise UserError(f"transaction {args.id} has ended already")
    print(f"closed transaction {args.id}")
    return 0


def tag_command(args: argparse.Namespace) -> int:
    from host.cs import storage

    if not 1 <= len(args.id_tag) <= 20:
        raise UserError("id tag must be 1 to 20 characters (OCPP IdToken)")
    if args.parent and len(args.parent) > 20:  # sent as the tag's parentIdTag, an IdToken too
        raise UserError("--parent must be 1 to 20 characters (OCPP IdToken; '' removes it)")
    if args.max_active is not None and not 1 <= args.max_active <= storage.MAX_ACTIVE:
        raise UserError(f"--max-active must be 1 to {storage.MAX_ACTIVE}")
    _time(args.expiry or None, "--expiry")  # refuses a non-time
    db = open_database(args, create=True)
    try:
        if args.delete:
            if not storage.delete_id_tag(db, args.id_tag):
                raise UserError(f"no id tag {args.id_tag!r}")
            print(f"deleted {args.id_tag}")
        else:
            tag = storage.find_id_tag(db, args.id_tag) or NEW_TAG
            storage.set_id_tag(
                db,
                args.id_tag,
                _given(args.parent, tag["parent"]) or None,  # '' removes it
                _given(args.expiry, tag["expiry"]) or None,
                _given(args.blocked, tag["blocked"]),
                _given(args.max_active, tag["max_active"]),
            )
            print(f"saved {args.id_tag}")
        db.commit()
    finally:
        db.close()
    return 0


def _given(option: Any, current: Any) -> Any:
    """An option's value if it was given, else the current one."""
    return current if option is None else option


def send_command(args: argparse.Namespace) -> int:
    import orjson

    from host.cs import commands, storage

    # orjson, as the REST API and the server parse: Python's json takes NaN, Infinity and
    # 1e400 (inf), which JSON has not (and an infinite limit crashed the schema check)
    try:
        payload = orjson.loads(args.payload)
    except orjson.JSONDecodeError as error:
        raise UserError(f"payload is not JSON: {error}") from None
    try:
        commands.validate(args.station, args.action, payload)
    except ValueError as error:
        raise UserError(str(error)) from None
    ttl = commands.default_ttl(args.action) if args.ttl is None else args.ttl
    if not 0 < ttl <= commands.MAX_TTL_S:  # NaN fails too
        raise UserError(
            f"--ttl must be more than 0 and at most {commands.MAX_TTL_S} seconds (30 days)"
        )
    if not 0 <= args.wait <= MAX_SECONDS:
        raise UserError(f"--wait must be 0 to {MAX_SECONDS} seconds (10 years)")
    db = open_database(args, create=False)
    try:
        if storage.get_station(db, args.station) is None:
            raise UserError(f"unknown station {args.station!r} (see `evse cs stations`)")
        command_id = storage.enqueue_command(db, args.station, args.action, payload, ttl)
        db.commit()
        deadline = time.monotonic() + args.wait
        command = storage.get_command(db, command_id)
        while command and command["state"] in ("queued", "sent") and time.monotonic() < deadline:
            time.sleep(0.1)
            db.commit()  # end the read transaction so the next read sees the server's writes
            command = storage.get_command(db, command_id)
    finally:
        db.close()
    assert command is not None
    if args.json:
        print(json.dumps(with_json_values(command, JSON_COLUMNS["commands"]), indent=1))
    else:
        print(f"command {command_id} {args.action} -> {args.station}: {command['state']}")
        if command["response"]:
            print(command["response"])
        if command["error"]:
            print(command["error"])
    return 1 if command["state"] in ("failed", "expired") else 0


def export_command(args: argparse.Namespace) -> int:
    """Rows go out as they are read, a page at a time (storage.Db.pages). A file appears
    whole or not at all: it is written beside, then renamed (a pipe or device is written
    as it is)."""
    from host.cs import storage

    if args.transaction is not None and args.what == "transactions":
        raise UserError("--transaction selects meter values; for transactions use --station")
    since = _time(args.since, "--since")
    until = _time(args.until, "--until")
    db = open_database(args, create=False)
    try:
        _check_selection(db, args)
        if args.what == "transactions":
            rows = storage.transactions(db, args.station, since=since, until=until)
            columns = [*storage.table_columns(db, "transactions"), "energy_wh"]  # with_energy
        else:
            rows = storage.meter_value_samples(db, args.station, args.transaction, since, until)
            columns = storage.SAMPLE_COLUMNS
        if not args.out:
            _write_csv(sys.stdout, rows, columns)
            return 0
        target = os.path.realpath(args.out)  # through a link, to the file it names
        if os.path.exists(target) and not os.path.isfile(target):  # a pipe, a device
            part = target
        else:
            part = f"{target}.part"
        try:
            out = open(part, "w", newline="")
        except OSError as error:  # named as given: the part file is ours, not the user's
            raise UserError(f"--out {args.out}: {error.strerror}") from None
        try:
            with out:
                _write_csv(out, rows, columns)
            if part != target:
                os.replace(part, target)
        except BaseException:
            if part != target:
                os.unlink(part)
            raise
        return 0
    finally:
        db.close()


def _write_csv(out: Any, rows: Iterator[dict[str, Any]], columns: Sequence[str]) -> None:
    """CSV with a header, for no rows too."""
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)


def serve_command(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    import uvloop

    from host.cs import files, server
    from host.cs.store import Store
    from host.web import api as web_api

    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise UserError("--tls-client-ca needs --tls-cert and --tls-key")
    for option in ("ocpp_port", "http_port", "web_port"):
        if not 0 <= getattr(args, option) <= 65535:
            raise UserError(f"--{option.replace('_', '-')} must be 0..65535")
    if not 0 <= args.log_days <= 36500:  # NaN fails too
        raise UserError("--log-days must be 0 (keep every frame) to 36500")
    if not 0 <= args.heartbeat <= 86400:
        raise UserError("--heartbeat must be 0 (the station chooses) to 86400 seconds")
    if not 1 <= args.ping_interval <= 3600:
        raise UserError("--ping-interval must be 1 to 3600 seconds")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    url = _database_url(args, create=True)
    data_dir = args.data or "cs-data"
    try:
        context = (
            server.tls_context(args.tls_cert, args.tls_key, args.tls_client_ca)
            if args.tls_cert
            else None
        )
        # The dashboard's passwords and cookies go over TLS too, with the same certificate
        # (no client certificates: a browser would ask its user for one)
        web_context = server.tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load TLS files: {error}") from None

    async def run() -> None:
        store = Store(url, log_days=args.log_days)
        await store.open()
        cs = server.CentralSystem(
            store,
            unknown=args.unknown,
            heartbeat_s=args.heartbeat,
            ping_interval_s=args.ping_interval,
            ssl_context=context,
        )
        try:
            await cs.start(args.host, args.ocpp_port)
        except OSError as error:
            raise UserError(f"cannot listen on port {args.ocpp_port}: {error}") from None
        try:
            http = files.start_file_server(data_dir, args.host, args.http_port)
        except OSError as error:
            raise UserError(f"cannot listen on port {args.http_port}: {error}") from None
        scheme = "wss" if context else "ws"
        print(f"central system: {scheme}://{args.host}:{cs.port}/ocpp/<chargePointId>", flush=True)
        print(
            f"files: http://{args.host}:{http.server_address[1]}/firmware/<name>, "
            f"uploads to /diagnostics/<name>",
            flush=True,
        )
        try:
            web = await web_api.start(cs, url, args.host, args.web_port, web_context)
        except OSError as error:
            raise UserError(f"cannot listen on port {args.web_port}: {error}") from None
        web_port = web.addresses[0][1]
        web_scheme = "https" if web_context else "http"
        print(f"dashboard and REST API: {web_scheme}://{args.host}:{web_port}/", flush=True)
        try:
            # Until Ctrl-C, or the SIGTERM of a supervisor (systemd, docker): either way the
            # stations get a close frame and are marked offline.
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
        finally:
            # a second SIGTERM ends a shutdown that hangs
            asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)
            await web.cleanup()
            http.shutdown()
            await cs.stop()
            await store.close()

    # libuv's event loop: a quarter less CPU per message than asyncio's own (the capacity
    # benchmark, benchmarks/bench_cs_load.py)
    uvloop.run(run())
    return 0
