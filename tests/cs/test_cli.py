"""`evse cs` commands: listings, id tags, sending operations through a running server, CSV
export, file service, and clear errors for bad input."""

import asyncio
import contextlib
import csv
import datetime
import http.client
import io
import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from ocpp.v16 import call

from host.cli import main
from host.cs import files, storage
from tests.cs.conftest import run, station, wait_for
from tests.ports import free_port

T0 = "2026-11-26T10:00:00Z"
SET_LIMIT = (  # a SetChargingProfile, its limit to fill in
    '{"connectorId": 1, "csChargingProfiles": {"chargingProfileId": 1, "stackLevel": 0,'
    ' "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Relative",'
    ' "chargingSchedule": {"chargingRateUnit": "A",'
    ' "chargingSchedulePeriod": [{"startPeriod": 0, "limit": %s}]}}}'
)


def evse(capsys, *argv):
    code = main(["cs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tag", "T1", "--expiry", "tomorrow"], "--expiry: 'tomorrow' is not an ISO-8601 time"),
        (["tag", "X" * 21], "id tag must be 1 to 20 characters"),
        *(  # the column is 32 bits on PostgreSQL; 2**64 was a traceback (OverflowError)
            (["tag", "T1", "--max-active", n], "--max-active must be 1 to 2147483647")
            for n in ("0", "2147483648", str(2**64))
        ),
        (  # sent as its parentIdTag, an IdToken too (the answer broke its schema)
            ["tag", "T1", "--parent", "P" * 21],
            "--parent must be 1 to 20 characters (OCPP IdToken; '' removes it)",
        ),
        (["tag", "NOPE", "--delete"], "no id tag 'NOPE'"),
        (["send", "CP1", "Reset", "{type: Soft}"], "payload is not JSON"),
        (["send", "CP1", "Fly", "{}"], "'Fly' is not a central-system operation"),
        (
            ["send", "CP1", "Reset", '{"type": "Gentle"}'],
            "invalid payload: Reset: type must be one of",
        ),
        (["send", "CP1", "Reset", "{}"], "invalid payload: Reset: payload must contain ['type']"),
        *(  # Python's json takes these; JSON has no such numbers (and they crashed the check)
            (["send", "CP1", "SetChargingProfile", SET_LIMIT % limit], "payload is not JSON")
            for limit in ("Infinity", "-Infinity", "NaN", "1e400")
        ),
        (
            ["send", "CP1", "UnlockConnector", '{"connectorId": 0}'],
            "invalid payload: UnlockConnector: connectorId must be at least 1",
        ),
        (["send", "CP1", "Reset", '{"type": "Soft"}'], "unknown station 'CP1'"),
        (
            ["send", "CP1", "ChangeConfiguration", '{"key": "authorizationKEY", "value": "x"}'],
            "invalid payload: the new AuthorizationKey must be 16 to 40 printable characters",
        ),
        (
            ["send", "CP1", "ChangeConfiguration", '{"key": "SecurityProfile", "value": "4"}'],
            "invalid payload: the new SecurityProfile is 0, 1, 2 or 3",
        ),
        *(
            (["send", "CP1", "ClearCache", "--ttl", ttl], "--ttl must be more than 0 and at most")
            for ttl in ("0", "nan", "inf", "1e20", "2592001")  # over 30 days, as the API
        ),
        *(
            (["send", "CP1", "ClearCache", "--wait", wait], "--wait must be 0 to 315360000")
            for wait in ("-1", "nan", "inf", "1e20")
        ),
        (["log", "--since", "yesterday"], "--since: 'yesterday' is not an ISO-8601 time"),
        *(
            (["station", "CP1", "--auth-key", key], "--auth-key must be 16 to 40 printable")
            for key in ("short", "k" * 15, "k" * 41, "k" * 15 + "\n")
        ),
        *(
            (["station", bad], f"station id {bad!r}: use 1 to 48 letters, digits, '.', '_' or '-'")
            for bad in ("", "a/b", "C" * 49, "CP 1")
        ),
        (["serve", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (["serve", "--log-days", "-1"], "--log-days must be 0 (keep every frame) to 36500"),
        (["serve", "--log-days", "nan"], "--log-days must be 0 (keep every frame) to 36500"),
        (["serve", "--heartbeat", "-5"], "--heartbeat must be 0 (the station chooses) to 86400"),
        *(
            (["serve", "--ping-interval", bad], "--ping-interval must be 1 to 3600 seconds")
            for bad in ("0", "-1", "nan")
        ),
        (["export", "meter-values", "--since", "soon"], "--since: 'soon' is not an ISO-8601 time"),
        (["export", "transactions", "--transaction", "3"], "--transaction selects meter values"),
        (
            ["export", "transactions", "--out", "/nonexistent/t.csv"],
            "--out /nonexistent/t.csv: No such file or directory\n",
        ),
        (["export", "transactions", "--since", "0999-01-01"], "'0999-01-01' is out of range"),
        *(  # a mistyped one listed nothing, as if the station had no records
            (argv, "unknown station 'CP9' (see `evse cs stations`)")
            for argv in (
                ["connectors", "--station", "CP9"],
                ["transactions", "--station", "CP9", "--json"],
                ["commands", "--station", "CP9"],
                ["log", "--station", "CP9"],
                ["events", "--station", "CP9"],
                ["export", "transactions", "--station", "CP9"],
                ["export", "meter-values", "--station", "CP9"],
            )
        ),
        *(  # past 64 bits too (an OverflowError, a traceback)
            (["export", "meter-values", "--transaction", n], f"no transaction {n} (see `evse cs")
            for n in ("7", "-1", str(2**64))
        ),
    ],
)
def test_bad_input_is_named(tmp_path, capsys, argv, message):
    storage.Db(storage.database_url(str(tmp_path), None)).close()
    code, out, err = evse(capsys, *argv, "--data", str(tmp_path))
    assert code == 2
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["stations"],
        ["tags", "--json"],
        ["log"],
        ["commands"],
        ["export", "transactions"],
        ["send", "CP1", "ClearCache"],
        ["user", "list"],
        ["user", "token", "alice"],
    ],
)
def test_a_command_that_only_reads_does_not_create_the_database(tmp_path, capsys, argv):
    data = tmp_path / "typo"
    message = (
        f"evse cs: no database {data}/cs.sqlite3 (a mistyped --data? `evse cs serve` creates it)\n"
    )
    assert evse(capsys, *argv, "--data", str(data)) == (2, "", message)
    assert not data.exists()


def test_db_takes_a_database_url_and_a_reader_an_existing_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rule = "--db takes postgresql://[USER@]HOST[:PORT]/DATABASE or sqlite:///PATH"
    # a path or another database's URL was opened as an SQLite file of that name (created
    # empty in the working directory, or "unable to open database file")
    for url in ("cs-data", "mysql://ops:hunter2@db/cs", "sqlite:", "sqlite:///", "sqlite://x"):
        for argv in (["tags"], ["tag", "T1"]):
            code, out, err = evse(capsys, *argv, "--db", url)
            assert (code, out) == (2, "") and rule in err and "hunter2" not in err
    assert list(tmp_path.iterdir()) == []
    missing = "evse cs: no database new.db (a mistyped --db? `evse cs serve` creates it)\n"
    assert evse(capsys, "tags", "--db", "sqlite:///new.db") == (2, "", missing)
    assert evse(capsys, "tag", "T1", "--db", "sqlite:///new.db")[0] == 0  # creates it
    assert json.loads(evse(capsys, "tags", "--json", "--db", f"sqlite:///{tmp_path}/new.db")[1])


def test_station_key_from_stdin_is_checked_and_stored_hashed(tmp_path, capsys, monkeypatch):
    data = str(tmp_path)
    key = "a key of twenty chars"
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    assert (
        evse(capsys, "station", "CP1", "--profile", "1", "--auth-key-stdin", "--data", data)[0] == 0
    )
    db = storage.Db(storage.database_url(data, None))
    station = storage.get_station(db, "CP1")
    db.close()
    assert storage.key_matches(station, key) and key not in json.dumps(station)
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    code, _, err = evse(capsys, "station", "CP1", "--auth-key-stdin", "--data", data)
    assert code == 2 and "--auth-key-stdin must be 16 to 40 printable" in err


def test_unknown_subcommand_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["cs", "fly"])
    assert exit_.value.code == 2
    assert "invalid choice: 'fly'" in capsys.readouterr().err


def test_tags_and_stations_listings_with_json(tmp_path, capsys):
    data = str(tmp_path)
    assert evse(capsys, "tag", "T1", "--parent", "FLEET", "--data", data)[0] == 0
    assert evse(capsys, "tag", "T2", "--blocked", "--data", data)[0] == 0
    assert (
        evse(capsys, "station", "CP1", "--profile", "1", "--auth-key", "k" * 16, "--data", data)[0]
        == 0
    )
    code, out, _ = evse(capsys, "tags", "--json", "--data", data)
    tags = {t["id_tag"]: t for t in json.loads(out)}
    assert tags["T1"]["parent"] == "FLEET" and tags["T2"]["blocked"] is True
    code, out, _ = evse(capsys, "tags", "--data", data)
    assert out.splitlines()[0].split() == ["id_tag", "parent", "expiry", "blocked", "max_active"]
    (cp,) = json.loads(evse(capsys, "stations", "--json", "--data", data)[1])
    assert (cp["id"], cp["security_profile"], cp["online"]) == ("CP1", 1, False)
    # all a station shows, as the API's station view (its key's salt and hash never)
    assert {"serial", "iccid", "imsi", "meter_type", "meter_serial", "created"} <= set(cp)
    assert not any("auth" in name and name != "auth_key_pending" for name in cp)
    head = evse(capsys, "stations", "--data", data)[1].splitlines()[0].split()
    assert head[:4] == ["id", "approval", "registration", "online"] and "iccid" not in head
    for listing in ("connectors", "transactions", "commands", "log", "events"):
        code, out, _ = evse(capsys, listing, "--json", "--data", data)
        assert (code, json.loads(out)) == (0, [])


def test_json_columns_list_as_json_and_control_characters_show_escaped(tmp_path, capsys):
    data = str(tmp_path)
    db = storage.Db(storage.database_url(data, None))
    storage.add_station(db, "CP1")
    storage.enqueue_command(db, "CP1", "Reset", {"type": "Soft"}, 60)
    event = ("CP1", "SecurityEventNotification", '{"type": "x"}', T0)
    db.execute(storage.NOTIFICATION_SQL, event)
    # a station's id tag: a newline, and an escape sequence that retitles the terminal
    start = {"connectorId": 1, "idTag": "a\nb\x1b]0;hi\x07", "meterStart": 0, "timestamp": T0}
    storage.start_transaction(db, "CP1", start)
    db.commit()
    db.close()
    (command,) = json.loads(evse(capsys, "commands", "--json", "--data", data)[1])
    assert (command["payload"], command["response"]) == ({"type": "Soft"}, None)
    (notification,) = json.loads(evse(capsys, "events", "--json", "--data", data)[1])
    assert notification["payload"] == {"type": "x"}
    code, out, _ = evse(capsys, "transactions", "--data", data)
    assert code == 0 and len(out.splitlines()) == 2  # the header and one row
    assert " a\\nb\\x1b]0;hi\\x07 " in out and "\x1b" not in out
    (transaction,) = json.loads(evse(capsys, "transactions", "--json", "--data", data)[1])
    assert transaction["id_tag"] == start["idTag"]  # exact in JSON


def test_an_operator_closes_a_transaction_its_station_will_not(tmp_path, capsys):
    data = str(tmp_path)
    db = storage.Db(storage.database_url(data, None))
    start = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": T0}
    transaction = storage.start_transaction(db, "GONE", start)["transactionId"]
    db.commit()
    db.close()
    close = ["transaction", str(transaction), "--close", "--data", data]
    assert evse(capsys, *close)[:2] == (0, f"closed transaction {transaction}\n")
    (listed,) = json.loads(evse(capsys, "transactions", "--json", "--data", data)[1])
    assert listed["stop_reason"] == "ClosedByOperator" and listed["stop_time"]
    assert "has ended already" in evse(capsys, *close)[2]
    for other in (str(transaction + 1), "0", str(2**64)):
        code, _, err = evse(capsys, "transaction", other, "--close", "--data", data)
        assert code == 2 and f"no transaction {other}" in err


def test_changing_a_tag_changes_only_the_options_given(tmp_path, capsys):
    data = ["--data", str(tmp_path)]

    def tag():
        (saved,) = json.loads(evse(capsys, "tags", "--json", *data)[1])
        return {name: saved[name] for name in ("parent", "expiry", "blocked", "max_active")}

    options = ["--parent", "TAG1", "--expiry", "2030-01-01T00:00:00Z", "--max-active", "3"]
    assert evse(capsys, "tag", "TAG9", *options, *data)[0] == 0
    assert evse(capsys, "tag", "tag9", "--blocked", *data)[0] == 0  # the same tag
    assert tag() == {
        "parent": "TAG1",
        "expiry": "2030-01-01T00:00:00.000Z",
        "blocked": True,
        "max_active": 3,
    }
    cleared = ["--no-blocked", "--parent", "", "--expiry", ""]
    assert evse(capsys, "tag", "TAG9", *cleared, *data)[0] == 0
    assert tag() == {"parent": None, "expiry": None, "blocked": False, "max_active": 3}


def test_export_a_time_window_to_a_file(tmp_path, capsys):
    data = str(tmp_path)
    db = storage.Db(storage.database_url(data, None))
    storage.add_station(db, "CP9")  # without records
    for hour in (9, 10, 11):
        stamp = f"2026-11-01T{hour:02d}:30:00Z"
        start = {"connectorId": 1, "idTag": "T", "meterStart": 1000, "timestamp": stamp}
        transaction = storage.start_transaction(db, "CP1", start)["transactionId"]
        values = [{"timestamp": stamp, "sampledValue": [{"value": str(hour), "unit": "kWh"}]}]
        storage.store_meter_values(db, "CP1", 1, transaction, values)
    stop = {"transactionId": transaction, "meterStop": 8500, "timestamp": "2026-11-01T12:00:00Z"}
    storage.stop_transaction(db, "CP1", stop)
    db.commit()
    db.close()
    window = ["--since", "2026-11-01T10:00:00Z", "--until", "2026-11-01T12:00:00+01:00"]
    out = tmp_path / "values.csv"
    assert evse(capsys, "export", "meter-values", *window, "--out", str(out), "--data", data) == (
        0,
        "",
        "",
    )
    with open(out, newline="") as f:
        (row,) = csv.DictReader(f)
    assert tuple(row) == storage.SAMPLE_COLUMNS
    assert (row["timestamp"], row["value"], row["unit"], row["measurand"]) == (
        "2026-11-01T10:30:00Z",
        "10",
        "kWh",
        "Energy.Active.Import.Register",  # the OCPP default, filled in
    )
    _, text, _ = evse(
        capsys, "export", "transactions", "--since", "2026-11-01T10:00:00", "--data", data
    )
    assert [(r["start_time"], r["energy_wh"]) for r in csv.DictReader(io.StringIO(text))] == [
        ("2026-11-01T10:30:00Z", ""),  # still charging
        ("2026-11-01T11:30:00Z", "7500"),  # its meter's stop less its start
    ]
    header = ",".join(storage.SAMPLE_COLUMNS) + "\r\n"
    assert evse(capsys, "export", "meter-values", "--station", "CP9", "--data", data) == (
        0,
        header,
        "",
    )
    _, text, _ = evse(capsys, "export", "transactions", "--station", "CP9", "--data", data)
    assert text.startswith("id,station,connector_id,id_tag,meter_start,") and text.count("\n") == 1


def test_a_failed_export_leaves_the_file_as_it_was(tmp_path, capsys, monkeypatch):
    storage.Db(storage.database_url(str(tmp_path), None)).close()
    out = tmp_path / "values.csv"
    out.write_text("the last export\n")
    header = ",".join(storage.SAMPLE_COLUMNS) + "\n"

    def failing(*args):
        yield dict.fromkeys(storage.SAMPLE_COLUMNS, "1")
        raise storage.StorageError("the database went away")

    monkeypatch.setattr(storage, "meter_value_samples", failing)
    assert evse(capsys, "export", "meter-values", "--out", str(out), "--data", str(tmp_path)) == (
        2,
        "",
        f"evse cs: database {tmp_path}/cs.sqlite3: the database went away\n",
    )
    assert out.read_text() == "the last export\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cs.sqlite3", "values.csv"]
    monkeypatch.undo()
    link = tmp_path / "latest.csv"
    link.symlink_to(out)
    assert (
        evse(capsys, "export", "meter-values", "--out", str(link), "--data", str(tmp_path))[0] == 0
    )
    assert link.is_symlink() and out.read_text() == header  # the file it names, now empty
    assert (
        evse(capsys, "export", "meter-values", "--out", os.devnull, "--data", str(tmp_path))[0] == 0
    )


def test_a_damaged_database_is_named_in_one_line(tmp_path, capsys):
    data = str(tmp_path)
    assert evse(capsys, "station", "CP1", "--data", data)[0] == 0
    path = storage.database_file(data)
    conn = sqlite3.connect(path)
    roots = "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'stations'"
    pages = [page for (page,) in conn.execute(roots)]  # the table's and its index's
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with open(path, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(b"\xff" * page_size)
    message = f"evse cs: database {path}: database disk image is malformed\n"
    assert evse(capsys, "stations", "--data", data) == (2, "", message)
    ports = [f"--{name}-port=0" for name in ("ocpp", "http", "web")]
    served = subprocess.run(
        [sys.executable, "-m", "host", "cs", "serve", "--data", data, *ports],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 2
    assert f"evse cs: database {path}: DatabaseError: database disk image is malformed\n" in (
        served.stderr
    )
    assert "Traceback" not in served.stderr


def test_an_unreachable_postgresql_is_one_line(capsys):
    port = free_port()  # nothing listens there
    code, out, err = evse(capsys, "tags", "--db", f"postgresql://evse@127.0.0.1:{port}/cs")
    assert (code, out) == (2, "")
    assert err.startswith("evse cs: database: connection failed") and "Traceback" not in err


def test_an_unwritable_data_directory_is_named(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    (data / "cs.sqlite3").mkdir(parents=True)  # a database SQLite cannot open, even as root
    data.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: as for anyone else
        monkeypatch.setattr(os, "access", lambda path, mode: False)
    try:
        code, _, err = evse(capsys, "tag", "T1", "--data", str(data))
    finally:
        data.chmod(0o755)
    assert (code, err) == (
        2,
        f"evse cs: database {data}/cs.sqlite3: unable to open database file"
        f" ({data} is not writable)\n",
    )


@pytest.mark.parametrize(
    "argv",
    [["export", "transactions"], ["log"], ["tags", "--json"], ["user", "list"]],
)
def test_output_into_a_closed_pipe_stops_quietly(tmp_path, argv):
    db = storage.Db(storage.database_url(str(tmp_path), None))
    start = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": T0}
    storage.start_transaction(db, "CP1", start)
    storage.set_id_tag(db, "T")
    db.execute(storage.LOG_SQL, ("CP1", T0, "in", "[]"))
    db.commit()
    db.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone (`| head` done)
    with os.fdopen(write_end, "wb") as pipe:
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from host.cli import main; sys.exit(main())"]
            + ["cs", *argv, "--data", str(tmp_path)],
            stdout=pipe,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # buffered
        )
    assert (done.returncode, done.stderr) == (141, "")


def test_serve_send_and_export_end_to_end(tmp_path, capsys):
    data = str(tmp_path / "cs")
    ocpp_port, http_port, web_port = free_port(), free_port(), free_port()
    os.makedirs(f"{data}/firmware")
    with open(f"{data}/firmware/fw-1.2.bin", "wb") as f:
        f.write(b"\x01firmware")
    url = storage.database_url(data, None)
    db = storage.Db(url)  # a frame older than the retention below
    db.execute(storage.LOG_SQL, ("OLD", storage.now_iso(time.time() - 3 * 86400), "in", "[]"))
    db.commit()
    db.close()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host",
            "cs",
            "serve",
            "--data",
            data,
            "--ocpp-port",
            str(ocpp_port),
            "--http-port",
            str(http_port),
            "--web-port",
            str(web_port),
            "--log-days",
            "2",
            "--unknown",
            "accept",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "central system: ws://127.0.0.1:" in server.stdout.readline()
        assert evse(capsys, "tag", "TAG1", "--data", data)[0] == 0

        class Running:
            port = ocpp_port

        def pruned():
            db = storage.Db(url)
            try:
                return storage.search_messages(db, "OLD") == []
            finally:
                db.close()

        async def scenario():
            await wait_for(pruned, timeout=20)
            async with station(Running, "CP1") as cp:  # type: ignore[arg-type]
                await cp.call(call.BootNotification("M", "V"))
                start = await cp.call(call.StartTransaction(1, "TAG1", 100, T0))
                values = [{"timestamp": T0, "sampledValue": [{"value": "150"}]}]
                await cp.call(call.MeterValues(1, values, start.transaction_id))
                await cp.call(call.StopTransaction(200, T0, start.transaction_id))
                result = await asyncio.to_thread(
                    main,
                    [
                        "cs",
                        "send",
                        "CP1",
                        "Reset",
                        '{"type": "Soft"}',
                        "--wait",
                        "20",
                        "--data",
                        data,
                    ],
                )
                await wait_for(lambda: cp.received)
                return result, start.transaction_id

        code, transaction_id = run(scenario(), timeout=60)
        out = capsys.readouterr().out
        assert code == 0
        assert "Reset -> CP1: answered" in out and '"status": "Accepted"' in out
        _, out, _ = evse(capsys, "export", "transactions", "--data", data)
        (row,) = list(csv.DictReader(io.StringIO(out)))
        assert (row["id"], row["meter_start"], row["meter_stop"]) == (
            str(transaction_id),
            "100",
            "200",
        )
        _, out, _ = evse(
            capsys, "export", "meter-values", "--transaction", str(transaction_id), "--data", data
        )
        assert [r["value"] for r in csv.DictReader(io.StringIO(out))] == ["150"]
        _, out, _ = evse(
            capsys, "log", "--station", "CP1", "--contains", "Reset", "--json", "--data", data
        )
        (reset,) = json.loads(out)
        assert reset["direction"] == "out" and '"Reset"' in reset["text"]
        _, out, _ = evse(capsys, "log", "--station", "CP1", "--json", "--data", data)
        assert len(json.loads(out)) == 10  # 4 calls + 4 answers, Reset + its answer

        base = f"http://127.0.0.1:{http_port}"
        assert urllib.request.urlopen(f"{base}/firmware/fw-1.2.bin").read() == b"\x01firmware"
        upload = urllib.request.Request(f"{base}/diagnostics/cp1.log", data=b"log", method="PUT")
        assert urllib.request.urlopen(upload).status == 201
        with open(f"{data}/diagnostics/cp1.log", "rb") as f:
            assert f.read() == b"log"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/firmware/..%2Fcs.sqlite3")
        assert missing.value.code == 404

        async def stopped_by_a_supervisor():
            async with station(Running, "CP2") as cp:  # type: ignore[arg-type]
                await cp.call(call.BootNotification("M", "V"))
                server.send_signal(signal.SIGTERM)  # as systemd and docker stop a service
                await asyncio.wait_for(cp._connection.wait_closed(), 10)
                return cp._connection.close_code

        assert run(stopped_by_a_supervisor()) == 1001  # going away
        assert server.wait(timeout=10) == 0
        _, out, _ = evse(capsys, "stations", "--json", "--data", data)
        assert [s["online"] for s in json.loads(out)] == [False, False]
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.parametrize(
    "length, status",
    [("abc", 400), ("-5", 400), ("1_0", 400), ("9" * 5000, 400), (None, 411), ("67108865", 413)],
)
def test_an_upload_with_a_bad_content_length_is_answered(tmp_path, length, status):
    server = files.start_file_server(str(tmp_path), "127.0.0.1", 0)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.putrequest("PUT", "/diagnostics/b.txt")
        if length is not None:
            conn.putheader("Content-Length", length)
        conn.endheaders()
        assert conn.getresponse().status == status
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "diagnostics" / "b.txt").exists()


@pytest.mark.parametrize(
    ("action", "payload", "options", "ttl_s"),
    [
        ("ClearCache", "{}", [], 3600),
        ("Reset", '{"type": "Soft"}', [], 300),  # acts on the session at hand: not late
        ("Reset", '{"type": "Soft"}', ["--ttl", "7200"], 7200),
    ],
)
def test_send_to_an_offline_station_waits_then_reports_queued(
    tmp_path, capsys, action, payload, options, ttl_s
):
    data = str(tmp_path)
    evse(capsys, "station", "CP1", "--data", data)
    code, out, _ = evse(
        capsys, "send", "CP1", action, payload, "--wait", "0", *options, "--data", data
    )
    assert code == 0 and f"{action} -> CP1: queued" in out
    (command,) = json.loads(evse(capsys, "commands", "--json", "--data", data)[1])
    assert (command["action"], command["state"]) == (action, "queued")
    created, expires = (
        datetime.datetime.fromisoformat(command[name]) for name in ("created", "expires")
    )
    assert abs((expires - created).total_seconds() - ttl_s) < 1


@pytest.mark.parametrize("station_id", ["NEW", "CP #1"])  # "CP #1": the server lets it in
def test_approving_a_pending_station_triggers_its_boot(tmp_path, capsys, station_id):
    from host.cs import storage

    data = str(tmp_path)
    db = storage.Db(storage.database_url(data, None))
    storage.station_for_connection(db, station_id, "pending")  # as an unknown station left it
    storage.set_station(db, station_id, registration="Pending")  # and its BootNotification
    db.commit()
    db.close()
    code, out, _ = evse(capsys, "station", station_id, "--approval", "accepted", "--data", data)
    assert code == 0 and "TriggerMessage queued" in out
    (command,) = json.loads(evse(capsys, "commands", "--json", "--data", data)[1])
    assert (command["action"], command["payload"]) == (  # JSON, not text of JSON
        "TriggerMessage",
        {"requestedMessage": "BootNotification"},
    )


@pytest.fixture
def file_port(request, tmp_path, monkeypatch):
    """The file port on a free port, with a 1 s idle timeout (or the test's parameter) and
    room for two transfers."""
    monkeypatch.setattr(files, "TIMEOUT_S", getattr(request, "param", 1))
    monkeypatch.setattr(files, "TRANSFERS", 2)
    server = files.start_file_server(str(tmp_path), "127.0.0.1", 0)
    yield tmp_path, server.server_address[1]
    server.shutdown()
    server.server_close()


def raw_request(port, head, body=b""):
    """Send `head` and `body` on a socket of its own; return it, still open."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + body)
    return sock


def answer(sock):
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def test_uploads_are_whole_or_not_at_all_and_each_its_own(file_port):
    data_dir, port = file_port
    put = "PUT /diagnostics/{} HTTP/1.0\r\nContent-Length: {}\r\n\r\n"
    broken = raw_request(port, put.format("cut.log", 1000), b"x" * 10)
    broken.shutdown(1)  # the body ends after 10 of 1,000 bytes
    assert answer(broken).startswith(b"HTTP/1.0 400")
    # two uploads of one name at once (two stations' diagnostics): each its own file, whole,
    # and neither replaces the other; nor does a third, later
    first = raw_request(port, put.format("same.log", 6), b"AAA")
    second = raw_request(port, put.format("same.log", 6), b"BBBBBB")
    assert answer(second).startswith(b"HTTP/1.0 201")
    first.sendall(b"AAA")
    assert answer(first).startswith(b"HTTP/1.0 201")
    assert answer(raw_request(port, put.format("same.log", 6), b"CCCCCC")).startswith(
        b"HTTP/1.0 201"
    )
    kept = {p.name: p.read_bytes() for p in (data_dir / "diagnostics").iterdir()}
    assert kept == {"same.log": b"BBBBBB", "same-1.log": b"AAAAAA", "same-2.log": b"CCCCCC"}


@pytest.mark.parametrize("file_port", [3], indirect=True)  # 503s to see for 3 s, loaded or not
def test_a_stalled_client_is_dropped_and_the_port_has_bounded_room(file_port):
    _, port = file_port
    put = "PUT /diagnostics/a.log HTTP/1.0\r\nContent-Length: 10\r\n\r\n"
    stalled = [raw_request(port, put) for _ in range(2)]  # bodies that never come
    deadline = time.monotonic() + 10
    while not answer(raw_request(port, "GET /firmware/x.bin HTTP/1.0\r\n\r\n")).startswith(
        b"HTTP/1.0 503"  # both transfers taken, once the server has read the two heads
    ):
        assert time.monotonic() < deadline, "the stalled uploads never took the transfers"
        for i, sock in enumerate(stalled):  # its head came after a probe's: 503, or dropped
            if select.select([sock], [], [], 0)[0]:
                answer(sock)
                stalled[i] = raw_request(port, put)  # another takes its place
    for sock in stalled:
        assert answer(sock) == b""  # dropped after the idle timeout, unanswered
    fourth = raw_request(port, "GET /firmware/none.bin HTTP/1.0\r\n\r\n")
    assert answer(fourth).startswith(b"HTTP/1.0 404")  # room again


def test_the_port_holds_a_bounded_number_of_connections(tmp_path, monkeypatch):
    # each open connection is a thread (two while its head comes): thousands of idle ones
    # would exhaust the process's threads
    monkeypatch.setattr(files, "CONNECTIONS", 3)
    server = files.start_file_server(str(tmp_path), "127.0.0.1", 0)
    port = server.server_address[1]
    try:
        idle = [raw_request(port, "") for _ in range(3)]
        assert answer(raw_request(port, "")) == b""  # the fourth: closed at once
        for sock in idle:
            sock.close()
        get = "GET /firmware/none.bin HTTP/1.0\r\n\r\n"
        deadline = time.monotonic() + 10
        while not (reply := answer(raw_request(port, get))):  # once the idle ones are gone
            assert time.monotonic() < deadline, "the closed connections kept their places"
        assert reply.startswith(b"HTTP/1.0 404")
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_upload_is_dropped_and_leaves_nothing(file_port):
    data_dir, port = file_port  # a transfer has to move PACE bytes each second here
    sock = raw_request(port, "PUT /diagnostics/slow.log HTTP/1.0\r\nContent-Length: 1000\r\n\r\n")
    started = time.monotonic()

    def trickle():  # a byte each 0.2 s: never silent for the 1 s timeout
        with contextlib.suppress(OSError):
            for _ in range(1000):
                sock.send(b"x")
                time.sleep(0.2)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    assert answer(sock) == b""  # dropped, unanswered
    assert time.monotonic() - started < 4
    sender.join(10)
    assert os.listdir(data_dir / "diagnostics") == []


def test_uploads_stop_at_the_diagnostics_quota(file_port, monkeypatch):
    data_dir, port = file_port
    monkeypatch.setattr(files, "DIAGNOSTICS_QUOTA", 100)
    put = "PUT /diagnostics/{} HTTP/1.0\r\nContent-Length: 60\r\n\r\n"
    assert answer(raw_request(port, put.format("a.log"), b"a" * 60)).startswith(b"HTTP/1.0 201")
    full = answer(raw_request(port, put.format("b.log"), b"b" * 60))
    assert full.startswith(b"HTTP/1.0 507") and b"no room for diagnostics" in full
    (data_dir / "diagnostics" / "a.log").unlink()  # the operator makes room
    assert answer(raw_request(port, put.format("b.log"), b"b" * 60)).startswith(b"HTTP/1.0 201")
    assert os.listdir(data_dir / "diagnostics") == ["b.log"]


def test_a_request_head_has_a_bounded_time_however_slowly_it_comes(file_port):
    _, port = file_port
    sock = raw_request(port, "")
    started = time.monotonic()

    def trickle():  # a byte each 0.2 s: the request line alone would take 7 s
        with contextlib.suppress(OSError):
            for byte in b"GET /firmware/none.bin HTTP/1.0\r\n":
                sock.send(bytes([byte]))
                time.sleep(0.2)

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    assert answer(sock) == b""  # cut off after the 1 s the head has
    assert time.monotonic() - started < 4
    sender.join(10)
    # and waiting for a head takes no transfer: the port stays free for others
    idle = [raw_request(port, "") for _ in range(3)]
    assert answer(raw_request(port, "GET /firmware/none.bin HTTP/1.0\r\n\r\n")).startswith(
        b"HTTP/1.0 404"
    )
    for sock in idle:
        sock.close()


def test_a_firmware_download_resumes_from_a_range(file_port):
    data_dir, port = file_port
    (data_dir / "firmware" / "fw.bin").write_bytes(bytes(range(256)) * 1000)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("HEAD", "/firmware/fw.bin")
    head = conn.getresponse()
    assert (head.status, head.getheader("Content-Length"), head.read()) == (200, "256000", b"")
    assert head.getheader("Accept-Ranges") == "bytes"
    conn.request("GET", "/firmware/fw.bin", headers={"Range": "bytes=255990-"})
    rest = conn.getresponse()
    assert (rest.status, rest.getheader("Content-Range")) == (206, "bytes 255990-255999/256000")
    assert rest.read() == bytes(range(246, 256))
    conn.request("GET", "/firmware/fw.bin", headers={"Range": "bytes=300000-"})
    assert conn.getresponse().status == 416
    conn.close()
