"""OCPP 1.6 payload validation with the official schemas shipped by the `ocpp` package.

Each schema is compiled once to Python code (fastjsonschema) and validated inline: no thread
hop per message. The three schemas with `multipleOf` on decimals keep the `ocpp` package's
Decimal-based validator, as binary floats would fail `multipleOf: 0.1`.
"""

import decimal
import json
import os
from collections.abc import Callable
from functools import cache
from typing import Any

import fastjsonschema
import ocpp.messages
from jsonschema.exceptions import ValidationError as JsonschemaError

SCHEMA_DIR = os.path.join(os.path.dirname(ocpp.messages.__file__), "v16", "schemas")

# Operations a charge point initiates (the 1.6 core profiles plus the security whitepaper).
CP_ACTIONS = (
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "SecurityEventNotification",
    "SignCertificate",
    "SignedFirmwareStatusNotification",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
)

# Operations the central system initiates, by feature profile.
CS_ACTIONS = {
    "Core": (
        "ChangeAvailability",
        "ChangeConfiguration",
        "ClearCache",
        "DataTransfer",
        "GetConfiguration",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "Reset",
        "UnlockConnector",
    ),
    "FirmwareManagement": ("GetDiagnostics", "UpdateFirmware"),
    "LocalAuthListManagement": ("GetLocalListVersion", "SendLocalList"),
    "Reservation": ("CancelReservation", "ReserveNow"),
    "SmartCharging": ("ClearChargingProfile", "GetCompositeSchedule", "SetChargingProfile"),
    "RemoteTrigger": ("TriggerMessage",),
    "Security": (
        "CertificateSigned",
        "DeleteCertificate",
        "ExtendedTriggerMessage",
        "GetInstalledCertificateIds",
        "GetLog",
        "InstallCertificate",
        "SignedUpdateFirmware",
    ),
}
ALL_CS_ACTIONS = tuple(sorted({a for actions in CS_ACTIONS.values() for a in actions}))

# fastjsonschema rule -> OCPP-J 1.6 error code
_ERROR_CODES = {
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "required": "OccurenceConstraintViolation",
    "additionalProperties": "FormationViolation",
}


class SchemaError(Exception):
    """A payload that does not match its schema: `code` is the OCPP-J error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@cache
def _validator(name: str) -> Callable[[Any], Any]:
    path = os.path.join(SCHEMA_DIR, name + ".json")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "multipleOf" in text:
        checker = ocpp.messages.get_validator(
            3 if name.endswith("Response") else 2,
            name.removesuffix("Response"),
            "1.6",
            parse_float=decimal.Decimal,
        )

        def validate(payload: Any) -> None:
            checker.validate(json.loads(json.dumps(payload), parse_float=decimal.Decimal))

        return validate
    return fastjsonschema.compile(json.loads(text))


def known(action: str) -> bool:
    return os.path.exists(os.path.join(SCHEMA_DIR, action + ".json"))


def check(action: str, payload: Any, response: bool = False) -> None:
    """Raise SchemaError naming the offending field when `payload` is invalid for `action`."""
    try:
        _validator(action + ("Response" if response else ""))(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        field = (error.name or "data").removeprefix("data").lstrip(".") or "payload"
        code = _ERROR_CODES.get(error.rule or "", "PropertyConstraintViolation")
        message = error.message.removeprefix(error.name or "").strip()
        raise SchemaError(code, f"{action}: {field} {message}") from None
    except JsonschemaError as error:
        field = ".".join(str(p) for p in error.absolute_path) or "payload"
        code = _ERROR_CODES.get(str(error.validator), "PropertyConstraintViolation")
        raise SchemaError(code, f"{action}: {field}: {error.message}") from None
