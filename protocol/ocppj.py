"""OCPP-J 1.6 RPC framing: CALL, CALLRESULT and CALLERROR messages and their error codes.

Runs unchanged on MicroPython and CPython. `decode` raises RpcError carrying the CALLERROR to
answer with; which code applies follows the meanings of the OCPP-J 1.6 error code table.
"""

import json
import os
import re

CALL = 2
CALLRESULT = 3
CALLERROR = 4

MAX_UID = 36
UNKNOWN_UID = "-1"  # id of a CALLERROR answering a message whose own id could not be read

# Error codes, in the 1.6 spelling ("Formation", "Occurence").
NOT_IMPLEMENTED = "NotImplemented"  # action not known by the receiver
NOT_SUPPORTED = "NotSupported"  # action known but not supported
INTERNAL_ERROR = "InternalError"  # the receiver failed processing a valid request
PROTOCOL_ERROR = "ProtocolError"  # message or payload incomplete
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"  # syntactically wrong, or not the PDU structure
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"  # a field has an invalid value
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"  # a field missing or repeated
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"  # a field has the wrong type
GENERIC_ERROR = "GenericError"
ERROR_CODES = (
    NOT_IMPLEMENTED,
    NOT_SUPPORTED,
    INTERNAL_ERROR,
    PROTOCOL_ERROR,
    SECURITY_ERROR,
    FORMATION_VIOLATION,
    PROPERTY_CONSTRAINT_VIOLATION,
    OCCURENCE_CONSTRAINT_VIOLATION,
    TYPE_CONSTRAINT_VIOLATION,
    GENERIC_ERROR,
)

_ARITY = {CALL: 4, CALLRESULT: 3, CALLERROR: 5}


class RpcError(Exception):
    """A CALLERROR to send: `code` (one of ERROR_CODES), the `uid` of the offending message
    (None when unreadable), a short `description`, optional `details` (a dict), and the
    `message_type` of the offending message when known (CALL, CALLRESULT, CALLERROR)."""

    def __init__(self, code, uid=None, description="", details=None, message_type=None):
        super().__init__(code, description)
        self.code = code
        self.uid = uid
        self.description = description
        self.details = details
        self.message_type = message_type


_prefix = ""
_count = 0


def new_uid():
    """A message id unique in this run and, by its random prefix, across reboots (<= 36 chars)."""
    global _prefix, _count
    if not _prefix:
        _prefix = "".join("%02x" % b for b in os.urandom(6))
    _count += 1
    return "%s-%d" % (_prefix, _count)


def encode_call(uid, action, payload):
    return json.dumps([CALL, uid, action, payload])


def encode_result(uid, payload):
    return json.dumps([CALLRESULT, uid, payload])


def encode_error(uid, code, description="", details=None):
    return json.dumps([CALLERROR, uid, code, description, details or {}])


def decode(text):
    """(CALL, uid, action, payload) | (CALLRESULT, uid, payload) |
    (CALLERROR, uid, code, description, details); RpcError for malformed input."""
    try:
        if not is_json(text):
            raise ValueError
        message = json.loads(text)
    except (ValueError, RuntimeError):  # RuntimeError: CPython's nesting limit
        raise RpcError(FORMATION_VIOLATION, None, "not JSON") from None
    if not isinstance(message, list) or not message:
        raise RpcError(FORMATION_VIOLATION, None, "not a JSON array")
    kind = message[0]
    uid = message[1] if len(message) > 1 and isinstance(message[1], str) else None
    if type(kind) is not int:
        raise RpcError(TYPE_CONSTRAINT_VIOLATION, uid, "message type id is not an integer")
    arity = _ARITY.get(kind)
    if arity is None:
        raise RpcError(PROPERTY_CONSTRAINT_VIOLATION, uid, "unknown message type id")
    if len(message) < arity:
        raise RpcError(PROTOCOL_ERROR, uid, "message incomplete", None, kind)
    if len(message) > arity:
        raise RpcError(FORMATION_VIOLATION, uid, "too many elements", None, kind)
    if uid is None:
        raise RpcError(TYPE_CONSTRAINT_VIOLATION, None, "unique id is not a string", None, kind)
    if len(uid) > MAX_UID:
        raise RpcError(PROPERTY_CONSTRAINT_VIOLATION, uid, "unique id too long", None, kind)
    if kind == CALL:
        _check(message[2], str, uid, kind, "action")
        _check(message[3], dict, uid, kind, "payload")
    elif kind == CALLRESULT:
        _check(message[2], dict, uid, kind, "payload")
    else:
        _check(message[2], str, uid, kind, "error code")
        _check(message[3], str, uid, kind, "error description")
        _check(message[4], dict, uid, kind, "error details")
    return tuple(message)


# Parser states of is_json
_VALUE, _FIRST_VALUE, _KEY, _FIRST_KEY, _COLON, _AFTER_VALUE = range(6)
_SPACE = b" \t\n\r"
_SCALAR = b"-+.0123456789eEtrufalsn"
_ESCAPES = b'"\\/bfnrt'
_HEX = b"0123456789abcdefABCDEF"
_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")


def is_json(text):
    """Whether `text` (str or UTF-8 bytes) is one JSON value (RFC 8259). MicroPython's
    json.loads also accepts missing or extra commas, mismatched brackets, bad escapes and
    leading zeros; CPython's accepts NaN and Infinity. This check makes both answer alike.
    It walks bytes: indexing a non-ASCII str is not O(1) on MicroPython."""
    data = text.encode() if isinstance(text, str) else text
    view = memoryview(data)
    stack = []  # the open brackets, as byte values
    state = _VALUE
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        i += 1
        if c in _SPACE:
            continue
        if state == _AFTER_VALUE:
            if not stack:
                return False
            if c == 0x2C:  # ,
                state = _KEY if stack[-1] == 0x7B else _VALUE
            elif c == stack[-1] + 2:  # the closing bracket: [ ] and { } are two apart
                stack.pop()
            else:
                return False
        elif state == _COLON:
            if c != 0x3A:  # :
                return False
            state = _VALUE
        elif c == 0x22:  # "
            i = _string_end(data, view, i)
            if i < 0:
                return False
            state = _COLON if state in (_KEY, _FIRST_KEY) else _AFTER_VALUE
        elif (state == _FIRST_KEY and c == 0x7D) or (state == _FIRST_VALUE and c == 0x5D):
            stack.pop()
            state = _AFTER_VALUE
        elif state in (_KEY, _FIRST_KEY):
            return False
        elif c == 0x5B or c == 0x7B:  # [ {
            stack.append(c)
            state = _FIRST_VALUE if c == 0x5B else _FIRST_KEY
        elif c in _SCALAR:
            start = i - 1
            while i < n and data[i] in _SCALAR:
                i += 1
            token = str(view[start:i], "utf-8")
            if token not in ("true", "false", "null") and not _NUMBER.match(token):
                return False
            state = _AFTER_VALUE
        else:
            return False
    return state == _AFTER_VALUE and not stack


def _string_end(data, view, i):
    """Index after the string whose opening quote is before `i`; -1 if it is malformed."""
    while True:
        end = data.find(b'"', i)
        if end < 0:
            return -1
        escape = data.find(b"\\", i, end)
        stop = end if escape < 0 else escape
        if i < stop and min(view[i:stop]) < 0x20:  # raw control character
            return -1
        if escape < 0:
            return end + 1
        kind = data[escape + 1]
        if kind == 0x75:  # \uXXXX
            digits = data[escape + 2 : escape + 6]
            if len(digits) < 4 or not all(d in _HEX for d in digits):
                return -1
            i = escape + 6
        elif kind in _ESCAPES:
            i = escape + 2
        else:
            return -1


def _check(value, kind, uid, message_type, what):
    if not isinstance(value, kind):
        raise RpcError(TYPE_CONSTRAINT_VIOLATION, uid, what + " has the wrong type", None,
                       message_type)


def field(payload, name, kind, required=True):
    """payload[name] checked for handlers: missing and required -> OccurenceConstraintViolation,
    not of `kind` (a type or tuple of types; bool is not an int) -> TypeConstraintViolation.
    Returns None when missing and optional. The uid is filled in by the dispatcher."""
    value = payload.get(name)
    if value is None:
        if required:
            raise RpcError(OCCURENCE_CONSTRAINT_VIOLATION, None, name + " missing")
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise RpcError(TYPE_CONSTRAINT_VIOLATION, None, name + " has the wrong type")
    return value
