"""Charge point operations: StopTxnAlignedData in StopTransaction, UnlockConnector during a
transaction, a HeartbeatInterval change taking effect at once (the firmware under micropython
against the `ocpp`-package central system, every frame schema-checked), and, on the firmware
alone, which clock wins (NTP or the central system's) and UnlockConnector's answers."""

import json
import subprocess
from datetime import UTC, datetime

from ocpp.v16 import call

from host import mpy
from tests.cp_driver import TESTS
from tests.cp_station import booted, paired
from tests.test_cp_interop import configure, run

ALIGNED = ["Energy.Active.Import.Register", "Power.Active.Import"]


def unix(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def test_stop_transaction_carries_clock_aligned_samples(tmp_path):
    async def scenario():
        async with paired(tmp_path) as (cs, fw):
            await fw.start(speed=10.0)  # board time: 10 s per real second
            await cs.wait(lambda: len(cs.status) == 3, what="boot")
            await configure(cs, ClockAlignedDataInterval=10, StopTxnAlignedData=",".join(ALIGNED))
            await fw.command("ev 1 C")
            await cs.call(call.RemoteStartTransaction(id_tag="TAG1", connector_id=1))
            # Clock-aligned MeterValues outside the transaction may come first: find the Start.
            tx = await cs.wait(
                lambda: next((e[1] for e in cs.log if e[0] == "StartTransaction"), None),
                what="StartTransaction",
            )

            def clock_samples():
                return [
                    v for v in cs.calls("MeterValues")
                    if v.get("transactionId") == tx
                    and v["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
                ]  # fmt: skip

            await cs.wait(lambda: len(clock_samples()) >= 2, what="clock-aligned MeterValues")
            await cs.call(call.RemoteStopTransaction(transaction_id=tx))
            stop = (await cs.wait(lambda: cs.calls("StopTransaction")))[0]
            data = stop["transactionData"]
            assert data[0]["sampledValue"][0]["context"] == "Transaction.Begin"
            assert data[-1]["sampledValue"][0]["context"] == "Transaction.End"
            aligned = data[1:-1]
            assert 2 <= len(aligned) <= 8
            for value in aligned:
                assert unix(value["timestamp"]) % 10 == 0  # on the interval's boundaries
                assert [v["context"] for v in value["sampledValue"]] == ["Sample.Clock"] * 2
                assert [v["measurand"] for v in value["sampledValue"]] == ALIGNED
            stamps = [unix(v["timestamp"]) for v in data]
            assert stamps == sorted(stamps)

    run(scenario())


def test_unlock_connector_stops_the_transaction_first(tmp_path):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            await fw.command("ev 1 C")
            await cs.call(call.RemoteStartTransaction(id_tag="TAG1", connector_id=1))
            await fw.wait_contactor(1, True)
            reply = await cs.call(call.UnlockConnector(connector_id=1))
            assert reply.status == "NotSupported"  # the simulated board has no lock actuator
            stop = (await cs.wait(lambda: cs.calls("StopTransaction")))[0]
            assert stop["reason"] == "UnlockCommand"
            await fw.wait_contactor(1, False)

    run(scenario())


def test_a_heartbeat_interval_change_takes_effect_at_once(tmp_path):
    async def scenario():
        async with paired(tmp_path) as (cs, fw):
            cs.boot_replies = [("Accepted", 86400)]  # one heartbeat a day
            await fw.start()
            await cs.wait(lambda: cs.calls("Heartbeat"), what="the first heartbeat")
            await configure(cs, HeartbeatInterval=1)
            await cs.wait(lambda: len(cs.calls("Heartbeat")) >= 3, timeout=10, what="heartbeats")

    run(scenario())


def test_ntp_wins_over_the_central_system_clock_and_unlock_answers(tmp_path):
    out = subprocess.run(
        mpy.command(TESTS / "mp_cp_board_ops.py", str(tmp_path)),
        env=mpy.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    moved, now = result["ntp_synced"]
    assert moved == 0 and abs(now - datetime.now(UTC).timestamp()) < 30
    moved, now = result["ntp_stale"]
    assert moved > 0 and now == unix("2030-01-01T00:00:00Z")
    moved, now = result["no_ntp"]
    assert moved > 0 and now == unix("2031-01-01T00:00:00Z")
    assert result["unlock_without_actuator"] == ["NotSupported"] * 4
    assert result["unlock_with_actuator"] == [
        "NotSupported", "Unlocked", "UnlockFailed", "NotSupported"
    ]  # fmt: skip


def test_a_callerror_to_a_status_is_sent_again_on_the_same_connection(tmp_path):
    """A central system that fails to process a StatusNotification (its database, say) answers
    CALLERROR; the link is fine, so the station keeps it and sends the status again a while
    later. Before, it reconnected at once: every station every second or two, all its
    statuses again each time, while the central system recovered."""

    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            cs.failing["StatusNotification"] = 1
            await fw.command("ev 1 B")
            await cs.wait(lambda: cs.status[1][0] == "Preparing", 30, "Preparing after a retry")
            assert cs.connections == 1
            sent = [p for p in cs.calls("StatusNotification") if p["status"] == "Preparing"]
            assert len(sent) == 2

    run(scenario())
