"""The station configuration file (TOML, on the host) and the device files made from it.

One file describes one station: its OCPP identity and central system, its network, and its
board (pin map and hardware options). `load()` validates it completely before anything touches
a board, with errors that name the field; `device_files()` turns it into the files the firmware
reads: board.json, station.json and the certificates in DER. Secrets (the Basic-auth key, the
Wi-Fi password, the private key) never appear in an error or a log line.
"""

import base64
import json
import re
import tomllib
from pathlib import Path

from host.cli import UserError

PROFILES = range(4)
CHIPS = ("esp32", "esp32s3", "esp32c3", "sim")
TARGETS = {"esp32": "esp32", "esp32s3": "esp32s3", "esp32c3": "esp32c3", "sim": "unix"}
ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,48}")
ID_RULE = "1 to 48 letters, digits, '.', '_' or '-'"  # ID_PATTERN in words
# A station's Basic-auth key (OCPP AuthorizationKey: 16 to 20 bytes, often written in hex)
AUTH_KEY_RULE = "must be 16 to 40 printable characters"
METERS = ("SDM630", "SDM120", "B23")
RCD_TYPES = ("A", "B", "EV")
BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
PHY_TYPES = ("LAN8720", "IP101", "RTL8201", "DP83848", "KSZ8041", "KSZ8081")

# GPIO facts per chip: highest GPIO number, numbers below it the chip lacks (machine.Pin
# refuses them, so the board would not start), input-only pins, pins of ADC1 (ADC2 cannot be
# read while Wi-Fi is on, so every analog input of a station must be on ADC1).
GPIO = {
    "esp32": (
        39,
        frozenset((24, 28, 29, 30, 31)),
        frozenset(range(34, 40)),
        frozenset(range(32, 40)),
    ),
    "esp32s3": (48, frozenset(range(22, 26)), frozenset(), frozenset(range(1, 11))),
    "esp32c3": (21, frozenset(), frozenset(), frozenset(range(0, 5))),
}
CONNECTOR_OUTPUTS = ("pilot_pwm", "contactor", "rcd_test")
CONNECTOR_INPUTS = ("contactor_feedback", "rcd_trip")
CONNECTOR_ANALOG = ("pilot_adc", "proximity_adc")
METER_OUTPUTS = ("tx", "de")
METER_INPUTS = ("rx",)
ETHERNET_PINS = ("mdc", "mdio", "power", "ref_clk")
# The ESP32's Ethernet MAC talks to its RMII PHY on fixed pins (TXD0, TX_EN, TXD1, RXD0, RXD1,
# CRS_DV), and takes the PHY's 50 MHz clock on GPIO 0 unless ref_clk names another pin.
RMII_PINS = (19, 21, 22, 25, 26, 27)
RMII_CLOCK = 0
# Analog front-end calibration and input polarities the esp32 board reads (board.json).
BOARD_CALIBRATION = {"temperature_offset_mv": range(0, 3301), "temperature_mv_per_c": range(1, 101)}
CONNECTOR_CALIBRATION = {
    "pilot_offset_mv": range(0, 3301),
    "proximity_pullup_ohms": range(1, 100001),
    "proximity_ref_mv": range(1, 5001),
    "contactor_feedback_active": (0, 1),
    "rcd_trip_active": (0, 1),
}


class StationFileError(UserError):
    """A station file that cannot be deployed; the message names the file and the field."""


class Station:
    """A validated station file: `config` is its parsed content, `path` where it was read."""

    def __init__(self, path: Path, config: dict) -> None:
        self.path = path
        self.config = config

    @property
    def id(self) -> str:
        return self.config["id"]

    @property
    def chip(self) -> str:
        return self.config.get("chip", "esp32")

    @property
    def target(self) -> str:
        """The `evse build` target whose bundle runs on this station."""
        return TARGETS[self.chip]

    def device_files(self) -> dict[str, bytes]:
        """Files to write at the root of the station's filesystem, by name."""
        config = self.config
        files: dict[str, bytes] = {}
        station = {"id": config["id"], "security_profile": config.get("security_profile", 0)}
        for name in ("url", "auth_key", "network", "ntp"):
            if name in config:
                station[name] = config[name]
        for name in ("ca", "cert", "key"):
            if name in config:
                try:
                    files[f"{name}.der"] = der(self.path.parent / config[name], name)
                except ValueError as error:  # changed since it was validated
                    raise StationFileError(f"{self.path}: {name}: {error}") from None
                station[name] = f"{name}.der"
        board = dict(config["board"])
        board["board"] = "sim" if self.chip == "sim" else "esp32"
        board["connectors"] = [
            {"proximity_adc": None, **connector} for connector in board["connectors"]
        ]
        files["board.json"] = json.dumps(board, sort_keys=True).encode()
        files["station.json"] = json.dumps(station, sort_keys=True).encode()
        return files


def auth_key_ok(key: str) -> bool:
    """Whether a Basic-auth key follows AUTH_KEY_RULE."""
    return 16 <= len(key) <= 40 and key.isprintable()


def load(path: Path) -> Station:
    """Read and validate a station file; raises StationFileError naming the field."""
    try:
        config = tomllib.loads(Path(path).read_text())
    except OSError as error:
        raise StationFileError(f"{path}: cannot read: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise StationFileError(f"{path}: not valid TOML: {error}") from None
    validate(config, Path(path))
    return Station(Path(path), config)


def validate(config: dict, path: Path) -> None:
    check = Checker(path)
    check.keys(
        config,
        "",
        required=("id", "board"),
        optional=(
            "url",
            "security_profile",
            "auth_key",
            "ca",
            "cert",
            "key",
            "ntp",
            "chip",
            "network",
        ),
    )
    check.text(config, "id", pattern=ID_PATTERN, hint=ID_RULE)
    check.choice(config, "chip", CHIPS)
    profile = check.integer(config, "security_profile", PROFILES)
    profile = 0 if profile is None else profile
    url = check.text(config, "url", pattern=re.compile(r"wss?://[^\s/]+(/\S*)?"), hint="ws://…")
    if url is not None and profile >= 2 and not url.startswith("wss://"):
        check.fail("url", f"security profile {profile} needs a wss:// URL (TLS)")
    if url is not None and profile == 1 and not url.startswith("ws://"):
        check.fail("url", "security profile 1 is Basic auth without TLS: use ws://, or profile 2")
    key = check.text(config, "auth_key", secret=True)
    if key is not None and not auth_key_ok(key):
        check.fail("auth_key", AUTH_KEY_RULE)
    if profile in (1, 2) and key is None:
        check.fail("auth_key", f"required by security profile {profile}")
    for name in ("ca", "cert", "key"):
        if check.text(config, name) is not None:
            try:
                der(path.parent / config[name], name)  # fails early on a bad or missing file
            except ValueError as error:
                check.fail(name, str(error))
    if profile >= 2 and "ca" not in config:
        check.fail("ca", f"required by security profile {profile} (verifies the central system)")
    for name in ("cert", "key"):
        if profile == 3 and name not in config:
            check.fail(name, "required by security profile 3 (client certificate)")
    check.text(config, "ntp")
    chip = config.get("chip", "esp32")
    validate_network(check, config, chip)
    validate_board(check, config["board"], chip, config.get("network", {}).get("ethernet"))


def validate_network(check: "Checker", config: dict, chip: str) -> None:
    network = config.get("network")
    if network is None:
        if chip != "sim":
            check.fail("network", "required: a [network.wifi] or [network.ethernet] table")
        return
    check.keys(network, "network", optional=("wifi", "ethernet"))
    if len(network) != 1:
        check.fail("network", "give exactly one of [network.wifi] or [network.ethernet]")
    if "wifi" in network:
        wifi = network["wifi"]
        check.keys(wifi, "network.wifi", required=("ssid",), optional=("password", "hostname"))
        ssid = check.text(wifi, "ssid", prefix="network.wifi")
        if ssid is not None and not 1 <= len(ssid.encode()) <= 32:
            check.fail("network.wifi.ssid", "must be 1 to 32 bytes")
        password = check.text(wifi, "password", prefix="network.wifi", secret=True)
        if password is not None and not 8 <= len(password) <= 63:
            check.fail("network.wifi.password", "WPA2 passphrases are 8 to 63 characters")
        check.text(wifi, "hostname", prefix="network.wifi")
    else:
        if chip not in ("esp32", "sim"):
            check.fail("network.ethernet", f"{chip} has no Ethernet MAC for an RMII PHY: use Wi-Fi")
        ethernet = network["ethernet"]
        check.keys(
            ethernet,
            "network.ethernet",
            required=("phy", "mdc", "mdio"),
            optional=("phy_addr", "power", "ref_clk", "hostname"),
        )
        check.choice(ethernet, "phy", PHY_TYPES, prefix="network.ethernet")
        for pin in ETHERNET_PINS:
            check.gpio(ethernet, pin, chip, prefix="network.ethernet")
        check.integer(ethernet, "phy_addr", range(32), prefix="network.ethernet")
        check.text(ethernet, "hostname", prefix="network.ethernet")


def validate_board(check: "Checker", board: dict, chip: str, ethernet: dict | None) -> None:
    check.keys(
        board,
        "board",
        required=("max_current_a", "phases", "connectors"),
        optional=("meter", "temperature_adc", "rcd", "watchdog_ms", "limits", "free_vend")
        + ("ventilation", *BOARD_CALIBRATION),
    )
    check.integer(board, "max_current_a", range(6, 81), prefix="board")
    check.integer(board, "phases", (1, 3), prefix="board")
    check.integer(board, "watchdog_ms", range(500, 60001), prefix="board")
    check.boolean(board, "free_vend", prefix="board")
    check.boolean(board, "ventilation", prefix="board")
    for name, allowed in BOARD_CALIBRATION.items():
        check.integer(board, name, allowed, prefix="board")
    check.gpio(board, "temperature_adc", chip, prefix="board", analog=True)
    if "limits" in board and not isinstance(board["limits"], dict):
        check.fail("board.limits", "must be a table")
    if "rcd" in board:
        check.keys(board["rcd"], "board.rcd", required=("type",))
        check.choice(board["rcd"], "type", RCD_TYPES, prefix="board.rcd")
    if "meter" in board:
        meter = board["meter"]
        check.keys(
            meter,
            "board.meter",
            required=("model", "uart", "tx", "rx"),
            optional=("de", "baud"),
        )
        check.choice(meter, "model", METERS, prefix="board.meter")
        check.integer(meter, "uart", (1, 2), prefix="board.meter")
        check.integer(meter, "baud", BAUDS, prefix="board.meter")
        for pin in METER_OUTPUTS:
            check.gpio(meter, pin, chip, prefix="board.meter", output=True)
        for pin in METER_INPUTS:
            check.gpio(meter, pin, chip, prefix="board.meter")
    connectors = board["connectors"]
    if not isinstance(connectors, list) or not 1 <= len(connectors) <= 4:
        check.fail("board.connectors", "give 1 to 4 [[board.connectors]] tables")
    addresses: dict[int, str] = {}
    for index, connector in enumerate(connectors, start=1):
        prefix = f"board.connectors[{index}]"
        required = ("pilot_pwm", "pilot_adc", "contactor", "rcd_trip", "meter_address")
        optional = ("contactor_feedback", "proximity_adc", "rcd_test", "pilot_gain")
        optional += tuple(CONNECTOR_CALIBRATION)
        check.keys(connector, prefix, required=required, optional=optional)
        for pin in CONNECTOR_OUTPUTS:
            check.gpio(connector, pin, chip, prefix=prefix, output=True)
        for pin in CONNECTOR_INPUTS:
            check.gpio(connector, pin, chip, prefix=prefix)
        for pin in CONNECTOR_ANALOG:
            check.gpio(connector, pin, chip, prefix=prefix, analog=True)
        for name, allowed in CONNECTOR_CALIBRATION.items():
            check.integer(connector, name, allowed, prefix=prefix)
        check.number(connector, "pilot_gain", 0.5, 50.0, prefix=prefix)
        address = check.integer(connector, "meter_address", range(1, 248), prefix=prefix)
        if address in addresses:
            check.fail(f"{prefix}.meter_address", f"already used by {addresses[address]}")
        addresses[address] = prefix
    if chip != "sim":
        check_pins_unique(check, board, ethernet)


def check_pins_unique(check: "Checker", board: dict, ethernet: dict | None) -> None:
    """Two functions on one GPIO is a wiring error the firmware cannot detect: refuse it."""
    used: dict[int, str] = {}
    groups = [("board", board, ("temperature_adc",))]
    if ethernet is not None:
        used = dict.fromkeys(RMII_PINS, "the Ethernet RMII bus")
        if "ref_clk" not in ethernet:
            used[RMII_CLOCK] = "the Ethernet RMII clock (network.ethernet.ref_clk not given)"
        groups.insert(0, ("network.ethernet", ethernet, ETHERNET_PINS))
    if "meter" in board:
        groups.append(("board.meter", board["meter"], METER_OUTPUTS + METER_INPUTS))
    for index, connector in enumerate(board["connectors"], start=1):
        names = CONNECTOR_OUTPUTS + CONNECTOR_INPUTS + CONNECTOR_ANALOG
        groups.append((f"board.connectors[{index}]", connector, names))
    for prefix, table, names in groups:
        for name in names:
            pin = table.get(name)
            if pin is None:
                continue
            if pin in used:
                check.fail(f"{prefix}.{name}", f"GPIO {pin} is already {used[pin]}")
            used[pin] = f"{prefix}.{name}"


class Checker:
    """Field checks that raise StationFileError naming `prefix.field` (never a secret's value)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, field: str, problem: str):
        raise StationFileError(f"{self.path}: {field}: {problem}")

    def keys(self, table, prefix: str, required=(), optional=()) -> None:
        if not isinstance(table, dict):
            self.fail(prefix or "file", "must be a table")
        for name in table:  # first: a misspelt field also makes the right one missing
            if name not in required and name not in optional:
                known = ", ".join(sorted((*required, *optional)))
                self.fail(join(prefix, name), f"unknown field (known: {known})")
        for name in required:
            if name not in table:
                self.fail(join(prefix, name), "missing")

    def value(self, table: dict, name: str, prefix: str, kind, what: str, secret=False):
        value = table.get(name)
        # bool is an int in Python: true is no GPIO number.
        if value is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        ):
            shown = "a value of the wrong type" if secret else repr(value)
            self.fail(join(prefix, name), f"expected {what}, got {shown}")
        return value

    def text(self, table, name, prefix="", pattern=None, hint="", secret=False) -> str | None:
        value = self.value(table, name, prefix, str, "a string", secret)
        if value is not None and pattern is not None and not pattern.fullmatch(value):
            self.fail(join(prefix, name), f"expected {hint}, got {value!r}")
        return value

    def integer(self, table, name, allowed, prefix="") -> int | None:
        value = self.value(table, name, prefix, int, "an integer")
        if value is not None and value not in allowed:
            shown = (
                f"{allowed.start}..{allowed.stop - 1}" if isinstance(allowed, range) else allowed
            )
            self.fail(join(prefix, name), f"expected one of {shown}, got {value}")
        return value

    def number(self, table, name, low, high, prefix="") -> float | None:
        value = self.value(table, name, prefix, (int, float), "a number")
        if value is not None and not low <= value <= high:
            self.fail(join(prefix, name), f"expected {low} to {high}, got {value}")
        return value

    def boolean(self, table, name, prefix="") -> bool | None:
        return self.value(table, name, prefix, bool, "true or false")

    def choice(self, table, name, allowed, prefix="") -> str | None:
        value = self.text(table, name, prefix)
        if value is not None and value not in allowed:
            self.fail(join(prefix, name), f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    def gpio(self, table, name, chip, prefix="", output=False, analog=False) -> int | None:
        if chip == "sim":  # the simulated board ignores pins
            return self.value(table, name, prefix, int, "a GPIO number")
        highest, missing, input_only, adc1 = GPIO[chip]
        pin = self.integer(table, name, range(highest + 1), prefix)
        if pin is None:
            return None
        if pin in missing:
            self.fail(join(prefix, name), f"{chip} has no GPIO {pin}")
        if output and pin in input_only:
            self.fail(join(prefix, name), f"GPIO {pin} is input-only on {chip}")
        if analog and pin not in adc1:
            pins = f"{min(adc1)}..{max(adc1)}"
            self.fail(join(prefix, name), f"GPIO {pin} is not on ADC1 ({pins} on {chip})")
        return pin


def join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)
LABELS = {
    "ca": ("CERTIFICATE",),
    "cert": ("CERTIFICATE",),
    "key": ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"),
}


def der(path: Path, field: str) -> bytes:
    """The DER content of a PEM (or DER) certificate or key file: MicroPython's TLS takes DER.
    `field` says what the file must hold; raises ValueError saying what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    blocks = PEM.findall(data)
    if not blocks:
        if data[:1] == b"\x30":  # an ASN.1 SEQUENCE: already DER
            return data
        raise ValueError(f"{path} is neither PEM nor DER")
    if len(blocks) > 1:
        raise ValueError(
            f"{path} holds {len(blocks)} PEM blocks; give exactly one "
            "(MicroPython loads a single DER certificate or key)"
        )
    label, body = blocks[0]
    label = label.decode()
    if label not in LABELS[field] or b"Proc-Type" in body:
        expected = " or ".join(LABELS[field])
        problem = "encrypted" if "ENCRYPTED" in label or b"Proc-Type" in body else label
        raise ValueError(f"{path} is {problem}; expected an unencrypted {expected}")
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except ValueError:
        raise ValueError(f"{path}: bad base64 in the PEM block") from None
