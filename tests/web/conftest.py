"""A running central system with its web app on 127.0.0.1, in a background event loop, so that
tests (and the synchronous Playwright API) talk to it over real HTTP and WebSockets."""

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from host.cs import server, storage
from host.cs.store import Store
from host.web import api, auth, schema
from tests.web.station import Station, connected

PASSWORD = "correct horse battery"


class Response:
    def __init__(self, status: int, body: bytes, headers: Any):
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body)


class LiveCS:
    """The central system and web app, running in their own thread and event loop."""

    def __init__(self, url: str):
        db = storage.Db(url)
        schema.migrate(db)
        auth.add_user(db, "op", "operator", PASSWORD)
        auth.add_user(db, "viewer", "read-only", PASSWORD)
        self.tokens = {
            "operator": auth.new_token(db, "op"),
            "read-only": auth.new_token(db, "viewer"),
        }
        db.commit()
        db.close()
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        self.store = Store(self.url)
        await self.store.open()
        self.cs = server.CentralSystem(
            self.store, unknown="accept", poll_s=0.05, command_timeout_s=5
        )
        await self.cs.start("127.0.0.1", 0)
        self.runner = await api.start(self.cs, self.url, "127.0.0.1", 0)
        self.ocpp_port = self.cs.port
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.cs.stop()
        await self.store.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def close(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def run(self, coro: Any, timeout: float = 20) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def db(self, fn: Any, *args: Any) -> Any:
        """Run a storage function in the server's database process."""
        return self.run(self.store.call(fn, *args))

    @contextlib.contextmanager
    def station(self, station_id: str, boot: bool = True) -> Iterator[Station]:
        """A connected (and booted) station, disconnected on exit."""
        leave = asyncio.Event()
        ready: asyncio.Future = self.loop.create_future()

        async def hold() -> None:
            try:
                async with connected(self.ocpp_port, station_id, boot) as station:
                    ready.set_result(station)
                    await leave.wait()
            except Exception as error:
                if not ready.done():
                    ready.set_exception(error)
                raise

        task = asyncio.run_coroutine_threadsafe(hold(), self.loop)

        async def wait_ready() -> Station:
            return await ready

        try:
            yield self.run(wait_ready())
        finally:
            self.loop.call_soon_threadsafe(leave.set)
            task.result(10)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        role: str | None = "operator",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Response:
        """An HTTP request with the role's token (None: without authentication)."""
        all_headers = dict(headers or {})
        if role is not None:
            all_headers["Authorization"] = f"Bearer {self.tokens[role]}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(self.base + path, data, all_headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return Response(response.status, response.read(), response.headers)
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read(), error.headers)


def lost_transaction(live: LiveCS, station_id: str) -> int:
    """The id of a transaction its station started and will never stop."""
    start = {"connectorId": 1, "idTag": "LOST", "meterStart": 0, "timestamp": "2026-11-26T10:00Z"}
    return live.db(storage.start_transaction, station_id, start)["transactionId"]


def wait_until(condition: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveCS]:
    cs = LiveCS(f"sqlite:///{tmp_path_factory.mktemp('web')}/cs.sqlite3")
    try:
        yield cs
    finally:
        cs.close()
