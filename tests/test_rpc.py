"""firmware/ocpp/rpc.py under micropython, fuzzed with inbound messages: it never crashes, and
every CALL (well-formed or not) gets the answer OCPP-J calls for; answers to ids we are not
waiting for are dropped. All cases run in one micropython process (tests/mp_rpc.py)."""

import json
import subprocess
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host import mpy
from protocol import ocppj

DRIVER = Path(__file__).with_name("mp_rpc.py")

texts = st.text(st.characters(exclude_categories=["Cs"], max_codepoint=0xFFFF), max_size=10)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
actions = st.sampled_from(["Echo", "Refuse", "Crash", "Needs", "Unknown"]) | texts
payloads = st.dictionaries(texts, values, max_size=3) | st.builds(lambda v: {"id": v}, values)
messages = st.one_of(
    st.tuples(st.just(2), texts, actions, payloads).map(list),
    st.tuples(st.sampled_from([3, 4]), texts, payloads).map(list),
    st.lists(values, max_size=5),
    st.builds(lambda k, rest: [k, *rest], st.sampled_from([2, 3, 4, 7, "2"]), st.lists(values)),
    values,
)
NOT_JSON = ["", "x", "[2,", '{"a":', "[2, 'a', 'Echo', {}]", "tru"]


def expected(text):
    """What the Rpc must send back for one inbound message."""
    try:
        message = ocppj.decode(text)
    except ocppj.RpcError as e:
        if e.message_type in (ocppj.CALLRESULT, ocppj.CALLERROR):
            return []
        return [[4, e.uid or "-1", e.code]]
    if message[0] != ocppj.CALL:
        return []  # a response to nothing we asked: dropped
    _, uid, action, payload = message
    if action == "Echo":
        return [[3, uid, payload]]
    if action == "Needs":
        if "id" not in payload or payload["id"] is None:
            return [[4, uid, ocppj.OCCURENCE_CONSTRAINT_VIOLATION]]
        if type(payload["id"]) is not int:
            return [[4, uid, ocppj.TYPE_CONSTRAINT_VIOLATION]]
        return [[3, uid, {"id": payload["id"]}]]
    code = {"Refuse": ocppj.NOT_SUPPORTED, "Crash": ocppj.INTERNAL_ERROR}
    return [[4, uid, code.get(action, ocppj.NOT_IMPLEMENTED)]]


def test_inbound_messages_get_the_right_answer_under_micropython():
    inputs = list(NOT_JSON)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(messages, st.booleans())
    def collect(message, ascii_only):
        inputs.append(json.dumps(message, ensure_ascii=ascii_only))

    collect()
    stdin = "".join(json.dumps(text, ensure_ascii=False) + "\n" for text in inputs)
    done = subprocess.run(
        mpy.command(DRIVER),
        input=stdin.encode(),
        env=mpy.environ(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr.decode()[-2000:]
    lines = done.stdout.decode("utf-8", "surrogatepass").split("\n")[:-1]
    assert len(lines) == len(inputs)
    for text, line in zip(inputs, lines, strict=True):
        sent = json.loads(line)
        # errors are compared by type, id and code; their descriptions are free text
        got = [reply if reply[0] == 3 else reply[:3] for reply in sent]
        assert got == expected(text), text
        for reply in sent:
            if reply[0] == 4:
                assert reply[2] in ocppj.ERROR_CODES
                assert isinstance(reply[3], str) and isinstance(reply[4], dict)
