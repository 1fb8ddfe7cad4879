"""Security profiles 1 (HTTP Basic auth over ws://) and 3 (TLS with a client certificate) end to
end: the firmware under micropython against the project's central system (host/cs, SQLite),
which admits a station only with the right key or a certificate naming it. Certificates are
generated here (DER for micropython)."""

import asyncio

from host.cs import storage
from tests.cp_centralsystem import make_tls
from tests.cp_station import Firmware
from tests.cs.conftest import central_system, run

KEY = "0123456789abcdef0123"


async def admitted(cs, fw: Firmware, station_id: str) -> None:
    """Wait until the central system holds an accepted session of `station_id`."""
    try:
        await fw.start()
        for _ in range(200):  # 20 s
            if station_id in cs.sessions:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{station_id} never admitted; firmware said: {fw.output()[-500:]}")
    finally:
        await fw.kill()


def test_profile_1_basic_auth_over_ws(tmp_path):
    async def scenario():
        async with central_system(f"sqlite:///{tmp_path / 'cs.db'}") as cs:
            await cs.store.call(storage.add_station, "CPB")
            await cs.store.call(storage.set_station, "CPB", security_profile=1, auth_key=KEY)
            url = f"ws://127.0.0.1:{cs.port}/ocpp"
            wrong = Firmware(tmp_path / "wrong", url, "CPB", security_profile=1, auth_key="x" * 20)
            await wrong.start()
            try:
                await wrong_refused(wrong)
            finally:
                await wrong.kill()
            assert "CPB" not in cs.sessions
            fw = Firmware(tmp_path / "flash", url, "CPB", security_profile=1, auth_key=KEY)
            await admitted(cs, fw, "CPB")

    run(scenario(), timeout=90)


async def wrong_refused(fw: Firmware) -> None:
    """The firmware reports the central system's 401 (and keeps charging on its own)."""
    for _ in range(200):
        if "401" in fw.output():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no 401 reported: {fw.output()[-500:]}")


def test_profile_3_client_certificate_over_wss(tmp_path):
    async def scenario():
        flash = tmp_path / "flash"
        tls = make_tls(flash, client="CPC")
        async with central_system(f"sqlite:///{tmp_path / 'cs.db'}", ssl_context=tls) as cs:
            await cs.store.call(storage.add_station, "CPC")
            await cs.store.call(storage.set_station, "CPC", security_profile=3)
            url = f"wss://127.0.0.1:{cs.port}/ocpp"
            station = {"security_profile": 3, "ca": "ca.der", "cert": "cert.der", "key": "key.der"}
            await admitted(cs, Firmware(flash, url, "CPC", **station), "CPC")

    run(scenario(), timeout=90)
