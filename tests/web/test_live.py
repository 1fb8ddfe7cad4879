"""The listener that feeds live events and metrics reads only the head of each OCPP-J frame:
property tests that it agrees with a full JSON parse and never raises."""

import json
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from host.cs.schemas import CP_ACTIONS
from host.web.live import HEAD, Live

uids = st.text(min_size=1, max_size=36)
actions = st.text(alphabet=string.ascii_letters, min_size=1, max_size=30)
payloads = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)


@st.composite
def frames(draw: st.DrawFn) -> tuple[list, str]:
    kind = draw(st.sampled_from([2, 3, 4]))
    uid = draw(uids)
    if kind == 2:
        message = [2, uid, draw(actions), draw(payloads)]
    elif kind == 3:
        message = [3, uid, draw(payloads)]
    else:
        message = [4, uid, draw(actions), draw(st.text(max_size=10)), {}]
    spaced = draw(st.booleans())
    text = json.dumps(
        message, ensure_ascii=draw(st.booleans()), separators=None if spaced else (",", ":")
    )
    return message, text


@settings(max_examples=300, deadline=None)
@given(frames())
def test_head_agrees_with_a_full_parse(frame: tuple[list, str]) -> None:
    message, text = frame
    head = HEAD.match(text)
    assert head is not None
    kind, uid, name = head.groups()
    assert int(kind) == message[0]
    assert json.loads(f'"{uid}"') == message[1]
    if message[0] != 3:
        assert json.loads(f'"{name}"') == message[2]


@settings(max_examples=200, deadline=None)
@given(uids, st.sampled_from(CP_ACTIONS), st.booleans())
def test_calls_and_answers_pair_up_whatever_the_escaping(
    uid: str, action: str, ascii_in: bool
) -> None:
    live = Live()
    request = json.dumps([2, uid, action, {}], ensure_ascii=ascii_in)
    answer = json.dumps([3, uid, {}], ensure_ascii=not ascii_in)
    live("in", "CP", request)
    live("out", "CP", answer)
    assert live.messages == {("in", action, "ok"): 1}
    assert live.latency[action].n == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["in", "out"]))
def test_any_text_is_ignored_or_counted_never_raises(text: str, direction: str) -> None:
    Live()(direction, "CP", text)


def test_malformed_heads_never_raise() -> None:
    live = Live()
    for text in ('[2,"a\\x","Heartbeat",{}]', '[3,"\\u12",{}]', '[4,"u","Code"', "[2,", ""):
        live("in", "CP", text)
        live("out", "CP", text)


def test_made_up_actions_and_error_codes_share_one_label() -> None:
    """Each action or CALLERROR code a station made up had a counter (and an action a latency
    histogram) of its own, kept for good: CALLs of 10 kB made-up actions grew the server's
    memory and /metrics by 170 kB each."""
    live = Live()
    for i in range(100):
        live("in", "CP", json.dumps([2, f"in{i}", f"Made{i}" + "x" * 10_000, {}]))
        live("out", "CP", json.dumps([4, f"in{i}", "NotImplemented", "", {}]))
        live("out", "CP", json.dumps([2, f"out{i}", "Reset", {"type": "Soft"}]))
        live("in", "CP", json.dumps([4, f"out{i}", f"Code{i}", "", {}]))
    assert live.messages == {("in", "other", "NotImplemented"): 100, ("out", "Reset", "other"): 100}
    assert live.callerrors == {("out", "NotImplemented"): 100, ("in", "other"): 100}
    assert list(live.latency) == ["other"]
