"""The firmware's charge point against a central system built on the `ocpp` package, over real
WebSockets on 127.0.0.1, the firmware running under micropython with the simulated board.
Every frame both ways is validated against the official OCPP 1.6 JSON schemas (see
cp_centralsystem.Wire)."""

import asyncio
import base64
import json
from pathlib import Path

import pytest
from ocpp.v16 import call

from host import mpy
from tests.cp_centralsystem import CentralSystem, make_tls
from tests.cp_driver import TESTS
from tests.cp_station import RESET_EXIT, Firmware, booted, paired


def run(coro, timeout: float = 90):
    asyncio.run(asyncio.wait_for(coro, timeout))


async def configure(cs: CentralSystem, **keys) -> None:
    for key, value in keys.items():
        reply = await cs.call(call.ChangeConfiguration(key=key, value=str(value)))
        assert reply.status == "Accepted", (key, reply)


def test_boot_authorize_remote_start_meter_values_remote_stop(tmp_path):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            assert cs.paths == ["/ocpp/CP1"]
            assert [m[2] for who, m in cs.frames if who == "cp"][0] == "BootNotification"
            assert cs.status == {0: ("Available", "NoError"), 1: ("Available", "NoError"),
                                 2: ("Available", "NoError")}  # fmt: skip
            await configure(cs, AuthorizeRemoteTxRequests="true", MeterValueSampleInterval=1)
            reply = await cs.call(call.RemoteStartTransaction(id_tag="TAG1", connector_id=1))
            assert reply.status == "Accepted"
            await cs.wait(lambda: cs.calls("Authorize"), what="Authorize")
            assert cs.calls("Authorize") == [{"idTag": "TAG1"}]
            await cs.wait(lambda: cs.status[1][0] == "Preparing", what="Preparing")
            await fw.command("ev 1 C")
            start = (await cs.wait(lambda: cs.calls("StartTransaction")))[0]
            assert start["connectorId"] == 1 and start["idTag"] == "TAG1"
            await cs.wait(lambda: cs.status[1][0] == "Charging", what="Charging")
            await fw.wait_contactor(1, True)
            tx = cs.log[0][1]
            meter = await cs.wait(lambda: len(cs.calls("MeterValues")) >= 2, what="MeterValues")
            values = cs.calls("MeterValues")
            assert all(v["transactionId"] == tx and v["connectorId"] == 1 for v in values)
            sampled = values[-1]["meterValue"][0]["sampledValue"][0]
            assert sampled["measurand"] == "Energy.Active.Import.Register"
            assert sampled["context"] == "Sample.Periodic" and sampled["unit"] == "Wh"
            assert meter

            reply = await cs.call(call.RemoteStopTransaction(transaction_id=tx))
            assert reply.status == "Accepted"
            stop = (await cs.wait(lambda: cs.calls("StopTransaction")))[0]
            assert stop["transactionId"] == tx and stop["reason"] == "Remote"
            assert stop["meterStop"] >= start["meterStart"]
            begin, end = stop["transactionData"]
            assert begin["sampledValue"][0]["context"] == "Transaction.Begin"
            assert end["sampledValue"][0]["context"] == "Transaction.End"
            assert (begin["timestamp"], end["timestamp"]) == (start["timestamp"], stop["timestamp"])
            await cs.wait(lambda: cs.status[1][0] == "Finishing", what="Finishing")
            await fw.wait_contactor(1, False)
            await fw.command("ev 1 A")
            await cs.wait(lambda: cs.status[1][0] == "Available", what="Available again")
            # A remote stop of an unknown transaction is rejected.
            reply = await cs.call(call.RemoteStopTransaction(transaction_id=tx + 999))
            assert reply.status == "Rejected"
            assert [e[0] for e in cs.log] == ["StartTransaction"] + ["MeterValues"] * (
                len(cs.log) - 2
            ) + ["StopTransaction"]

    run(scenario())


def test_configuration_get_change_persist(tmp_path):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            reply = await cs.call(call.GetConfiguration(key=["MeterValueSampleInterval", "Bogus"]))
            assert reply.unknown_key == ["Bogus"]
            assert reply.configuration_key[0]["value"] == "60"
            for key, value, status in [
                ("MeterValueSampleInterval", "17", "Accepted"),
                ("MeterValueSampleInterval", "-5", "Rejected"),
                ("NumberOfConnectors", "3", "Rejected"),
                ("MeterValuesSampledData", "Voltage,Current.Import", "Accepted"),
                ("MeterValuesSampledData", "Energy.Bogus", "Rejected"),
                ("NoSuchKey", "1", "NotSupported"),
            ]:
                reply = await cs.call(call.ChangeConfiguration(key=key, value=value))
                assert reply.status == status, (key, value)
            reply = await cs.call(call.ChangeAvailability(connector_id=2, type="Inoperative"))
            assert reply.status == "Accepted"
            await fw.kill()
            before = len(cs.calls("StatusNotification"))
            await fw.start()
            await cs.wait(lambda: cs.connections == 2, what="reconnect")
            await cs.wait(
                lambda: len(cs.calls("StatusNotification")) >= before + 3, what="statuses"
            )
            again = {p["connectorId"]: p["status"] for p in cs.calls("StatusNotification")[before:]}
            assert again == {0: "Available", 1: "Available", 2: "Unavailable"}
            reply = await cs.call(call.GetConfiguration())
            keys = {k["key"]: k for k in reply.configuration_key}
            assert keys["MeterValueSampleInterval"]["value"] == "17"
            assert keys["MeterValuesSampledData"]["value"] == "Voltage,Current.Import"
            assert keys["NumberOfConnectors"] == {
                "key": "NumberOfConnectors",
                "readonly": True,
                "value": "2",
            }
            reply = await cs.call(call.ClearCache())
            assert reply.status == "Accepted"
            reply = await cs.call(call.DataTransfer(vendor_id="acme", message_id="x"))
            assert reply.status == "UnknownVendorId"
            reply = await cs.call(call.UnlockConnector(connector_id=1))
            assert reply.status == "NotSupported"

    run(scenario())


def test_boot_pending_rejected_then_accepted_then_heartbeats(tmp_path):
    async def scenario():
        async with paired(tmp_path) as (cs, fw):
            cs.boot_replies = [("Pending", 1), ("Rejected", 1), ("Accepted", 1)]
            await fw.start()
            # While Pending, the central system may still ask things.
            await cs.wait(lambda: cs.calls("BootNotification"), what="boot")
            reply = await cs.call(call.GetConfiguration(key=["HeartbeatInterval"]))
            assert reply.configuration_key[0]["key"] == "HeartbeatInterval"
            await cs.wait(lambda: len(cs.status) == 3, what="statuses after Accepted")
            sent = [m[2] for who, m in cs.frames if who == "cp" and m[0] == 2]
            assert sent[:3] == ["BootNotification"] * 3
            assert "BootNotification" not in sent[3:]
            reply = await cs.call(call.GetConfiguration(key=["HeartbeatInterval"]))
            assert reply.configuration_key[0]["value"] == "1"  # the interval of the boot reply
            await cs.wait(lambda: len(cs.calls("Heartbeat")) >= 2, what="heartbeats")

    run(scenario())


@pytest.mark.parametrize("kind", ["Soft", "Hard"])
def test_reset_stops_the_transaction_first_then_restarts(tmp_path, kind):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            await fw.command("ev 2 C")
            await cs.wait(lambda: cs.status[2][0] == "Preparing", what="EV plugged in at 2")
            reply = await cs.call(call.RemoteStartTransaction(id_tag="TAG2"))
            assert reply.status == "Accepted"
            await cs.wait(lambda: cs.calls("StartTransaction"), what="start")
            assert cs.calls("StartTransaction")[0]["connectorId"] == 2  # where the EV waits
            reply = await cs.call(call.Reset(type=kind))
            assert reply.status == "Accepted"
            # No new transaction while the Reset is under way (it would end in a PowerLoss)
            await fw.command("ev 1 C")
            reply = await cs.call(call.RemoteStartTransaction(id_tag="TAG1", connector_id=1))
            assert reply.status == "Rejected"
            assert await fw.wait_exit() == RESET_EXIT
            stop = cs.calls("StopTransaction")
            assert len(stop) == 1 and stop[0]["reason"] == kind + "Reset"
            await fw.start()
            await cs.wait(lambda: len(cs.calls("BootNotification")) == 2, what="second boot")

    run(scenario())


def test_offline_sessions_are_delivered_in_order_when_the_link_is_back(tmp_path):
    """Connector 1 starts online and goes on offline; connector 2 is authorized online but its
    EV arrives offline, so its transaction starts offline and gets its transactionId only when
    the link is back; every later message of it must carry that id."""

    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            port = cs.port
            await configure(cs, MeterValueSampleInterval=1)
            await fw.command("ev 1 C")
            await cs.call(call.RemoteStartTransaction(id_tag="OFF1", connector_id=1))
            await cs.wait(lambda: cs.calls("StartTransaction"), what="start")
            await cs.call(call.RemoteStartTransaction(id_tag="OFF2", connector_id=2))
            await cs.wait(lambda: cs.status[2][0] == "Preparing", what="2 authorized")
            await cs.stop()  # closes the connection too
            # Offline: sessions go on and start, everything is queued on flash.
            await fw.command("ev 2 C")
            await fw.wait_contactor(2, True)
            await asyncio.sleep(3)  # lets a few sampling intervals pass offline
            for n in (1, 2):
                await fw.command(f"ev {n} A")
                await fw.wait_permitted(n, False)  # its stop is queued
            cs2 = CentralSystem()
            cs2.starts, cs2.next_tx = cs.starts, cs.next_tx
            await cs2.start(port=port)
            try:
                # Both transactions' stops (a retransmitted stop is a second CALL of one)
                await cs2.wait(
                    lambda: len({e[1] for e in cs2.log if e[0] == "StopTransaction"}) == 2,
                    timeout=40,
                    what="stops",
                )
                online_tx = cs.log[0][1]
                offline_start = [e for e in cs2.log if e[0] == "StartTransaction"]
                assert len(offline_start) == 1 and offline_start[0][2]["connectorId"] == 2
                offline_tx = offline_start[0][1]
                for tx, connector in ((online_tx, 1), (offline_tx, 2)):
                    mine = [e for e in cs2.log if e[1] == tx]
                    assert mine[-1][0] == "StopTransaction", [e[0] for e in mine]
                    assert mine[-1][2]["reason"] == "EVDisconnected"
                    values = [e[2] for e in mine if e[0] == "MeterValues"]
                    assert len(values) >= 2 and all(v["connectorId"] == connector for v in values)
                    times = [v["meterValue"][0]["timestamp"] for v in values]
                    assert times == sorted(times)
                assert {e[1] for e in cs2.log} == {online_tx, offline_tx}
            finally:
                await cs2.stop()

    run(scenario())


def close_wait_sockets(port: int) -> int:
    """TCP sockets on this host in CLOSE-WAIT towards 127.0.0.1:`port`: the peer sent its FIN
    and the socket's owner has not closed it (Linux /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    remote = f"0100007F:{port:04X}"
    return sum(1 for line in lines if line.split()[2] == remote and line.split()[3] == "08")


@pytest.mark.parametrize("how", ["fin", "silent"])
def test_idle_station_reconnects_when_the_link_dies_without_a_close_frame(tmp_path, how):
    """The central system goes away while the station has nothing to send (next Heartbeat in
    300 s): "fin", its process ends, so the station reads EOF without a WebSocket close frame;
    "silent", it stops reading, so the station's pings go unanswered (WebSocketPingInterval
    1 s) and the keepalive drops the connection. Either way the station must close its socket
    (not leave it in CLOSE-WAIT) and reconnect at once, with back-off, not at the next CALL."""

    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            if how == "silent":
                await configure(cs, WebSocketPingInterval=1)
            # Idle: the statuses and the first Heartbeat sent and answered.
            wire = cs.station._connection
            await cs.wait(lambda: cs.calls("Heartbeat") and not wire.pending, what="idle")
            assert cs.connections == 1
            before = len(cs.calls("StatusNotification"))
            transport = wire.ws.transport
            if how == "fin":
                transport.close()  # a FIN, no close frame
            else:
                transport.pause_reading()
            await cs.wait(lambda: cs.connections == 2, timeout=15, what="reconnect")
            assert close_wait_sockets(cs.port) == 0
            await cs.wait(
                lambda: len(cs.calls("StatusNotification")) >= before + 3, what="statuses again"
            )
            assert len(cs.calls("BootNotification")) == 1  # still Accepted: no new boot
            if how == "silent":
                transport.abort()

    run(scenario())


def test_wss_with_basic_auth_security_profile_2(tmp_path):
    async def scenario():
        flash = tmp_path / "flash"
        cs = await CentralSystem().start(ssl=make_tls(flash))
        fw = Firmware(
            flash, cs.url("wss"), cp_id="CP9", security_profile=2, auth_key="s3cret", ca="ca.der"
        )
        try:
            await fw.start()
            await cs.wait(lambda: len(cs.status) == 3, what="boot over TLS")
            assert cs.paths == ["/ocpp/CP9"]
            expected = "Basic " + base64.b64encode(b"CP9:s3cret").decode()
            assert cs.headers[0]["Authorization"] == expected
            reply = await cs.call(call.RemoteStartTransaction(id_tag="TLS", connector_id=2))
            assert reply.status == "Accepted"
            await fw.command("ev 2 C")
            await cs.wait(lambda: cs.calls("StartTransaction"), what="start over TLS")
        finally:
            await fw.kill()
            await cs.stop()

    run(scenario())


def test_availability_timeouts_invalid_ids_and_faults(tmp_path):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            cs.tags["BAD"] = "Invalid"
            await configure(cs, ConnectionTimeOut=1, ClockAlignedDataInterval=1)
            # Connector 2 out of service: no remote start there.
            reply = await cs.call(call.ChangeAvailability(connector_id=2, type="Inoperative"))
            assert reply.status == "Accepted"
            await cs.wait(lambda: cs.status[2][0] == "Unavailable", what="2 Unavailable")
            reply = await cs.call(call.RemoteStartTransaction(id_tag="T", connector_id=2))
            assert reply.status == "Rejected"
            # Authorized but no EV within ConnectionTimeOut: back to Available.
            reply = await cs.call(call.RemoteStartTransaction(id_tag="LATE", connector_id=1))
            assert reply.status == "Accepted"
            await cs.wait(lambda: cs.status[1][0] == "Preparing", what="Preparing")
            await cs.wait(lambda: cs.status[1][0] == "Available", what="timed out")
            # The central system says the idTag is invalid: StopTransactionOnInvalidId.
            await fw.command("ev 1 C")
            await cs.wait(lambda: cs.status[1][0] == "Preparing", what="plugged")
            await cs.call(call.RemoteStartTransaction(id_tag="BAD", connector_id=1))
            stop = (await cs.wait(lambda: cs.calls("StopTransaction"), what="stop"))[0]
            assert stop["reason"] == "DeAuthorized"
            await fw.wait_contactor(1, False)
            await cs.wait(lambda: cs.status[1][0] == "Finishing", what="Finishing")
            # Inoperative while charging: Scheduled, applied when the transaction ends.
            await fw.command("ev 1 A")
            await cs.wait(lambda: cs.status[1][0] == "Available", what="unplugged")
            await fw.command("ev 1 C")
            await cs.wait(lambda: cs.status[1][0] == "Preparing", what="plugged again")
            await cs.call(call.RemoteStartTransaction(id_tag="GOOD", connector_id=1))
            await cs.wait(lambda: cs.status[1][0] == "Charging", what="Charging")
            clock = await cs.wait(
                lambda: [
                    m
                    for m in cs.calls("MeterValues")
                    if m["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
                ],
                what="clock-aligned meter values",
            )
            assert clock[0]["meterValue"][0]["timestamp"].endswith("Z")
            reply = await cs.call(call.ChangeAvailability(connector_id=1, type="Inoperative"))
            assert reply.status == "Scheduled"
            tx = [e[1] for e in cs.log if e[0] == "StartTransaction"][-1]
            await cs.call(call.RemoteStopTransaction(transaction_id=tx))
            await cs.wait(lambda: cs.status[1][0] == "Unavailable", what="1 Unavailable")
            for n in (1, 2):
                await cs.call(call.ChangeAvailability(connector_id=n, type="Operative"))
            await cs.wait(lambda: cs.status[2][0] == "Available", what="2 back")
            # A welded contactor: the connector is Faulted with the mapped error code.
            await fw.command("weld 2 1")
            await cs.wait(
                lambda: cs.status[2] == ("Faulted", "PowerSwitchFailure"), what="weld reported"
            )

    run(scenario())


def test_minimum_status_duration_hides_short_lived_states(tmp_path):
    async def scenario():
        async with booted(tmp_path) as (cs, fw):
            await configure(cs, MinimumStatusDuration=3)
            sent = len(cs.calls("StatusNotification"))
            await fw.command("ev 1 B")
            await fw.wait_connector(1, "pilot", "B")
            await fw.command("ev 1 A")  # plugged in for far less than 3 s
            await fw.wait_connector(1, "pilot", "A")
            await fw.command("ev 2 B")  # plugged in for good
            await cs.wait(lambda: cs.status[2][0] == "Preparing", what="stable Preparing")
            later = cs.calls("StatusNotification")[sent:]
            assert [(p["connectorId"], p["status"]) for p in later] == [(2, "Preparing")]

    run(scenario())


def test_data_transfer_to_the_central_system(tmp_path):
    async def scenario():
        cs = await CentralSystem().start()
        flash = tmp_path / "flash"
        Firmware(flash, cs.url())  # writes station.json
        argv = mpy.command(TESTS / "mp_cp_datatransfer.py", str(flash))
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, env=mpy.environ()
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
            await cs.stop()
        lines = [json.loads(line) for line in out.decode().splitlines()]
        assert lines == [{"before_accepted": "refused"}, {"status": "UnknownVendorId"}]
        assert cs.calls("DataTransfer") == [
            {"vendorId": "evse", "messageId": "ping", "data": "hello"}
        ]
        sent = [m[2] for who, m in cs.frames if who == "cp" and m[0] == 2]
        assert sent.index("BootNotification") < sent.index("DataTransfer")

    run(scenario())
