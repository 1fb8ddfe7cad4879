# Shape checks of the central system's CALL payloads (the OCPP 1.6 JSON schemas, compactly).
#
# The error code follows the OCPP-J definitions, checked in this order over the whole payload:
# not an object or an unknown field -> FormationViolation; a required field missing ->
# OccurenceConstraintViolation; a field of the wrong JSON type -> TypeConstraintViolation;
# a value outside its enumeration or longer than allowed -> PropertyConstraintViolation.
from protocol.ocppj import RpcError

INT, STR, ENUM, STRS, OBJ = 0, 1, 2, 3, 4

# action: ((field, required, kind, max length or enumeration), ...)
SHAPES = {
    "ChangeAvailability": (
        ("connectorId", True, INT, None),
        ("type", True, ENUM, ("Inoperative", "Operative")),
    ),
    "ChangeConfiguration": (("key", True, STR, 50), ("value", True, STR, 500)),
    "ClearCache": (),
    "DataTransfer": (
        ("vendorId", True, STR, 255),
        ("messageId", False, STR, 50),
        ("data", False, STR, None),
    ),
    "GetConfiguration": (("key", False, STRS, 50),),
    "RemoteStartTransaction": (
        ("connectorId", False, INT, None),
        ("idTag", True, STR, 20),
        ("chargingProfile", False, OBJ, None),
    ),
    "RemoteStopTransaction": (("transactionId", True, INT, None),),
    "Reset": (("type", True, ENUM, ("Hard", "Soft")),),
    "UnlockConnector": (("connectorId", True, INT, None),),
}


def _type_ok(kind, value):
    if kind == INT:
        return type(value) is int
    if kind == OBJ:
        return type(value) is dict
    if kind == STRS:
        return type(value) is list and all(type(v) is str for v in value)
    return type(value) is str


def _property_ok(kind, limit, value):
    if kind == ENUM:
        return value in limit
    if kind == STRS:
        return all(len(v) <= limit for v in value)
    return limit is None or kind != STR or len(value) <= limit


def check(action, payload):
    """Raise RpcError with the OCPP-J code when `payload` does not fit `action`'s schema."""
    shape = SHAPES[action]
    if type(payload) is not dict:
        raise RpcError("FormationViolation", None, "payload is not an object")
    for name in payload:
        if not any(field[0] == name for field in shape):
            raise RpcError("FormationViolation", None, "unknown field " + name)
    for name, required, _, _ in shape:
        if required and name not in payload:
            raise RpcError("OccurenceConstraintViolation", None, "missing " + name)
    for name, _, kind, _ in shape:
        if name in payload and not _type_ok(kind, payload[name]):
            raise RpcError("TypeConstraintViolation", None, "wrong type of " + name)
    for name, _, kind, limit in shape:
        if name in payload and not _property_ok(kind, limit, payload[name]):
            raise RpcError("PropertyConstraintViolation", None, "bad value of " + name)
