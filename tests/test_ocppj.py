"""protocol/ocppj.py: OCPP-J 1.6 framing and the CALLERROR chosen for each malformed input, on
CPython and under micropython (the same cases, compared result for result)."""

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol import ocppj
from tests.mp_codecs import run, under_micropython

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text without surrogates (they cannot travel as UTF-8) and within the BMP: MicroPython's JSON
# parser does not join a surrogate pair escaped as "\\ud83d\\ude00" into one character.
characters = st.characters(exclude_categories=["Cs"], max_codepoint=0xFFFF)
texts = st.text(characters, max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
payloads = st.dictionaries(texts, json_values, max_size=4)
uids = st.text(characters, max_size=36)
messages = st.one_of(
    st.tuples(st.just(2), uids, texts, payloads),
    st.tuples(st.just(3), uids, payloads),
    st.tuples(st.just(4), uids, st.sampled_from(ocppj.ERROR_CODES), texts, payloads),
)


def test_round_trip_on_both_interpreters():
    cases = []

    @SETTINGS
    @given(messages)
    def check(message):
        case = {"op": "roundtrip", "message": list(message)}
        assert run(case) == list(message)
        cases.append(case)

    check()
    assert under_micropython(cases) == [case["message"] for case in cases]


def test_encodings_are_plain_ocpp_j():
    assert json.loads(ocppj.encode_call("7", "Heartbeat", {})) == [2, "7", "Heartbeat", {}]
    assert json.loads(ocppj.encode_result("7", {"a": 1})) == [3, "7", {"a": 1}]
    assert json.loads(ocppj.encode_error("7", ocppj.NOT_IMPLEMENTED)) == [
        4,
        "7",
        "NotImplemented",
        "",
        {},
    ]


def test_error_codes_are_the_ten_of_ocpp_j_1_6():
    assert set(ocppj.ERROR_CODES) == {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }


def test_new_uids_are_unique_and_short():
    uids = [ocppj.new_uid() for _ in range(20000)]
    assert len(set(uids)) == len(uids)
    assert all(isinstance(uid, str) and 0 < len(uid) <= 36 for uid in uids)


FV, PE, TCV, PCV = (
    ocppj.FORMATION_VIOLATION,
    ocppj.PROTOCOL_ERROR,
    ocppj.TYPE_CONSTRAINT_VIOLATION,
    ocppj.PROPERTY_CONSTRAINT_VIOLATION,
)
MALFORMED = [
    # (text, [code, uid, message type]) -- the CALLERROR to answer with
    ("", [FV, None, None]),
    ("hello", [FV, None, None]),
    ('[2, "1", "Heartbeat"', [FV, None, None]),
    ('{"a": 1}', [FV, None, None]),
    ('"text"', [FV, None, None]),
    ("42", [FV, None, None]),
    ("[]", [FV, None, None]),
    # syntax errors MicroPython's json.loads alone would let through
    ('[2 "1" "Heartbeat" {}]', [FV, None, None]),
    ('[2, "1", "Heartbeat", {},]', [FV, None, None]),
    ('[2, "1", "Heartbeat", {}}', [FV, None, None]),
    ('[2, "1", "Heartbeat", {"a" 1}]', [FV, None, None]),
    ('[2, "1", "Heartbeat", {"a": 01}]', [FV, None, None]),
    ('[2, "1\\x", "Heartbeat", {}]', [FV, None, None]),
    ('[2, "1", "Heartbeat", {"a": NaN}]', [FV, None, None]),
    ('["2", "1", "Heartbeat", {}]', [TCV, "1", None]),
    ('[true, "1", "Heartbeat", {}]', [TCV, "1", None]),
    ('[2.0, "1", "Heartbeat", {}]', [TCV, "1", None]),
    ('[5, "1", "Heartbeat", {}]', [PCV, "1", None]),
    ('[1, "1", {}]', [PCV, "1", None]),
    ("[2]", [PE, None, 2]),
    ('[2, "1", "Heartbeat"]', [PE, "1", 2]),
    ('[3, "1"]', [PE, "1", 3]),
    ('[4, "1", "GenericError", ""]', [PE, "1", 4]),
    ('[2, "1", "Heartbeat", {}, {}]', [FV, "1", 2]),
    ('[3, "1", {}, 1]', [FV, "1", 3]),
    ('[2, 1, "Heartbeat", {}]', [TCV, None, 2]),
    ('[2, null, "Heartbeat", {}]', [TCV, None, 2]),
    ('[2, "' + "x" * 37 + '", "Heartbeat", {}]', [PCV, "x" * 37, 2]),
    ('[2, "1", 7, {}]', [TCV, "1", 2]),
    ('[2, "1", "Heartbeat", []]', [TCV, "1", 2]),
    ('[2, "1", "Heartbeat", null]', [TCV, "1", 2]),
    ('[3, "1", "ok"]', [TCV, "1", 3]),
    ('[4, "1", 5, "", {}]', [TCV, "1", 4]),
    ('[4, "1", "GenericError", null, {}]', [TCV, "1", 4]),
    ('[4, "1", "GenericError", "", []]', [TCV, "1", 4]),
]


@pytest.mark.parametrize("text, error", MALFORMED)
def test_malformed_message_gets_the_right_error(text, error):
    assert run({"op": "decode", "text": text}) == error


def test_malformed_messages_on_micropython():
    cases = [{"op": "decode", "text": text} for text, _ in MALFORMED]
    assert under_micropython(cases) == [error for _, error in MALFORMED]


def oracle(message):
    """The CALLERROR the OCPP-J error table calls for, restated independently: structure
    first (FormationViolation), then type id, arity (ProtocolError when short), then types."""
    if not isinstance(message, list) or not message:
        return [FV, None, None]
    kind = message[0]
    uid = message[1] if len(message) > 1 and isinstance(message[1], str) else None
    if isinstance(kind, bool) or not isinstance(kind, int):
        return [TCV, uid, None]
    if kind not in (2, 3, 4):
        return [PCV, uid, None]
    shapes = {2: [str, str, dict], 3: [str, dict], 4: [str, str, str, dict]}[kind]
    if len(message) - 1 < len(shapes):
        return [PE, uid, kind]
    if len(message) - 1 > len(shapes):
        return [FV, uid, kind]
    for value, shape in zip(message[1:], shapes, strict=True):
        if not isinstance(value, shape):
            return [TCV, uid, kind]
    if len(uid) > 36:
        return [PCV, uid, kind]
    return message


def test_random_json_gets_the_callerror_of_the_table_on_both_interpreters():
    cases, results = [], []
    type_ids = st.sampled_from([2, 3, 4, 0, 5, -1, "2", True, 2.5, None])

    @SETTINGS
    @given(
        st.one_of(
            json_values,
            st.builds(lambda k, rest: [k, *rest], type_ids, st.lists(json_values, max_size=5)),
            messages.map(list),
        ),
        st.booleans(),
    )
    def check(message, ascii_only):
        case = {"op": "decode", "text": json.dumps(message, ensure_ascii=ascii_only)}
        result = run(case)
        assert result == oracle(message)
        cases.append(case)
        results.append(result)

    check()
    assert under_micropython(cases) == results


def strict_json(text):
    """CPython's json.loads without its NaN/Infinity extension: the oracle for is_json."""

    def refuse(constant):
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return False
    return True


# Near-JSON: valid messages with one character inserted, deleted or replaced.
noise = st.sampled_from(list('[]{},:"\\ 0123-.eE+tnfalsru\txé\x01'))
edits = st.tuples(st.integers(0, 200), noise, st.sampled_from(["insert", "delete", "replace"]))


def edit(text, change):
    at, char, how = change
    at = min(at, len(text))
    if how == "insert":
        return text[:at] + char + text[at:]
    return text[:at] + ("" if how == "delete" else char) + text[at + 1 :]


near_json = st.builds(
    edit, messages.map(lambda m: json.dumps(list(m), ensure_ascii=False)), edits
) | st.text(noise, max_size=12)


def test_is_json_matches_cpython_json_on_both_interpreters():
    cases, results = [], []

    @settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(near_json)
    def check(text):
        valid = strict_json(text)
        case = {"op": "is_json", "text": text}
        assert run(case) is valid
        cases.append(case)
        results.append(valid)

    check()
    assert under_micropython(cases) == results


def test_near_json_gets_the_same_answer_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(near_json | st.text(max_size=40))
    @example('[2, "u", "A", {"big": 1e999, "small": [-1e400]}]')  # numbers that read as inf
    def check(text):
        case = {"op": "decode", "text": text}
        result = run(case)
        assert result[0] in (2, 3, 4) or result[0] in ocppj.ERROR_CODES
        cases.append(case)
        results.append(result)

    check()
    assert under_micropython(cases) == results


def test_field_reports_missing_and_mistyped_values():
    payload = {"connectorId": 1, "idTag": "abc", "flag": True}
    assert ocppj.field(payload, "connectorId", int) == 1
    assert ocppj.field(payload, "absent", str, required=False) is None
    with pytest.raises(ocppj.RpcError) as missing:
        ocppj.field(payload, "absent", str)
    assert missing.value.code == ocppj.OCCURENCE_CONSTRAINT_VIOLATION
    for name, kind in (("idTag", int), ("flag", int), ("connectorId", str)):
        with pytest.raises(ocppj.RpcError) as wrong:
            ocppj.field(payload, name, kind)
        assert wrong.value.code == ocppj.TYPE_CONSTRAINT_VIOLATION
