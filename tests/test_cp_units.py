"""Charge point pieces under micropython: configuration keys, inbound payload checks, ISO time.

The expected CALLERROR of a payload is worked out here from the official OCPP 1.6 JSON schema
(jsonschema), independently of the firmware's compact tables."""

import json
from datetime import UTC, datetime

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cp_centralsystem import SCHEMAS, validate
from tests.cp_driver import Driver

MEASURANDS = [
    "Energy.Active.Import.Register",
    "Energy.Active.Export.Register",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "Frequency",
]
BOOL_KEYS = ["AllowOfflineTxForUnknownId", "LocalPreAuthorize", "StopTransactionOnInvalidId"]
INT_KEYS = {"HeartbeatInterval": 86400, "ConnectionTimeOut": 3600, "ResetRetries": 10}
LIST_KEYS = ["MeterValuesSampledData", "StopTxnAlignedData"]
READ_ONLY = ["NumberOfConnectors", "SupportedFeatureProfiles", "GetConfigurationMaxKeys"]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = Driver("mp_cp_units.py", str(tmp_path_factory.mktemp("flash")))
    yield d
    d.close()


def expected_config_status(key: str, value: str) -> str:
    if key in READ_ONLY:
        return "Rejected"
    if key in BOOL_KEYS:
        return "Accepted" if value.lower() in ("true", "false") else "Rejected"
    if key in INT_KEYS:
        ok = value.isascii() and value.isdigit() and len(value) <= 9
        return "Accepted" if ok and int(value) <= INT_KEYS[key] else "Rejected"
    if key in LIST_KEYS:
        items = value.split(",") if value else []
        ok = len(items) <= 6 and all(i in MEASURANDS for i in items)
        return "Accepted" if ok else "Rejected"
    return "NotSupported"


value_text = st.one_of(
    st.sampled_from(["true", "FALSE", "True", "0", "60", "86400", "86401", "-1", " 5", ""]),
    st.integers(0, 10**10).map(str),
    st.lists(st.sampled_from([*MEASURANDS, "Bogus", "voltage"]), max_size=8).map(",".join),
    st.text(max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(
    key=st.sampled_from(BOOL_KEYS + list(INT_KEYS) + LIST_KEYS + READ_ONLY + ["NoSuchKey"]),
    spelling=st.sampled_from([str, str.lower, str.upper]),  # keys are CiStrings
    value=value_text,
)
def test_change_configuration_validates_each_value(driver, key, spelling, value):
    status = driver.ask(op="change", key=spelling(key), value=value)
    assert status == expected_config_status(key, value)


def test_configuration_persists_and_reports_unknown_keys(driver):
    assert driver.ask(op="change", key="HeartbeatInterval", value="42") == "Accepted"
    assert driver.ask(op="change", key="WebSocketPingInterval", value="30") == "Accepted"
    assert driver.ask(op="change", key="LocalPreAuthorize", value="TRUE") == "Accepted"
    driver.ask(op="reload")
    report = driver.ask(op="report", keys=["HeartbeatInterval", "Nope", "WebSocketPingInterval"])
    validate("GetConfigurationResponse", report)
    values = {k["key"]: (k["value"], k["readonly"]) for k in report["configurationKey"]}
    assert values == {"HeartbeatInterval": ("42", False), "WebSocketPingInterval": ("30", False)}
    assert report["unknownKey"] == ["Nope"]
    # Keys are CiStrings: any spelling names the key, reported as the specification spells it
    report = driver.ask(op="report", keys=["heartbeatinterval", "LOCALPREAUTHORIZE"])
    assert [k["key"] for k in report["configurationKey"]] == [
        "HeartbeatInterval",
        "LocalPreAuthorize",
    ]
    assert "unknownKey" not in report
    everything = driver.ask(op="report", keys=[])
    validate("GetConfigurationResponse", everything)
    keys = {k["key"]: k for k in everything["configurationKey"]}
    assert keys["LocalPreAuthorize"]["value"] == "true"
    assert keys["NumberOfConnectors"] == {
        "key": "NumberOfConnectors",
        "readonly": True,
        "value": "2",
    }
    required_core = {
        "AuthorizeRemoteTxRequests", "ClockAlignedDataInterval", "ConnectionTimeOut",
        "ConnectorPhaseRotation", "GetConfigurationMaxKeys", "HeartbeatInterval",
        "LocalAuthorizeOffline", "LocalPreAuthorize", "MeterValuesAlignedData",
        "MeterValuesSampledData", "MeterValueSampleInterval", "NumberOfConnectors",
        "ResetRetries", "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId",
        "StopTxnAlignedData", "StopTxnSampledData", "SupportedFeatureProfiles",
        "TransactionMessageAttempts", "TransactionMessageRetryInterval",
        "UnlockConnectorOnEVSideDisconnect",
    }  # fmt: skip
    assert required_core <= set(keys)


# ---- inbound payload shapes

VALID = {
    "ChangeAvailability": {"connectorId": 1, "type": "Inoperative"},
    "ChangeConfiguration": {"key": "HeartbeatInterval", "value": "60"},
    "ClearCache": {},
    "DataTransfer": {"vendorId": "v", "messageId": "m", "data": "d"},
    "GetConfiguration": {"key": ["HeartbeatInterval"]},
    "RemoteStartTransaction": {"connectorId": 1, "idTag": "TAG"},
    "RemoteStopTransaction": {"transactionId": 5},
    "Reset": {"type": "Soft"},
    "UnlockConnector": {"connectorId": 1},
}
PRECEDENCE = [
    ("additionalProperties", "FormationViolation"),
    ("required", "OccurenceConstraintViolation"),
    ("type", "TypeConstraintViolation"),
    ("enum", "PropertyConstraintViolation"),
    ("maxLength", "PropertyConstraintViolation"),
]


def expected_error(action: str, payload) -> str | None:
    schema = json.loads((SCHEMAS / f"{action}.json").read_text())
    errors = jsonschema.Draft4Validator(schema).iter_errors(payload)
    # The schemas put "additionalProperties" on some string fields too: only the payload's own
    # unknown fields are a formation error; a non-string there is a type error.
    found = {e.validator for e in errors if e.validator != "additionalProperties" or not e.path}
    for validator, code in PRECEDENCE:
        if validator in found:
            return code
    assert not found, found
    return None


json_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31),
    st.text(max_size=30),
    st.text(alphabet="ab", min_size=19, max_size=520),
    st.sampled_from(["Inoperative", "Operative", "Hard", "Soft", "HeartbeatInterval"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=60)), max_size=3),
    st.just({"x": 1}),
)


@st.composite
def mutated(draw):
    action = draw(st.sampled_from(sorted(VALID)))
    payload = dict(VALID[action])
    fields = list(json.loads((SCHEMAS / f"{action}.json").read_text())["properties"])
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*fields, "extra"]) if fields else st.just("extra"))
        if draw(st.booleans()):
            payload.pop(name, None)
        elif name == "chargingProfile":
            payload[name] = draw(st.one_of(st.integers(), st.text(max_size=3)))
        else:
            payload[name] = draw(json_value)
    return action, payload


@settings(max_examples=400, deadline=None)
@given(case=mutated())
def test_inbound_payloads_get_the_schema_callerror(driver, case):
    action, payload = case
    assert driver.ask(op="check", action=action, payload=payload) == expected_error(action, payload)


# ---- time


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**32), min_size=1, max_size=20))
def test_iso_time_matches_cpython(driver, times):
    texts = driver.ask(op="iso", times=times)
    assert texts == [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in times]
    assert driver.ask(op="parse", texts=texts) == times


def test_iso_time_parses_offsets_and_fractions(driver):
    texts = ["2026-11-26T12:00:00.123+01:00", "2026-11-26T11:00:00Z", "2026-11-26T06:30:00-04:30"]
    assert driver.ask(op="parse", texts=texts) == [1795690800, 1795690800, 1795690800]
