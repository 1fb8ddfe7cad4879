"""The central system over real WebSockets on 127.0.0.1, with charge points on the `ocpp`
package's ChargePoint (and raw WebSocket clients for malformed input)."""

import asyncio
import base64
import json
import logging
import os
import signal
import time

import pytest
import websockets
from ocpp.v16 import call
from websockets.exceptions import ConnectionClosed, InvalidStatus

from host.cli import main
from host.cs import commands, server, storage
from host.cs import store as store_module
from host.cs.storage import now_iso
from host.cs.store import ENDED
from protocol import websocket
from protocol.websocket import OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT
from tests.cs.conftest import (
    RAW_BOOT,
    booted,
    central_system,
    command_reaches,
    exchange,
    raw,
    run,
    station,
    wait_for,
)

BOOT = call.BootNotification(charge_point_model="M1", charge_point_vendor="Acme")
T0 = "2026-11-26T10:00:00.000Z"
T1 = "2026-11-26T10:05:00.000Z"


def sampled(n: int) -> list[dict]:
    measurands = ["Voltage", "Current.Import"]
    return [
        {
            "value": str(230 + i),
            "measurand": measurands[i % 2],
            "unit": "V" if i % 2 == 0 else "A",
            "phase": ("L1", "L2", "L3", "N", "L1-N")[i % 5],
            "context": "Sample.Periodic",
        }
        for i in range(n)
    ]


async def setup(cs, fn, *args, **kwargs):
    return await cs.store.call(fn, *args, **kwargs)


def read(url, fn, *args):
    """What `fn` yields, read on a connection of the test's own: the server has committed it
    (an answer means stored)."""
    db = storage.Db(url)
    try:
        return list(fn(db, *args))
    finally:
        db.close()


async def refusal(cs, station_id, auth_key=None):
    """The HTTP status with which the central system refuses the station's connection."""
    with pytest.raises(InvalidStatus) as refused:
        async with station(cs, station_id, auth_key):
            pass
    return refused.value.response.status_code


def test_boot_policies(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="reject", heartbeat_s=123) as cs:
            assert await refusal(cs, "STRANGER") == 404
            await setup(cs, storage.add_station, "KNOWN", "accepted")
            async with station(cs, "KNOWN") as cp:
                answer = await cp.call(BOOT)
                assert (answer.status, answer.interval) == ("Accepted", 123)
            await setup(cs, storage.add_station, "BANNED", "rejected")
            assert await refusal(cs, "BANNED") == 403

        async with central_system(sqlite_url, unknown="pending", boot_retry_s=7) as cs:
            async with station(cs, "NEWBIE") as cp:
                answer = await cp.call(BOOT)
                assert (answer.status, answer.interval) == ("Pending", 7)
                # pending: what a TriggerMessage can ask for, nothing else (OCPP 1.6 4.2.1)
                assert (await cp.call(call.Heartbeat())).current_time
                status = call.StatusNotification(1, "NoError", "Available")
                assert await cp.call(status, suppress=False) is not None
                with pytest.raises(Exception) as before:
                    await cp.call(call.Authorize("TAG"), suppress=False)
                assert type(before.value).__name__ == "SecurityError"
                await setup(cs, storage.set_station, "NEWBIE", approval="accepted")
                assert (await cp.call(BOOT)).status == "Accepted"
                assert (await cp.call(call.Heartbeat())).current_time
            row = await setup(cs, storage.get_station, "NEWBIE")
            assert (row["vendor"], row["model"], row["registration"]) == ("Acme", "M1", "Accepted")

        async with central_system(sqlite_url, unknown="accept") as cs:
            async with station(cs, "WALKIN") as cp:
                assert (await cp.call(BOOT)).status == "Accepted"

    run(scenario())


def test_authorize_id_tags(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            await setup(cs, storage.set_id_tag, "GOOD", "FLEET", "2099-01-01T00:00:00Z")
            await setup(cs, storage.set_id_tag, "FLEET", None, None, False, 5)
            await setup(cs, storage.set_id_tag, "BLOCKED", None, None, True)
            await setup(cs, storage.set_id_tag, "OLD", None, "2020-01-01T00:00:00Z")
            await setup(cs, storage.set_id_tag, "CHILD", "BANNEDPARENT")
            await setup(cs, storage.set_id_tag, "BANNEDPARENT", None, None, True)
            async with station(cs, "CP1") as cp:
                await cp.call(BOOT)

                async def status(tag):
                    return (await cp.call(call.Authorize(id_tag=tag))).id_tag_info

                good = await status("GOOD")
                assert good["status"] == "Accepted"
                assert good["parent_id_tag"] == "FLEET"
                assert good["expiry_date"].startswith("2099")
                assert (await status("BLOCKED"))["status"] == "Blocked"
                assert (await status("OLD"))["status"] == "Expired"
                assert (await status("CHILD"))["status"] == "Blocked"
                assert (await status("NOBODY"))["status"] == "Invalid"
                start = await cp.call(call.StartTransaction(1, "GOOD", 0, T0))
                assert start.id_tag_info["status"] == "Accepted"
                assert (await status("GOOD"))["status"] == "ConcurrentTx"
                second = await cp.call(call.StartTransaction(2, "GOOD", 5, T0))
                assert second.id_tag_info["status"] == "ConcurrentTx"

    run(scenario())


def test_a_data_transfer_is_stored_and_answered_unknown_vendor(sqlite_url):
    # OCPP 1.6 4.3: a recipient without an implementation for the vendorId "SHALL return a
    # status UnknownVendorId"; this central system implements none, it keeps them for the
    # operator
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            async with station(cs, "CP1") as cp:
                await cp.call(BOOT)
                answer = await cp.call(call.DataTransfer("com.acme", "receipt", "42"))
                assert (answer.status, answer.data) == ("UnknownVendorId", None)
            (row,) = await setup(cs, storage.list_notifications, "CP1")
            assert (row["kind"], json.loads(row["payload"])["data"]) == ("DataTransfer", "42")

    run(scenario())


def test_a_security_event_sent_again_is_stored_once(db_url):
    # queued while offline, sent until answered (security whitepaper): its answer was lost
    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            async with station(cs, "CP1") as cp:
                await cp.call(BOOT)
                event = call.SecurityEventNotification("TamperDetectionActivated", T0, "lid")
                await cp.call(event)
                await cp.call(event)  # another unique id, the same event
                later = call.SecurityEventNotification("TamperDetectionActivated", T1, "lid")
                await cp.call(later)
            rows = await setup(cs, storage.list_notifications, "CP1")
            assert [json.loads(row["payload"])["timestamp"] for row in rows] == [T0, T1]

    run(scenario())


def test_transactions_are_stored_once_despite_retransmission(db_url):
    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            await setup(cs, storage.set_id_tag, "TAG1")
            async with station(cs, "CP1") as cp:
                await cp.call(BOOT)
                await cp.call(call.StatusNotification(1, "NoError", "Preparing", timestamp=T0))
                start = call.StartTransaction(1, "TAG1", 1000, T0)
                first = await cp.call(start)
                again = await cp.call(start)  # from the station's offline queue
                assert first.transaction_id == again.transaction_id
                assert again.id_tag_info["status"] == "Accepted"
                values = [{"timestamp": "2026-11-26T10:01:00Z", "sampledValue": sampled(10)}]
                for _ in range(2):
                    await cp.call(call.MeterValues(1, values, first.transaction_id))
                stop = call.StopTransaction(
                    1500,
                    "2026-11-26T10:30:00Z",
                    first.transaction_id,
                    reason="EVDisconnected",
                    transaction_data=[
                        {"timestamp": "2026-11-26T10:30:00Z", "sampledValue": [{"value": "1500"}]}
                    ],
                )
                for _ in range(2):
                    await cp.call(stop)
            transactions = read(db_url, storage.transactions, "CP1")
            assert len(transactions) == 1
            tx = transactions[0]
            assert (tx["meter_start"], tx["meter_stop"], tx["stop_reason"]) == (
                1000,
                1500,
                "EVDisconnected",
            )
            meter = read(db_url, storage.meter_value_samples, None, first.transaction_id)
            assert len(meter) == 11
            assert {m["phase"] for m in meter} >= {"L1", "L2", "L3", "N", "L1-N"}
            connectors = await setup(cs, storage.list_connectors, "CP1")
            assert connectors[0]["status"] == "Preparing"

    run(scenario())


def test_meter_values_for_another_station_s_transaction_are_linked_to_none(db_url):
    # As a StopTransaction's transactionData: an id this station did not start here (another
    # station's, or an earlier central system's) must not add to that transaction's values
    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            async with station(cs, "CP_A") as a, station(cs, "CP_B") as b:
                await a.call(BOOT)
                await b.call(BOOT)
                theirs = (await a.call(call.StartTransaction(1, "T", 0, T0))).transaction_id
                own = (await b.call(call.StartTransaction(1, "T", 0, T0))).transaction_id
                for transaction, value in ((theirs, "999"), (own, "5")):
                    values = [{"timestamp": T0, "sampledValue": [{"value": value}]}]
                    await b.call(call.MeterValues(1, values, transaction))
            assert read(db_url, storage.meter_value_samples, None, theirs) == []
            samples = read(db_url, storage.meter_value_samples, "CP_B")
            assert {s["value"]: s["transaction_id"] for s in samples} == {"999": None, "5": own}

    run(scenario())


def test_queued_commands_reach_a_station_when_it_returns(db_url):
    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            await setup(cs, storage.add_station, "CP1")
            reset = await setup(cs, storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60)
            stale = await setup(cs, storage.enqueue_command, "CP1", "Reset", {"type": "Hard"}, -1)
            config = await setup(cs, storage.enqueue_command, "CP1", "GetConfiguration", {}, 60)
            async with station(cs, "CP1") as cp:
                await cp.call(BOOT)

                async def answered():
                    rows = await setup(cs, storage.list_commands, "CP1")
                    return all(r["state"] in ("answered", "expired", "failed") for r in rows)

                await wait_for(answered)
                assert [name for name, _ in cp.received] == ["Reset", "GetConfiguration"]
                assert cp.received[0][1] == {"type": "Soft"}
            states = {r["id"]: r for r in await setup(cs, storage.list_commands, "CP1")}
            assert states[reset]["state"] == "answered"
            assert json.loads(states[reset]["response"]) == {"status": "Accepted"}
            assert states[stale]["state"] == "expired"
            assert json.loads(states[config]["response"])["configurationKey"][0]["value"] == "300"

    run(scenario())


def test_a_command_the_station_rejects_is_failed_with_its_error(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            async with station(cs, "CP1") as cp:
                await cp.call(BOOT)
                command = await setup(
                    cs, storage.enqueue_command, "CP1", "UnlockConnector", {"connectorId": 1}, 60
                )

                async def done():
                    row = await setup(cs, storage.get_command, command)
                    return row["state"] not in ("queued", "sent")

                await wait_for(done)
                row = await setup(cs, storage.get_command, command)
                assert row["state"] == "failed"
                assert "NotImplemented" in row["error"]

    run(scenario())


def test_bad_input_gets_the_right_callerror_or_close_code(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept", max_message=4096) as cs:
            async with station(cs, "GOOD") as good:
                await good.call(BOOT)
                ws = await raw(cs)
                assert (await exchange(ws, "{not json"))[:3] == [4, "-1", "FormationViolation"]
                assert (await exchange(ws, '{"a": 1}'))[2] == "ProtocolError"
                assert (await exchange(ws, '[2, "u1"]'))[:3] == [4, "u1", "ProtocolError"]
                float_type = '[2.0, "u1f", "Heartbeat", {}]'  # MessageTypeId is an integer
                assert (await exchange(ws, float_type))[:3] == [4, "u1f", "ProtocolError"]
                await ws.send('[3, "r1"]')  # a broken reply: no CALLERROR (answers a CALL only)
                before = await exchange(ws, '[2, "u2", "Heartbeat", {}]')
                assert before[:3] == [4, "u2", "SecurityError"]
                invalid_boot = '[2, "u3", "BootNotification", {"chargePointVendor": "V"}]'
                answer = await exchange(ws, invalid_boot)
                assert answer[:3] == [4, "u3", "OccurenceConstraintViolation"]
                assert "chargePointModel" in answer[3]
                boot = '[2, "u4", "BootNotification", {"chargePointVendor": "V", '
                assert (await exchange(ws, boot + '"chargePointModel": "M"}]'))[0] == 3
                wrong_type = '[2, "u5", "StatusNotification", {"connectorId": "one", '
                answer = await exchange(
                    ws, wrong_type + '"errorCode": "NoError", "status": "Available"}]'
                )
                assert answer[:3] == [4, "u5", "TypeConstraintViolation"]
                assert "connectorId" in answer[3]
                bad_enum = '[2, "u6", "StatusNotification", {"connectorId": 1, '
                answer = await exchange(ws, bad_enum + '"errorCode": "NoError", "status": "X"}]')
                assert answer[:3] == [4, "u6", "PropertyConstraintViolation"]
                assert (await exchange(ws, '[2, "u7", "Fly", {}]'))[2] == "NotImplemented"
                assert (await exchange(ws, '[2, "u8", "Reset", {}]'))[2] == "NotSupported"
                # a response's schema is no action (OCPP-J: NotImplemented, "not known")
                assert (await exchange(ws, '[2, "u9", "ResetResponse", {}]'))[2] == "NotImplemented"
                await ws.send("x" * 5000)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1009

                ws = await raw(cs, "RAW2")
                await ws.send(b"\x00binary")
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1003

                ws = await raw(cs, "RAW3", subprotocols=("ocpp2.0.1",))
                assert ws.subprotocol is None
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.close_code == 1002

                assert (await good.call(call.Heartbeat())).current_time  # unaffected
            log = await setup(cs, storage.search_messages, "RAW", None, None, "{not json")
            assert len(log) == 1 and log[0]["direction"] == "in"

    run(scenario())


def test_basic_auth_keys_are_checked_and_stored_hashed(sqlite_url, caplog):
    caplog.set_level(logging.INFO, "evse.cs")

    async def scenario():
        async with central_system(sqlite_url) as cs:
            key = "0123456789abcdef0123"
            await setup(cs, storage.add_station, "SECURE")
            await setup(cs, storage.set_station, "SECURE", security_profile=1, auth_key=key)
            row = await setup(cs, storage.get_station, "SECURE")
            assert key not in json.dumps(row)
            for wrong in (None, "not-the-key-at-all"):
                assert await refusal(cs, "SECURE", auth_key=wrong) == 401
            # the station is named: its key is what the operator has to fix
            assert "refused SECURE from 127.0.0.1: 401 Basic authentication failed" in caplog.text
            async with station(cs, "SECURE", auth_key=key) as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
            token = base64.b64encode(f"SECURE:{key}".encode()).decode()
            async with websockets.connect(  # the scheme's name in any case (RFC 7235)
                f"ws://127.0.0.1:{cs.port}/ocpp/SECURE",
                subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                additional_headers={"Authorization": f"basic {token}"},
            ) as ws:
                assert ws.subprotocol == "ocpp1.6"
            await setup(cs, storage.set_station, "SECURE", security_profile=2)
            assert await refusal(cs, "SECURE", auth_key=key) == 403  # profile 2 needs TLS
            assert (
                "refused SECURE from 127.0.0.1: 403 Security profile 2 requires TLS" in caplog.text
            )

    run(scenario())


def stored_rows(db):
    """Every row of the frame log and the command queue, as stored."""
    return db.all("SELECT * FROM messages") + db.all("SELECT * FROM commands")


def test_a_new_authorization_key_is_taken_and_never_shown(sqlite_url):
    """The security whitepaper's key change: ChangeConfiguration of AuthorizationKey."""

    async def scenario():
        async with central_system(sqlite_url) as cs:
            old, new = "0123456789abcdef0123", "fedcba9876543210fedc"
            frames = []
            cs.listeners.append(lambda kind, station_id, text: frames.append(text))
            await setup(cs, storage.add_station, "SECURE")
            await setup(cs, storage.set_station, "SECURE", security_profile=1, auth_key=old)
            async with station(cs, "SECURE", auth_key=old) as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
                change = {"key": "AuthorizationKey", "value": new}
                command = await setup(
                    cs, storage.enqueue_command, "SECURE", "ChangeConfiguration", change, 60
                )
                assert new not in json.dumps(await setup(cs, storage.get_command, command))

                await command_reaches(cs, command, "answered")
                assert cp.received[-1] == ("ChangeConfiguration", change)
            assert await refusal(cs, "SECURE", auth_key=old) == 401
            async with station(cs, "SECURE", auth_key=new) as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
            await cs.store.flush()
            assert new not in json.dumps([frames, read(sqlite_url, stored_rows)])

    run(scenario())


def test_a_security_profile_the_station_takes_is_taken(sqlite_url):
    """The security whitepaper's upgrade: the key first, then ChangeConfiguration of
    SecurityProfile; from its next connection the station must authenticate."""

    async def scenario():
        async with central_system(sqlite_url) as cs:
            key = "0123456789abcdef0123"
            await setup(cs, storage.add_station, "UPGRADE")
            await setup(cs, storage.set_station, "UPGRADE", auth_key=key)  # profile 0 still
            async with station(cs, "UPGRADE") as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
                change = {"key": "SecurityProfile", "value": "1"}
                command = await setup(
                    cs, storage.enqueue_command, "UPGRADE", "ChangeConfiguration", change, 60
                )

                await command_reaches(cs, command, "answered")
            assert (await setup(cs, storage.get_station, "UPGRADE"))["security_profile"] == 1
            assert await refusal(cs, "UPGRADE") == 401
            async with station(cs, "UPGRADE", auth_key=key) as cp:
                assert (await cp.call(BOOT)).status == "Accepted"

    run(scenario())


@pytest.mark.parametrize(
    ("profile", "key", "problem"),
    [
        ("2", "0123456789abcdef0123", "at profile 2 the station connects with TLS, and this"),
        ("3", "0123456789abcdef0123", "at profile 3 the station connects with TLS, and this"),
        ("1", None, "at profile 1 the station shows its AuthorizationKey, and none is set here"),
    ],
)
def test_a_security_profile_that_would_lock_the_station_out_is_not_sent(
    sqlite_url, profile, key, problem
):
    """A station takes a new SecurityProfile for good: one this server could not let in (no
    TLS here, no key here) would stay out until someone reconfigured it on site."""

    async def scenario():
        async with central_system(sqlite_url) as cs:
            await setup(cs, storage.add_station, "KEEP")
            await setup(cs, storage.set_station, "KEEP", auth_key=key)  # profile 0 still
            async with station(cs, "KEEP") as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
                change = {"key": "SecurityProfile", "value": profile}
                command = await setup(
                    cs, storage.enqueue_command, "KEEP", "ChangeConfiguration", change, 60
                )
                failed = await command_reaches(cs, command, "failed")
                assert failed["error"].startswith(f"not sent: {problem}")
                assert failed["sent_at"] is None and cp.received == []
            assert (await setup(cs, storage.get_station, "KEEP"))["security_profile"] == 0
            assert await connects(cs, "KEEP")

    run(scenario())


async def changed_at_reboot(cs, station_id, change, auth_key=None):
    """The station connects and answers ChangeConfiguration `change` RebootRequired."""
    async with station(cs, station_id, auth_key=auth_key) as cp:
        assert (await cp.call(BOOT)).status == "Accepted"
        cp.configuration_status = "RebootRequired"
        command = await setup(
            cs, storage.enqueue_command, station_id, "ChangeConfiguration", change, 60
        )
        await command_reaches(cs, command, "answered")


async def connects(cs, station_id, auth_key=None):
    async with station(cs, station_id, auth_key=auth_key) as cp:
        return (await cp.call(BOOT)).status == "Accepted"


def listed(url, capsys):
    """`evse cs stations --json`: the operator's view of the stations."""
    assert main(["cs", "stations", "--json", "--db", url]) == 0
    return {row["id"]: row for row in json.loads(capsys.readouterr().out)}


def test_a_key_the_station_takes_at_its_reboot_is_pending_until_it_connects_with_it(
    sqlite_url, caplog, capsys
):
    """A station that answers RebootRequired to a new AuthorizationKey uses its old key until
    its reboot, the new one after: both let it in until the new one does, then only that."""
    caplog.set_level(logging.INFO, "evse.cs")

    async def scenario():
        async with central_system(sqlite_url) as cs:
            old, new = "0123456789abcdef0123", "fedcba9876543210fedc"
            await setup(cs, storage.add_station, "SECURE")
            await setup(cs, storage.set_station, "SECURE", security_profile=1, auth_key=old)
            await changed_at_reboot(cs, "SECURE", {"key": "AuthorizationKey", "value": new}, old)
            await cs.store.flush()
            shown = listed(sqlite_url, capsys)["SECURE"]
            assert shown["auth_key_pending"] is True and shown["pending_security_profile"] is None
            assert new not in json.dumps([shown, read(sqlite_url, stored_rows)])
            assert await connects(cs, "SECURE", old)  # not rebooted yet
            assert await connects(cs, "SECURE", new)  # rebooted: the new key is its own
            assert await refusal(cs, "SECURE", auth_key=old) == 401
            assert await connects(cs, "SECURE", new)
            assert "SECURE: connected with its pending security settings" in caplog.text
            assert new not in caplog.text
            await cs.store.flush()
            assert listed(sqlite_url, capsys)["SECURE"]["auth_key_pending"] is False

    run(scenario())


def test_a_security_profile_the_station_takes_at_its_reboot_is_pending(sqlite_url, capsys):
    """Raised from 0 to 1 with RebootRequired: the station connects without its key until
    its reboot, with it after; then it must."""

    async def scenario():
        async with central_system(sqlite_url) as cs:
            key = "0123456789abcdef0123"
            await setup(cs, storage.add_station, "UPGRADE")
            await setup(cs, storage.set_station, "UPGRADE", auth_key=key)  # profile 0 still
            await changed_at_reboot(cs, "UPGRADE", {"key": "SecurityProfile", "value": "1"})
            await cs.store.flush()
            shown = listed(sqlite_url, capsys)["UPGRADE"]
            assert (shown["security_profile"], shown["pending_security_profile"]) == (0, 1)
            assert await connects(cs, "UPGRADE")  # not rebooted yet
            assert await connects(cs, "UPGRADE", key)  # rebooted: profile 1
            assert await refusal(cs, "UPGRADE") == 401
            await cs.store.flush()
            shown = listed(sqlite_url, capsys)["UPGRADE"]
            assert (shown["security_profile"], shown["pending_security_profile"]) == (1, None)

    run(scenario())


def test_a_key_and_a_profile_pending_together_are_taken_together(sqlite_url):
    """The whitepaper's upgrade with a station that takes both at its reboot: the new key
    and profile 1, neither alone (the old key with profile 1, or the new one with none)."""

    async def scenario():
        async with central_system(sqlite_url) as cs:
            old, new = "0123456789abcdef0123", "fedcba9876543210fedc"
            await setup(cs, storage.add_station, "BOTH")
            await setup(cs, storage.set_station, "BOTH", auth_key=old)  # profile 0 still
            await setup(cs, storage.set_station, "BOTH", pending_security_profile=1)
            await setup(cs, storage.set_station, "BOTH", pending_auth_key=new)
            assert await connects(cs, "BOTH", old)  # profile 0: let in, nothing taken
            row = await setup(cs, storage.get_station, "BOTH")
            assert row["pending_security_profile"] == 1 and row["pending_auth_hash"]
            assert await connects(cs, "BOTH", new)
            assert await refusal(cs, "BOTH", auth_key=old) == 401
            assert await refusal(cs, "BOTH") == 401

    run(scenario())


def test_a_lower_profile_pending_is_never_taken_from_a_connection(sqlite_url):
    """The whitepaper: a station rejects a lower SecurityProfile. One that answers
    RebootRequired to 0 anyway must not let anyone connect as it without its key (and so
    lower its profile for good), nor have a lower profile made current with a pending key."""

    async def scenario():
        async with central_system(sqlite_url) as cs:
            old, new = "0123456789abcdef0123", "fedcba9876543210fedc"
            await setup(cs, storage.add_station, "DOWN")
            await setup(cs, storage.set_station, "DOWN", security_profile=1, auth_key=old)
            await changed_at_reboot(cs, "DOWN", {"key": "SecurityProfile", "value": "0"}, old)
            assert await refusal(cs, "DOWN") == 401  # no key: an attacker
            await setup(cs, storage.set_station, "DOWN", pending_auth_key=new)
            assert await connects(cs, "DOWN", new)  # the new key is taken, not profile 0
            assert await refusal(cs, "DOWN") == 401
            await cs.store.flush()
            assert (await setup(cs, storage.get_station, "DOWN"))["security_profile"] == 1

    run(scenario())


def test_a_key_pending_at_profile_0_is_not_taken_by_a_connection_that_shows_no_key(sqlite_url):
    """At profile 0 a connection shows no key, so it does not make a pending key current:
    the station that has not rebooted still has its old key when raised to profile 1."""

    async def scenario():
        async with central_system(sqlite_url) as cs:
            old, new = "0123456789abcdef0123", "fedcba9876543210fedc"
            await setup(cs, storage.add_station, "ZERO")
            await setup(cs, storage.set_station, "ZERO", auth_key=old)  # profile 0 still
            await changed_at_reboot(cs, "ZERO", {"key": "AuthorizationKey", "value": new})
            assert await connects(cs, "ZERO")  # not rebooted: profile 0, its old key
            change = {"key": "SecurityProfile", "value": "1"}
            async with station(cs, "ZERO") as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
                command = await setup(
                    cs, storage.enqueue_command, "ZERO", "ChangeConfiguration", change, 60
                )
                await command_reaches(cs, command, "answered")
            assert await connects(cs, "ZERO", old)  # profile 1, still not rebooted
            assert await connects(cs, "ZERO", new)  # rebooted: the new key is its own
            assert await refusal(cs, "ZERO", auth_key=old) == 401

    run(scenario())


@pytest.mark.parametrize("lost_with", ["connection", "server"])
def test_a_key_change_whose_answer_never_came_is_pending(sqlite_url, lost_with):
    """The station got the new key and its answer never came: the connection dropped (a
    mobile network) or the central system stopped. It may have taken the key (our firmware
    then connects again with it at once), or not: it was locked out (401) with the key the
    operator had just given it. Now either key lets it in until the new one does."""

    async def scenario():
        old, new = "0123456789abcdef0123", "fedcba9876543210fedc"
        change = {"key": "AuthorizationKey", "value": new}
        async with central_system(sqlite_url) as cs:
            await setup(cs, storage.add_station, "LOST")
            await setup(cs, storage.set_station, "LOST", security_profile=1, auth_key=old)
            auth = {"Authorization": websocket.basic_auth("LOST", old)}
            ws = await raw(cs, "LOST", additional_headers=auth)
            assert (await exchange(ws, RAW_BOOT))[2]["status"] == "Accepted"
            command = await setup(
                cs, storage.enqueue_command, "LOST", "ChangeConfiguration", change, 60
            )
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[2] == "ChangeConfiguration"
            if lost_with == "connection":
                await ws.close()
                await command_reaches(cs, command, "failed")
        async with central_system(sqlite_url) as cs:
            assert (await setup(cs, storage.get_command, command))["state"] == "failed"
            assert await connects(cs, "LOST", old)  # it did not take the key, after all
            assert await connects(cs, "LOST", new)  # it did
            assert await refusal(cs, "LOST", auth_key=old) == 401

    run(scenario())


def test_a_vanished_station_shows_offline_within_two_ping_intervals(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept", ping_interval_s=0.5) as cs:
            async with station(cs, "GHOST") as cp:
                await cp.call(BOOT)

                async def online():
                    return (await setup(cs, storage.get_station, "GHOST"))["online"] == 1

                await wait_for(online)
                cp._connection.transport.pause_reading()  # stops answering pings
                start = asyncio.get_running_loop().time()

                async def offline():
                    return (await setup(cs, storage.get_station, "GHOST"))["online"] == 0

                paused_at = now_iso()
                await wait_for(offline, timeout=3)
                assert asyncio.get_running_loop().time() - start < 2 * 0.5 + 0.5
                assert "GHOST" not in cs.sessions
                # last seen when last heard, not when dropped (0.75 s or more later)
                last_seen = (await setup(cs, storage.get_station, "GHOST"))["last_seen"]
                assert last_seen <= paused_at
                cp._connection.transport.abort()  # the client side would wait to close

    run(scenario())


def test_last_seen_follows_any_message_without_heartbeats(sqlite_url):
    # A JSON station need not send Heartbeats (OCPP 1.6 4.6) while it sends other messages
    async def scenario():
        async with central_system(sqlite_url, unknown="accept", ping_interval_s=0.5) as cs:
            async with station(cs, "BUSY") as cp:
                await cp.call(BOOT)
                before = now_iso()

                async def seen():  # busy all along: never silent long enough for a ping
                    await cp.call(call.StatusNotification(1, "NoError", "Available"))
                    station = await setup(cs, storage.get_station, "BUSY")
                    return station["last_seen"] > before

                await wait_for(seen, timeout=3)

    run(scenario())


def test_restart_keeps_everything(db_url):
    async def first_run():
        async with central_system(db_url, unknown="accept") as cs:
            await setup(cs, storage.set_id_tag, "TAG1")
            async with station(cs, "CP1") as cp:
                await cp.call(BOOT)
                start = await cp.call(call.StartTransaction(1, "TAG1", 10, T0))
                values = [{"timestamp": T0, "sampledValue": sampled(3)}]
                await cp.call(call.MeterValues(1, values, start.transaction_id))
            await setup(cs, storage.enqueue_command, "CP1", "Reset", {"type": "Hard"}, 60)
            return start.transaction_id

    async def second_run(transaction_id):
        async with central_system(db_url, unknown="reject") as cs:
            assert [t["id"] for t in read(db_url, storage.transactions)] == [transaction_id]
            assert len(read(db_url, storage.meter_value_samples)) == 3
            assert [t["id_tag"] for t in await setup(cs, storage.list_id_tags)] == ["TAG1"]
            assert len(await setup(cs, storage.search_messages, "CP1")) >= 6
            async with station(cs, "CP1") as cp:
                # Accepted before the restart: no new BootNotification needed.
                assert (await cp.call(call.Heartbeat())).current_time
                await wait_for(lambda: cp.received)
                assert cp.received == [("Reset", {"type": "Hard"})]
                stop = await cp.call(call.StopTransaction(20, T0, transaction_id, id_tag="TAG1"))
                assert stop.id_tag_info["status"] == "Accepted"

    transaction_id = run(first_run())
    run(second_run(transaction_id))


def test_a_reconnecting_station_replaces_its_old_connection(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            async with station(cs, "CP1") as old:
                await old.call(BOOT)
                async with station(cs, "CP1") as new:
                    # Accepted before: the new connection may go on without a new boot.
                    assert (await new.call(call.Heartbeat())).current_time
                    await wait_for(lambda: old._connection.close_code is not None)
                    assert old._connection.close_code == 1001
                    assert (await new.call(call.Heartbeat())).current_time
                    assert len(cs.sessions) == 1
            assert (await setup(cs, storage.get_station, "CP1"))["registration"] == "Accepted"

    run(scenario())


def test_a_station_the_operator_rejects_is_disconnected_at_once(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            async with station(cs, "ROGUE") as cp:
                assert (await cp.call(BOOT)).status == "Accepted"
                await setup(cs, storage.set_station, "ROGUE", approval="rejected")
                await wait_for(lambda: cp._connection.close_code is not None)
                assert cp._connection.close_code == 1008
                await wait_for(lambda: "ROGUE" not in cs.sessions)
            assert await refusal(cs, "ROGUE") == 403

    run(scenario())


def test_websocket_framing_fragments_pings_and_limits(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept", max_message=4096) as cs:
            ws = await raw(cs, "FRAMES")
            boot = (
                '[2, "b1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]'
            )
            await ws.send([boot[:10], boot[10:40], boot[40:]])  # one message in three frames
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[:2] == [3, "b1"]
            await asyncio.wait_for(await ws.ping(b"hello"), 5)  # answered with a pong
            assert (await exchange(ws, '[2, "h1", "Heartbeat", {}]'))[:2] == [3, "h1"]
            await ws.send(["x" * 3000, "x" * 3000])  # each frame fits, the message does not
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009
            await wait_for(lambda: "FRAMES" not in cs.sessions)

            ws = await raw(cs, "FRAMES")  # a normal close: the server answers and hangs up
            await asyncio.wait_for(ws.close(), 5)
            assert ws.close_code == 1000
            await wait_for(lambda: "FRAMES" not in cs.sessions)

    run(scenario())


async def raw_tcp(cs, station_id):
    """A station of raw bytes on TCP, for frames no WebSocket client sends: (reader, writer)
    once the server has answered 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", cs.port)
    key = websocket.new_key(os.urandom(16))
    writer.write(websocket.handshake_request(f"127.0.0.1:{cs.port}", f"/ocpp/{station_id}", key))
    websocket.check_handshake_response(
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5), key
    )
    return reader, writer


def client_frame(opcode, payload, fin=True):
    return websocket.encode_frame(opcode, payload, b"\x01\x02\x03\x04", fin)


async def server_frames(reader, count=None):
    """The server's frames, as (opcode, value), until `count` of them or the end of the
    connection."""
    frames, events = websocket.FrameReader(1 << 20), []
    while count is None or len(events) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            break
        events += frames.feed(data)
    return events


def test_a_message_in_thousands_of_fragments_costs_no_more_than_its_bytes(sqlite_url):
    """The size so far of a fragmented message was summed over its fragments at each frame:
    25,000 empty continuation frames (150 kB) held the event loop, and every station, for
    many seconds."""

    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            reader, writer = await raw_tcp(cs, "FRAGS")
            heartbeat = '[2, "h", "Heartbeat", {}]'
            empty = client_frame(OP_CONTINUATION, b"", fin=False)
            started = asyncio.get_running_loop().time()
            writer.write(
                client_frame(OP_TEXT, heartbeat[:5], fin=False)
                + empty * 25_000
                + client_frame(OP_CONTINUATION, heartbeat[5:])
            )
            ((opcode, answer),) = await server_frames(reader, 1)
            assert json.loads(answer)[:2] == [4, "h"]  # SecurityError: no boot yet
            assert asyncio.get_running_loop().time() - started < 3
            writer.close()

    run(scenario())


def test_a_station_sending_faster_than_the_database_stores_is_not_read_meanwhile(
    sqlite_url, monkeypatch
):
    """Every frame is logged, and the server read on whatever the database process's
    backlog: one station (any, with --unknown pending) sending 100 kB frames while reading
    the CALLERRORs grew the server by about 25 MB a second. It is read on once the
    database process has caught up."""
    monkeypatch.setattr(store_module, "BACKLOG_HIGH", 1 << 20, raising=False)
    monkeypatch.setattr(store_module, "BACKLOG_LOW", 256 << 10, raising=False)

    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            reader, writer = await raw_tcp(cs, "FLOOD")
            writer.write(client_frame(OP_TEXT, RAW_BOOT))
            ((_, answer),) = await server_frames(reader, 1)
            assert json.loads(answer)[2]["status"] == "Accepted"
            answers: list[str] = []

            async def read_answers():
                frames = websocket.FrameReader(1 << 20)
                while data := await reader.read(65536):
                    answers.extend(value for _, value in frames.feed(data))

            reading = asyncio.create_task(read_answers())
            database = cs.store._process
            database.send_signal(signal.SIGSTOP)  # a database process far behind
            try:
                writer.write(client_frame(OP_TEXT, b"x" * 100_000) * 480)  # 48 MB, not JSON
                backlog = cs.store._transport.get_write_buffer_size
                flooding = cs.sessions["FLOOD"].transport
                # once the server stops reading the station, what it let in stays as it is
                await wait_for(lambda: not flooding.is_reading())
                assert 1 << 20 <= backlog() < 4 << 20  # not 30+ MB
            finally:
                database.send_signal(signal.SIGCONT)
            await asyncio.wait_for(writer.drain(), 30)  # read on
            writer.write(client_frame(OP_TEXT, '[2, "h", "Heartbeat", {}]'))
            await wait_for(lambda: any(a.startswith('[3,"h"') for a in answers), 30)
            assert sum(a.startswith('[4,"-1"') for a in answers) == 480
            writer.close()
            reading.cancel()

    run(scenario(), 90)


def test_a_ping_between_fragments_is_no_part_of_the_message(sqlite_url):
    """RFC 6455 5.4: control frames may come in the middle of a fragmented message; a ping
    there was counted in the message's size, which then passed max_message (1009)."""

    async def scenario():
        async with central_system(sqlite_url, unknown="accept", max_message=4096) as cs:
            reader, writer = await raw_tcp(cs, "PING")
            writer.write(
                client_frame(OP_TEXT, "x" * 4000, fin=False)
                + client_frame(OP_PING, "p" * 100)
                + client_frame(OP_CONTINUATION, "x" * 90)  # 4090 bytes in all
            )
            (pong, answer) = await server_frames(reader, 2)
            assert pong == (OP_PONG, b"p" * 100)
            assert json.loads(answer[1])[2] == "FormationViolation"  # it came whole
            writer.close()

    run(scenario())


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        (
            client_frame(OP_TEXT, "[2,", fin=False) + client_frame(OP_BINARY, b"x"),
            "unexpected continuation or data frame",  # a data frame amid a message: not 1003
        ),
        (client_frame(OP_PING, "p" * 126), "control frames are unfragmented, at most 125 bytes"),
        (client_frame(OP_PING, "p", fin=False), "control frames are unfragmented, at most"),
        # its header is enough: it was read up to max_message first, then failed with 1009
        (client_frame(OP_PING, "p" * 5000)[:8], "control frames are unfragmented, at most"),
    ],
)
def test_a_protocol_error_in_a_frame_fails_the_connection_with_1002(sqlite_url, frames, reason):
    """RFC 6455 5.4 and 5.5: only control frames may come amid a fragmented message, and a
    control frame is unfragmented and at most 125 bytes."""

    async def scenario():
        async with central_system(sqlite_url, unknown="accept", max_message=4096) as cs:
            reader, writer = await raw_tcp(cs, "BROKEN")
            writer.write(frames)
            ((opcode, (code, text)),) = await server_frames(reader)
            assert (opcode, code) == (OP_CLOSE, 1002) and text.startswith(reason)
            writer.close()

    run(scenario())


def close_body(code, reason=b""):
    return code.to_bytes(2, "big") + reason


def test_a_close_frame_is_echoed_only_when_valid(sqlite_url):
    """RFC 6455 5.5.1 and 7.4: a close body is empty or a code and a UTF-8 reason; 1005 and
    1006 are never sent, nor codes outside 1000-1014 and 3000-4999. The server echoed any
    code (and a 1-byte body) back instead of failing the connection."""
    cases = [
        (b"", (websocket.CLOSE_NO_STATUS, "")),  # an empty close is answered empty
        (close_body(1000, b"bye"), (1000, "")),
        (close_body(4321), (4321, "")),
        (b"\x03", (1002, "invalid close code or length")),
        *(
            (close_body(code), (1002, "invalid close code or length"))
            for code in (999, 1004, 1005, 1006, 1015, 2999, 5000, 65535)
        ),
        (close_body(1000, b"\xff"), (1007, "close reasons are UTF-8")),
    ]

    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            good = await booted(cs, "GOOD")
            for body, answer in cases:
                reader, writer = await raw_tcp(cs, "CLOSER")
                writer.write(client_frame(OP_CLOSE, body))
                assert await server_frames(reader) == [(OP_CLOSE, answer)], body
                writer.close()
            assert (await exchange(good, '[2, "h", "Heartbeat", {}]'))[:2] == [3, "h"]
            await good.close()

    run(scenario())


def drop_table(db, table):
    db.execute(f"DROP TABLE {table}")


def test_a_failing_database_step_is_an_internal_error_for_that_message_only(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            ws = await booted(cs)
            await cs.store.call(drop_table, "id_tags")  # Authorize reads it
            answer = await exchange(ws, '[2, "a", "Authorize", {"idTag": "TAG"}]')
            assert answer[:3] == [4, "a", "InternalError"]
            assert (await exchange(ws, '[2, "h", "Heartbeat", {}]'))[:2] == [3, "h"]
            await ws.close()

    run(scenario())


def test_a_message_whose_rows_fail_is_not_answered_as_stored(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            ws = await booted(cs)
            await cs.store.call(drop_table, "status_history")  # a StatusNotification's 2nd row
            status = (
                '[2, "s", "StatusNotification", {"connectorId": 1, "errorCode": "NoError",'
                ' "status": "Charging"}]'
            )
            meter = (
                '[2, "m", "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp":'
                ' "2026-11-26T10:00:00Z", "sampledValue": [{"value": "5"}]}]}]'
            )
            await ws.send(status)  # both in one batch, most likely
            await ws.send(meter)
            answers = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            assert sorted(a[:3] for a in answers) == [[3, "m", {}], [4, "s", "InternalError"]]
            assert await setup(cs, storage.list_connectors) == []  # none of its rows kept
            (sample,) = read(sqlite_url, storage.meter_value_samples, "CP1")
            assert sample["value"] == "5"
            await ws.close()

    run(scenario())


def test_a_command_its_connection_lost_before_sending_waits_for_the_next(sqlite_url):
    """Marked sent, then the station reconnected before the frame went out: the command
    was never sent, so the new connection gets it (it is not failed)."""

    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            held, release = asyncio.Event(), asyncio.Event()
            call = cs.store.call

            async def hold_after_sent_mark(fn, *args, **kwargs):
                result = await call(fn, *args, **kwargs)
                if fn is storage.take_command and not release.is_set():
                    held.set()
                    await release.wait()
                return result

            cs.store.call = hold_after_sent_mark  # type: ignore[method-assign]
            await booted(cs)
            first = cs.sessions["CP1"]
            command = await call(storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60)
            await asyncio.wait_for(held.wait(), 5)
            new = await raw(cs, "CP1")  # replaces the old connection
            await wait_for(lambda: cs.sessions["CP1"] is not first and not first.open)
            release.set()
            reset = json.loads(await asyncio.wait_for(new.recv(), 5))
            assert reset[:3] == [2, reset[1], "Reset"]
            await new.send(json.dumps([3, reset[1], {"status": "Accepted"}]))

            await command_reaches(cs, command, "answered")
            await new.close()

    run(scenario())


def test_a_command_left_sent_by_a_stopped_server_is_failed_at_the_next_start(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            command = await setup(cs, storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60)
            await setup(cs, storage.mark_command, command, "sent", uid="u", sent_at="t")
        async with central_system(sqlite_url, unknown="accept") as cs:
            row = await setup(cs, storage.get_command, command)
            assert (row["state"], row["error"]) == (
                "failed",
                "no answer: the central system stopped before it came",
            )

    run(scenario())


@pytest.mark.parametrize(
    "path, station_id",
    [
        ("/ocpp/CP%20%231", "CP #1"),
        ("/ocpp/CP1?x=1", "CP1"),
        ("/ocpp/" + "C" * 48, "C" * 48),
        ("/ocpp/" + "C" * 49, None),
        ("/ocpp/", None),
        ("/ocpp/a%2Fb", None),
        ("/ocpp/CP:1", None),  # Basic auth's user name cannot hold it
        ("/ocpp/a%0Ab", None),  # a forged log line
        ("/ocpp/x%00y", None),
        ("/ocpp/%E2%80%AECP1", None),  # right-to-left override: a lookalike name
        ("/other/CP1", None),
    ],
)
def test_station_ids_are_printable_ascii_as_ocpp_cistring(path, station_id):
    assert server.station_id_from_path(path) == station_id


def test_a_handshake_has_a_bounded_time_however_slowly_it_comes(sqlite_url, monkeypatch):
    monkeypatch.setattr(server, "OPEN_TIMEOUT_S", 0.5)

    async def scenario():
        async with central_system(sqlite_url) as cs:
            reader, writer = await asyncio.open_connection("127.0.0.1", cs.port)
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def trickle():  # a byte each 0.1 s: 2.6 s for the request line
                for byte in b"GET /ocpp/SLOW HTTP/1.1\r\n":
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.1)

            task = asyncio.create_task(trickle())
            assert await asyncio.wait_for(reader.read(), 5) == b""  # cut off, unanswered
            assert loop.time() - started < 2
            task.cancel()
            writer.close()

    run(scenario())


def test_a_command_that_expires_while_another_is_in_flight_is_not_sent(db_url):
    """The station answers the first command late: the second expired meanwhile (the
    operator was told so), and must not reach the station after all."""

    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            ws = await booted(cs)
            first = await setup(cs, storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60)
            later = await setup(cs, storage.enqueue_command, "CP1", "Reset", {"type": "Hard"}, 0.5)
            reset = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reset[2:] == ["Reset", {"type": "Soft"}]

            await command_reaches(cs, later, "expired")
            await ws.send(json.dumps([3, reset[1], {"status": "Accepted"}]))

            await command_reaches(cs, first, "answered")
            with pytest.raises(TimeoutError):  # nothing more comes
                await asyncio.wait_for(ws.recv(), 0.5)
            assert (await setup(cs, storage.get_command, later))["state"] == "expired"
            await ws.close()

    run(scenario())


def test_commands_keep_their_order_when_the_station_reconnects_while_one_goes_out(sqlite_url):
    """The first command was taken for sending, then the station reconnected before the
    frame went out: it goes to the new connection, still before the second."""

    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            held, release = asyncio.Event(), asyncio.Event()
            call = cs.store.call
            polls = [0]  # the command queue's polls done (rejected_online is each one's last)

            async def hold_the_first_take(fn, *args, **kwargs):
                result = await call(fn, *args, **kwargs)
                if fn is storage.take_command and not held.is_set():
                    held.set()
                    await release.wait()
                if fn is storage.rejected_online:
                    polls[0] += 1
                return result

            cs.store.call = hold_the_first_take  # type: ignore[method-assign]
            await booted(cs)
            first = cs.sessions["CP1"]
            await call(storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60)
            await call(storage.enqueue_command, "CP1", "Reset", {"type": "Hard"}, 60)
            await asyncio.wait_for(held.wait(), 5)
            new = await raw(cs, "CP1")  # replaces the old connection
            await wait_for(lambda: cs.sessions["CP1"] is not first and not first.open)
            since = polls[0]
            await wait_for(lambda: polls[0] >= since + 2)  # a whole poll with the new one
            release.set()
            for expected in ("Soft", "Hard"):
                reset = json.loads(await asyncio.wait_for(new.recv(), 5))
                assert reset[2:] == ["Reset", {"type": expected}]
                await new.send(json.dumps([3, reset[1], {"status": "Accepted"}]))
            await new.close()

    run(scenario())


def test_integers_beyond_32_bits_are_stored_on_both_databases(db_url):
    """OCPP's integers have no bound: a transaction id from an earlier central system (its
    values are kept, linked to none), a reservation id an operator chose. SQLite keeps 64
    bits; PostgreSQL's INTEGER was 32."""

    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            ws = await booted(cs)
            big = 2**31 + 5
            start = {
                "connectorId": 1,
                "idTag": "TAG",
                "meterStart": 0,
                "timestamp": T0,
                "reservationId": big,
            }
            answer = await exchange(ws, json.dumps([2, "s", "StartTransaction", start]))
            assert answer[:2] == [3, "s"]
            meter = {
                "connectorId": 1,
                "transactionId": big,
                "meterValue": [{"timestamp": T0, "sampledValue": [{"value": "5"}]}],
            }
            assert await exchange(ws, json.dumps([2, "m", "MeterValues", meter])) == [3, "m", {}]
            await ws.close()
        (tx,) = read(db_url, storage.transactions)
        assert tx["reservation_id"] == big
        (sample,) = read(db_url, storage.meter_value_samples, "CP1")
        assert (sample["value"], sample["transaction_id"]) == ("5", None)

    run(scenario())


def test_integers_beyond_64_bits_are_invalid_values_not_internal_errors(sqlite_url):
    """orjson reads integers up to 2^64 - 1; from 2^63 the database could not store them:
    each was an InternalError (its batch then retried row by row)."""

    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            ws = await booted(cs)
            for connector in (2**63, 2**64 - 1):
                status = [
                    2,
                    "s",
                    "StatusNotification",
                    {"connectorId": connector, "errorCode": "NoError", "status": "Available"},
                ]
                answer = await exchange(ws, json.dumps(status))
                assert answer[:3] == [4, "s", "PropertyConstraintViolation"], answer
                assert "connectorId" in answer[3]
            meter = {
                "connectorId": 1,
                "transactionId": 2**64 - 1,
                "meterValue": [{"timestamp": T0, "sampledValue": [{"value": "1"}]}],
            }
            answer = await exchange(ws, json.dumps([2, "m", "MeterValues", meter]))
            assert answer[:3] == [4, "m", "PropertyConstraintViolation"]
            meter["transactionId"] = 2**63 - 1  # the largest there is: stored
            assert await exchange(ws, json.dumps([2, "m", "MeterValues", meter])) == [3, "m", {}]
            await ws.close()

    run(scenario())


def test_connector_ids_beyond_32_bits_are_stored_on_both_databases(db_url):
    """Within 64 bits an integer is valid (schemas): a connectorId past 2^31 was stored by
    SQLite and an InternalError on PostgreSQL, whose INTEGER is 32-bit."""

    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            ws = await booted(cs)
            big = 2**31 + 5
            status = {"connectorId": big, "errorCode": "NoError", "status": "Available"}
            answer = await exchange(ws, json.dumps([2, "s", "StatusNotification", status]))
            assert answer == [3, "s", {}]
            start = {"connectorId": big, "idTag": "TAG", "meterStart": 0, "timestamp": T0}
            answer = await exchange(ws, json.dumps([2, "t", "StartTransaction", start]))
            assert answer[:2] == [3, "t"]
            meter = {
                "connectorId": big,
                "transactionId": answer[2]["transactionId"],
                "meterValue": [{"timestamp": T0, "sampledValue": [{"value": "5"}]}],
            }
            assert await exchange(ws, json.dumps([2, "m", "MeterValues", meter])) == [3, "m", {}]
            await ws.close()
        (tx,) = read(db_url, storage.transactions)
        assert tx["connector_id"] == big
        (sample,) = read(db_url, storage.meter_value_samples, "CP1")
        assert (sample["connector_id"], sample["transaction_id"]) == (big, tx["id"])
        assert [c["connector_id"] for c in read(db_url, storage.list_connectors)] == [big]

    run(scenario())


def test_nul_characters_are_stored_on_both_databases(db_url):
    """PostgreSQL's text cannot hold U+0000 (SQLite's can): a station's string with one was
    an InternalError there, sent again for ever, and a frame holding a raw one (not JSON)
    lost its log row. PostgreSQL keeps the JSON escape `\\u0000` in its place, and finds
    it again when a lookup holds the character."""

    async def scenario():
        async with central_system(db_url, unknown="accept") as cs:
            await setup(cs, storage.set_id_tag, "T\x00G")
            ws = await booted(cs)
            status = {
                "connectorId": 1,
                "errorCode": "NoError",
                "status": "Available",
                "info": "lid\x00open",
            }
            answer = await exchange(ws, json.dumps([2, "s", "StatusNotification", status]))
            assert answer == [3, "s", {}]
            answer = await exchange(ws, json.dumps([2, "a", "Authorize", {"idTag": "t\x00g"}]))
            assert answer == [3, "a", {"idTagInfo": {"status": "Accepted"}}]
            start = {"connectorId": 1, "idTag": "T\x00G", "meterStart": 0, "timestamp": T0}
            answer = await exchange(ws, json.dumps([2, "t", "StartTransaction", start]))
            assert answer[:2] == [3, "t"] and answer[2]["idTagInfo"]["status"] == "Accepted"
            transfer = {"vendorId": "v\x00", "messageId": "m\x00", "data": "\x00"}
            answer = await exchange(ws, json.dumps([2, "d", "DataTransfer", transfer]))
            assert answer == [3, "d", {"status": "UnknownVendorId"}]
            bad = '[2, "x", "Heartbeat", {"a": "\x00"}]'  # a raw NUL: not JSON
            assert (await exchange(ws, bad))[:3] == [4, "-1", "FormationViolation"]
            await ws.close()
        nul = "\x00" if db_url.startswith("sqlite") else "\\u0000"
        (connector,) = read(db_url, storage.list_connectors)
        assert connector["info"] == f"lid{nul}open"
        (transaction,) = read(db_url, storage.transactions)
        assert transaction["id_tag"] == f"T{nul}G"
        (transfer,) = read(db_url, storage.list_notifications, "CP1")
        assert json.loads(transfer["payload"])["data"] == "\x00"  # JSON escapes it anyway
        logged = [row["text"] for row in read(db_url, storage.search_messages, "CP1")]
        assert bad.replace("\x00", nul) in logged

    run(scenario())


async def command_state(cs, command):
    row = await setup(cs, storage.get_command, command)
    return row["state"], row["error"]


def test_a_command_whose_answer_was_lost_is_failed_not_left_sent(sqlite_url, monkeypatch):
    """The database process died with the answer's record in flight (take_command committed,
    mark_command lost): the command was left sent until the next restart."""
    monkeypatch.setattr(commands, "LOST_MARGIN_S", 0)

    async def scenario():
        async with central_system(sqlite_url, unknown="accept", command_timeout_s=0.5) as cs:
            call, lost = cs.store.call, asyncio.Event()

            async def losing_the_answer(fn, *args, **kwargs):
                if fn is storage.mark_command and args[1] == "answered" and not lost.is_set():
                    lost.set()  # as the store fails what a dying database process held
                    raise storage.StorageError(ENDED)
                return await call(fn, *args, **kwargs)

            cs.store.call = losing_the_answer  # type: ignore[method-assign]
            ws = await booted(cs)
            command = await call(storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60)
            reset = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(json.dumps([3, reset[1], {"status": "Accepted"}]))
            await asyncio.wait_for(lost.wait(), 5)

            row = await command_reaches(cs, command, "failed")
            assert row["error"] == storage.ANSWER_LOST
            await ws.close()

    run(scenario())


def test_a_command_left_sent_after_the_restart_cleanup_is_failed_not_left_sent(db_url, monkeypatch):
    """After a kill -9, the old database process may commit its last batch (a command marked
    sent) after the new server failed the commands left sent (storage.after_restart)."""
    monkeypatch.setattr(commands, "LOST_MARGIN_S", 0)

    async def scenario():
        async with central_system(db_url, unknown="accept", command_timeout_s=0.5) as cs:
            command = await setup(cs, storage.enqueue_command, "CP9", "Reset", {"type": "Soft"}, 60)
            await setup(cs, storage.mark_command, command, "sent", uid="u", sent_at=now_iso())

            row = await command_reaches(cs, command, "failed")
            assert row["error"] == storage.ANSWER_LOST

    run(scenario())


def test_a_command_waiting_for_its_answer_is_never_failed_as_lost(sqlite_url, monkeypatch):
    """Its answer's record held (a slow database) past the time after which a command left
    sent counts as lost: it is this process's own, so the poll leaves it alone."""
    monkeypatch.setattr(commands, "LOST_MARGIN_S", 0)
    timeout = 0.5

    async def scenario():
        async with central_system(sqlite_url, unknown="accept", command_timeout_s=timeout) as cs:
            call, held, release = cs.store.call, asyncio.Event(), asyncio.Event()
            looked: list[float] = []  # when each poll's look for lost commands was sent

            async def holding_the_answer(fn, *args, **kwargs):
                if fn is storage.mark_command and args[1] == "answered" and not release.is_set():
                    held.set()
                    await release.wait()
                asked = time.time()
                result = await call(fn, *args, **kwargs)
                if fn is storage.fail_lost_commands:
                    looked.append(asked)
                return result

            cs.store.call = holding_the_answer  # type: ignore[method-assign]
            ws = await booted(cs)
            command = await call(storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60)
            reset = json.loads(await asyncio.wait_for(ws.recv(), 5))
            sent = time.time()
            await ws.send(json.dumps([3, reset[1], {"status": "Accepted"}]))
            await asyncio.wait_for(held.wait(), 5)
            await wait_for(lambda: looked and looked[-1] > sent + timeout + 0.1)
            assert (await command_state(cs, command)) == ("sent", None)
            release.set()

            await command_reaches(cs, command, "answered")
            await ws.close()

    run(scenario())
