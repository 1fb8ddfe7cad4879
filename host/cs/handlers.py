"""What the central system does with each charge-point-initiated OCPP 1.6 message.

A handler takes the station's session and the validated payload and returns either the
response payload at once, after queueing its writes, or, when the answer depends on the
database, a `Query`: a function of the Db run in the next batch and what turns its result
into the response payload. Either way the server answers once the batch is committed, so an
answer always means "stored". No task or future per message.
"""

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from host.cs import storage
from host.cs.storage import now_iso

if TYPE_CHECKING:
    from host.cs.server import CentralSystem, Session


class Query(NamedTuple):
    run: Callable[..., Any]  # run(db, *args) in the store's batch
    args: tuple
    answer: Callable[[Any], dict[str, Any]]  # its result -> the response payload


Handler = Callable[["CentralSystem", "Session", dict[str, Any]], dict[str, Any] | Query]


def _as_is(result: dict[str, Any]) -> dict[str, Any]:
    return result


def boot_notification(cs: "CentralSystem", session: "Session", p: dict) -> Query:
    fields = {
        "vendor": p["chargePointVendor"],
        "model": p["chargePointModel"],
        "serial": p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
        "firmware": p.get("firmwareVersion"),
        "iccid": p.get("iccid"),
        "imsi": p.get("imsi"),
        "meter_type": p.get("meterType"),
        "meter_serial": p.get("meterSerialNumber"),
    }

    def answer(status: str) -> dict:
        session.registration = status
        interval = cs.heartbeat_s if status == "Accepted" else cs.boot_retry_s
        return {"status": status, "currentTime": now_iso(), "interval": interval}

    return Query(storage.record_boot, (session.station_id, fields), answer)


def heartbeat(cs: "CentralSystem", session: "Session", p: dict) -> dict:
    now = now_iso()
    cs.store.write(storage.LAST_SEEN_SQL, (now, session.station_id))
    return {"currentTime": now}


def authorize(cs: "CentralSystem", session: "Session", p: dict) -> Query:
    return Query(storage.id_tag_info, (p["idTag"],), lambda info: {"idTagInfo": info})


def start_transaction(cs: "CentralSystem", session: "Session", p: dict) -> Query:
    return Query(storage.start_transaction, (session.station_id, p), _as_is)


def stop_transaction(cs: "CentralSystem", session: "Session", p: dict) -> Query:
    return Query(storage.stop_transaction, (session.station_id, p), _as_is)


def meter_values(cs: "CentralSystem", session: "Session", p: dict) -> dict:
    station = session.station_id
    rows = storage.meter_value_rows(
        station, p["connectorId"], p.get("transactionId"), p["meterValue"]
    )
    # the transaction only if it is this station's (METER_VALUES_MESSAGE_SQL)
    rows = [row[:3] + (station,) + row[3:] for row in rows]
    cs.store.write_many(storage.METER_VALUES_MESSAGE_SQL, rows)
    return {}


STATUS_SQL = (
    "INSERT INTO connectors (station, connector_id, status, error_code, info, vendor_id,"
    " vendor_error_code, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (station, connector_id) DO UPDATE SET status = excluded.status,"
    " error_code = excluded.error_code, info = excluded.info, vendor_id = excluded.vendor_id,"
    " vendor_error_code = excluded.vendor_error_code, timestamp = excluded.timestamp"
)
STATUS_HISTORY_SQL = (
    "INSERT INTO status_history (station, connector_id, status, error_code, info, vendor_id,"
    " vendor_error_code, timestamp, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def status_notification(cs: "CentralSystem", session: "Session", p: dict) -> dict:
    row = (
        session.station_id,
        p["connectorId"],
        p["status"],
        p["errorCode"],
        p.get("info"),
        p.get("vendorId"),
        p.get("vendorErrorCode"),
        p.get("timestamp") or now_iso(),
    )
    cs.store.write(STATUS_SQL, row)
    cs.store.write(STATUS_HISTORY_SQL, row + (now_iso(),))
    return {}


def notification(action: str, answer: dict[str, Any]) -> Handler:
    """A message stored as it came (statuses, events, requests for the operator); those in
    SENT_UNTIL_ANSWERED once, however often they come."""

    def store(cs: "CentralSystem", session: "Session", p: dict) -> dict:
        row = (session.station_id, action, json.dumps(p, sort_keys=True), now_iso())
        if action in SENT_UNTIL_ANSWERED:
            cs.store.write(storage.NOTIFICATION_ONCE_SQL, row + row[:3])
        else:
            cs.store.write(storage.NOTIFICATION_SQL, row)
        return answer

    return store


# A station queues its critical security events while offline and sends each until it is
# answered (OCPP 1.6 security whitepaper): one stored whose answer was lost comes again.
# Each carries its time, so two events are never the same text.
SENT_UNTIL_ANSWERED = frozenset({"SecurityEventNotification"})


NOTIFICATIONS = {
    # Kept for the operator; no vendor's data transfer is implemented here, and OCPP 1.6 4.3
    # says a recipient without an implementation for the vendorId SHALL answer so.
    "DataTransfer": {"status": "UnknownVendorId"},
    "DiagnosticsStatusNotification": {},
    "FirmwareStatusNotification": {},
    "LogStatusNotification": {},
    "SecurityEventNotification": {},
    # The operator signs the CSR and sends it back with the CertificateSigned command.
    "SignCertificate": {"status": "Accepted"},
    "SignedFirmwareStatusNotification": {},
}


HANDLERS: dict[str, Handler] = {
    "Authorize": authorize,
    "BootNotification": boot_notification,
    "Heartbeat": heartbeat,
    "MeterValues": meter_values,
    "StartTransaction": start_transaction,
    "StatusNotification": status_notification,
    "StopTransaction": stop_transaction,
} | {action: notification(action, answer) for action, answer in NOTIFICATIONS.items()}
