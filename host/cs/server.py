"""The OCPP 1.6J central system: WebSocket endpoint, station sessions, OCPP-J framing.

Stations connect at ws[s]://HOST:PORT/ocpp/<chargePointId> with subprotocol ocpp1.6.
Every frame is parsed, validated against the official schemas with compiled validators and
answered on the event loop: no thread per message, no camel/snake key conversion. Storage
work goes to the batching `Store`; commands to stations go through `CommandQueue`.
"""

import asyncio
import base64
import binascii
import logging
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from host.cs import schemas, storage
from host.cs.commands import CommandQueue
from host.cs.handlers import HANDLERS
from host.cs.storage import LOG_SQL, Store, now_iso

log = logging.getLogger("evse.cs")

SUBPROTOCOL = Subprotocol("ocpp1.6")
PATH_PREFIX = "/ocpp/"
MAX_ID_LENGTH = 48  # OCPP 1.6 chargeBoxIdentity is CiString48
UNKNOWN_POLICIES = ("reject", "accept", "pending")


class Session:
    """One connected station."""

    __slots__ = ("station_id", "ws", "registration", "pending", "sending")

    def __init__(self, station_id: str, ws: ServerConnection, registration: str | None):
        self.station_id = station_id
        self.ws = ws
        self.registration = registration  # status of its last BootNotification answer
        self.pending: dict[str, asyncio.Future] = {}  # our CALLs awaiting the station's reply
        self.sending = False  # a command delivery is in progress


def station_id_from_path(path: str) -> str | None:
    path = path.split("?", 1)[0]
    if not path.startswith(PATH_PREFIX):
        return None
    station_id = unquote(path[len(PATH_PREFIX) :])
    if not station_id or "/" in station_id or len(station_id) > MAX_ID_LENGTH:
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


def _peer_common_name(connection: ServerConnection) -> str | None:
    tls = connection.transport.get_extra_info("ssl_object")
    cert = tls.getpeercert() if tls else None
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


def _basic_auth(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


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
        self.ping_interval_s = ping_interval_s
        self.max_message = max_message
        self.ssl_context = ssl_context
        self.sessions: dict[str, Session] = {}
        self.commands = CommandQueue(self, timeout_s=command_timeout_s, poll_s=poll_s)
        self.server: Server | None = None
        self._closing: set[asyncio.Task] = set()
        # Observers (the web dashboard): fn(kind, station_id, frame_text_or_None) with kind
        # "connected", "disconnected", "in" or "out"; they must be quick and never raise.
        self.listeners: list[Callable[[str, str, str | None], None]] = []

    async def start(self, host: str = "127.0.0.1", port: int = 9000) -> Server:
        await self.store.call(_all_offline)
        self.server = await serve(
            self._connection,
            host,
            port,
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            compression=None,  # per-connection deflate state would cost ~100 KiB each
            # A vanished station is offline within two ping intervals: one to the next ping,
            # half to miss its pong, half for the closing handshake it will not answer.
            ping_interval=self.ping_interval_s,
            ping_timeout=self.ping_interval_s / 2,
            close_timeout=self.ping_interval_s / 2,
            max_size=self.max_message,
            max_queue=4,
            ssl=self.ssl_context,
            server_header=None,
            backlog=4096,
        )
        self.commands.start()
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.commands.stop()
        if self.server:
            self.server.close()
            await self.server.wait_closed()
        await self.store.flush()

    # ---- handshake ----------------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        station_id = station_id_from_path(request.path)
        if station_id is None:
            return connection.respond(404, "Stations connect at /ocpp/<chargePointId>\n")
        station = await self.store.call(storage.get_station, station_id)
        if station is None:
            if self.unknown == "reject":
                return connection.respond(404, f"Unknown station {station_id}\n")
            approval = "accepted" if self.unknown == "accept" else "pending"
            station = await self.store.call(storage.add_station, station_id, approval)
        if station["approval"] == "rejected":
            return connection.respond(403, f"Station {station_id} is rejected\n")
        profile = station["security_profile"]
        if profile >= 2 and connection.transport.get_extra_info("ssl_object") is None:
            return connection.respond(403, f"Security profile {profile} requires TLS\n")
        if profile in (1, 2):
            credentials = _basic_auth(request)
            if (
                credentials is None
                or credentials[0] != station_id
                or not storage.key_matches(station, credentials[1])
            ):
                response = connection.respond(401, "Basic authentication failed\n")
                response.headers["WWW-Authenticate"] = 'Basic realm="ocpp"'
                return response
        if profile == 3 and _peer_common_name(connection) != station_id:
            return connection.respond(401, "Client certificate does not name this station\n")
        # Only what the session needs: the connection lives as long as the station stays.
        registration = station["registration"] if station["approval"] == "accepted" else None
        connection.station = (station_id, registration)  # type: ignore[attr-defined]
        return None

    # ---- connection ---------------------------------------------------------------------

    async def _connection(self, ws: ServerConnection) -> None:
        station_id, registration = ws.station  # type: ignore[attr-defined]
        del ws.station  # type: ignore[attr-defined]
        if ws.subprotocol != SUBPROTOCOL:
            # OCPP-J: finish the handshake without a subprotocol, then close at once.
            await ws.close(CloseCode.PROTOCOL_ERROR, "subprotocol ocpp1.6 required")
            return
        session = Session(station_id, ws, registration)
        previous = self.sessions.get(station_id)
        self.sessions[station_id] = session
        if previous is not None:
            # Without waiting: a half-dead old connection may take close_timeout to go.
            closing = asyncio.create_task(
                previous.ws.close(CloseCode.GOING_AWAY, "replaced by a new connection")
            )
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self.store.write(storage.ONLINE_SQL, (1, now_iso(), station_id))
        self._notify("connected", station_id, None)
        self.commands.wake(session)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    await ws.close(CloseCode.UNSUPPORTED_DATA, "OCPP-J messages are text frames")
                    break
                await self._on_frame(session, message)
        except ConnectionClosed:
            pass
        finally:
            for future in session.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed before the answer"))
            if self.sessions.get(station_id) is session:
                del self.sessions[station_id]
                self.store.write(storage.ONLINE_SQL, (0, now_iso(), station_id))
                self._notify("disconnected", station_id, None)

    async def _on_frame(self, session: Session, text: str) -> None:
        self.store.write(LOG_SQL, (session.station_id, now_iso(), "in", text))
        self._notify("in", session.station_id, text)
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self._error(session, "-1", "FormationViolation", "message is not valid JSON")
            return
        if not (
            isinstance(message, list)
            and len(message) >= 3
            and message[0] in (2, 3, 4)
            and isinstance(message[1], str)
        ):
            uid = message[1] if isinstance(message, list) and len(message) > 1 else "-1"
            await self._error(
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
        if len(message) != 4 or not isinstance(message[2], str) or len(uid) > 36:
            await self._error(
                session, uid, "ProtocolError", "a CALL is [2, id (≤ 36 chars), action, payload]"
            )
            return
        action, payload = message[2], message[3]
        handler = HANDLERS.get(action)
        if handler is None:
            code = "NotSupported" if schemas.known(action) else "NotImplemented"
            await self._error(session, uid, code, f"{action} is not a charge point request")
            return
        if action != "BootNotification" and session.registration != "Accepted":
            await self._error(
                session, uid, "SecurityError", "BootNotification must be accepted first"
            )
            return
        try:
            schemas.check(action, payload)
        except schemas.SchemaError as error:
            await self._error(session, uid, error.code, str(error))
            return
        try:
            result = await handler(self, session, payload)
        except Exception:
            log.exception("%s %s failed", session.station_id, action)
            await self._error(session, uid, "InternalError", f"{action} could not be processed")
            return
        await self.send(session, orjson.dumps([3, uid, result]).decode())
        if action == "BootNotification":
            self.commands.wake(session)  # queued commands follow the BootNotification answer

    async def _error(self, session: Session, uid: str, code: str, description: str) -> None:
        await self.send(session, orjson.dumps([4, uid, code, description, {}]).decode())

    async def send(self, session: Session, text: str) -> None:
        self.store.write(LOG_SQL, (session.station_id, now_iso(), "out", text))
        self._notify("out", session.station_id, text)
        await session.ws.send(text)

    def _notify(self, kind: str, station_id: str, text: str | None) -> None:
        for listener in self.listeners:
            listener(kind, station_id, text)


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _all_offline(db: storage.Db) -> None:
    db.execute("UPDATE stations SET online = 0 WHERE online = 1")
