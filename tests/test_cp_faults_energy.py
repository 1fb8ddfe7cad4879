"""What the central system learns of faults and energy: a short RCD trip is reported as
GroundFailure, pilot trouble as EVCommunicationError, meterStop counts the energy drawn until
the contactor opened, and the PowerLoss stop after a power cut carries the last register.
The real firmware under micropython, a central system on the `ocpp` package, real WebSockets."""

import asyncio
from datetime import UTC, datetime, timedelta

from ocpp.v16 import call

from tests.cp_centralsystem import CentralSystem
from tests.cp_station import Firmware, booted, paired
from tests.test_cp_interop import configure, run


async def charging(cs: CentralSystem, fw: Firmware, tag: str) -> dict:
    """A remote start at connector 1 with the EV in C; the StartTransaction payload."""
    reply = await cs.call(call.RemoteStartTransaction(id_tag=tag, connector_id=1))
    assert reply.status == "Accepted"
    await fw.command("ev 1 C")
    await fw.wait_contactor(1, True)
    return (await cs.wait(lambda: cs.calls("StartTransaction"), what="StartTransaction"))[-1]


def statuses(cs: CentralSystem, connector: int) -> list[tuple[str, str, str | None]]:
    return [
        (p["status"], p["errorCode"], p.get("vendorErrorCode"))
        for p in cs.calls("StatusNotification")
        if p["connectorId"] == connector
    ]


def test_a_short_rcd_trip_is_reported_as_ground_failure_despite_minimum_status_duration(
    tmp_path,
):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            # The trip clears as soon as the contactor is open: far shorter than 3 s.
            await configure(cs, MinimumStatusDuration=3)
            await charging(cs, fw, "RCD1")
            await cs.wait(lambda: cs.status[1][0] == "Charging", what="Charging")
            before = len(statuses(cs, 1))
            await fw.command("leak 1 40")
            await fw.wait_contactor(1, False)
            await fw.command("leak 1 0")
            await fw.wait_contactor(1, True)  # retry pause, self-test, charging again
            await cs.wait(lambda: cs.status[1] == ("Charging", "NoError"), what="Charging again")
            later = statuses(cs, 1)[before:]
            assert later == [("Faulted", "GroundFailure", "rcd"), ("Charging", "NoError", None)]
            # Pilot trouble is EVCommunicationError, which OCPP 1.6 says is SuspendedEVSE.
            await fw.command("diode 1 1")
            await cs.wait(
                lambda: cs.status[1] == ("SuspendedEVSE", "EVCommunicationError"),
                what="missing diode reported",
            )

    run(scenario())


def test_meter_stop_counts_the_energy_drawn_until_the_contactor_opened(tmp_path):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            # An EV that keeps drawing after the offer is withdrawn: the station opens the
            # contactor only after stop_timeout_ms (3 s) and that energy belongs to the session.
            await fw.command("obey 1 0")
            start = await charging(cs, fw, "FRESH")
            await fw.wait_connector(1, "power", 7400.0, timeout=5)
            tx = cs.log[0][1]
            assert (await cs.call(call.RemoteStopTransaction(transaction_id=tx))).status == (
                "Accepted"
            )
            stop = (await cs.wait(lambda: cs.calls("StopTransaction"), what="Stop"))[0]
            await fw.wait_contactor(1, False)
            await fw.wait_connector(1, "power", 0.0)  # a reading after the opening
            assert stop["meterStop"] == int((await fw.connector(1))["energy"])
            assert stop["meterStop"] - start["meterStart"] >= 7400 * 3 / 3600  # the last 3 s
            end = stop["transactionData"][1]["sampledValue"][0]
            assert end["context"] == "Transaction.End" and end["value"] == str(stop["meterStop"])

    run(scenario())


def test_the_power_loss_stop_carries_the_last_meter_register(tmp_path):
    async def scenario():
        async with paired(tmp_path) as (cs, fw):
            # Board time runs 5x: 40 s of charging at 7.4 kW (about 80 Wh) in 8 s. Periodic
            # MeterValues stay at their 60 s default, so none goes out before the cut.
            await fw.start(speed=5)
            await cs.wait(lambda: len(cs.status) == 3, what="boot")
            start = await charging(cs, fw, "CUT")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while (energy := (await fw.connector(1))["energy"]) < start["meterStart"] + 80:
                assert loop.time() < deadline, "the EV draws nothing"
                await asyncio.sleep(0.1)
            await fw.kill()
            assert not cs.calls("MeterValues")
            await fw.start(speed=5)
            stop = (await cs.wait(lambda: cs.calls("StopTransaction"), what="PowerLoss"))[0]
            assert stop["reason"] == "PowerLoss"
            # The register reaches flash every 10 s of board time (about 21 Wh at 7.4 kW).
            assert energy - 25 <= stop["meterStop"] <= energy + 5, (energy, stop)

    run(scenario())


def test_the_board_clock_follows_the_central_system(tmp_path):
    async def scenario():
        async with paired(tmp_path) as (cs, fw):
            cs.clock_offset = timedelta(days=400, hours=3)  # a board clock far off, as without NTP
            cs.boot_replies = [("Accepted", 1)]  # a heartbeat every second

            def stamped_near(payload, offset):
                stamp = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
                return abs(stamp - (datetime.now(UTC) + offset)) < timedelta(seconds=30)

            await fw.start()
            await cs.wait(lambda: len(cs.status) == 3, what="boot")
            # Statuses computed before the boot answer are stamped in the new clock too.
            assert all(stamped_near(p, cs.clock_offset) for p in cs.calls("StatusNotification"))
            # The central system's clock moves back two hours: the next heartbeat follows it.
            cs.clock_offset = timedelta(hours=-2)
            beats = len(cs.calls("Heartbeat"))
            await cs.wait(lambda: len(cs.calls("Heartbeat")) >= beats + 2, what="heartbeats")
            await fw.command("ev 1 B")
            await cs.wait(lambda: cs.status[1][0] == "Preparing", what="Preparing")
            assert stamped_near(cs.calls("StatusNotification")[-1], cs.clock_offset)
            await cs.wait(lambda: len(cs.calls("Heartbeat")) >= beats + 4, what="heartbeats")

    run(scenario())
