"""The OCPP 1.6J central system: WebSocket endpoint, station sessions, OCPP-J framing.

Stations connect at ws[s]://HOST:PORT/ocpp/<chargePointId> with subprotocol ocpp1.6. Each
connection is an asyncio.Protocol (`Session`): the opening handshake goes through the
`websockets` package's sans-I/O ServerProtocol, then frames are parsed here, validated
against the official schemas with compiled validators and dispatched as they arrive, with no
task, queue or future per frame; each is answered once the database batch holding its
writes (and reads) is committed. Commands to stations go through `CommandQueue`. One timer
pings idle stations and drops those that stop answering.
"""

import asyncio
import base64
import binascii
import gc
import logging
import re
import ssl
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import unquote

import orjson
from websockets.exceptions import ProtocolError
from websockets.frames import Close, apply_mask  # the package's C version when built
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from host.cs import schemas, storage
from host.cs.commands import CommandQueue
from host.cs.handlers import HANDLERS
from host.cs.storage import LOG_SQL, now_iso
from host.cs.store import Store
from protocol.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED_DATA,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    close_payload,
    encode_frame,
)

log = logging.getLogger("evse.cs")
_WS_LOG = logging.getLogger("websockets.server")  # given to each handshake: no lookup each

SUBPROTOCOL = Subprotocol("ocpp1.6")
PATH_PREFIX = "/ocpp/"
# OCPP 1.6 chargeBoxIdentity is CiString48: printable ASCII (no control characters to
# forge log lines, no lookalike letters); not "/", the path's separator, nor ":", which
# Basic auth's user name cannot hold
_STATION_ID = re.compile(r"[\x20-\x2e\x30-\x39\x3b-\x7e]{1,48}")
UNKNOWN_POLICIES = ("reject", "accept", "pending")
_UNKNOWN_APPROVAL = {"reject": None, "accept": "accepted", "pending": "pending"}
GC_YOUNG_THRESHOLD = 100_000
OPEN_TIMEOUT_S = 10  # from TCP accept to a finished opening handshake

# What a station sends before its BootNotification is Accepted: only that, or while Pending
# also what a (Extended)TriggerMessage can ask for (OCPP 1.6 4.2.1; a signed firmware update
# reports as SignedFirmwareStatusNotification, a certificate request as SignCertificate).
_BOOT_ONLY = frozenset({"BootNotification"})
_BEFORE_ACCEPTED = {
    "Pending": _BOOT_ONLY
    | {
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "LogStatusNotification",
        "MeterValues",
        "SignCertificate",
        "SignedFirmwareStatusNotification",
        "StatusNotification",
    }
}
_PING = bytes(encode_frame(OP_PING, b""))  # the same empty ping every time
# Connection states, in order
CONNECTING, OPEN, CLOSING, CLOSED = range(4)


_NOT_JSON = object()  # what orjson.loads gave for a frame that is not JSON (null is None)


def _wall(monotonic: float) -> str:
    """A time.monotonic() instant as stored time text."""
    return now_iso(time.time() - (time.monotonic() - monotonic))


def station_id_from_path(path: str) -> str | None:
    path = path.split("?", 1)[0]
    if not path.startswith(PATH_PREFIX):
        return None
    station_id = unquote(path[len(PATH_PREFIX) :])
    if not _STATION_ID.fullmatch(station_id):
        return None
    return station_id


def tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """Profile 2 (server certificate) and, with `client_ca`, profile 3 (client certificates)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL  # profile-2 stations on the same port send none
    return context


def _peer_common_name(transport: asyncio.BaseTransport) -> str | None:
    tls = transport.get_extra_info("ssl_object")
    cert = tls.getpeercert() if tls else None
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


def _basic_auth(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if header[:6].lower() != "basic ":  # the scheme's name is case-insensitive (RFC 7235)
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _refusal(
    transport: asyncio.BaseTransport, request: Request, station_id: str, settings: dict
) -> tuple[int, str, dict[str, str]] | None:
    """Why a connection does not pass the checks of the security settings (a station's row,
    or storage.pending_settings): HTTP status, text and headers; None if it passes."""
    profile = settings["security_profile"]
    if profile >= 2 and transport.get_extra_info("ssl_object") is None:
        return 403, f"Security profile {profile} requires TLS\n", {}
    if profile in (1, 2):
        credentials = _basic_auth(request)
        if (
            credentials is None
            or credentials[0] != station_id
            or not storage.key_matches(settings, credentials[1])
        ):
            return 401, "Basic authentication failed\n", {"WWW-Authenticate": 'Basic realm="ocpp"'}
    if profile == 3 and _peer_common_name(transport) != station_id:
        return 401, "Client certificate does not name this station\n", {}
    return None


def _select_subprotocol(protocol: ServerProtocol, offered: Any) -> Subprotocol | None:
    # OCPP-J: without ocpp1.6 the handshake completes without a subprotocol, then we close.
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


class Session(asyncio.Protocol):
    """One station's connection: the WebSocket protocol and the OCPP session on it. It is in
    `CentralSystem.sessions` from its accepted handshake until it closes or is replaced.

    The opening handshake goes through the `websockets` package's sans-I/O ServerProtocol
    (HTTP parsing, key and header checks, subprotocol selection), which is then dropped:
    framing an open connection takes the few lines below, and the protocol's per-frame
    generators and objects, alive between one station's messages, made the cyclic garbage
    collector rescan 10,000 connections every few seconds (100+ ms pauses)."""

    __slots__ = (
        "cs",
        "ws",
        "state",
        "transport",
        "buffer",
        "fragments",
        "station_id",
        "registration",
        "pending",
        "last_heard",
        "seen_due",
        "close_timer",
        "paused",
    )

    def __init__(self, cs: "CentralSystem"):
        self.cs = cs
        self.ws: ServerProtocol | None = ServerProtocol(
            subprotocols=[SUBPROTOCOL], select_subprotocol=_select_subprotocol, logger=_WS_LOG
        )
        self.state = CONNECTING
        self.transport: asyncio.Transport = None  # type: ignore[assignment] # connection_made
        self.buffer = b""  # received bytes not yet a whole frame
        # A fragmented message being received: one buffer, so that its size is known at once
        # (summing a list of fragments for each frame took seconds for thousands of them)
        self.fragments: bytearray | None = None
        self.station_id = ""
        self.registration: str | None = None  # status of its last BootNotification answer
        self.pending: dict[str, asyncio.Future] = {}  # our CALLs awaiting the station's reply
        self.last_heard = time.monotonic()
        self.seen_due = 0.0  # when being heard is stored again (CentralSystem.store_last_seen)
        self.close_timer: asyncio.TimerHandle | None = None
        self.paused = 0  # reasons not to read: its answers wait to be sent, the Store is full

    @property
    def open(self) -> bool:
        return self.state == OPEN

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.cs.connections.add(self)
        # The opening handshake has OPEN_TIMEOUT_S from here, however slowly its bytes come
        self.close_timer = asyncio.get_running_loop().call_later(OPEN_TIMEOUT_S, transport.abort)

    def data_received(self, data: bytes) -> None:
        now = self.last_heard = time.monotonic()
        if self.ws is None:
            if now >= self.seen_due:
                self.cs.store_last_seen(self, now)
            self._frames(self.buffer + data if self.buffer else data)
            if self.cs.store.full:  # read on once the database process has caught up
                self._pause()
                self.cs.store.when_drained(self._resume)
            return
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self.cs.on_request(self, event)
        self.flush_handshake()

    def eof_received(self) -> bool:
        return False  # the peer is done: asyncio closes the transport once our data is out

    # A station that does not read its answers is not read either (asyncio calls these when
    # the connection's send buffer passes its high and low marks), so it cannot make the
    # server buffer without bound; silent for long, it is dropped like a vanished one.
    # Neither is a station read while the database process is behind (Store.full).
    def pause_writing(self) -> None:
        self._pause()

    def resume_writing(self) -> None:
        self._resume()

    def _pause(self) -> None:
        self.paused += 1
        if self.paused == 1:
            self.transport.pause_reading()

    def _resume(self) -> None:
        self.paused -= 1
        if self.paused == 0 and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.state = CLOSED
        self.ws = None
        self.cs.on_closed(self)

    # ---- opening handshake --------------------------------------------------------------

    def flush_handshake(self) -> None:
        """Write the handshake response; after a refusal, cut off a client that stays."""
        ws, transport = self.ws, self.transport
        assert ws is not None
        for data in ws.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                transport.write_eof()
        if ws.close_expected() and self.close_timer is None:
            self._close_soon()

    def opened(self) -> None:
        """The 101 response is out: frames from now on."""
        self.ws = None
        self.state = OPEN
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    # ---- frames (RFC 6455) --------------------------------------------------------------

    def _frames(self, buffer: bytes) -> None:
        pos, size = 0, len(buffer)
        while size - pos >= 2 and self.state <= CLOSING:
            first, second = buffer[pos], buffer[pos + 1]
            length, start = second & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), pos + 10
            if not second & 0x80 or first & 0x70:
                return self.fail(
                    CLOSE_PROTOCOL_ERROR, "client frames are masked, without extensions"
                )
            if first & 0x08 and (length > 125 or not first & 0x80):  # known from its header
                return self.fail(
                    CLOSE_PROTOCOL_ERROR, "control frames are unfragmented, at most 125 bytes"
                )
            # a control frame may come between a message's fragments: it is no part of it
            received = len(self.fragments) if self.fragments is not None and not first & 0x08 else 0
            if received + length > self.cs.max_message:
                return self.fail(CLOSE_TOO_BIG, f"messages are at most {self.cs.max_message} bytes")
            end = start + 4 + length
            if size < end:
                break
            payload = apply_mask(buffer[start + 4 : end], buffer[start : start + 4])
            pos = end
            self._on_frame(first & 0x80, first & 0x0F, payload)
        self.buffer = buffer[pos:]

    def _on_frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode >= OP_CLOSE:  # control frame (unfragmented, at most 125 bytes: _frames)
            if opcode == OP_CLOSE:  # close: answer it (unless it answers ours), then hang up
                # its code is echoed: not a 1-byte body, 1005, 1006 or a code no one may send,
                # nor a reason that is not UTF-8 (RFC 6455 5.5.1, 7.4)
                try:
                    Close.parse(payload)
                except ProtocolError:
                    return self.fail(CLOSE_PROTOCOL_ERROR, "invalid close code or length")
                except UnicodeDecodeError:
                    return self.fail(CLOSE_INVALID_DATA, "close reasons are UTF-8")
                if self.state == OPEN:
                    self.transport.write(encode_frame(OP_CLOSE, payload[:2]))
                self.state = CLOSED
                self.transport.close()
            elif opcode == OP_PING and self.state == OPEN:
                self.transport.write(encode_frame(OP_PONG, payload))
            elif opcode not in (OP_PING, OP_PONG):
                self.fail(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif self.state != OPEN:
            return  # data after our close frame
        elif opcode == OP_TEXT and self.fragments is None:
            if fin:
                self.cs.on_message(self, payload)
            else:
                self.fragments = bytearray(payload)
        elif opcode == OP_CONTINUATION and self.fragments is not None:
            self.fragments += payload
            if fin:
                data, self.fragments = bytes(self.fragments), None
                self.cs.on_message(self, data)
        elif opcode == OP_BINARY and self.fragments is None:  # (not amid a text message)
            self.close(CLOSE_UNSUPPORTED_DATA, "OCPP-J messages are text frames")
        else:
            self.fail(CLOSE_PROTOCOL_ERROR, "unexpected continuation or data frame")

    def send(self, text: str) -> None:
        if self.state != OPEN:
            raise ConnectionError(f"{self.station_id}: connection closed")
        self.transport.write(encode_frame(OP_TEXT, text))

    def ping(self) -> None:
        if self.state == OPEN:
            self.transport.write(_PING)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (no-op unless open): the station answers with its
        close frame and we hang up, or it is cut off after the close timeout."""
        if self.state == OPEN:
            self.state = CLOSING
            self.transport.write(encode_frame(OP_CLOSE, close_payload(code, reason)))
            self._close_soon()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): close frame, then hang up at once."""
        self.close(code, reason)
        self.state = CLOSED
        self.transport.close()

    def _close_soon(self) -> None:
        self.close_timer = asyncio.get_running_loop().call_later(
            self.cs.close_timeout_s, self.transport.abort
        )

    def abort(self) -> None:
        self.transport.abort()


class CentralSystem:
    def __init__(
        self,
        store: Store,
        *,
        unknown: str = "reject",
        heartbeat_s: int = 300,
        boot_retry_s: int = 30,
        ping_interval_s: float = 30,
        max_message: int = 128 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        command_timeout_s: float = 30,
        poll_s: float = 0.5,
    ):
        if unknown not in UNKNOWN_POLICIES:
            raise ValueError(f"unknown-station policy must be one of {UNKNOWN_POLICIES}")
        self.store = store
        self.unknown = unknown
        self.heartbeat_s = heartbeat_s
        self.boot_retry_s = boot_retry_s
        # A vanished station is offline within two ping intervals: it gets a ping once silent
        # for one interval and is dropped when silent for one and a half; the watch runs
        # every half interval.
        self.ping_interval_s = ping_interval_s
        self.close_timeout_s = ping_interval_s / 2
        self.max_message = max_message
        self.ssl_context = ssl_context
        self.connections: set[Session] = set()  # every open TCP connection
        self.sessions: dict[str, Session] = {}  # accepted ones, by station id
        self.commands = CommandQueue(self, timeout_s=command_timeout_s, poll_s=poll_s)
        self.server: asyncio.Server | None = None
        self._watch: asyncio.Task | None = None
        # Observers (the web dashboard): fn(kind, station_id, frame_text_or_None) with kind
        # "connected", "disconnected", "in" or "out"; they must be quick and never raise.
        self.listeners: list[Callable[[str, str, str | None], None]] = []

    async def start(self, host: str = "127.0.0.1", port: int = 9000) -> asyncio.Server:
        await self.store.call(storage.after_restart)
        # The cyclic collector's default pace (every 700 net new containers) promotes every
        # message in flight to the old generations and then rescans all sessions again and
        # again: measured a fifth of the CPU under load (at 20,000, still 15% of the event
        # loop's CPU with 10,000 messages in flight). What exists now (modules, compiled
        # schemas) is never garbage, and each message's objects die by reference counting.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20)
        self.server = await asyncio.get_running_loop().create_server(
            lambda: Session(self),
            host,
            port,
            ssl=self.ssl_context,
            backlog=4096,
            ssl_handshake_timeout=OPEN_TIMEOUT_S if self.ssl_context else None,
        )
        self._watch = asyncio.create_task(self._watch_connections())
        self.commands.start()
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.commands.stop()
        if self._watch:
            self._watch.cancel()
        if self.server:
            self.server.close()
        for session in list(self.connections):
            session.close(CLOSE_GOING_AWAY, "central system shutting down")
        deadline = time.monotonic() + self.close_timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for session in list(self.connections):
            session.abort()
        if self.server:
            await self.server.wait_closed()
        try:
            await self.store.flush()
        except storage.StorageError as error:  # the database is down: nothing more to save
            log.error("stopped without storing the last changes: %s", error)

    # ---- handshake ----------------------------------------------------------------------

    def on_request(self, session: Session, request: Request) -> None:
        station_id = station_id_from_path(request.path)
        if station_id is None:
            self._refuse(session, 404, "Stations connect at /ocpp/<chargePointId>\n")
            return

        def checked(ok: bool, station: Any) -> None:
            if session.ws is None or session.transport.is_closing():
                return
            if not ok:
                log.error("%s: station lookup failed: %s", station_id, station)
                self._refuse(session, 500, "Station lookup failed\n")
            else:
                self._authenticate(session, request, station_id, station)

        approval = _UNKNOWN_APPROVAL[self.unknown]
        self.store.submit(storage.station_for_connection, (station_id, approval), checked)

    def _refuse(
        self,
        session: Session,
        status: int,
        text: str,
        station_id: str | None = None,
        **headers: str,
    ) -> None:
        # an operator sees who was turned away, and why (a station with a wrong key, say):
        # the station by its id, as its address may be a NAT's that many stations share
        peer = session.transport.get_extra_info("peername")
        who = peer and peer[0]
        if station_id is not None:
            who = f"{station_id} from {who}"
        log.info("refused %s: %d %s", who, status, text.strip())
        assert session.ws is not None
        response = session.ws.reject(status, text)
        for name, value in headers.items():
            response.headers[name] = value
        session.ws.send_response(response)
        session.flush_handshake()

    def _authenticate(
        self, session: Session, request: Request, station_id: str, station: dict | None
    ) -> None:
        if station is None:
            return self._refuse(session, 404, f"Unknown station {station_id}\n", station_id)
        if station["approval"] == "rejected":
            return self._refuse(session, 403, f"Station {station_id} is rejected\n", station_id)
        # A new key or profile the station answered RebootRequired is pending: it uses its
        # current settings until its reboot, the pending ones after. So a connection passes
        # with either: the current (profile, key), or each pending one in place of its current
        # one (a key and a profile pending are taken together, as the station does at its
        # reboot). The pending settings are tried first and a connection that passes them
        # makes them current, ending the old ones: profile 0 lets every connection in, and a
        # raise to 1 would never be taken if the current settings were tried first. At
        # profile 0 a connection shows no key: it takes no pending key (the station's may be
        # its old one still, at its profile 1 to come).
        pending = storage.pending_settings(station)
        transport = session.transport
        if (
            pending is not None
            and pending["security_profile"] > 0
            and _refusal(transport, request, station_id, pending) is None
        ):
            log.info(
                "%s: connected with its pending security settings, now its own (profile %d%s)",
                station_id,
                pending["security_profile"],
                ", new key" if station["pending_auth_hash"] else "",
            )
            self.store.write(storage.PROMOTE_SQL, storage.promotion(station))
        elif refusal := _refusal(transport, request, station_id, station):
            status, text, headers = refusal
            return self._refuse(session, status, text, station_id, **headers)
        ws = session.ws
        assert ws is not None
        response = ws.accept(request)
        ws.send_response(response)
        session.flush_handshake()
        if response.status_code != 101:
            return None
        session.opened()
        if ws.subprotocol != SUBPROTOCOL:
            return session.close(CLOSE_PROTOCOL_ERROR, "subprotocol ocpp1.6 required")
        session.station_id = station_id
        if station["approval"] == "accepted":
            session.registration = station["registration"]
        previous = self.sessions.get(station_id)
        self.sessions[station_id] = session
        if previous is not None:
            previous.close(CLOSE_GOING_AWAY, "replaced by a new connection")
        self.store.write(storage.ONLINE_SQL, (1, now_iso(), station_id))
        session.seen_due = session.last_heard + self.ping_interval_s / 2
        self._notify("connected", station_id, None)
        self.commands.ready(session)
        return None

    def store_last_seen(self, session: Session, now: float) -> None:
        """Store that the station was heard, at most every half ping interval: whatever it
        sends (a JSON station need not send Heartbeats, OCPP 1.6 4.6), a write per station
        spread over the interval, not one for every station at once."""
        session.seen_due = now + self.ping_interval_s / 2
        if session.open:
            self.store.write(storage.LAST_SEEN_SQL, (now_iso(), session.station_id))

    def on_closed(self, session: Session) -> None:
        self.connections.discard(session)
        for future in session.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("connection closed before the answer"))
        station_id = session.station_id
        if station_id and self.sessions.get(station_id) is session:
            del self.sessions[station_id]
            # last seen when last heard: a vanished station is dropped a while after that
            self.store.write(storage.ONLINE_SQL, (0, _wall(session.last_heard), station_id))
            self._notify("disconnected", station_id, None)

    async def _watch_connections(self) -> None:
        """Ping stations silent for a ping interval, drop those silent for one and a half
        (they did not answer). (A handshake has its own timer: Session.connection_made.)"""
        interval = self.ping_interval_s
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            for session in list(self.connections):
                silent = now - session.last_heard
                if session.open:
                    if silent >= 1.5 * interval:
                        log.info("%s: no answer to ping, dropped", session.station_id)
                        session.abort()
                    elif silent >= interval:
                        session.ping()

    # ---- messages -----------------------------------------------------------------------

    def on_message(self, session: Session, data: bytes) -> None:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            session.close(CLOSE_INVALID_DATA, "text frames are UTF-8")
            return
        station_id = session.station_id
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = _NOT_JSON
        if type(message) is list and len(message) > 2 and message[0] == 3:
            hidden = storage.answer_without_secret(message[2])
            if hidden is not message[2]:  # kept, logged and shown without it
                message[2] = hidden
                text = orjson.dumps(message).decode()
        self.store.write(LOG_SQL, (station_id, now_iso(), "in", text))
        if self.listeners:
            self._notify("in", station_id, text)
        if message is _NOT_JSON:
            self._error(session, "-1", "FormationViolation", "message is not valid JSON")
            return
        if not (
            type(message) is list
            and len(message) >= 3
            and type(message[0]) is int  # MessageTypeId: an integer (2.0 equals 2)
            and message[0] in (2, 3, 4)
            and type(message[1]) is str
        ):
            if type(message) is list and message and message[0] in (3, 4):
                # A CALLERROR answers a CALL only (OCPP-J 4.1.3): a broken reply gets none.
                # The command it answers fails now, not at its timeout.
                log.warning("%s: malformed reply: %.200s", station_id, text)
                if len(message) > 1 and type(message[1]) is str:
                    self.commands.on_reply(session, message)
                return
            uid = message[1] if isinstance(message, list) and len(message) > 1 else "-1"
            self._error(
                session,
                uid if isinstance(uid, str) else "-1",
                "ProtocolError",
                "expected [2, id, action, payload], [3, id, payload] or [4, id, code, ...]",
            )
            return
        if message[0] != 2:
            self.commands.on_reply(session, message)
            return
        uid = message[1]
        if len(message) != 4 or type(message[2]) is not str or len(uid) > 36:
            self._error(
                session, uid, "ProtocolError", "a CALL is [2, id (≤ 36 chars), action, payload]"
            )
            return
        action, payload = message[2], message[3]
        handler = HANDLERS.get(action)
        if handler is None:
            code = "NotSupported" if schemas.known(action) else "NotImplemented"
            self._error(session, uid, code, f"{action} is not a charge point request")
            return
        if session.registration != "Accepted" and action not in _BEFORE_ACCEPTED.get(
            session.registration, _BOOT_ONLY
        ):
            self._error(session, uid, "SecurityError", "BootNotification must be accepted first")
            return
        try:
            schemas.check(action, payload)
        except schemas.SchemaError as error:
            self._error(session, uid, error.code, str(error))
            return
        since = self.store.mark()
        try:
            result = handler(self, session, payload)
        except Exception:
            log.exception("%s %s failed", station_id, action)
            self._error(session, uid, "InternalError", f"{action} could not be processed")
            return
        if type(result) is dict:
            # Answered once what the handler queued is committed: an answer means "stored".
            # (partial: fewer objects alive per message in flight than a closure)
            self.store.after_commit(partial(self._answer, session, uid, action, result), since)
        else:
            done = partial(self._answer_query, session, uid, action, result.answer)
            self.store.submit(result.run, result.args, done)

    def _answer_query(
        self, session: Session, uid: str, action: str, answer: Callable, ok: bool, value: Any
    ) -> None:
        self._answer(session, uid, action, answer(value) if ok else None, ok, value)

    def _answer(
        self, session: Session, uid: str, action: str, result: Any, ok: bool, error: Any
    ) -> None:
        """Send the CALLRESULT once the batch is committed, or a CALLERROR if it failed
        (`error` is then the exception)."""
        if not session.open:
            return  # closed meanwhile: the station will retransmit what it needs
        if not ok:
            log.error("%s %s failed: %r", session.station_id, action, error)
            self._error(session, uid, "InternalError", f"{action} could not be processed")
            return
        self.send(session, orjson.dumps([3, uid, result]).decode())
        if action == "BootNotification":
            self.commands.ready(session)  # queued commands follow the BootNotification answer

    def _error(self, session: Session, uid: str, code: str, description: str) -> None:
        self.send(session, orjson.dumps([4, uid, code, description, {}]).decode())

    def send(self, session: Session, text: str, shown: str | None = None) -> None:
        """Send a frame to the station (raises ConnectionError when it is closed); the log
        and the listeners get `shown` if given (the frame without a secret)."""
        session.send(text)
        shown = shown or text
        self.store.write(LOG_SQL, (session.station_id, now_iso(), "out", shown))
        if self.listeners:
            self._notify("out", session.station_id, shown)

    def _notify(self, kind: str, station_id: str, text: str | None) -> None:
        for listener in self.listeners:
            listener(kind, station_id, text)
