# OCPP 1.6 Core configuration keys: types, access, validation, persistence.
#
# Values live in <data_dir>/ocpp_config.json, written atomically (temporary file, then rename),
# so a power cut leaves either the old or the new file.
import json
import os

MEASURANDS = (
    "Energy.Active.Import.Register",
    "Energy.Active.Export.Register",
    "Power.Active.Import",
    "Current.Import",
    "Voltage",
    "Frequency",
)
ROTATIONS = ("NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR")
LIST_MAX = 6

# name: "<type><access> <default>[ <maximum>]"; type b(oolean), i(nteger, at most <maximum>)
# or l(ist, comma-separated, at most LIST_MAX items), access w(ritable) or r(ead-only).
# Strings, not tuples: in a ROMFS image (or frozen) a string constant stays in flash, while a
# tuple is built in the heap at import (2.5 KB less heap on the 64-bit unix port).
KEYS = {
    "AllowOfflineTxForUnknownId": "bw false",
    "AuthorizationCacheEnabled": "bw true",
    "AuthorizeRemoteTxRequests": "bw false",
    "ClockAlignedDataInterval": "iw 0 86400",
    "ConnectionTimeOut": "iw 60 3600",
    "ConnectorPhaseRotation": "lw 0.Unknown",
    "ConnectorPhaseRotationMaxLength": "ir 6",
    "GetConfigurationMaxKeys": "ir 40",
    "HeartbeatInterval": "iw 300 86400",
    "LocalAuthorizeOffline": "bw true",
    "LocalPreAuthorize": "bw false",
    "MeterValuesAlignedData": "lw Energy.Active.Import.Register",
    "MeterValuesAlignedDataMaxLength": "ir 6",
    "MeterValuesSampledData": "lw Energy.Active.Import.Register",
    "MeterValuesSampledDataMaxLength": "ir 6",
    "MeterValueSampleInterval": "iw 60 86400",
    "MinimumStatusDuration": "iw 0 3600",
    "NumberOfConnectors": "ir 1",
    "ResetRetries": "iw 1 10",
    "StopTransactionOnEVSideDisconnect": "bw true",
    "StopTransactionOnInvalidId": "bw true",
    "StopTxnAlignedData": "lw Energy.Active.Import.Register",
    "StopTxnAlignedDataMaxLength": "ir 6",
    "StopTxnSampledData": "lw Energy.Active.Import.Register",
    "StopTxnSampledDataMaxLength": "ir 6",
    "SupportedFeatureProfiles": "lr Core",
    "TransactionMessageAttempts": "iw 3 100",
    "TransactionMessageRetryInterval": "iw 60 86400",
    "UnlockConnectorOnEVSideDisconnect": "bw true",
    "WebSocketPingInterval": "iw 60 86400",
}


def known(name):
    """The key `name` names in any case (keys are CiStrings), or None."""
    if name in KEYS:
        return name
    low = name.lower()
    for key in KEYS:
        if key.lower() == low:
            return key
    return None


def _spec(name):
    """(type, writable, default value, maximum) of the known key `name`."""
    text = KEYS[name]
    kind = text[0]
    words = text[3:].split(" ")
    maximum = int(words[1]) if len(words) > 1 else 0
    default = words[0]
    if kind == "b":
        default = default == "true"
    elif kind == "i":
        default = int(default)
    return kind, text[1] == "w", default, maximum


def save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def load_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _text(kind, value):
    if kind == "b":
        return "true" if value else "false"
    return str(value)


def _parse(name, kind, maximum, text):
    """The value for `text`, or None when it is not valid for key `name`."""
    if kind == "b":
        low = text.lower()
        return low == "true" if low in ("true", "false") else None
    if kind == "i":
        if not text.isdigit() or len(text) > 9 or int(text) > maximum:
            return None
        return int(text)
    items = text.split(",") if text else []
    if len(items) > LIST_MAX:
        return None
    for item in items:
        if name == "ConnectorPhaseRotation":
            head, _, rotation = item.partition(".")
            if not head.isdigit() or rotation not in ROTATIONS:
                return None
        elif item not in MEASURANDS:
            return None
    return text


class Config:
    def __init__(self, data_dir, connectors):
        self.path = data_dir.rstrip("/") + "/ocpp_config.json"
        self.connectors = connectors
        stored = load_json(self.path, {})
        self.values = {}
        for name in KEYS:
            _, writable, default, _ = _spec(name)
            value = stored.get(name, default) if writable else default
            self.values[name] = value if type(value) is type(default) else default
        self.values["NumberOfConnectors"] = connectors
        # Connectors set Inoperative by ChangeAvailability stay so across reboots (0 = station).
        self.inoperative = [n for n in stored.get("inoperative", ()) if type(n) is int]

    def get(self, name):
        return self.values[name]

    def measurands(self, name):
        text = self.values[name]
        return text.split(",") if text else ()

    def change(self, name, text):
        """ChangeConfiguration: 'Accepted' | 'Rejected' | 'NotSupported'. Every key takes effect
        at once, so 'RebootRequired' is never needed."""
        name = known(name)
        if name is None:
            return "NotSupported"
        kind, writable, _, maximum = _spec(name)
        if not writable:
            return "Rejected"
        value = _parse(name, kind, maximum, text)
        if value is None:
            return "Rejected"
        self.values[name] = value
        self.save()
        return "Accepted"

    def save(self):
        stored = {"inoperative": self.inoperative}
        for name in KEYS:
            if KEYS[name][1] == "w":
                stored[name] = self.values[name]
        save_json(self.path, stored)

    def report(self, names, extra=()):
        """GetConfiguration payload for `names` (all keys when empty); `extra`: KeyValue
        entries of keys kept elsewhere (the security keys), reported like the others."""
        found = []
        unknown = []
        for name in names or list(KEYS) + [e["key"] for e in extra]:
            key = known(name)
            if key is not None:
                text = KEYS[key]
                value = _text(text[0], self.values[key])
                found.append({"key": key, "readonly": text[1] == "r", "value": value})
                continue
            for entry in extra:
                if entry["key"].lower() == name.lower():
                    found.append(entry)
                    break
            else:
                unknown.append(name)
        payload = {"configurationKey": found}
        if unknown:
            payload["unknownKey"] = unknown
        return payload
