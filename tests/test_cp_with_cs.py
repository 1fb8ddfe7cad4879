"""The firmware under micropython against our own central system (host/cs, SQLite), as `evse
run` pairs them: what only the two together show. Commands go through the central system's
command queue, as `evse cs send` queues them."""

import asyncio
import json

from host.cs import commands, storage
from tests.cp_station import Firmware
from tests.cs.conftest import central_system, command_reaches, wait_for

KEY = "0123456789abcdef0123"
NEW_KEY = "rotated-key-456789"


def run(coro, timeout: float = 90):
    asyncio.run(asyncio.wait_for(coro, timeout))


async def answer(cs, action: str, payload: dict) -> dict:
    """Queue a command for the station; the station's answer."""
    command = await cs.store.call(storage.enqueue_command, "SEC", action, payload, 60)
    row = await command_reaches(cs, command, "answered", timeout=20)
    return json.loads(row["response"])


def read(url: str, fn, *args) -> list:
    """What `fn` yields, read on the test's own connection (an answer means committed)."""
    db = storage.Db(url)
    try:
        return list(fn(db, *args))
    finally:
        db.close()


async def not_sent(cs, key: str, value: str) -> str:
    """Queue a ChangeConfiguration the central system must refuse to send; its error."""
    change = {"key": key, "value": value}
    command = await cs.store.call(storage.enqueue_command, "SEC", "ChangeConfiguration", change, 60)
    row = await command_reaches(cs, command, "failed", timeout=20)
    assert row["error"].startswith("not sent: ")
    return row["error"]


def test_a_key_then_a_profile_raised_by_the_central_system_are_used_at_once(tmp_path, monkeypatch):
    """The security whitepaper's changes: the station accepts, keeps the new key or profile in
    station.json and connects again with it, which the central system (having taken it from
    the Accepted answer) must let in."""

    async def scenario():
        async with central_system(f"sqlite:///{tmp_path}/cs.sqlite3") as cs:
            await cs.store.call(storage.add_station, "SEC", "accepted")
            connected = []
            cs.listeners.append(
                lambda kind, station_id, text: kind == "connected" and connected.append(station_id)
            )
            fw = Firmware(tmp_path / "flash", f"ws://127.0.0.1:{cs.port}/ocpp", cp_id="SEC")
            try:
                await fw.start()
                await wait_for(lambda: cs.sessions.get("SEC") is not None, 20)

                async def change(key: str, value: str) -> str:
                    reply = await answer(cs, "ChangeConfiguration", {"key": key, "value": value})
                    return reply["status"]

                async def reconnects(key: str, value: str) -> None:
                    before = len(connected)
                    assert await change(key, value) == "Accepted"
                    await wait_for(lambda: len(connected) > before, 20)

                # Both keys are known; the key is write-only: listed without its value
                reply = await answer(
                    cs, "GetConfiguration", {"key": ["securityprofile", "AuthorizationKey"]}
                )
                assert reply == {
                    "configurationKey": [
                        {"key": "SecurityProfile", "readonly": False, "value": "0"},
                        {"key": "AuthorizationKey", "readonly": False},
                    ]
                }
                # No key yet: this central system does not send profile 1, and the station
                # refuses it from one that would
                assert "none is set here" in await not_sent(cs, "SecurityProfile", "1")
                with monkeypatch.context() as unguarded:
                    unguarded.setattr(commands, "lockout", lambda *args: None)
                    assert await change("SecurityProfile", "1") == "Rejected"
                assert await change("AuthorizationKey", "too-short") == "Rejected"
                assert await change("AuthorizationKey", KEY) == "Accepted"
                # Raised to 1: the station connects again at once, with Basic auth and the key
                # (the central system, which took profile 1, lets nothing else in)
                await reconnects("SecurityProfile", "1")
                station = await cs.store.call(storage.get_station, "SEC")
                assert station["security_profile"] == 1
                # A new key at profile 1: used at once too
                await reconnects("AuthorizationKey", NEW_KEY)
                # Never lowered; profile 2 needs TLS, which neither this central system nor
                # the station's ws:// url has
                assert await change("SecurityProfile", "0") == "Rejected"
                assert "with TLS" in await not_sent(cs, "SecurityProfile", "2")
                with monkeypatch.context() as unguarded:
                    unguarded.setattr(commands, "lockout", lambda *args: None)
                    assert await change("SecurityProfile", "2") == "Rejected"
                reply = await answer(cs, "GetConfiguration", {"key": ["SecurityProfile"]})
                assert reply["configurationKey"][0]["value"] == "1"
                everything = await answer(cs, "GetConfiguration", {})
                assert NEW_KEY not in json.dumps(everything)

                # Kept across a power cut: the station comes back with profile 1 and the new key
                saved = json.loads((tmp_path / "flash" / "station.json").read_text())
                assert (saved["security_profile"], saved["auth_key"]) == (1, NEW_KEY)
                await fw.kill()
                before = len(connected)
                await fw.start()
                await wait_for(lambda: len(connected) > before, 20)
                assert NEW_KEY not in fw.output()
            finally:
                await fw.kill()

    run(scenario())


def test_a_station_the_central_system_no_longer_knows_as_booted_boots_again(tmp_path):
    """The central system's record of a running station loses its accepted boot (a database
    restored from a backup, say): it answers every CALL SecurityError. The station boots again
    and delivers its transaction, nothing dropped; before, it reconnected for ever."""
    url = f"sqlite:///{tmp_path}/cs.sqlite3"

    async def scenario():
        async with central_system(url) as cs:
            await cs.store.call(storage.add_station, "SEC", "accepted")
            await cs.store.call(storage.set_id_tag, "TAG1")
            boots = []
            cs.listeners.append(
                lambda kind, station_id, text: (
                    kind == "in" and '"BootNotification"' in (text or "") and boots.append(text)
                )
            )
            fw = Firmware(tmp_path / "flash", f"ws://127.0.0.1:{cs.port}/ocpp", cp_id="SEC")
            try:
                await fw.start()
                await wait_for(lambda: cs.sessions.get("SEC") is not None, 20)
                change = {"key": "MeterValueSampleInterval", "value": "1"}
                assert (await answer(cs, "ChangeConfiguration", change))["status"] == "Accepted"
                await fw.command("power 1 7400")
                await fw.command("ev 1 C")
                start = {"connectorId": 1, "idTag": "TAG1"}
                assert (await answer(cs, "RemoteStartTransaction", start))["status"] == "Accepted"
                await fw.wait_contactor(1, True)
                await wait_for(lambda: read(url, storage.transactions), 20)

                await cs.store.call(storage.set_station, "SEC", registration=None)
                cs.sessions["SEC"].close(1001, "going away")
                await wait_for(lambda: len(boots) == 2, 20)
                station = await cs.store.call(storage.get_station, "SEC")
                assert station["registration"] == "Accepted"

                (tx,) = read(url, storage.transactions)
                stop = {"transactionId": tx["id"]}
                assert (await answer(cs, "RemoteStopTransaction", stop))["status"] == "Accepted"
                await wait_for(lambda: read(url, storage.transactions)[0]["stop_time"], 20)
                (tx,) = read(url, storage.transactions)
                assert tx["stop_reason"] == "Remote" and tx["meter_stop"] > tx["meter_start"]
            finally:
                await fw.kill()

    run(scenario())
