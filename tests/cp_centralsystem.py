"""A central system for the charge point tests, written directly on the `ocpp` package.

Its ChargePoint class validates every payload both ways against the official OCPP 1.6 JSON
schemas; on top of that every raw frame on the wire is recorded and checked here against the
same schemas (CALLs by action, CALLRESULTs by the action of their CALL). Transaction messages
are de-duplicated the way a real central system recognises retransmissions.
"""

import asyncio
import json
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import ocpp
import websockets
from ocpp.exceptions import InternalError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result
from ocpp.v16.enums import Action

from tests.pki import Pki

SCHEMAS = Path(ocpp.__file__).parent / "v16" / "schemas"
_validators: dict[str, jsonschema.protocols.Validator] = {}


def validate(name: str, payload: dict) -> None:
    """Raise jsonschema.ValidationError unless `payload` fits schema `name` (e.g. 'Heartbeat')."""
    if name not in _validators:
        schema = json.loads((SCHEMAS / f"{name}.json").read_text())
        _validators[name] = jsonschema.validators.validator_for(schema)(schema)
    _validators[name].validate(payload)


def make_tls(data_dir: Path, client: str | None = None) -> ssl.SSLContext:
    """A test CA and a server certificate for 127.0.0.1: the CA goes to data_dir/ca.der (for
    the firmware), the server context is returned (for the central system). With `client`, a
    client certificate (CN = client, for security profile 3) goes to data_dir/cert.der and
    key.der, and the server context asks for client certificates issued by the CA."""
    data_dir.mkdir(parents=True, exist_ok=True)
    pki = Pki(data_dir.parent, "evse-test-ca")
    (data_dir / "ca.der").write_bytes(pki.der[0].read_bytes())
    (cert, key), _ = pki.issue("127.0.0.1", ips=["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client:
        _, (client_cert, client_key) = pki.issue(client, client=True)
        (data_dir / "cert.der").write_bytes(client_cert.read_bytes())
        (data_dir / "key.der").write_bytes(client_key.read_bytes())
        context.load_verify_locations(cafile=pki.pem[0])
        context.verify_mode = ssl.CERT_OPTIONAL  # as host/cs: profile 2 sends none
    return context


def now_iso(offset: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + offset).strftime("%Y-%m-%dT%H:%M:%SZ")


class Wire:
    """The server side of one WebSocket, recording and schema-checking every frame."""

    def __init__(self, ws, cs: "CentralSystem"):
        self.ws = ws
        self.cs = cs
        self.pending: dict[str, str] = {}  # uid of a CALL -> action
        self.raw: dict[str, asyncio.Future] = {}  # uid of a raw frame -> its answer
        # The payload of the last CALL received here: what its handler records. (Not the
        # newest of all connections: while a handler waits for the ocpp package's validation
        # thread, a station that reconnected may already have sent its next message.)
        self.last_call: dict = {}

    def _check(self, text: str, outgoing: bool) -> None:
        message = json.loads(text)
        self.cs.frames.append(("cs" if outgoing else "cp", message))
        kind, uid = message[0], message[1]
        if kind == 2:
            validate(message[2], message[3])
            self.pending[uid] = message[2]
            if not outgoing:
                self.last_call = message[3]
        elif kind == 3:
            validate(self.pending.pop(uid) + "Response", message[2])
        else:
            self.pending.pop(uid, None)

    async def recv(self) -> str:
        while True:
            text = await self.ws.recv()
            message = json.loads(text)
            if message[0] in (3, 4) and message[1] in self.raw:
                self.raw.pop(message[1]).set_result(message)
                continue
            self._check(text, outgoing=False)
            return text

    async def send(self, text: str) -> None:
        self._check(text, outgoing=True)
        await self.ws.send(text)


class Station(ChargePoint):
    """Handlers of the central system for one charge point."""

    cs: "CentralSystem"

    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor, charge_point_model, **_):
        replies = self.cs.boot_replies
        status, interval = replies.pop(0) if replies else ("Accepted", 300)
        return call_result.BootNotification(
            current_time=now_iso(self.cs.clock_offset), interval=interval, status=status
        )

    @on(Action.heartbeat)
    def on_heartbeat(self):
        return call_result.Heartbeat(current_time=now_iso(self.cs.clock_offset))

    @on(Action.status_notification)
    def on_status(self, connector_id, error_code, status, **_):
        if self.cs.failing.get("StatusNotification"):
            self.cs.failing["StatusNotification"] -= 1
            raise InternalError(description="failed to store it")
        self.cs.status[connector_id] = (status, error_code)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag):
        return call_result.Authorize(id_tag_info={"status": self.cs.tag_status(id_tag)})

    @on(Action.start_transaction)
    def on_start(self, connector_id, id_tag, meter_start, timestamp, **_):
        key = (connector_id, id_tag, meter_start, timestamp)
        if key in self.cs.starts:
            self.cs.repeats += 1
        else:
            self.cs.starts[key] = self.cs.next_tx
            self.cs.next_tx += 1
            entry = ("StartTransaction", self.cs.starts[key], self._connection.last_call)
            self.cs.log.append(entry)
        return call_result.StartTransaction(
            transaction_id=self.cs.starts[key], id_tag_info={"status": self.cs.tag_status(id_tag)}
        )

    @on(Action.meter_values)
    def on_meter_values(self, connector_id, meter_value, transaction_id=None, **_):
        self.cs.record("MeterValues", transaction_id, self._connection.last_call)
        return call_result.MeterValues()

    @on(Action.stop_transaction)
    def on_stop(self, meter_stop, timestamp, transaction_id, **_):
        self.cs.record("StopTransaction", transaction_id, self._connection.last_call)
        return call_result.StopTransaction()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id, **_):
        return call_result.DataTransfer(status="UnknownVendorId")


class CentralSystem:
    def __init__(self):
        self.frames: list[tuple[str, list]] = []  # ("cp" | "cs", message) in wire order
        self.log: list[tuple[str, int, dict]] = []  # transaction messages, once each, in order
        self.repeats = 0  # retransmissions recognised
        self.starts: dict[tuple, int] = {}
        self.next_tx = 1000
        self.status: dict[int, tuple[str, str]] = {}
        self.boot_replies: list[tuple[str, int]] = []  # (status, interval) for the next boots
        self.clock_offset = timedelta(0)  # the central system's clock minus the real one
        self.tags: dict[str, str] = {}  # idTag -> status; unknown tags are Accepted
        self.failing: dict[str, int] = {}  # action -> how many more get CALLERROR InternalError
        self.station: Station | None = None
        self.connections = 0
        self.paths: list[str] = []
        self.headers: list = []  # HTTP headers of each connection's handshake
        self._changed = asyncio.Event()
        self._server = None
        self._poker: asyncio.Task | None = None
        self.port = 0

    def tag_status(self, tag: str) -> str:
        return self.tags.get(tag, "Accepted")

    def record(self, action: str, transaction_id: int | None, payload: dict) -> None:
        entry = (action, transaction_id, payload)
        if entry in self.log:
            self.repeats += 1
        else:
            self.log.append(entry)

    async def start(self, ssl=None, port: int = 0) -> "CentralSystem":
        self._server = await websockets.serve(
            self._connected, "127.0.0.1", port, subprotocols=["ocpp1.6"], ssl=ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._poker = asyncio.get_running_loop().create_task(self._poke())
        return self

    async def _poke(self) -> None:
        # Wakes waiters regularly, so conditions on frames are re-checked (bounded by wait()).
        while True:
            await asyncio.sleep(0.02)
            self._changed.set()

    async def stop(self) -> None:
        self._poker.cancel()
        self._server.close()
        await self._server.wait_closed()

    def url(self, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/ocpp"

    async def _connected(self, ws) -> None:
        self.paths.append(ws.request.path)
        self.headers.append(ws.request.headers)
        station = Station(ws.request.path.rsplit("/", 1)[-1], Wire(ws, self))
        station.cs = self
        self.station = station
        self.connections += 1
        try:
            await station.start()
        except websockets.ConnectionClosed:
            pass

    async def wait(self, predicate, timeout: float = 20.0, what: str = "condition"):
        """Wait until predicate() is truthy, at most `timeout` seconds; return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (value := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"timed out waiting for {what}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass
        return value

    def calls(self, action: str) -> list[dict]:
        """Payloads of every CALL `action` the charge point sent, repeats included."""
        return [m[3] for who, m in self.frames if who == "cp" and m[0] == 2 and m[2] == action]

    async def send_raw(self, text: str, uid: str, timeout: float = 10.0) -> list:
        """Send any text frame to the charge point; its answer to message id `uid`."""
        station = await self.wait(lambda: self.station, timeout, "a charge point")
        wire = station._connection
        answer = asyncio.get_running_loop().create_future()
        wire.raw[uid] = answer
        await wire.ws.send(text)
        return await asyncio.wait_for(answer, timeout)

    async def call(self, payload, timeout: float = 20.0):
        """Send a CALL to the connected charge point (schema-validated both ways)."""
        station = await self.wait(lambda: self.station, timeout, "a charge point")
        return await asyncio.wait_for(station.call(payload), timeout)
