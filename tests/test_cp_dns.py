"""The station (firmware/main.py on the simulated board) reaches its central system by name,
through a DNS server on 127.0.0.1 (board.json "dns"). A DNS server that never answers costs
connect attempts, retried with back-off, and never stalls the control loop: a session charging
meanwhile goes on and the watchdog stays fed."""

import asyncio
import json

from tests.cp_centralsystem import CentralSystem
from tests.cp_station import Firmware
from tests.dns_responder import Responder
from tests.firmware import harness


def test_a_session_charges_through_a_dns_outage_and_ocpp_connects_once_the_name_resolves(
    tmp_path,
):
    async def scenario():
        cs = await CentralSystem().start()
        with Responder({}, silent=True) as dns:
            fw = Firmware(tmp_path / "flash", f"ws://cs.test:{cs.port}/ocpp")
            board = harness.config(dns=["127.0.0.1", dns.port])
            (tmp_path / "flash" / "board.json").write_text(json.dumps(board))
            try:
                await fw.start()
                await fw.command("ev 1 C")
                await fw.wait_contactor(1, True)
                # a first attempt's three tries, then a second attempt after its back-off
                await cs.wait(lambda: len(dns.queries) > 3, what="a second connect attempt")
                assert {name for _, name in dns.queries} == {"cs.test"}
                assert not cs.calls("BootNotification")
                assert fw.alive()  # no watchdog reset
                connector = await fw.connector(1)
                assert connector["contactor"] and not connector["faults"]
                dns.hosts["cs.test"] = "127.0.0.1"
                dns.silent = False
                await cs.wait(lambda: cs.calls("BootNotification"), 30, "BootNotification")
                assert (await fw.connector(1))["contactor"]
            finally:
                await fw.kill()
                await cs.stop()

    asyncio.run(asyncio.wait_for(scenario(), 90))
