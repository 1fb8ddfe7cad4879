"""Central-system-initiated operations: a durable per-station command queue.

The CLI or the REST API queues a command in the database with an expiry
(`storage.enqueue_command`). The server polls the queue, sends each command to its station
when the station is connected (one CALL at a time, as OCPP-J requires), and records the
command's state (queued -> sent -> answered | failed; queued -> expired; sent -> queued
when its connection closed before it went out) with the answer.
A command left sent by a server that stopped before the answer is failed at the next start:
the station may have carried it out. So is, at a poll, one left sent that no delivery waits
for (its answer's record lost with the database process, say), once it is older than the
command timeout and LOST_MARGIN_S.
"""

import asyncio
import json
import logging
import ssl
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from host.cs import schemas, storage
from host.cs.storage import now_iso
from host.tools.station import AUTH_KEY_RULE, auth_key_ok

if TYPE_CHECKING:
    from host.cs.server import CentralSystem, Session

log = logging.getLogger("evse.cs")

POLICY_VIOLATION = 1008  # WebSocket close code
# OCPP 1.6 4.2: "While in pending state, the following Central System initiated messages are
# not allowed: RemoteStartTransaction.req and RemoteStopTransaction.req". They stay queued
# until the station is accepted (or they expire).
NOT_WHILE_PENDING = frozenset({"RemoteStartTransaction", "RemoteStopTransaction"})
# A command sent that no delivery here waits for is failed once sent longer ago than the
# command timeout and this margin (storage.fail_lost_commands). The server's own deliveries
# are known (CommandQueue._taken); the margin spares those of a server it cannot know of
# (one still stopping, or a second one started on the same database by mistake).
LOST_MARGIN_S = 30.0


# The longest a command may wait for its station, the same from the CLI and the API: longer
# is a mistake (a month offline; 1e20 s is past any date)
MAX_TTL_S = 30 * 86400
# How long a command waits for its station unless the operator says: an hour, but five
# minutes for what acts on the charging session at hand. Delivered an hour late, a remote
# start charges whichever car is plugged in then on the tag it names, and an unlock or a
# reset stops a later driver's transaction.
DEFAULT_TTL_S = 3600
PROMPT_TTL_S = 300
PROMPT_ACTIONS = frozenset({"RemoteStartTransaction", "UnlockConnector", "Reset"})


def default_ttl(action: str) -> float:
    return PROMPT_TTL_S if action in PROMPT_ACTIONS else DEFAULT_TTL_S


def validate(station: str, action: str, payload: Any) -> None:
    """Raise ValueError naming the problem when a command cannot be queued."""
    if action not in schemas.ALL_CS_ACTIONS:
        raise ValueError(
            f"{action!r} is not a central-system operation; one of: "
            + ", ".join(schemas.ALL_CS_ACTIONS)
        )
    if not station:
        raise ValueError("station id is empty")
    try:
        schemas.check(action, payload)
    except schemas.SchemaError as error:
        raise ValueError(f"invalid payload: {error}") from None
    problem = _spec_problem(action, payload)
    if problem:
        raise ValueError(f"invalid payload: {action}: {problem}")
    if storage.sets_authorization_key(action, payload) and not auth_key_ok(payload["value"]):
        raise ValueError(f"invalid payload: the new AuthorizationKey {AUTH_KEY_RULE}")
    if (
        storage.configures(action, payload, "SecurityProfile")
        and payload["value"] not in storage.SECURITY_PROFILES
    ):
        raise ValueError("invalid payload: the new SecurityProfile is 0, 1, 2 or 3")


# Where a request carries a charging profile (OCPP 1.6 7.7 ChargingProfile)
_PROFILE_FIELDS = {
    "SetChargingProfile": "csChargingProfiles",
    "RemoteStartTransaction": "chargingProfile",
}


def _spec_problem(action: str, payload: dict[str, Any]) -> str | None:
    """What a payload valid for its schema breaks of the specification's rules across
    fields (a station would reject it), or None. OCPP 1.6, sections as cited."""
    if action == "SendLocalList" and payload["updateType"] == "Full":
        for index, entry in enumerate(payload.get("localAuthorizationList", ())):
            if "idTagInfo" not in entry:  # 7.1: idTagInfo "(Required when UpdateType is Full)"
                return f"localAuthorizationList.{index} must contain idTagInfo in a Full update"
    field = _PROFILE_FIELDS.get(action)
    profile = payload.get(field) if field else None
    if profile is None:
        return None
    purpose = profile["chargingProfilePurpose"]
    if profile["stackLevel"] < 0:  # 7.7: "Lowest level is 0"
        return f"{field}.stackLevel must be at least 0"
    if "transactionId" in profile and purpose != "TxProfile":
        # 7.7: "Only valid if ChargingProfilePurpose is set to TxProfile"
        return f"{field}.transactionId is only for a TxProfile"
    if action == "RemoteStartTransaction":
        if purpose != "TxProfile":  # 5.11: "The purpose ... SHALL be set to TxProfile"
            return f"{field}.chargingProfilePurpose must be TxProfile"
    elif purpose == "ChargePointMaxProfile" and payload["connectorId"] != 0:
        # 3.13.1: "ChargePointMaxProfile can only be set at Charge Point ConnectorId 0"
        return "a ChargePointMaxProfile is set on connectorId 0"
    elif purpose == "TxProfile" and payload["connectorId"] == 0:
        # 3.13.1: a TxProfile is for the transaction on its connector, discarded without one
        return "a TxProfile is set on a connector (connectorId > 0)"
    return None


def lockout(value: str, station: dict[str, Any] | None, tls: ssl.SSLContext | None) -> str | None:
    """Why a station that takes SecurityProfile `value` could no longer connect to this
    server, or None: it would stay out until someone reconfigures it on site (a station
    takes a new profile from its next connection or reboot, and keeps no way back)."""
    profile = int(value) if value in storage.SECURITY_PROFILES else 0
    if profile >= 2 and tls is None:
        return (
            f"at profile {profile} the station connects with TLS, and this server has none"
            " (--tls-cert)"
        )
    if profile == 3 and tls is not None and tls.verify_mode == ssl.CERT_NONE:
        return (
            "at profile 3 the station shows a client certificate, and this server checks"
            " none (--tls-client-ca)"
        )
    if profile in (1, 2) and not (
        station and (station["auth_hash"] or station["pending_auth_hash"])
    ):
        return (
            f"at profile {profile} the station shows its AuthorizationKey, and none is set here"
            " (ChangeConfiguration AuthorizationKey first, or evse cs station --auth-key)"
        )
    return None


class CommandQueue:
    def __init__(self, cs: "CentralSystem", timeout_s: float, poll_s: float):
        self.cs = cs
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self._task: asyncio.Task | None = None
        self._deliveries: set[asyncio.Task] = set()
        self._waiting: set[str] = set()  # stations with queued commands at the last poll
        # Stations a delivery runs for: one at a time per station, whatever its connection
        # (one that replaced the last waits for that delivery to end: order is kept).
        self._sending: set[str] = set()
        # Commands a delivery takes or took, until their end is recorded: they are never lost
        self._taken: set[int] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._poll())

    def stop(self) -> None:
        for task in [self._task, *self._deliveries]:
            if task:
                task.cancel()

    async def _poll(self) -> None:
        """Deliver what was queued (by the CLI, in another process, for instance) and
        disconnect the stations an operator rejected."""
        while True:
            try:
                rows = await self.cs.store.call(storage.queued_commands)
                self._waiting = {row["station"] for row in rows}
                for station_id in self._waiting:
                    session = self.cs.sessions.get(station_id)
                    if session is not None:
                        self.wake(session)
                # As of now: a take queued after this look runs after it in the database
                older_than_s = self.timeout_s + LOST_MARGIN_S
                waiting = set(self._taken)
                lost = await self.cs.store.call(storage.fail_lost_commands, older_than_s, waiting)
                if lost:
                    log.warning("commands %s: sent, their answers lost: failed", lost)
                for station_id in await self.cs.store.call(storage.rejected_online):
                    session = self.cs.sessions.get(station_id)
                    if session is not None:
                        log.info("%s: rejected by the operator, disconnected", station_id)
                        session.close(POLICY_VIOLATION, "rejected by the operator")
            except Exception:
                log.exception("command queue poll failed")
            await asyncio.sleep(self.poll_s)

    def ready(self, session: "Session") -> None:
        """The station connected or booted: deliver what waits for it (the next poll
        catches what was queued since the last one)."""
        if session.station_id in self._waiting:
            self.wake(session)

    def wake(self, session: "Session") -> None:
        """Deliver the station's queued commands unless a delivery is already running. Only
        to stations whose BootNotification was answered Accepted or Pending (OCPP 1.6 lets a
        central system configure a pending station), before or after a reconnection."""
        station_id = session.station_id
        if station_id in self._sending or session.registration not in ("Accepted", "Pending"):
            return
        self._sending.add(station_id)
        task = asyncio.create_task(self._deliver(session))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, session: "Session") -> None:
        try:
            while self._current(session):
                rows = await self.cs.store.call(storage.queued_commands, session.station_id)
                rows = [row for row in rows if self._allowed(session, row["action"])]
                if not rows:
                    return
                for row in rows:
                    if not self._current(session):
                        return
                    # a BootNotification answered meanwhile may have made it pending
                    if self._allowed(session, row["action"]):
                        await self._send(session, row)
        except Exception:  # the database is down, say: the next poll tries again
            log.exception("%s: command delivery failed", session.station_id)
        finally:  # a new connection's delivery starts at the next poll
            self._sending.discard(session.station_id)

    @staticmethod
    def _allowed(session: "Session", action: str) -> bool:
        """Whether `action` may be sent to the station as registered now (OCPP 1.6 4.2)."""
        registration = session.registration
        return registration == "Accepted" or (
            registration == "Pending" and action not in NOT_WHILE_PENDING
        )

    def _current(self, session: "Session") -> bool:
        """Whether the connection is still the station's, and open."""
        return session.open and self.cs.sessions.get(session.station_id) is session

    async def _send(self, session: "Session", row: dict[str, Any]) -> None:
        """Send a command and record its answer, in _taken from before its take until its end
        is recorded (or that failed: then a poll fails it, if still sent)."""
        self._taken.add(row["id"])
        try:
            await self._exchange(session, row)
        finally:
            self._taken.discard(row["id"])

    async def _exchange(self, session: "Session", row: dict[str, Any]) -> None:
        uid = str(uuid.uuid4())
        store = self.cs.store
        if not await store.call(storage.take_command, row["id"], uid):
            return  # expired (or ended) while the commands ahead of it were in flight
        action, payload = row["action"], json.loads(row["payload"])
        if storage.configures(action, payload, "SecurityProfile"):
            station = await store.call(storage.get_station, session.station_id)
            problem = lockout(payload["value"], station, self.cs.ssl_context)
            if problem:
                log.warning(
                    "%s: SecurityProfile %s not sent: %s",
                    session.station_id,
                    payload["value"],
                    problem,
                )
                error = f"not sent: {problem}"
                await store.call(
                    storage.mark_command, row["id"], "failed", sent_at=None, error=error
                )
                return
        shown = json.dumps(storage.without_secret(action, payload))
        head = f'[2,"{uid}",{orjson.dumps(action).decode()},'
        try:
            self.cs.send(session, head + row["payload"] + "]", head + shown + "]")
        except ConnectionError:  # closed or replaced meanwhile: it waits for the next one
            await store.call(storage.mark_command, row["id"], "queued", uid=None, sent_at=None)
            return
        future = asyncio.get_running_loop().create_future()
        session.pending[uid] = future
        changes: dict[str, Any] = {}  # to the station's record, once it took them
        try:
            reply = await asyncio.wait_for(future, self.timeout_s)
        except ConnectionError:
            state, fields = "failed", {"error": "connection closed before the answer"}
            changes = storage.unanswered_changes(action, payload)
        except TimeoutError:
            state, fields = "failed", {"error": f"no answer within {self.timeout_s:g} s"}
            changes = storage.unanswered_changes(action, payload)
        else:
            state, fields = self._outcome(action, reply)
            if state == "answered":
                changes = storage.station_changes(action, payload, reply[2].get("status"))
        finally:
            session.pending.pop(uid, None)
        if changes:  # the station uses them from its next connection or reboot: so do we
            await store.call(storage.set_station, session.station_id, **changes)
        await store.call(storage.mark_command, row["id"], state, answered_at=now_iso(), **fields)

    @staticmethod
    def _outcome(action: str, reply: list) -> tuple[str, dict[str, Any]]:
        if len(reply) < 3:  # [3, id] or [4, id]: the server passes on what it cannot parse
            return "failed", {"error": "malformed answer", "response": json.dumps(reply)}
        if reply[0] == 4:
            code = reply[2]
            description = reply[3] if len(reply) > 3 else ""
            details = reply[4] if len(reply) > 4 else {}
            return "failed", {
                "error": f"CALLERROR {code}: {description}",
                "response": json.dumps(details),
            }
        payload = reply[2]
        try:
            schemas.check(action, payload, response=True)
        except schemas.SchemaError as error:
            return "failed", {"error": f"invalid answer: {error}", "response": json.dumps(payload)}
        return "answered", {"response": json.dumps(payload)}

    def on_reply(self, session: "Session", message: list) -> None:
        """A CALLRESULT or CALLERROR from the station; unknown ids are ignored (logged)."""
        future = session.pending.get(message[1])
        if future is None or future.done():
            log.warning("%s: reply to unknown call %s", session.station_id, message[1])
            return
        future.set_result(message)
