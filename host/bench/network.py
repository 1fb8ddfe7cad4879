"""The network between the station and the central system, as the bench sees it.

The station connects to this relay (ws://127.0.0.1:PORT/ocpp/<id>); the relay connects on to
the central system (the embedded one or `--cs URL`) and passes every OCPP-J frame both ways,
recording it. Because every frame passes here, the bench can also play the network (drop the
link, take the central system down and up, add latency), act as the operator (CALLs injected
with `bench-` ids, whose answers are kept here) and override the central system's answer for
chosen id tags — the same way for any central system behind it.
"""

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

SUBPROTOCOL = Subprotocol("ocpp1.6")
INJECTED = "bench-"
TAG_ACTIONS = ("Authorize", "StartTransaction", "StopTransaction")


@dataclass
class Frame:
    wall: float  # time.monotonic()
    direction: str  # "station" (station -> CS) or "cs" (CS -> station)
    message: list  # the decoded OCPP-J message (a list); [] when undecodable
    text: str


def decode(text: str) -> list:
    try:
        message = json.loads(text)
    except ValueError:
        return []
    return message if isinstance(message, list) and len(message) >= 3 else []


def _wall_ms() -> int:
    return int(time.monotonic() * 1000)


class Network:
    """`clock()` is the station's time in ms, which latency_ms counts in (default: real time)."""

    def __init__(
        self,
        upstream: str,
        on_frame: Callable[[Frame], None],
        tag_status: dict,
        clock: Callable[[], int] = _wall_ms,
    ):
        self.upstream = upstream.rstrip("/")
        self.on_frame = on_frame
        self.tag_status = tag_status  # idTag -> status that replaces the CS's answer
        self.clock = clock
        self.latency_ms = 0  # each CS frame is held this long before the station gets it
        self.booted = threading.Event()  # a BootNotification of the station was answered
        self._boot_uid = None
        self.port = 0
        self.host = "127.0.0.1"
        self.server: Server | None = None
        self.station: ServerConnection | None = None
        self.cs: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future] = {}  # our injected CALLs
        self._tags: dict[str, str] = {}  # uid of a station CALL -> the id tag it carried

    @property
    def url(self) -> str:
        """Where a station on this machine connects (a board uses this machine's address)."""
        return f"ws://127.0.0.1:{self.port}/ocpp"

    async def start(self, port: int = 0, host: str | None = None) -> None:
        """Listen on host:port (a board on the bench's network needs "0.0.0.0")."""
        self.host = host or self.host
        self.server = await serve(
            self._connection,
            self.host,
            port,
            subprotocols=[SUBPROTOCOL],
            compression=None,
            ping_interval=None,
            close_timeout=1,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.drop()
        if self.server:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    # ---- faults ------------------------------------------------------------------------

    async def drop(self) -> None:
        """Cut the current link; the station will reconnect."""
        for ws in (self.station, self.cs):
            if ws is not None:
                ws.transport.abort()  # no closing handshake: the link just dies

    async def down(self) -> None:
        if self.server:
            self.server.close()
            await self.drop()
            await self.server.wait_closed()
            self.server = None

    async def up(self) -> None:
        if self.server is None:
            await self.start(self.port)

    # ---- operator ----------------------------------------------------------------------

    async def call(self, action: str, payload: dict, timeout: float) -> Any:
        """Send a CALL to the station as the central system; its answer (payload, or the
        CALLERROR list) or TimeoutError / ConnectionError."""
        station = self.station
        if station is None:
            raise ConnectionError("no station connected")
        uid = f"{INJECTED}{next(self._ids)}"
        future = asyncio.get_running_loop().create_future()
        self._waiting[uid] = future
        text = json.dumps([2, uid, action, payload])
        self._record("cs", text)
        try:
            await station.send(text)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(uid, None)

    # ---- relay -------------------------------------------------------------------------

    def _record(self, direction: str, text: str) -> list:
        message = decode(text)
        self.on_frame(Frame(time.monotonic(), direction, message, text))
        return message

    async def _connection(self, station: ServerConnection) -> None:
        path = station.request.path if station.request else "/"
        try:
            cs = await connect(
                self.upstream + path[len("/ocpp") :],
                subprotocols=[SUBPROTOCOL],
                compression=None,
                ping_interval=None,
                open_timeout=5,
                close_timeout=1,
            )
        except (OSError, InvalidHandshake, TimeoutError):
            await station.close(1011, "central system unreachable")
            return
        self.station, self.cs = station, cs
        try:
            await asyncio.gather(self._from_station(station, cs), self._from_cs(cs, station))
        except ConnectionClosed:
            pass
        finally:
            for ws in (station, cs):
                ws.transport.abort()
            if self.station is station:
                self.station = self.cs = None

    async def _from_station(self, station: ServerConnection, cs: ClientConnection) -> None:
        async for text in station:
            text = text if isinstance(text, str) else text.decode(errors="replace")
            message = self._record("station", text)
            uid = message[1] if message else None
            if isinstance(uid, str) and uid in self._waiting:
                future = self._waiting[uid]
                if not future.done():
                    future.set_result(message[2] if message[0] == 3 else message)
                continue  # an answer to the operator, not to the central system
            if message and message[0] == 2 and message[2] == "BootNotification":
                self._boot_uid = message[1]
            if message and message[0] == 2 and message[2] in TAG_ACTIONS:
                tag = message[3].get("idTag") if isinstance(message[3], dict) else None
                if tag in self.tag_status:
                    self._tags[message[1]] = tag
            await cs.send(text)
        raise ConnectionClosed(None, None)

    async def _from_cs(self, cs: ClientConnection, station: ServerConnection) -> None:
        async for text in cs:
            text = text if isinstance(text, str) else text.decode(errors="replace")
            message = decode(text)
            if message and message[0] == 3 and message[1] == self._boot_uid:
                self.booted.set()
            tag = self._tags.pop(message[1], None) if message and message[0] == 3 else None
            if tag is not None and isinstance(message[2], dict):
                message[2]["idTagInfo"] = {"status": self.tag_status[tag]}
                text = json.dumps(message)
            if self.latency_ms:
                until = self.clock() + self.latency_ms
                while self.clock() < until:
                    await asyncio.sleep(0.001)
            self._record("cs", text)
            await station.send(text)
        raise ConnectionClosed(None, None)
