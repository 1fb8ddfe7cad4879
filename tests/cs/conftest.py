"""Fixtures for the central-system tests: a real PostgreSQL server, fresh databases, a running
central system on 127.0.0.1, and charge points written on the `ocpp` package's ChargePoint."""

import asyncio
import base64
import contextlib
import glob
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call_result

from host.cs import server, storage
from host.cs.store import Store
from tests.ports import free_port

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free loopback port; yields its admin URL."""
    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed (the Makefile installs it: run `make`)")
    bindir = os.path.dirname(binaries[-1])
    root = tempfile.mkdtemp(prefix="evse-pg-")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), free_port()
    subprocess.run(
        [*as_postgres, f"{bindir}/initdb", "-D", data, "-U", "evse", "-A", "trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [
            *as_postgres,
            f"{bindir}/pg_ctl",
            "-D",
            data,
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
            "-l",
            os.path.join(root, "log"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://evse@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_postgres, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


_database_numbers = itertools.count()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh, empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/cs.sqlite3"
    import psycopg

    admin = request.getfixturevalue("postgres")
    name = f"t{os.getpid()}_{next(_database_numbers)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/cs.sqlite3"


def run(coro: Any, timeout: float = 30) -> Any:
    """Run one async scenario with a bound on its duration."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@contextlib.asynccontextmanager
async def central_system(url: str, **options: Any) -> AsyncIterator[server.CentralSystem]:
    store = Store(url)
    await store.open()
    options.setdefault("poll_s", 0.05)
    options.setdefault("command_timeout_s", 5)
    cs = server.CentralSystem(store, **options)
    await cs.start("127.0.0.1", 0)
    try:
        yield cs
    finally:
        await cs.stop()
        await store.close()


class Station(ChargePoint):
    """A charge point on the `ocpp` package that answers the central system's calls."""

    received: list[tuple[str, dict]]
    configuration_status = "Accepted"  # its answer to ChangeConfiguration

    @on("Reset")
    def on_reset(self, type: str) -> call_result.Reset:  # noqa: A002 - the OCPP field name
        self.received.append(("Reset", {"type": type}))
        return call_result.Reset(status="Accepted")

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, **rest: Any) -> call_result.RemoteStartTransaction:
        self.received.append(("RemoteStartTransaction", {"idTag": id_tag, **rest}))
        return call_result.RemoteStartTransaction(status="Accepted")

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str) -> call_result.ChangeConfiguration:
        self.received.append(("ChangeConfiguration", {"key": key, "value": value}))
        return call_result.ChangeConfiguration(status=self.configuration_status)

    @on("GetConfiguration")
    def on_get_configuration(self, **rest: Any) -> call_result.GetConfiguration:
        self.received.append(("GetConfiguration", rest))
        key = {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
        return call_result.GetConfiguration(configuration_key=[key])


@contextlib.asynccontextmanager
async def station(
    cs: server.CentralSystem,
    station_id: str,
    auth_key: str | None = None,
    subprotocols: tuple[str, ...] = ("ocpp1.6",),
) -> AsyncIterator[Station]:
    headers = {}
    if auth_key is not None:
        token = base64.b64encode(f"{station_id}:{auth_key}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    uri = f"ws://127.0.0.1:{cs.port}/ocpp/{station_id}"
    async with websockets.connect(
        uri,
        subprotocols=list(subprotocols),
        additional_headers=headers,  # type: ignore[arg-type]
    ) as ws:
        cp = Station(station_id, ws, response_timeout=5)
        cp.received = []
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()


async def wait_for(condition: Any, timeout: float = 5.0) -> None:
    """Poll an (async or sync) condition until true; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def command_reaches(cs, command, state, timeout=5.0):
    """Wait until the queued command is in `state` (fail after `timeout` seconds); its row."""
    rows = []

    async def reached():
        rows.append(await cs.store.call(storage.get_command, command))
        return rows[-1]["state"] == state

    await wait_for(reached, timeout)
    return rows[-1]


async def raw(cs, station_id="RAW", subprotocols=("ocpp1.6",), **options):
    """A bare WebSocket connection (the frames are the test's own)."""
    return await websockets.connect(
        f"ws://127.0.0.1:{cs.port}/ocpp/{station_id}",
        subprotocols=list(subprotocols),  # type: ignore[arg-type]
        **options,
    )


async def exchange(ws, text):
    """Send a frame, return the next one received, parsed (within 5 s)."""
    await ws.send(text)
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


RAW_BOOT = '[2, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]'


async def booted(cs, station_id="CP1", status="Accepted"):
    """A bare connection whose BootNotification was answered with `status`."""
    ws = await raw(cs, station_id)
    answer = await exchange(ws, RAW_BOOT)
    assert answer[:2] == [3, "b"] and answer[2]["status"] == status, answer
    return ws
