"""Read queries for the API: paginated lists and detail views, as functions of a `Db`.

Pages are `{"items", "limit", "offset", "next_offset"}` (plus `"total"` for stations and id
tags, where counting is cheap): `next_offset` is null on the last page. Every query is plain
SQL that SQLite and PostgreSQL both run.
"""

import json
import math
from typing import Any

import orjson

from host.cs.storage import (
    PENDING_COLUMNS,
    Db,
    conditions,
    find_id_tag,
    frames,
    holding,
    like_literal,
    shown_command,
    where,
    with_bools,
    with_defaults,
    with_energy,
)

STATION_COLUMNS = (
    "id, approval, registration, online, security_profile, vendor, model, serial, firmware,"
    f" meter_type, meter_serial, boot_at, last_seen, created, {PENDING_COLUMNS}"
)
# A connector has a fault when it says so or reports any error code.
FAULTED = "(c.status = 'Faulted' OR (c.error_code IS NOT NULL AND c.error_code <> 'NoError'))"
ENERGY = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"


def _page(
    db: Db,
    select: str,
    clauses: list[str],
    params: list[Any],
    order: str,
    limit: int,
    offset: int,
    count: bool = True,
) -> dict[str, Any]:
    rows = db.all(
        f"{select} {where(clauses)} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit + 1, offset],
    )
    page = _page_of(rows, limit, offset)
    if count:
        from_where = select[select.index(" FROM ") :] + " " + where(clauses)
        page["total"] = db.one(f"SELECT COUNT(*) AS n {from_where}", params)["n"]  # type: ignore[index]
    return page


def _page_of(rows: list[dict[str, Any]], limit: int, offset: int) -> dict[str, Any]:
    """A page from the rows at `offset`, fetched one past `limit` to know whether more follow."""
    return {
        "items": rows[:limit],
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if len(rows) > limit else None,
    }


def _connectors(db: Db, station_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    by_station: dict[str, list[dict[str, Any]]] = {s: [] for s in station_ids}
    if station_ids:
        marks = ", ".join("?" * len(station_ids))
        for row in db.all(
            f"SELECT c.*, {FAULTED} AS faulted FROM connectors c WHERE c.station IN ({marks})"
            " ORDER BY c.station, c.connector_id",
            station_ids,
        ):
            by_station[row.pop("station")].append(with_bools(row, "faulted"))
    return by_station


def list_stations(
    db: Db, q: str | None, online: bool | None, problems: bool, limit: int, offset: int
) -> dict[str, Any]:
    problem = (
        "(s.online = 0 OR EXISTS (SELECT 1 FROM connectors c"
        f" WHERE c.station = s.id AND {FAULTED}))"
    )
    clauses, params = conditions(
        (
            holding("s.id", q),
            ("s.online = ?", None if online is None else int(online)),
            (problem, True if problems else None),
        )
    )
    select = f"SELECT {STATION_COLUMNS} FROM stations s"
    page = _page(db, select, clauses, params, "s.id", limit, offset)
    connectors = _connectors(db, [row["id"] for row in page["items"]])
    for row in page["items"]:
        with_bools(row, "online", "auth_key_pending")
        row["connectors"] = connectors[row["id"]]
    return page


def get_station(db: Db, station_id: str) -> dict[str, Any] | None:
    row = db.one(f"SELECT {STATION_COLUMNS} FROM stations WHERE id = ?", (station_id,))
    if row is None:
        return None
    with_bools(row, "online", "auth_key_pending")
    row["connectors"] = _connectors(db, [station_id])[station_id]
    return row


def station_exists(db: Db, station_id: str) -> bool:
    return db.one("SELECT 1 AS x FROM stations WHERE id = ?", (station_id,)) is not None


def summary(db: Db) -> dict[str, Any]:
    stations = db.one(
        "SELECT COUNT(*) AS total, COALESCE(SUM(online), 0) AS online FROM stations"
    ) or {"total": 0, "online": 0}
    faulted = db.one(f"SELECT COUNT(*) AS n FROM connectors c WHERE {FAULTED}") or {"n": 0}
    active = db.one("SELECT COUNT(*) AS n FROM transactions WHERE stop_time IS NULL") or {"n": 0}
    queued = db.one("SELECT COUNT(*) AS n FROM commands WHERE state = 'queued'") or {"n": 0}
    return {
        "stations": stations["total"],
        "online": stations["online"],
        "offline": stations["total"] - stations["online"],
        "faulted_connectors": faulted["n"],
        "active_transactions": active["n"],
        "queued_commands": queued["n"],
    }


def list_transactions(
    db: Db,
    station: str | None,
    id_tag: str | None,
    active: bool | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    tag = id_tag and find_id_tag(db, id_tag)
    clauses, params = conditions(
        (
            ("station = ?", station),
            ("id_tag = ?", tag["id_tag"] if tag else id_tag),  # as transactions spell it
            ("stop_time IS NULL" if active else "stop_time IS NOT NULL", active),
        )
    )
    page = _page(db, "SELECT * FROM transactions", clauses, params, "id DESC", limit, offset, False)
    for row in page["items"]:
        with_energy(row)
    return page


def get_transaction(db: Db, transaction_id: int) -> dict[str, Any] | None:
    tx = db.one("SELECT * FROM transactions WHERE id = ?", (transaction_id,))
    if tx is None:
        return None
    with_energy(tx)
    tx["series"] = series(db, tx)
    return tx


def _samples(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A stored MeterValue's sampled values, optional fields filled with their OCPP defaults."""
    return [with_defaults(sample) for sample in orjson.loads(row["sampled"])]


def _number(sample: dict[str, Any]) -> float | None:
    """A reading's value in W or Wh; None for what is no reading to plot: a signed blob
    (SignedData, digits only or not), a text that is no finite number."""
    if sample["format"] != "Raw":
        return None
    try:
        value = float(sample["value"])
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return value * 1000 if sample["unit"] in ("kW", "kWh") else value


def series(db: Db, tx: dict[str, Any]) -> list[dict[str, Any]]:
    """Power (W) and energy delivered so far (Wh) per sample time at the outlet, for the chart.
    Power is the total when the station reports one, otherwise the sum of its phases."""
    points = []
    for row in db.all(
        "SELECT timestamp, sampled FROM meter_values WHERE transaction_id = ? ORDER BY timestamp",
        (tx["id"],),
    ):
        point: dict[str, Any] = {"timestamp": row["timestamp"]}
        phase_sum = None
        for sample in _samples(row):
            value = _number(sample)
            if value is None or sample["location"] != "Outlet":
                continue
            if sample["measurand"] == ENERGY and sample["phase"] == "":
                point["energy_wh"] = value - tx["meter_start"]
            elif sample["measurand"] == POWER and sample["phase"] in ("", "N"):
                point["power_w"] = value
            elif sample["measurand"] == POWER and sample["phase"] in ("L1", "L2", "L3"):
                phase_sum = (phase_sum or 0.0) + value
        if "power_w" not in point and phase_sum is not None:
            point["power_w"] = phase_sum
        if len(point) > 1:
            points.append(point)
    return points


def list_meter_values(db: Db, transaction_id: int, limit: int, offset: int) -> dict[str, Any]:
    """A transaction's MeterValues in time order, each with its sampled values."""
    page = _page(
        db,
        "SELECT connector_id, timestamp, sampled FROM meter_values",
        ["transaction_id = ?"],
        [transaction_id],
        "timestamp, connector_id, digest",  # unique: offset pages neither skip nor repeat
        limit,
        offset,
    )
    for row in page["items"]:
        row["sampled"] = _samples(row)
    return page


def list_id_tags(db: Db, q: str | None, limit: int, offset: int) -> dict[str, Any]:
    clauses, params = conditions((holding("id_tag", q),))
    page = _page(db, "SELECT * FROM id_tags", clauses, params, "id_tag", limit, offset)
    for row in page["items"]:
        with_bools(row, "blocked")
    return page


def get_id_tag(db: Db, id_tag: str) -> dict[str, Any] | None:
    row = find_id_tag(db, id_tag)
    return with_bools(row, "blocked") if row else None


def list_messages(
    db: Db,
    station: str | None,
    direction: str | None,
    action: str | None,
    since: str | None,
    until: str | None,
    contains: str | None,
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """Newest first. `action` matches CALLs of that action (the answers carry no action)."""
    clauses, params = conditions(
        (
            ("direction = ?", direction),
            # as the station spaced it: JSON allows a space after each comma, and this
            # firmware (MicroPython's json.dumps) writes one; the `ocpp` package does not.
            # In any case, as `holding` (SQLite's LIKE ignores it, PostgreSQL's does not).
            (
                "lower(replace(text, ' ', '')) LIKE lower(?) ESCAPE '\\'",
                f'[2,"%","{like_literal(action)}",%' if action else None,
            ),
            holding("text", contains),
        )
    )
    rows = frames(db, station, clauses, params, limit + 1, offset, since, until)
    page = _page_of(rows, limit, offset)
    for row in page["items"]:
        row.update(_frame_summary(row["text"]))
    return page


def _frame_summary(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
        kind = {2: "CALL", 3: "CALLRESULT", 4: "CALLERROR"}[message[0]]
        uid = message[1]
    except (ValueError, LookupError, TypeError):
        return {"kind": "invalid", "uid": None, "action": None}
    return {"kind": kind, "uid": uid, "action": message[2] if kind == "CALL" else None}


def list_commands(
    db: Db, station: str | None, state: str | None, limit: int, offset: int
) -> dict[str, Any]:
    clauses, params = conditions((("station = ?", station), ("state = ?", state)))
    page = _page(db, "SELECT * FROM commands", clauses, params, "id DESC", limit, offset, False)
    page["items"] = [command_view(row) for row in page["items"]]
    return page


def command_view(row: dict[str, Any]) -> dict[str, Any]:
    """A command with its payload (without a secret) and the station's answer as JSON
    values, not text."""
    row = shown_command(row)
    for name in ("payload", "response"):
        if row[name] is not None:
            row[name] = json.loads(row[name])
    return row


def get_command(db: Db, command_id: int) -> dict[str, Any] | None:
    row = db.one("SELECT * FROM commands WHERE id = ?", (command_id,))
    return command_view(row) if row else None
