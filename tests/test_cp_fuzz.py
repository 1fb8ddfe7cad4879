"""Hypothesis fuzzing of the central system's CALLs at the RPC layer of the running firmware:
while connector 1 charges, malformed CALLs get the CALLERROR the official schema calls for
(worked out independently by test_cp_units.expected_error), the firmware never crashes, and the
contactor stays closed, no transaction stopped."""

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from ocpp.v16 import call

from tests.cp_centralsystem import CentralSystem
from tests.cp_station import Firmware, LoopThread
from tests.test_cp_units import expected_error, mutated

NOT_SUPPORTED = ["ReserveNow", "SetChargingProfile", "TriggerMessage", "UpdateFirmware"]
KNOWN = set(NOT_SUPPORTED) | {
    "Authorize", "BootNotification", "CancelReservation", "ChangeAvailability",
    "ChangeConfiguration", "ClearCache", "ClearChargingProfile", "DataTransfer",
    "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics", "GetLocalListVersion",
    "RemoteStartTransaction", "RemoteStopTransaction", "Reset", "SendLocalList",
    "UnlockConnector",
}  # fmt: skip


@pytest.fixture(scope="module")
def charging(tmp_path_factory):
    """A central system and the firmware with a transaction charging on connector 1."""
    loop = LoopThread()
    cs = CentralSystem()
    fw = Firmware(tmp_path_factory.mktemp("fuzz"), "")

    async def setup():
        await cs.start()
        fw.__init__(fw.data_dir, cs.url())
        await fw.start()
        await cs.wait(lambda: len(cs.status) == 3, what="boot")
        await fw.command("ev 1 C")
        await cs.wait(lambda: cs.status[1][0] == "Preparing", what="plug")
        reply = await cs.call(call.RemoteStartTransaction(id_tag="FUZZ", connector_id=1))
        assert reply.status == "Accepted"
        await fw.wait_contactor(1, True)
        await cs.wait(lambda: cs.status[1][0] == "Charging", what="Charging reported")

    loop.run(setup())
    yield loop, cs, fw
    loop.run(fw.kill())
    loop.run(cs.stop())
    loop.close()


_uids = iter(range(10**9))


def ask(charging, text: str, uid: str) -> list:
    """The firmware's answer to frame `text`; the session must go on charging."""
    loop, cs, fw = charging
    answer = loop.run(cs.send_raw(text, uid), timeout=15)
    assert loop.run(fw.connector(1))["contactor"] is True
    return answer


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
@given(case=mutated())
def test_malformed_payloads_get_the_schema_callerror(charging, case):
    action, payload = case
    code = expected_error(action, payload)
    assume(code is not None)  # well-formed CALLs act on the station; not fuzzed here
    uid = f"f{next(_uids)}"
    answer = ask(charging, json.dumps([2, uid, action, payload]), uid)
    assert answer[:3] == [4, uid, code], (answer, payload)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    action=st.one_of(st.text(max_size=40), st.sampled_from(NOT_SUPPORTED)),
    payload=st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
def test_unknown_and_unsupported_actions(charging, action, payload):
    assume(action not in KNOWN or action in NOT_SUPPORTED)
    uid = f"u{next(_uids)}"
    answer = ask(charging, json.dumps([2, uid, action, payload]), uid)
    assert answer[:3] == [4, uid, "NotSupported" if action in NOT_SUPPORTED else "NotImplemented"]


def test_frames_that_are_not_calls(charging):
    assert ask(charging, "not json", "-1")[:3] == [4, "-1", "FormationViolation"]
    assert ask(charging, '[2, "t1", "Reset"]', "t1")[:3] == [4, "t1", "ProtocolError"]
    assert ask(charging, '[2, "t2", "Reset", {}, 1]', "t2")[:3] == [4, "t2", "FormationViolation"]


def test_zz_after_fuzzing_the_session_is_untouched(charging):
    """Runs last in this module (-p no:randomly is the default order): still charging."""
    loop, cs, fw = charging
    assert fw.alive()
    assert loop.run(fw.connector(1))["contactor"] is True
    assert not cs.calls("StopTransaction")
    assert cs.status[1][0] == "Charging"
