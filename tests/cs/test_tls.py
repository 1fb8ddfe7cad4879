"""Security profiles 2 (TLS + Basic auth) and 3 (TLS client certificates) over real wss://."""

import asyncio
import base64
import json
import ssl

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from host.cs import server, storage
from tests.cs.conftest import central_system, command_reaches, run
from tests.pki import Pki

KEY = "0123456789abcdef0123"
BOOT = '[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'


@pytest.fixture
def pki(tmp_path):
    """The CA's PEM file, and (cert, key) PEM files of the server and two stations."""
    ca = Pki(tmp_path, "evse-test-ca")
    files = {"ca": ca.pem[0], "127.0.0.1": ca.issue("127.0.0.1", ips=["127.0.0.1"])[0]}
    for name in ("CP3", "OTHER"):
        files[name] = ca.issue(name, client=True)[0]
    return files


def client_context(pki, cert=None):
    context = ssl.create_default_context(cafile=pki["ca"])
    if cert:
        context.load_cert_chain(*pki[cert])
    return context


async def connect(cs, station_id, context, key=None):
    headers = {}
    if key:
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{station_id}:{key}".encode()).decode()
        )
    return await websockets.connect(
        f"wss://127.0.0.1:{cs.port}/ocpp/{station_id}",
        subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers=headers,
        ssl=context,
    )


def test_profiles_2_and_3(pki, sqlite_url):
    tls = server.tls_context(*map(str, pki["127.0.0.1"]), str(pki["ca"]))

    async def scenario():
        async with central_system(sqlite_url, ssl_context=tls) as cs:
            await cs.store.call(storage.add_station, "CP2")
            await cs.store.call(storage.set_station, "CP2", security_profile=2, auth_key=KEY)
            await cs.store.call(storage.add_station, "CP3")
            await cs.store.call(storage.set_station, "CP3", security_profile=3)

            ws = await connect(cs, "CP2", client_context(pki), KEY)
            await ws.send(BOOT)
            assert '"Accepted"' in await ws.recv()
            await ws.close()
            with pytest.raises(InvalidStatus) as wrong_key:
                await connect(cs, "CP2", client_context(pki), "wrong-key-0000000000")
            assert wrong_key.value.response.status_code == 401

            ws = await connect(cs, "CP3", client_context(pki, "CP3"))
            await ws.send(BOOT)
            assert '"Accepted"' in await ws.recv()
            await ws.close()
            for cert in (None, "OTHER"):  # no certificate, or one naming another station
                with pytest.raises(InvalidStatus) as refused:
                    await connect(cs, "CP3", client_context(pki, cert))
                assert refused.value.response.status_code == 401

    run(scenario())


async def asked_for_profile_3(cs, pki):
    """CP3 at profile 2, connected and booted, and a ChangeConfiguration of SecurityProfile
    to 3 queued for it: its connection and the command."""
    await cs.store.call(storage.add_station, "CP3")
    await cs.store.call(storage.set_station, "CP3", security_profile=2, auth_key=KEY)
    ws = await connect(cs, "CP3", client_context(pki), KEY)
    await ws.send(BOOT)
    assert '"Accepted"' in await ws.recv()
    change = {"key": "SecurityProfile", "value": "3"}
    command = await cs.store.call(storage.enqueue_command, "CP3", "ChangeConfiguration", change, 60)
    return ws, command


def test_profile_3_pending_until_the_station_connects_with_its_certificate(pki, sqlite_url):
    """Raised from 2 to 3 with RebootRequired: the station connects with its key until its
    reboot, with its client certificate after; then it must."""
    tls = server.tls_context(*map(str, pki["127.0.0.1"]), str(pki["ca"]))

    async def scenario():
        async with central_system(sqlite_url, ssl_context=tls) as cs:
            ws, command = await asked_for_profile_3(cs, pki)
            uid = json.loads(await ws.recv())[1]
            await ws.send(json.dumps([3, uid, {"status": "RebootRequired"}]))
            await command_reaches(cs, command, "answered")
            await ws.close()

            await (await connect(cs, "CP3", client_context(pki), KEY)).close()  # not rebooted
            await (await connect(cs, "CP3", client_context(pki, "CP3"))).close()  # rebooted
            with pytest.raises(InvalidStatus) as refused:
                await connect(cs, "CP3", client_context(pki), KEY)
            assert refused.value.response.status_code == 401
            assert (await cs.store.call(storage.get_station, "CP3"))["security_profile"] == 3

    run(scenario())


def test_profile_3_is_not_sent_to_a_server_that_checks_no_client_certificates(pki, sqlite_url):
    """Without --tls-client-ca the server cannot check the certificate a station shows at
    profile 3: such a station would be locked out, so the change is not sent."""
    tls = server.tls_context(*map(str, pki["127.0.0.1"]))

    async def scenario():
        async with central_system(sqlite_url, ssl_context=tls) as cs:
            ws, command = await asked_for_profile_3(cs, pki)
            failed = await command_reaches(cs, command, "failed")
            assert "at profile 3 the station shows a client certificate" in failed["error"]
            await ws.close()
            assert (await cs.store.call(storage.get_station, "CP3"))["security_profile"] == 2

    run(scenario())


def test_a_tls_handshake_that_never_comes_is_cut_off(pki, sqlite_url, monkeypatch):
    monkeypatch.setattr(server, "OPEN_TIMEOUT_S", 0.5)
    tls = server.tls_context(*map(str, pki["127.0.0.1"]))

    async def scenario():
        async with central_system(sqlite_url, ssl_context=tls) as cs:
            reader, writer = await asyncio.open_connection("127.0.0.1", cs.port)  # no TLS
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            assert loop.time() - started < 5  # asyncio's own bound is 60 s
            writer.close()

    run(scenario())
