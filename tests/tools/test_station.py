import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.cli import main
from host.tools import station
from host.tools.station import StationFileError

from .conftest import AUTH_KEY, WIFI_PASSWORD


def test_a_complete_station_file_makes_the_device_files(esp32_station, tmp_path):
    files = station.load(esp32_station).device_files()
    assert sorted(files) == ["board.json", "ca.der", "station.json"]
    config = json.loads(files["station.json"])
    assert config == {
        "id": "CP001",
        "url": "wss://cs.example.org/ocpp",
        "security_profile": 2,
        "auth_key": AUTH_KEY,
        "ca": "ca.der",
        "ntp": "pool.ntp.org",
        "network": {"wifi": {"ssid": "depot", "password": WIFI_PASSWORD}},
    }
    board = json.loads(files["board.json"])
    assert board["board"] == "esp32" and board["max_current_a"] == 32
    assert board["connectors"][0]["pilot_pwm"] == 25
    assert board["meter"]["model"] == "SDM630" and board["rcd"] == {"type": "A"}
    pem = (tmp_path / "ca.pem").read_bytes()
    body = b"".join(pem.split(b"-----")[2].split())
    assert files["ca.der"] == base64.b64decode(body)


# (text to replace, replacement, the field the error must name)
WIFI = f'[network.wifi]\nssid = "depot"\npassword = "{WIFI_PASSWORD}"'
ETHERNET = '[network.ethernet]\nphy = "LAN8720"\nmdc = 23\nmdio = 18'
MISTAKES = [
    ('id = "CP001"', 'id = "CP 001"', "id"),
    ('id = "CP001"', "", "id: missing"),
    ("security_profile = 2", "security_profile = 5", "security_profile"),
    ("wss://cs.example.org/ocpp", "ws://cs.example.org/ocpp", "url"),
    ("wss://cs.example.org/ocpp", "http://cs.example.org", "url"),
    (f'auth_key = "{AUTH_KEY}"', 'auth_key = "short"', "auth_key"),
    (f'auth_key = "{AUTH_KEY}"', "", "auth_key: required"),
    ('ca = "ca.pem"', 'ca = "missing.pem"', "ca"),
    ('ca = "ca.pem"', 'ca = "ca.key.pem"', "ca"),
    ('ca = "ca.pem"', "", "ca: required"),
    ('chip = "esp32"', 'chip = "esp8266"', "chip"),
    ('ssid = "depot"', "ssid = 7", "network.wifi.ssid"),
    ('ssid = "depot"', 'ssid = "depot"\nchannel = 6', "network.wifi.channel: unknown field"),
    ("max_current_a = 32", "max_current_a = 100", "board.max_current_a"),
    ("max_current_a = 32", "max_current_a = true", "board.max_current_a"),
    ("phases = 3", "phases = 2", "board.phases"),
    ('type = "A"', 'type = "AC"', "board.rcd.type"),
    ('model = "SDM630"', 'model = "XYZ"', "board.meter.model"),
    ("tx = 17", "tx = 36", "board.meter.tx: GPIO 36 is input-only"),
    ("pilot_pwm = 25", "pilot_pwm = 39", "board.connectors[1].pilot_pwm: GPIO 39 is input-only"),
    ("pilot_adc = 34", "pilot_adc = 25", "board.connectors[1].pilot_adc: GPIO 25 is not on ADC1"),
    ("contactor = 26", "contactor = 17", "board.connectors[1].contactor: GPIO 17 is already"),
    ("contactor = 26", "contactor = 40", "board.connectors[1].contactor"),
    ("contactor = 26", "contactor = 24", "board.connectors[1].contactor: esp32 has no GPIO 24"),
    (WIFI, ETHERNET, "board.connectors[1].pilot_pwm: GPIO 25 is already the Ethernet RMII bus"),
    (WIFI, ETHERNET.replace("mdio = 18", "mdio = 23"), "network.ethernet.mdio: GPIO 23 is already"),
    (WIFI, ETHERNET + "\nref_clk = 25", "network.ethernet.ref_clk: GPIO 25 is already"),
    (f'chip = "esp32"\n\n{WIFI}', f'chip = "esp32c3"\n\n{ETHERNET}', "network.ethernet: esp32c3"),
    ("rcd_trip = 14", "rcd_trip = 30", "board.connectors[1].rcd_trip: esp32 has no GPIO 30"),
    ("meter_address = 1", "meter_address = 300", "board.connectors[1].meter_address"),
    ("meter_address = 1", "meter_address = 1\npilot_gain = true", "board.connectors[1].pilot_gain"),
    (
        "meter_address = 1",
        "meter_address = 1\nrcd_trip_active = 2",
        "board.connectors[1].rcd_trip_active",
    ),
    ("meter_address = 1", "", "board.connectors[1].meter_address: missing"),
    ("[[board.connectors]]", "[[board.connector]]", "board.connector: unknown field"),
    ("phases = 3", "phases = 3\nphase = 3", "board.phase: unknown field"),
]


@pytest.mark.parametrize(("old", "new", "field"), MISTAKES)
def test_a_mistake_is_refused_naming_its_field(esp32_station, old, new, field):
    text = esp32_station.read_text()
    assert old in text
    esp32_station.write_text(text.replace(old, new, 1))
    with pytest.raises(StationFileError) as error:
        station.load(esp32_station)
    assert f": {field}" in str(error.value)
    assert str(esp32_station) in str(error.value)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (f'auth_key = "{AUTH_KEY}"', 'auth_key = ["' + AUTH_KEY + '"]'),
        (f'password = "{WIFI_PASSWORD}"', f'password = "{WIFI_PASSWORD[:5]}"'),
        (f'password = "{WIFI_PASSWORD}"', f'password = ["{WIFI_PASSWORD}"]'),
    ],
)
def test_errors_never_show_a_secret(esp32_station, old, new, capsys):
    esp32_station.write_text(esp32_station.read_text().replace(old, new))
    assert main(["deploy", "--port", "/dev/null", "--station", str(esp32_station)]) == 2
    err = capsys.readouterr().err
    assert "password" in err or "auth_key" in err
    assert AUTH_KEY not in err and WIFI_PASSWORD[:5] not in err


def test_calibration_fields_pass_to_board_json(esp32_station):
    text = esp32_station.read_text().replace(
        "meter_address = 1", "meter_address = 1\npilot_gain = 7.5\nrcd_trip_active = 0"
    )
    esp32_station.write_text(text.replace("phases = 3", "phases = 3\nventilation = true"))
    board = json.loads(station.load(esp32_station).device_files()["board.json"])
    assert board["ventilation"] is True
    assert board["connectors"][0]["pilot_gain"] == 7.5
    assert board["connectors"][0]["rcd_trip_active"] == 0


def test_broken_toml_is_reported_with_the_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('id = "CP1"\nboard = {')
    with pytest.raises(StationFileError, match="not valid TOML"):
        station.load(path)


def test_an_encrypted_key_is_refused(tmp_path):
    key = tmp_path / "key.pem"
    key.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    with pytest.raises(ValueError, match="encrypted"):
        station.der(key, "key")


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=600), st.sampled_from([64, 76]))
def test_pem_becomes_the_der_it_encodes(tmp_path_factory, der, width):
    encoded = base64.b64encode(b"\x30" + der).decode()
    lines = [encoded[i : i + width] for i in range(0, len(encoded), width)]
    text = "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----", ""])
    path = tmp_path_factory.mktemp("pem") / "cert.pem"
    path.write_text(text)
    assert station.der(path, "cert") == b"\x30" + der
    path.write_bytes(b"\x30" + der)  # DER passes through unchanged
    assert station.der(path, "cert") == b"\x30" + der


def test_an_ethernet_station_with_its_pins_off_the_rmii_bus_loads(esp32_station):
    text = esp32_station.read_text().replace(WIFI, ETHERNET)
    for old, new in (("pilot_pwm = 25", "pilot_pwm = 32"), ("contactor = 26", "contactor = 33")):
        text = text.replace(old, new)
    esp32_station.write_text(text.replace("contactor_feedback = 27", "contactor_feedback = 13"))
    files = station.load(esp32_station).device_files()
    assert json.loads(files["station.json"])["network"]["ethernet"]["mdc"] == 23
