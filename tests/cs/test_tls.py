"""Security profiles 2 (TLS + Basic auth) and 3 (TLS client certificates) over real wss://."""

import base64
import datetime
import ipaddress
import ssl

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.exceptions import InvalidStatus

from host.cs import server, storage
from tests.cs.conftest import central_system, run

KEY = "0123456789abcdef0123"


def issue(name, issuer=None, issuer_key=None, ca=False):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert, key


def write_pem(path, cert, key=None):
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        with open(str(path) + ".key", "wb") as f:
            f.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )


@pytest.fixture
def pki(tmp_path):
    ca, ca_key = issue("evse test CA", ca=True)
    write_pem(tmp_path / "ca.pem", ca)
    for name in ("127.0.0.1", "CP3", "OTHER"):
        cert, key = issue(name, ca, ca_key)
        write_pem(tmp_path / f"{name}.pem", cert, key)
    return tmp_path


def client_context(pki, cert=None):
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        context.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.pem.key"))
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
    tls = server.tls_context(
        str(pki / "127.0.0.1.pem"), str(pki / "127.0.0.1.pem.key"), str(pki / "ca.pem")
    )

    async def scenario():
        async with central_system(sqlite_url, ssl_context=tls) as cs:
            await cs.store.call(storage.add_station, "CP2")
            await cs.store.call(storage.set_station, "CP2", security_profile=2, auth_key=KEY)
            await cs.store.call(storage.add_station, "CP3")
            await cs.store.call(storage.set_station, "CP3", security_profile=3)

            ws = await connect(cs, "CP2", client_context(pki), KEY)
            boot = '[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
            await ws.send(boot)
            assert '"Accepted"' in await ws.recv()
            await ws.close()
            with pytest.raises(InvalidStatus) as wrong_key:
                await connect(cs, "CP2", client_context(pki), "wrong-key-0000000000")
            assert wrong_key.value.response.status_code == 401

            ws = await connect(cs, "CP3", client_context(pki, "CP3"))
            await ws.send(boot)
            assert '"Accepted"' in await ws.recv()
            await ws.close()
            for cert in (None, "OTHER"):  # no certificate, or one naming another station
                with pytest.raises(InvalidStatus) as refused:
                    await connect(cs, "CP3", client_context(pki, cert))
                assert refused.value.response.status_code == 401

    run(scenario())
