# OCPP 1.6 Core configuration keys: types, access, validation, persistence.
#
# Values live in <data_dir>/ocpp_config.json, written atomically (temporary file, then rename),
# so a power cut leaves either the old or the new file.
import json
import os

BOOL, INT, LIST = 0, 1, 2
RW, RO = 0, 1

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
E = "Energy.Active.Import.Register"

# name: (type, access, default, maximum for INT)
KEYS = {
    "AllowOfflineTxForUnknownId": (BOOL, RW, False, 0),
    "AuthorizationCacheEnabled": (BOOL, RW, True, 0),
    "AuthorizeRemoteTxRequests": (BOOL, RW, False, 0),
    "ClockAlignedDataInterval": (INT, RW, 0, 86400),
    "ConnectionTimeOut": (INT, RW, 60, 3600),
    "ConnectorPhaseRotation": (LIST, RW, "0.Unknown", 0),
    "ConnectorPhaseRotationMaxLength": (INT, RO, LIST_MAX, 0),
    "GetConfigurationMaxKeys": (INT, RO, 40, 0),
    "HeartbeatInterval": (INT, RW, 300, 86400),
    "LocalAuthorizeOffline": (BOOL, RW, True, 0),
    "LocalPreAuthorize": (BOOL, RW, False, 0),
    "MeterValuesAlignedData": (LIST, RW, E, 0),
    "MeterValuesAlignedDataMaxLength": (INT, RO, LIST_MAX, 0),
    "MeterValuesSampledData": (LIST, RW, E, 0),
    "MeterValuesSampledDataMaxLength": (INT, RO, LIST_MAX, 0),
    "MeterValueSampleInterval": (INT, RW, 60, 86400),
    "MinimumStatusDuration": (INT, RW, 0, 3600),
    "NumberOfConnectors": (INT, RO, 1, 0),
    "ResetRetries": (INT, RW, 1, 10),
    "StopTransactionOnEVSideDisconnect": (BOOL, RW, True, 0),
    "StopTransactionOnInvalidId": (BOOL, RW, True, 0),
    "StopTxnAlignedData": (LIST, RW, E, 0),
    "StopTxnAlignedDataMaxLength": (INT, RO, LIST_MAX, 0),
    "StopTxnSampledData": (LIST, RW, E, 0),
    "StopTxnSampledDataMaxLength": (INT, RO, LIST_MAX, 0),
    "SupportedFeatureProfiles": (LIST, RO, "Core", 0),
    "TransactionMessageAttempts": (INT, RW, 3, 100),
    "TransactionMessageRetryInterval": (INT, RW, 60, 86400),
    "UnlockConnectorOnEVSideDisconnect": (BOOL, RW, True, 0),
    "WebSocketPingInterval": (INT, RW, 60, 86400),
}


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
    if kind == BOOL:
        return "true" if value else "false"
    return str(value)


def _parse(name, kind, text):
    """The value for `text`, or None when it is not valid for key `name`."""
    if kind == BOOL:
        low = text.lower()
        return low == "true" if low in ("true", "false") else None
    if kind == INT:
        if not text.isdigit() or len(text) > 9 or int(text) > KEYS[name][3]:
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
            kind, access, default, _ = KEYS[name]
            value = stored.get(name, default) if access != RO else default
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
        spec = KEYS.get(name)
        if spec is None:
            return "NotSupported"
        if spec[1] == RO:
            return "Rejected"
        value = _parse(name, spec[0], text)
        if value is None:
            return "Rejected"
        self.values[name] = value
        self.save()
        return "Accepted"

    def save(self):
        stored = {"inoperative": self.inoperative}
        for name in KEYS:
            if KEYS[name][1] != RO:
                stored[name] = self.values[name]
        save_json(self.path, stored)

    def report(self, names):
        """GetConfiguration payload for `names` (all keys when empty)."""
        known = []
        unknown = []
        for name in names or KEYS:
            spec = KEYS.get(name)
            if spec is None:
                unknown.append(name)
            else:
                value = _text(spec[0], self.values[name])
                known.append({"key": name, "readonly": spec[1] == RO, "value": value})
        payload = {"configurationKey": known}
        if unknown:
            payload["unknownKey"] = unknown
        return payload
