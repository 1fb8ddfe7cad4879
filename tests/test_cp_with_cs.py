"""The firmware under micropython against our own central system (host/cs, SQLite), as `evse
run` pairs them: what only the two together show. Commands go through the central system's
command queue, as `evse cs send` queues them."""

import asyncio
import contextlib
import json

from host.cs import commands, storage
from tests.cp_centralsystem import make_tls
from tests.cp_station import Firmware
from tests.cs.conftest import central_system, command_reaches, wait_for

KEY = "0123456789abcdef0123"
NEW_KEY = "rotated-key-456789"


def run(coro, timeout: float = 90):
    asyncio.run(asyncio.wait_for(coro, timeout))


class Pair:
    """The central system, the station SEC (accepted) connected to it, and each connection
    the central system let the station in with."""

    def __init__(self, cs, fw: Firmware):
        self.cs = cs
        self.fw = fw
        self.connections: list[str] = []
        cs.listeners.append(
            lambda kind, station_id, text: (
                kind == "connected" and self.connections.append(station_id)
            )
        )

    async def answer(self, action: str, payload: dict) -> dict:
        """Queue a command for the station; the station's answer."""
        command = await self.cs.store.call(storage.enqueue_command, "SEC", action, payload, 60)
        row = await command_reaches(self.cs, command, "answered", timeout=20)
        return json.loads(row["response"])

    async def change(self, key: str, value: str) -> str:
        """ChangeConfiguration: the station's status."""
        reply = await self.answer("ChangeConfiguration", {"key": key, "value": value})
        return reply["status"]

    async def not_sent(self, key: str, value: str) -> str:
        """A ChangeConfiguration the central system must refuse to send: its error."""
        change = {"key": key, "value": value}
        command = await self.cs.store.call(
            storage.enqueue_command, "SEC", "ChangeConfiguration", change, 60
        )
        row = await command_reaches(self.cs, command, "failed", timeout=20)
        assert row["error"].startswith("not sent: ")
        return row["error"]

    async def reconnects(self, key: str, value: str) -> None:
        """ChangeConfiguration accepted, and the station let in again at once."""
        before = len(self.connections)
        assert await self.change(key, value) == "Accepted"
        await wait_for(lambda: len(self.connections) > before, 20)

    async def restarts(self) -> None:
        """A power cut, and the station let in again."""
        await self.fw.kill()
        before = len(self.connections)
        await self.fw.start()
        await wait_for(lambda: len(self.connections) > before, 20)


@contextlib.asynccontextmanager
async def paired(tmp_path, url: str, cs_options=None, known_as=None, **station):
    """The central system (SQLite in tmp_path) and the station SEC at `url` % its port, with
    `station` in its station.json; `known_as`: its settings at the central system."""
    async with central_system(f"sqlite:///{tmp_path}/cs.sqlite3", **(cs_options or {})) as cs:
        await cs.store.call(storage.add_station, "SEC", "accepted")
        if known_as:
            await cs.store.call(storage.set_station, "SEC", **known_as)
        fw = Firmware(tmp_path / "flash", url % cs.port, cp_id="SEC", **station)
        pair = Pair(cs, fw)
        try:
            await fw.start()
            await wait_for(lambda: pair.connections, 20)
            yield pair
        finally:
            await fw.kill()


def read(url: str, fn, *args) -> list:
    """What `fn` yields, read on the test's own connection (an answer means committed)."""
    db = storage.Db(url)
    try:
        return list(fn(db, *args))
    finally:
        db.close()


def saved(tmp_path) -> dict:
    return json.loads((tmp_path / "flash" / "station.json").read_text())


def test_a_key_then_a_profile_raised_by_the_central_system_are_used_at_once(tmp_path, monkeypatch):
    """The security whitepaper's changes: the station accepts, keeps the new key or profile in
    station.json and connects again with it, which the central system (having taken it from
    the Accepted answer) must let in."""

    async def scenario():
        async with paired(tmp_path, "ws://127.0.0.1:%d/ocpp") as pair:
            # Both keys are known; the key is write-only: listed without its value
            names = {"key": ["securityprofile", "AuthorizationKey"]}
            assert await pair.answer("GetConfiguration", names) == {
                "configurationKey": [
                    {"key": "SecurityProfile", "readonly": False, "value": "0"},
                    {"key": "AuthorizationKey", "readonly": False},
                ]
            }
            # No key yet: this central system does not send profile 1, and the station
            # refuses it from one that would
            assert "none is set here" in await pair.not_sent("SecurityProfile", "1")
            with monkeypatch.context() as unguarded:
                unguarded.setattr(commands, "lockout", lambda *args: None)
                assert await pair.change("SecurityProfile", "1") == "Rejected"
            assert await pair.change("AuthorizationKey", "too-short") == "Rejected"
            assert await pair.change("AuthorizationKey", KEY) == "Accepted"
            # Raised to 1: the station connects again at once, with Basic auth and the key
            # (the central system, which took profile 1, lets nothing else in)
            await pair.reconnects("SecurityProfile", "1")
            station = await pair.cs.store.call(storage.get_station, "SEC")
            assert station["security_profile"] == 1
            # A new key at profile 1: used at once too
            await pair.reconnects("AuthorizationKey", NEW_KEY)
            # Never lowered; profile 2 needs TLS, which neither this central system nor
            # the station's ws:// url has
            assert await pair.change("SecurityProfile", "0") == "Rejected"
            assert "with TLS" in await pair.not_sent("SecurityProfile", "2")
            with monkeypatch.context() as unguarded:
                unguarded.setattr(commands, "lockout", lambda *args: None)
                assert await pair.change("SecurityProfile", "2") == "Rejected"
            reply = await pair.answer("GetConfiguration", {"key": ["SecurityProfile"]})
            assert reply["configurationKey"][0]["value"] == "1"
            assert NEW_KEY not in json.dumps(await pair.answer("GetConfiguration", {}))

            # Kept across a power cut: the station comes back with profile 1 and the new key
            assert (saved(tmp_path)["security_profile"], saved(tmp_path)["auth_key"]) == (
                1,
                NEW_KEY,
            )
            await pair.restarts()
            assert NEW_KEY not in pair.fw.output()

    run(scenario())


def test_a_profile_raised_from_2_to_3_over_tls(tmp_path):
    """wss://: from Basic auth to the station's client certificate, at once and after a
    power cut; the central system, at profile 3, takes no other connection."""
    tls = make_tls(tmp_path / "flash", client="SEC")
    station = {"security_profile": 2, "auth_key": KEY, "ca": "ca.der"}
    station |= {"cert": "cert.der", "key": "key.der"}

    async def scenario():
        url, known_as = "wss://127.0.0.1:%d/ocpp", {"security_profile": 2, "auth_key": KEY}
        async with paired(tmp_path, url, {"ssl_context": tls}, known_as, **station) as pair:
            assert await pair.change("SecurityProfile", "2") == "Accepted"  # as it is
            await pair.reconnects("SecurityProfile", "3")
            known = await pair.cs.store.call(storage.get_station, "SEC")
            assert known["security_profile"] == 3
            assert saved(tmp_path)["security_profile"] == 3
            await pair.restarts()

    run(scenario())


def test_a_station_the_central_system_no_longer_knows_as_booted_boots_again(tmp_path):
    """The central system's record of a running station loses its accepted boot (a database
    restored from a backup, say): it answers every CALL SecurityError. The station boots again
    and delivers its transaction, nothing dropped; before, it reconnected for ever."""
    url = f"sqlite:///{tmp_path}/cs.sqlite3"

    async def scenario():
        async with paired(tmp_path, "ws://127.0.0.1:%d/ocpp") as pair:
            cs, fw = pair.cs, pair.fw
            await cs.store.call(storage.set_id_tag, "TAG1")
            boots = []
            cs.listeners.append(
                lambda kind, station_id, text: (
                    kind == "in" and '"BootNotification"' in (text or "") and boots.append(text)
                )
            )
            assert await pair.change("MeterValueSampleInterval", "1") == "Accepted"
            await fw.command("power 1 7400")
            await fw.command("ev 1 C")
            start = {"connectorId": 1, "idTag": "TAG1"}
            assert (await pair.answer("RemoteStartTransaction", start))["status"] == "Accepted"
            await fw.wait_contactor(1, True)
            await wait_for(lambda: read(url, storage.transactions), 20)

            await cs.store.call(storage.set_station, "SEC", registration=None)
            cs.sessions["SEC"].close(1001, "going away")
            await wait_for(lambda: len(boots) == 1, 20)
            await wait_for(lambda: cs.sessions["SEC"].registration == "Accepted", 20)

            (tx,) = read(url, storage.transactions)
            stop = {"transactionId": tx["id"]}
            assert (await pair.answer("RemoteStopTransaction", stop))["status"] == "Accepted"
            await wait_for(lambda: read(url, storage.transactions)[0]["stop_time"], 20)
            (tx,) = read(url, storage.transactions)
            assert tx["stop_reason"] == "Remote" and tx["meter_stop"] > tx["meter_start"]

    run(scenario())
