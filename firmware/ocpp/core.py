# OCPP 1.6 Core profile: what the messages do to the station and what the station reports.
#
# ChargePoint holds one Session per connector. `tick()` (called a few times a second) follows the
# station: starts and stops transactions, samples meter values and works out each connector's
# status. `serve(rpc)` is the single sender while online: it sends, one CALL at a time and in this
# order, Authorize requests, StatusNotifications, the offline queue (transaction messages) and
# Heartbeats. Inbound CALLs are answered by `answer` (registered on the Rpc): a payload check,
# then the `on_*` handler of the action.
import net
from board import path
from ocpp import inbound, isotime
from ocpp.auth import Cache
from ocpp.config import Config, save_json
from ocpp.link import check_profile
from ocpp.rpc import CallError, Offline
from protocol.ocppj import SECURITY_ERROR, RpcError

CALL_TIMEOUT_S = 30
RESET_DRAIN_S = 10  # how long a Reset waits for the queue to reach the central system
RESET_GRACE_S = 1  # lets the Reset answer leave before the restart
VOLATILE_MAX = 4  # clock-aligned MeterValues outside transactions waiting to be sent
METER_WAIT_S = 10  # a StopTransaction waits this long at most for a reading after the opening
ENERGY_SAVE_S = 10  # a running transaction's meter register reaches flash this often
CLOCK_SLACK_S = 2  # the board clock follows the central system's when further off than this
ALIGNED_KEPT = 8  # StopTxnAlignedData: the latest clock-aligned samples a StopTransaction carries
CALL_ERROR_PAUSE_S = 10  # after a CALLERROR to a status, heartbeat or authorization
KEY_LENGTHS = (16, 40)  # AuthorizationKey: the security whitepaper's 16 bytes at least, 40 at most

# Station fault code -> OCPP ChargePointErrorCode. 'derating' is a warning, not a fault. Pilot
# trouble is EVCommunicationError, which per OCPP 1.6 is not a fault: SuspendedEVSE, not Faulted.
ERRORS = {
    "rcd": "GroundFailure",
    "rcd_selftest": "GroundFailure",
    "weld": "PowerSwitchFailure",
    "overcurrent": "OverCurrentFailure",
    "overtemp": "HighTemperature",
    "derating": "HighTemperature",
    "meter": "PowerMeterFailure",
    "diode": "EVCommunicationError",
    "pilot_e": "EVCommunicationError",
    "pilot_f": "EVCommunicationError",
    "proximity": "OtherError",
    "hang": "InternalError",
}
# CS -> CP actions of the other 1.6 profiles: known, answered NotSupported.
OTHER_ACTIONS = (
    "CancelReservation",
    "ClearChargingProfile",
    "GetCompositeSchedule",
    "GetDiagnostics",
    "GetLocalListVersion",
    "ReserveNow",
    "SendLocalList",
    "SetChargingProfile",
    "TriggerMessage",
    "UpdateFirmware",
)


def _error(faults):
    """(errorCode, info, vendorErrorCode, faulted) of the first fault in `faults`."""
    for fault in faults:
        if fault.code != "derating":
            code = ERRORS.get(fault.code, "OtherError")
            return code, fault.message, fault.code, code != "EVCommunicationError"
    for fault in faults:
        return ERRORS["derating"], fault.message, fault.code, False
    return "NoError", "", "", False


class Session:
    """OCPP state of one connector; id 0 is the station as a whole (`connector` = the station,
    for its faults)."""

    def __init__(self, connector_id, connector):
        self.id = connector_id
        self.connector = connector
        self.tx = None  # local transaction id (the queue maps it to the central system's)
        self.tag = None  # idTag of the transaction
        self.begin = None  # Transaction.Begin sampled values
        self.aligned = []  # StopTxnAlignedData meterValues of the transaction, the latest kept
        self.started = 0  # board time the transaction started
        self.ready = None  # idTag authorized, waiting for the EV to be plugged in
        self.ready_until = 0
        self.finished = False  # transaction over, EV still plugged in
        self.status = None  # (status, errorCode, info, vendorErrorCode) now
        self.since = 0  # board time when `status` began
        self.reported = None  # what the central system was last told
        self.next_sample = 0
        self.next_save = 0  # board time the meter register goes to flash next
        # [local, tag, meter floor, time, reason, Transaction.Begin meterValue, aligned ones]
        self.closing = None
        self.closing_by = 0  # board time by which the StopTransaction goes, fresh reading or not
        self.opened_ms = None  # board ticks when the contactor was seen open while closing
        self.slots = []  # every Fault that can be raised here
        self.marks = []  # their `since_ms` at the last tick: a change is a new activation
        self.held = None  # a fault that was raised and cleared between two ticks


class ChargePoint:
    def __init__(self, board, station, queue, phases=3):
        self.board = board
        self.station = station
        self.queue = queue
        self.phases = phases
        self.config = Config(board.data_dir, len(station.connectors))
        self.cache = Cache(board.data_dir)
        self.sessions = [Session(0, station)] + [Session(c.id, c) for c in station.connectors]
        for s in self.sessions:
            s.slots = [f for f in station.all_faults() if f.connector == s.id]
            s.marks = [f.since_ms for f in s.slots]
        self.link = None  # the Link, once there is one (WebSocketPingInterval, security keys)
        self.station_config = {}  # station.json's settings, with the link
        self.relink = False  # security settings changed: connect again with them
        self.rpc = None
        self.accepted = False  # BootNotification accepted since power-up
        self.online = False
        self.auth_requests = []  # [session, idTag] to send as Authorize
        self.reset_at = None  # board time from which a requested Reset may happen
        self.reset_by = 0  # board time by which it happens, delivered or not
        self.volatile = []  # MeterValues outside transactions: sent when online, never stored
        self.next_aligned = 0
        self.retry_at = 0  # board time before which the queue head is not retried
        self.attempts = 0  # failed attempts of the queue head
        for s in self.sessions[1:]:
            self._recover(s)

    # ---- helpers

    def now(self):
        return self.board.time()

    def _inoperative(self, s):
        return 0 in self.config.inoperative or s.id in self.config.inoperative

    def set_clock(self, current_time):
        """Follow the central system's clock (currentTime of BootNotification and Heartbeat),
        moving the deadlines with it; the change in s. NTP wins: while the clock was set from
        NTP recently, the central system's is ignored (a board without NTP has no other)."""
        try:
            t = isotime.parse(current_time)
        except (TypeError, ValueError):
            return 0
        if net.ntp_synced(self.board):
            return 0
        delta = t - self.now()
        if -CLOCK_SLACK_S <= delta <= CLOCK_SLACK_S:
            return 0
        self.board.set_time(t)
        self.retry_at += delta
        self.reset_by += delta
        if self.reset_at is not None:
            self.reset_at += delta
        self.next_aligned = 0  # realigned at the next tick
        for s in self.sessions:
            s.since += delta
            s.ready_until += delta
            s.next_sample += delta
            s.next_save += delta
            s.closing_by += delta
        return delta

    def _find_tx(self, real_id):
        for s in self.sessions[1:]:
            if s.tx is not None and self.queue.real_tx(s.tx) == real_id:
                return s
        return None

    def _recover(self, s):
        """A transaction left open by a power cut ends, reason PowerLoss, at the last time that
        reached flash, with the meter register once the meter answers (it is monotonic and
        counted while the board was down) or, without an answer, the last one on flash."""
        open_tx = self.queue.open_tx(s.id)
        if open_tx:
            local, tag, meter, when = open_tx
            s.closing = [local, tag, meter, when, "PowerLoss", None, ()]
            s.closing_by = self.now() + METER_WAIT_S

    def sample(self, s, measurands, context):
        """sampledValue list of connector `s` for the configured `measurands`."""
        r = s.connector.reading
        values = []
        if r is None:
            return values
        for m in measurands:
            if m == "Energy.Active.Import.Register":
                values.append(_value("%d" % r.energy_wh, context, m, "Wh", None))
            elif m == "Energy.Active.Export.Register":
                values.append(_value("%d" % r.energy_export_wh, context, m, "Wh", None))
            elif m == "Power.Active.Import":
                values.append(_value("%.1f" % r.power_w, context, m, "W", None))
            elif m == "Frequency":
                values.append(_value("%.2f" % r.frequency_hz, context, m, None, None))
            else:
                unit, phases, data = (
                    ("A", ("L1", "L2", "L3"), r.current_a)
                    if m == "Current.Import"
                    else ("V", ("L1-N", "L2-N", "L3-N"), r.voltage_v)
                )
                for i in range(self.phases):
                    values.append(_value("%.1f" % data[i], context, m, unit, phases[i]))
        return values

    # ---- transactions

    def _start(self, s, tag):
        now = self.now()
        meter = _energy(s)
        payload = {"connectorId": s.id, "idTag": tag, "meterStart": meter}
        payload["timestamp"] = isotime.format(now)
        s.ready = None
        s.tx = self.queue.start(payload, meter, now)
        if s.tx is None:
            return  # storage full: no new transaction until the backlog drains
        s.tag = tag
        s.started = now
        s.begin = self.sample(s, self.config.measurands("StopTxnSampledData"), "Transaction.Begin")
        s.next_sample = now + self.config.get("MeterValueSampleInterval")
        s.next_save = now + ENERGY_SAVE_S
        s.connector.permit(True)

    def stop(self, s, reason):
        """End the transaction now; its StopTransaction waits for a meter reading taken after
        the contactor opened (`_close`), so meterStop counts all the energy the EV drew."""
        if s.tx is None:
            return
        now = self.now()
        begin = None
        if s.begin:
            begin = {"timestamp": isotime.format(s.started), "sampledValue": s.begin}
        s.closing = [s.tx, s.tag, _energy(s), now, reason, begin, s.aligned]
        s.closing_by = now + METER_WAIT_S
        s.connector.permit(False)
        s.tx = s.tag = s.begin = None
        s.aligned = []
        s.finished = True

    def _close(self, s, now):
        """Queue the StopTransaction of `s` once the meter was read after the contactor opened
        (or without a meter, or when no reading comes in time)."""
        c = s.connector
        r = c.reading
        if s.opened_ms is None and not c.contactor_closed:
            s.opened_ms = self.board.ticks_ms()
        fresh = (
            r is not None
            and s.opened_ms is not None
            and r.ok_ms is not None
            and self.board.ticks_diff(r.ok_ms, s.opened_ms) > 0
        )
        if r is not None and not fresh and now < s.closing_by:
            return
        local, tag, meter, when, reason, begin, aligned = s.closing
        s.closing = s.opened_ms = None
        meter = max(meter, _energy(s))  # the register only grows; a meter lost at boot reads 0
        payload = {"meterStop": meter, "timestamp": isotime.format(when), "reason": reason}
        if tag:
            payload["idTag"] = tag
        data = list(aligned)  # StopTxnAlignedData, between StopTxnSampledData's Begin and End
        if begin:
            end = self.sample(s, self.config.measurands("StopTxnSampledData"), "Transaction.End")
            data.insert(0, begin)
            data.append({"timestamp": isotime.format(when), "sampledValue": end})
        if data:
            payload["transactionData"] = data
        self.queue.push("StopTransaction", payload, local, meter, when)

    def _meter_values(self, s, measurands, context, now):
        values = self.sample(s, measurands, context)
        if not values:
            return
        value = {"timestamp": isotime.format(now), "sampledValue": values}
        payload = {"connectorId": s.id, "meterValue": [value]}
        if s.tx is not None:
            self.queue.push("MeterValues", payload, s.tx, _energy(s), now)
        elif self.online and len(self.volatile) < VOLATILE_MAX:
            self.volatile.append(payload)

    def authorize(self, s, tag, remote=False):
        """An idTag presented at connector `s` (RFID, console, or remote start)."""
        if s.tx is not None:
            if tag == s.tag and not remote:
                self.stop(s, "Local")
            return
        if remote and not self.config.get("AuthorizeRemoteTxRequests"):
            self._ready(s, tag)
        elif self.online:
            if self.config.get("LocalPreAuthorize") and self._cached(tag):
                self._ready(s, tag)
            else:
                self.auth_requests.append([s, tag])
        elif self._offline_allowed(tag):
            self._ready(s, tag)

    def _cached(self, tag):
        """An Accepted, unexpired entry in the enabled authorization cache."""
        return self.config.get("AuthorizationCacheEnabled") and self.cache.accepted(tag, self.now())

    def _offline_allowed(self, tag):
        if self.config.get("LocalAuthorizeOffline") and self._cached(tag):
            return True
        known = self.config.get("AuthorizationCacheEnabled") and tag in self.cache.entries
        return not known and self.config.get("AllowOfflineTxForUnknownId")

    def _ready(self, s, tag):
        if self.reset_at is not None:  # a Reset is under way: no new transaction before it
            return
        s.ready = tag
        s.ready_until = self.now() + self.config.get("ConnectionTimeOut")

    # ---- the station, a few times a second

    def tick(self):
        now = self.now()
        if self.reset_at is not None and now >= self.reset_at:
            idle = not self.queue.pending() and not any(s.closing for s in self.sessions)
            if idle or now >= self.reset_by:
                self.board.reset()
        aligned = self.config.get("ClockAlignedDataInterval")
        clock_due = False
        if not aligned:
            self.next_aligned = 0
        elif now >= self.next_aligned:
            clock_due = self.next_aligned != 0
            self.next_aligned = (now // aligned + 1) * aligned
        for s in self.sessions[1:]:
            c = s.connector
            plugged = c.pilot_state in ("B", "C", "D")
            if s.closing is not None:
                self._close(s, now)  # no new transaction before this StopTransaction is queued
            elif s.tx is None:
                c.available = not self._inoperative(s)
                if not plugged:
                    s.finished = False
                if s.ready is not None:
                    if plugged and c.available:
                        self._start(s, s.ready)
                    elif now >= s.ready_until:
                        s.ready = None
            elif not plugged and self.config.get("StopTransactionOnEVSideDisconnect"):
                self.stop(s, "EVDisconnected")
            else:
                interval = self.config.get("MeterValueSampleInterval")
                if interval and now >= s.next_sample:
                    s.next_sample = now + interval
                    measurands = self.config.measurands("MeterValuesSampledData")
                    self._meter_values(s, measurands, "Sample.Periodic", now)
                if now >= s.next_save:
                    s.next_save = now + ENERGY_SAVE_S
                    self.queue.note(s.tx, _energy(s), now)  # for the PowerLoss stop
            if clock_due:
                measurands = self.config.measurands("MeterValuesAlignedData")
                self._meter_values(s, measurands, "Sample.Clock", now)
                if s.tx is not None:
                    self._keep_aligned(s, now)
        for s in self.sessions:
            self._update_status(s, now)

    def _keep_aligned(self, s, now):
        """A StopTxnAlignedData sample for the transaction's StopTransaction."""
        values = self.sample(s, self.config.measurands("StopTxnAlignedData"), "Sample.Clock")
        if values:
            if len(s.aligned) >= ALIGNED_KEPT:
                s.aligned.pop(0)
            s.aligned.append({"timestamp": isotime.format(now), "sampledValue": values})

    def _faults(self, s):
        """Active faults of `s`, then one raised and cleared again between two ticks (an RCD
        trip clears once the contactor is open): it stays in the status for this tick and,
        during a transaction, until current is offered again."""
        c = s.connector
        held = s.held
        if held is not None and (s.tx is None or c.limit_a):
            held = None
        for i, fault in enumerate(s.slots):
            if fault.since_ms != s.marks[i]:
                s.marks[i] = fault.since_ms
                if not fault.active and fault.code != "derating":
                    held = fault
        s.held = held
        faults = c.faults()
        if held is not None:
            faults.append(held)
        return faults

    def _update_status(self, s, now):
        c = s.connector
        code, info, vendor, faulted = _error(self._faults(s))
        if self._inoperative(s) and s.tx is None:
            status = "Unavailable"
        elif faulted:
            status = "Faulted"
        elif s.id == 0:
            status = "Available"
        elif code == "EVCommunicationError":
            status = "SuspendedEVSE"
        elif s.tx is not None:
            if c.contactor_closed:
                status = "Charging"
            else:
                status = "SuspendedEV" if c.limit_a else "SuspendedEVSE"
        elif c.pilot_state in ("B", "C", "D"):
            status = "Finishing" if s.finished else "Preparing"
        else:
            status = "Preparing" if s.ready is not None else "Available"
        current = s.status
        if (
            current is None
            or current[0] != status
            or current[1] != code
            or current[2] != info
        ):
            s.status = (status, code, info, vendor)
            s.since = now

    def _status_due(self, now):
        """A session whose status changed and is stable for MinimumStatusDuration; a fault
        goes at once (the central system learns of a short trip too)."""
        wait = self.config.get("MinimumStatusDuration")
        for s in self.sessions:
            status = s.status
            if status is not None and status != s.reported:
                if status[0] == "Faulted" or now - s.since >= wait:
                    return s
        return None

    # ---- online: the single sender

    async def serve(self, rpc):
        """Send what is due until the link fails (the Rpc's exception propagates, or Offline
        when the link ended between CALLs)."""
        self.online = True
        for s in self.sessions:
            s.reported = None  # tell the central system every status again
        beat = None  # board time of the last Heartbeat
        try:
            while True:
                # The link may end while nothing is due (the central system went away, or the
                # keepalive dropped a silent connection): only a CALL would notice, maybe a
                # HeartbeatInterval later. Return to the connect loop at once instead.
                if not rpc.link.connected:
                    raise Offline("link closed")
                if self.relink:  # the security whitepaper: reconnect with the new settings
                    self.relink = False
                    raise Offline("security settings changed")
                now = self.now()
                s = self._status_due(now)
                try:
                    if self.auth_requests:  # someone waits at the station
                        await self._send_authorize(rpc, *self.auth_requests.pop(0))
                    elif s is not None:
                        await self._send_status(rpc, s)
                    elif self.volatile:
                        await rpc.call("MeterValues", self.volatile.pop(0), CALL_TIMEOUT_S)
                    elif self.queue.pending() and now >= self.retry_at:
                        await self._deliver(rpc)
                    elif beat is None or now >= beat + (
                        self.config.get("HeartbeatInterval") or 86400
                    ):  # (the interval is read each time: a change takes effect at once)
                        reply = await rpc.call("Heartbeat", {}, CALL_TIMEOUT_S)
                        beat = now + self.set_clock(reply.get("currentTime"))
                    else:
                        await self.board.sleep_ms(100)
                except CallError as e:
                    # The central system takes nothing before an accepted BootNotification:
                    # its record of this station lost it (a database restored, say) while the
                    # station ran on. Boot again, or every CALL would be refused for ever.
                    if e.code == SECURITY_ERROR:
                        self.accepted = False
                        raise
                    # It failed to process the message (its database, say), the link is fine:
                    # try again later. Reconnecting at once, every station would reconnect
                    # every second or two, sending all its statuses again, while it recovers.
                    await self.board.sleep_ms(CALL_ERROR_PAUSE_S * 1000)
        finally:
            self.online = False

    async def _send_status(self, rpc, s):
        status, code, info, vendor = s.status
        payload = {"connectorId": s.id, "status": status, "errorCode": code}
        payload["timestamp"] = isotime.format(s.since)
        if info:
            payload["info"] = info[:50]
        if vendor:
            payload["vendorErrorCode"] = vendor
        await rpc.call("StatusNotification", payload, CALL_TIMEOUT_S)
        s.reported = (status, code, info, vendor)

    async def _send_authorize(self, rpc, s, tag):
        try:
            reply = await rpc.call("Authorize", {"idTag": tag}, CALL_TIMEOUT_S)
        except Exception:
            if self._offline_allowed(tag):  # no answer: as if offline
                self._ready(s, tag)
            raise
        info = reply["idTagInfo"]
        if self.config.get("AuthorizationCacheEnabled"):
            self.cache.update(tag, info)
        if info["status"] == "Accepted" and s.tx is None:
            self._ready(s, tag)

    async def _deliver(self, rpc):
        action, payload, local = self.queue.head()
        if action != "StartTransaction":
            real = self.queue.real_tx(local)
            if real is None:  # its StartTransaction was given up: nothing to attach it to
                self.queue.done(None)
                return
            payload["transactionId"] = real
        try:
            reply = await rpc.call(action, payload, CALL_TIMEOUT_S)
            real = reply["transactionId"] if action == "StartTransaction" else None
            if real is not None and type(real) is not int:
                raise CallError("FormationViolation")
        except (CallError, KeyError, TypeError) as e:
            refused = isinstance(e, CallError) and e.code == SECURITY_ERROR
            self.attempts += 1
            if self.attempts >= self.config.get("TransactionMessageAttempts"):
                self.attempts = 0
                self.queue.done(None)  # given up, per TransactionMessageAttempts
            elif not refused:
                interval = self.config.get("TransactionMessageRetryInterval")
                self.retry_at = self.now() + interval * self.attempts
            if refused:
                raise  # serve() boots again, then this one is retried
            return
        self.attempts = 0
        info = reply.get("idTagInfo")
        self.queue.done(real)
        if real is not None:
            self._check_start(local, payload["idTag"], info)
        if info and "idTag" in payload and self.config.get("AuthorizationCacheEnabled"):
            self.cache.update(payload["idTag"], info)

    def _check_start(self, local, tag, info):
        """The central system's verdict on a running transaction's idTag."""
        if info["status"] == "Accepted":
            return
        for s in self.sessions[1:]:
            if s.tx == local:
                if self.config.get("StopTransactionOnInvalidId"):
                    self.stop(s, "DeAuthorized")
                else:
                    s.connector.permit(False)

    # ---- central system -> charge point

    async def data_transfer(self, vendor_id, message_id=None, data=None):
        """DataTransfer to the central system (for other modules, e.g. the console): its
        answer payload. Raises OSError while not online (nothing goes before Accepted)."""
        if not self.online or self.rpc is None:
            raise OSError("offline")
        payload = {"vendorId": vendor_id}
        if message_id is not None:
            payload["messageId"] = message_id
        if data is not None:
            payload["data"] = data
        return await self.rpc.call("DataTransfer", payload, CALL_TIMEOUT_S)

    def register(self, rpc):
        self.rpc = rpc
        rpc.answer = self.answer

    def answer(self, action, payload):
        """The result payload of the central system's CALL (raises RpcError)."""
        if action in inbound.SHAPES:
            inbound.check(action, payload)
            return getattr(self, "on_" + action)(payload)
        if action in OTHER_ACTIONS:
            raise RpcError("NotSupported", None, "profile not supported")
        raise RpcError("NotImplemented", None, "unknown action")

    def _session(self, connector_id):
        if 0 <= connector_id < len(self.sessions):
            return self.sessions[connector_id]
        return None

    def on_ChangeAvailability(self, p):
        s = self._session(p["connectorId"])
        if s is None:
            return {"status": "Rejected"}
        inop = self.config.inoperative
        if p["type"] == "Operative":
            while s.id in inop:
                inop.remove(s.id)
        elif s.id not in inop:
            inop.append(s.id)
        self.config.save()
        targets = self.sessions[1:] if s.id == 0 else [s]
        busy = any(t.tx is not None for t in targets)
        return {"status": "Scheduled" if busy and p["type"] == "Inoperative" else "Accepted"}

    def on_ChangeConfiguration(self, p):
        key = p["key"].lower()  # a CiString
        link = self.link
        if link is None:
            status = self.config.change(p["key"], p["value"])
        elif key in ("securityprofile", "authorizationkey"):
            status = self._change_security(link, key == "securityprofile", p["value"])
        else:
            status = self.config.change(p["key"], p["value"])
            link.ping_interval_s = self.config.get("WebSocketPingInterval")
        return {"status": status}

    def _change_security(self, link, profile, text):
        """The security whitepaper's SecurityProfile (only ever raised) or AuthorizationKey,
        kept in station.json: Rejected unless valid and the link's settings then make its
        profile; accepted, the link connects again with them (the key at profiles 1, 2)."""
        if profile:
            if len(text) != 1 or not text.isdigit() or int(text) < link.profile:
                return "Rejected"
            field, name, value = "security_profile", "profile", int(text)
        else:
            low, high = KEY_LENGTHS
            if not low <= len(text) <= high or any(not " " <= c <= "~" for c in text):
                return "Rejected"
            field, name, value = "auth_key", "auth_key", text
        old = getattr(link, name)
        setattr(link, name, value)
        try:
            check_profile(link)
        except ValueError:
            setattr(link, name, old)
            return "Rejected"
        if value != old:
            self.station_config[field] = value
            save_json(path(self.board.data_dir, "station.json"), self.station_config)
            self.relink = profile or link.profile in (1, 2)
        return "Accepted"

    def on_GetConfiguration(self, p):
        extra = ()
        link = self.link
        if link is not None:  # AuthorizationKey is write-only: listed, its value never shown
            profile = {"key": "SecurityProfile", "readonly": False, "value": str(link.profile)}
            extra = (profile, {"key": "AuthorizationKey", "readonly": False})
        return self.config.report(p.get("key"), extra)

    def on_ClearCache(self, p):
        self.cache.clear()
        return {"status": "Accepted"}

    def on_DataTransfer(self, p):
        return {"status": "UnknownVendorId"}

    def on_RemoteStartTransaction(self, p):
        connector_id = p.get("connectorId")
        if connector_id is None:
            s = self._free_session()
        else:
            s = self._session(connector_id) if connector_id > 0 else None
        busy = s is None or s.tx is not None or s.ready is not None or self.reset_at is not None
        if busy or self._inoperative(s):
            return {"status": "Rejected"}
        self.authorize(s, p["idTag"], remote=True)
        return {"status": "Accepted"}

    def _free_session(self):
        """The connector with an EV waiting, else the first one free."""
        best = None
        for s in self.sessions[1:]:
            if s.tx is None and s.ready is None and not self._inoperative(s):
                if s.connector.pilot_state in ("B", "C"):
                    return s
                best = best or s
        return best

    def on_RemoteStopTransaction(self, p):
        s = self._find_tx(p["transactionId"])
        if s is None:
            return {"status": "Rejected"}
        self.stop(s, "Remote")
        return {"status": "Accepted"}

    def on_Reset(self, p):
        for s in self.sessions[1:]:
            self.stop(s, p["type"] + "Reset")
        # The Stops are queued; serve() restarts once they are delivered (time-bounded).
        self.reset_at = self.now() + RESET_GRACE_S
        self.reset_by = self.reset_at + RESET_DRAIN_S
        return {"status": "Accepted"}

    def on_UnlockConnector(self, p):
        """A transaction on the connector is stopped first (reason UnlockCommand); then the
        board's lock actuator, if it has one: `board.unlock(connector_id)` -> True when it
        unlocked (none of the supported boards has one yet: NotSupported)."""
        s = self._session(p["connectorId"])
        if s is None or s.id == 0:
            return {"status": "NotSupported"}
        self.stop(s, "UnlockCommand")
        unlock = getattr(self.board, "unlock", None)
        if unlock is None:
            return {"status": "NotSupported"}
        return {"status": "Unlocked" if unlock(s.id) else "UnlockFailed"}


def _energy(s):
    r = s.connector.reading
    return int(r.energy_wh) if r is not None else 0


def _value(value, context, measurand, unit, phase):
    v = {"value": value, "context": context, "measurand": measurand}
    if unit:
        v["unit"] = unit
    if phase:
        v["phase"] = phase
    return v
