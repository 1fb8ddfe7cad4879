"""Every central-system-initiated OCPP 1.6 operation goes through the command queue to a
station and comes back answered."""

import asyncio
import json
import os
import re

import pytest
from jsonschema import Draft4Validator

from host.cs import commands, schemas, storage
from tests.cs.conftest import RAW_BOOT, booted, central_system, command_reaches, run, wait_for

T = "2026-11-26T10:00:00Z"
HASH = {"hashAlgorithm": "SHA256", "issuerNameHash": "a", "issuerKeyHash": "b", "serialNumber": "1"}
PROFILE = {
    "chargingProfileId": 1,
    "stackLevel": 0,
    "chargingProfilePurpose": "TxDefaultProfile",
    "chargingProfileKind": "Absolute",
    "chargingSchedule": {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.5}],
    },
}
ACCEPTED = {"status": "Accepted"}
# action: (request, the station's answer)
OPERATIONS = {
    "CancelReservation": ({"reservationId": 1}, ACCEPTED),
    "CertificateSigned": ({"certificateChain": "-----BEGIN CERTIFICATE-----"}, ACCEPTED),
    "ChangeAvailability": ({"connectorId": 0, "type": "Inoperative"}, ACCEPTED),
    "ChangeConfiguration": ({"key": "HeartbeatInterval", "value": "60"}, ACCEPTED),
    "ClearCache": ({}, ACCEPTED),
    "ClearChargingProfile": ({"id": 1}, ACCEPTED),
    "DataTransfer": ({"vendorId": "evse", "messageId": "hello"}, ACCEPTED),
    "DeleteCertificate": ({"certificateHashData": HASH}, ACCEPTED),
    "ExtendedTriggerMessage": ({"requestedMessage": "StatusNotification"}, ACCEPTED),
    "GetCompositeSchedule": ({"connectorId": 1, "duration": 3600}, ACCEPTED),
    "GetConfiguration": ({"key": ["HeartbeatInterval"]}, {"unknownKey": ["HeartbeatInterval"]}),
    "GetDiagnostics": ({"location": "http://127.0.0.1:9001/diagnostics/"}, {"fileName": "d.log"}),
    "GetInstalledCertificateIds": (
        {"certificateType": "CentralSystemRootCertificate"},
        {"status": "Accepted", "certificateHashData": [HASH]},
    ),
    "GetLocalListVersion": ({}, {"listVersion": 3}),
    "GetLog": (
        {"logType": "DiagnosticsLog", "requestId": 1, "log": {"remoteLocation": "http://h/x"}},
        ACCEPTED,
    ),
    "InstallCertificate": (
        {"certificateType": "ManufacturerRootCertificate", "certificate": "PEM"},
        ACCEPTED,
    ),
    "RemoteStartTransaction": ({"idTag": "TAG1", "connectorId": 1}, ACCEPTED),
    "RemoteStopTransaction": ({"transactionId": 1}, ACCEPTED),
    "ReserveNow": (
        {"connectorId": 1, "expiryDate": T, "idTag": "TAG1", "reservationId": 1},
        ACCEPTED,
    ),
    "Reset": ({"type": "Hard"}, ACCEPTED),
    "SendLocalList": (
        {
            "listVersion": 4,
            "updateType": "Full",
            "localAuthorizationList": [{"idTag": "TAG1", "idTagInfo": {"status": "Accepted"}}],
        },
        ACCEPTED,
    ),
    "SetChargingProfile": ({"connectorId": 1, "csChargingProfiles": PROFILE}, ACCEPTED),
    "SignedUpdateFirmware": (
        {
            "requestId": 1,
            "firmware": {
                "location": "http://127.0.0.1:9001/firmware/fw.bin",
                "retrieveDateTime": T,
                "signingCertificate": "PEM",
                "signature": "c2ln",
            },
        },
        ACCEPTED,
    ),
    "TriggerMessage": ({"requestedMessage": "Heartbeat"}, ACCEPTED),
    "UnlockConnector": ({"connectorId": 1}, {"status": "Unlocked"}),
    "UpdateFirmware": (
        {"location": "http://127.0.0.1:9001/firmware/fw.bin", "retrieveDate": T},
        {},
    ),
}


def test_the_examples_cover_every_operation_and_are_valid():
    assert sorted(OPERATIONS) == list(schemas.ALL_CS_ACTIONS)
    for action, (request, answer) in OPERATIONS.items():
        schemas.check(action, request)
        schemas.check(action, answer, response=True)


def test_every_operation_is_delivered_and_answered(sqlite_url):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            ws = await booted(cs)
            ids = {}
            for action, (request, _) in OPERATIONS.items():
                ids[action] = await cs.store.call(
                    storage.enqueue_command, "CP1", action, request, 60
                )
            seen = []
            for _ in OPERATIONS:
                kind, uid, action, payload = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert (kind, payload) == (2, OPERATIONS[action][0])
                seen.append(action)
                await ws.send(json.dumps([3, uid, OPERATIONS[action][1]]))
            assert seen == list(OPERATIONS)  # in the order they were queued

            async def all_answered():
                rows = await cs.store.call(storage.list_commands, "CP1")
                return all(row["state"] == "answered" for row in rows)

            await wait_for(all_answered)
            for action, command_id in ids.items():
                row = await cs.store.call(storage.get_command, command_id)
                assert json.loads(row["response"]) == OPERATIONS[action][1]
            await ws.close()

    run(scenario())


def test_an_authorization_key_a_station_lists_is_kept_nowhere(sqlite_url):
    # the whitepaper makes AuthorizationKey write-only; a station that lists it anyway in a
    # GetConfiguration answer must not put it in the command's answer or the frame log
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            ws = await booted(cs)
            command = await cs.store.call(
                storage.enqueue_command, "CP1", "GetConfiguration", {}, 60
            )
            _, uid, _, _ = json.loads(await asyncio.wait_for(ws.recv(), 5))
            keys = [
                {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
                {"key": "authorizationKey", "readonly": False, "value": "the-stations-secret"},
            ]
            await ws.send(json.dumps([3, uid, {"configurationKey": keys}]))

            row = await command_reaches(cs, command, "answered")
            kept = json.loads(row["response"])["configurationKey"]
            assert [k["value"] for k in kept] == ["300", storage.SECRET]
            frames = await cs.store.call(storage.search_messages, "CP1", contains=uid)
            assert len(frames) == 2 and storage.SECRET in frames[-1]["text"]
            assert not [f for f in frames if "the-stations-secret" in f["text"]]
            await ws.close()

    run(scenario())


@pytest.mark.parametrize(
    "answer, error",
    [
        ([3, "{uid}", {"status": "Maybe"}], "invalid answer: Reset: status must be one of"),
        # no payload: failed at once, not at the command timeout (60 s here)
        ([3, "{uid}"], "malformed answer"),
        ([4, "{uid}"], "malformed answer"),
    ],
)
def test_an_invalid_answer_fails_the_command_with_the_reason(sqlite_url, answer, error):
    async def scenario():
        async with central_system(sqlite_url, unknown="accept", command_timeout_s=60) as cs:
            ws = await booted(cs)
            command = await cs.store.call(
                storage.enqueue_command, "CP1", "Reset", {"type": "Soft"}, 60
            )
            _, uid, _, _ = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(json.dumps(answer).replace("{uid}", uid))

            row = await command_reaches(cs, command, "failed")
            assert row["error"].startswith(error)
            await ws.close()

    run(scenario())


def test_remote_start_and_stop_wait_while_the_station_is_pending(sqlite_url):
    # OCPP 1.6 4.2: "While in pending state, the following Central System initiated messages
    # are not allowed: RemoteStartTransaction.req and RemoteStopTransaction.req"
    async def scenario():
        async with central_system(sqlite_url, unknown="pending") as cs:
            ws = await booted(cs, status="Pending")
            ids = {}
            for action in ("RemoteStartTransaction", "RemoteStopTransaction", "GetConfiguration"):
                ids[action] = await cs.store.call(
                    storage.enqueue_command, "CP1", action, OPERATIONS[action][0], 60
                )
            # what a pending station may be sent (configuration) comes; the rest waits
            _, uid, action, _ = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert action == "GetConfiguration"
            await ws.send(json.dumps([3, uid, OPERATIONS[action][1]]))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)  # ten polls
            for action in ("RemoteStartTransaction", "RemoteStopTransaction"):
                assert (await cs.store.call(storage.get_command, ids[action]))["state"] == "queued"
            await cs.store.call(storage.set_station, "CP1", approval="accepted")
            await ws.send(RAW_BOOT)
            assert json.loads(await ws.recv())[2]["status"] == "Accepted"
            for expected in ("RemoteStartTransaction", "RemoteStopTransaction"):
                _, uid, action, _ = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert action == expected
                await ws.send(json.dumps([3, uid, OPERATIONS[action][1]]))

            async def all_answered():
                rows = await cs.store.call(storage.list_commands, "CP1")
                return all(row["state"] == "answered" for row in rows)

            await wait_for(all_answered)
            await ws.close()

    run(scenario())


def test_an_answer_with_a_huge_number_is_checked_not_left_sent(sqlite_url):
    """multipleOf was checked in decimal's default 28 digits: a GetCompositeSchedule answer
    with a limit of 1e30 raised decimal.InvalidOperation out of the delivery, and the command
    stayed "sent" until the next restart."""

    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            ws = await booted(cs)
            request = {"connectorId": 1, "duration": 3600}
            # as large as they are, multiples of 0.1; 16.55 is not
            answers = {1e30: "answered", 1e300: "answered", 16.55: "failed"}
            for limit, state in answers.items():
                command = await cs.store.call(
                    storage.enqueue_command, "CP1", "GetCompositeSchedule", request, 60
                )
                _, uid, _, _ = json.loads(await asyncio.wait_for(ws.recv(), 5))
                period = {"startPeriod": 0, "limit": limit}
                schedule = {"chargingRateUnit": "W", "chargingSchedulePeriod": [period]}
                await ws.send(
                    json.dumps([3, uid, {"status": "Accepted", "chargingSchedule": schedule}])
                )

                async def done(command=command):
                    row = await cs.store.call(storage.get_command, command)
                    return row["state"] != "sent"

                await wait_for(done)
                row = await cs.store.call(storage.get_command, command)
                assert row["state"] == state, (limit, row["error"])
            await ws.close()

    run(scenario())


def test_remote_start_waits_when_the_station_turns_pending_during_a_delivery(sqlite_url):
    # The operator set the station pending and it boots again on its connection (asked by a
    # TriggerMessage, say) while the first command is out: a RemoteStartTransaction read
    # with that command must wait now, as OCPP 1.6 4.2 says
    async def scenario():
        async with central_system(sqlite_url, unknown="accept") as cs:
            ws = await booted(cs)
            await cs.store.call(storage.set_station, "CP1", approval="pending")
            ids = []
            for action in ("GetConfiguration", "RemoteStartTransaction", "ClearCache"):
                ids.append(
                    await cs.store.call(
                        storage.enqueue_command, "CP1", action, OPERATIONS[action][0], 60
                    )
                )
            _, uid, action, _ = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert action == "GetConfiguration"
            await ws.send(RAW_BOOT)
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[2]["status"] == "Pending"
            await ws.send(json.dumps([3, uid, OPERATIONS[action][1]]))
            # what a pending station may be sent comes next; the remote start waits
            _, uid, action, _ = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert action == "ClearCache"
            await ws.send(json.dumps([3, uid, OPERATIONS[action][1]]))
            assert (await cs.store.call(storage.get_command, ids[1]))["state"] == "queued"
            await ws.close()

    run(scenario())


def _profile(**changes):
    return {**PROFILE, **changes}


@pytest.mark.parametrize(
    "action, payload, message",
    [
        # Field tables: "connectorId > 0" (UnlockConnector.req, RemoteStartTransaction.req,
        # TriggerMessage.req; ExtendedTriggerMessage.req of the security whitepaper), and 0
        # is the whole station elsewhere: no connector id is negative
        ("UnlockConnector", {"connectorId": 0}, "UnlockConnector: connectorId must be at least 1"),
        (
            "RemoteStartTransaction",
            {"idTag": "TAG1", "connectorId": 0},
            "RemoteStartTransaction: connectorId must be at least 1",
        ),
        (
            "TriggerMessage",
            {"requestedMessage": "MeterValues", "connectorId": 0},
            "TriggerMessage: connectorId must be at least 1",
        ),
        (
            "ExtendedTriggerMessage",
            {"requestedMessage": "StatusNotification", "connectorId": 0},
            "ExtendedTriggerMessage: connectorId must be at least 1",
        ),
        *(
            (action, {**OPERATIONS[action][0], "connectorId": -1}, "connectorId must be at least 0")
            for action in (
                "ChangeAvailability",
                "ClearChargingProfile",
                "GetCompositeSchedule",
                "ReserveNow",
                "SetChargingProfile",
            )
        ),
        # 7.7 ChargingProfile: stackLevel "Lowest level is 0"
        (
            "SetChargingProfile",
            {"connectorId": 1, "csChargingProfiles": _profile(stackLevel=-1)},
            "csChargingProfiles.stackLevel must be at least 0",
        ),
        # 3.13.1: "ChargePointMaxProfile can only be set at Charge Point ConnectorId 0"
        (
            "SetChargingProfile",
            {
                "connectorId": 1,
                "csChargingProfiles": _profile(chargingProfilePurpose="ChargePointMaxProfile"),
            },
            "a ChargePointMaxProfile is set on connectorId 0",
        ),
        # 3.13.1: a TxProfile applies to the transaction on its connector ("If there is no
        # transaction active on the connector specified ... the Charge Point SHALL discard it")
        (
            "SetChargingProfile",
            {"connectorId": 0, "csChargingProfiles": _profile(chargingProfilePurpose="TxProfile")},
            "a TxProfile is set on a connector (connectorId > 0)",
        ),
        # 7.7: transactionId "Only valid if ChargingProfilePurpose is set to TxProfile"
        (
            "SetChargingProfile",
            {"connectorId": 1, "csChargingProfiles": _profile(transactionId=5)},
            "csChargingProfiles.transactionId is only for a TxProfile",
        ),
        # 5.11: "The purpose of this ChargingProfile SHALL be set to TxProfile"
        (
            "RemoteStartTransaction",
            {"idTag": "TAG1", "connectorId": 1, "chargingProfile": PROFILE},
            "chargingProfile.chargingProfilePurpose must be TxProfile",
        ),
        # 7.1 AuthorizationData: idTagInfo "(Required when UpdateType is Full)"
        (
            "SendLocalList",
            {"listVersion": 4, "updateType": "Full", "localAuthorizationList": [{"idTag": "T"}]},
            "localAuthorizationList.0 must contain idTagInfo in a Full update",
        ),
    ],
)
def test_rules_of_the_specification_the_schemas_leave_out_are_checked(action, payload, message):
    with open(os.path.join(schemas.SCHEMA_DIR, action + ".json"), encoding="utf-8") as f:
        assert Draft4Validator(json.load(f)).is_valid(payload)  # the official schema does not
    with pytest.raises(ValueError, match=re.escape(message)):
        commands.validate("CP1", action, payload)


def test_what_the_specification_allows_passes_its_rules():
    tx_profile = _profile(chargingProfilePurpose="TxProfile", transactionId=5)
    for action, payload in [
        ("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": tx_profile}),
        (
            "SetChargingProfile",
            {
                "connectorId": 0,
                "csChargingProfiles": _profile(chargingProfilePurpose="ChargePointMaxProfile"),
            },
        ),
        ("SetChargingProfile", {"connectorId": 0, "csChargingProfiles": PROFILE}),
        (
            "RemoteStartTransaction",
            {"idTag": "T", "chargingProfile": _profile(chargingProfilePurpose="TxProfile")},
        ),
        ("SendLocalList", {"listVersion": 5, "updateType": "Differential"}),
        (
            "SendLocalList",
            {
                "listVersion": 5,
                "updateType": "Differential",
                "localAuthorizationList": [{"idTag": "T"}],  # removes it
            },
        ),
        ("UnlockConnector", {"connectorId": 1}),
        ("ReserveNow", {**OPERATIONS["ReserveNow"][0], "connectorId": 0}),
    ]:
        commands.validate("CP1", action, payload)
