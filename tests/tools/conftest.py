"""Fixtures for the board tools: a MicroPython REPL on a pseudo-terminal, station files."""

from pathlib import Path

import pytest

from host.tools.replboard import ReplBoard

SIM_STATION = """
id = "CP042"
url = "ws://127.0.0.1:9000/ocpp"
security_profile = 1
auth_key = "{auth_key}"
chip = "sim"

[board]
max_current_a = 16
phases = 3

[board.meter]
model = "SDM630"
uart = 2
tx = 17
rx = 16

[[board.connectors]]
pilot_pwm = 25
pilot_adc = 34
contactor = 26
rcd_trip = 14
meter_address = 1
"""
AUTH_KEY = "s3cret-basic-auth-key"


@pytest.fixture
def repl_board(tmp_path):
    root = tmp_path / "board"
    root.mkdir()
    board = ReplBoard(root)
    yield board
    board.close()


@pytest.fixture
def sim_station(tmp_path) -> Path:
    path = tmp_path / "cp042.toml"
    path.write_text(SIM_STATION.format(auth_key=AUTH_KEY))
    return path


ESP32_STATION = """
id = "CP001"
url = "wss://cs.example.org/ocpp"
security_profile = 2
auth_key = "{auth_key}"
ca = "ca.pem"
ntp = "pool.ntp.org"
chip = "esp32"

[network.wifi]
ssid = "depot"
password = "{wifi_password}"

[board]
max_current_a = 32
phases = 3
temperature_adc = 36
watchdog_ms = 2000

[board.rcd]
type = "A"

[board.meter]
model = "SDM630"
uart = 2
tx = 17
rx = 16
de = 4
baud = 9600

[[board.connectors]]
pilot_pwm = 25
pilot_adc = 34
contactor = 26
contactor_feedback = 27
proximity_adc = 35
rcd_trip = 14
rcd_test = 12
meter_address = 1
"""
WIFI_PASSWORD = "wifi-passphrase-42"


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed CA (P-256) written as NAME.pem and NAME.key.pem in `directory`."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "evse test CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test CPO"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def esp32_station(tmp_path) -> Path:
    make_ca(tmp_path)
    path = tmp_path / "cp001.toml"
    path.write_text(ESP32_STATION.format(auth_key=AUTH_KEY, wifi_password=WIFI_PASSWORD))
    return path


@pytest.fixture(scope="session")
def unix_bundle_once(tmp_path_factory) -> Path:
    from host.tools import build

    out = tmp_path_factory.mktemp("bundle")
    build.build("unix", out)
    return out


@pytest.fixture
def unix_bundle(unix_bundle_once, tmp_path) -> Path:
    """A fresh copy of the bundle for the unix port, free to change."""
    import shutil

    return Path(shutil.copytree(unix_bundle_once, tmp_path / "bundle"))
