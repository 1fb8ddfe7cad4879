"""`evse sim --id ID --url URL --data DIR`: the simulated station connects to URL/ID, and its
data directory keeps the flash state (station.json, OCPP configuration) across restarts."""

import asyncio
import json
import os
import signal
import subprocess
import sys

from ocpp.v16 import call

from tests.cp_centralsystem import CentralSystem

EVSE = [sys.executable, "-m", "host"]


async def evse_sim(*args: str) -> asyncio.subprocess.Process:
    """`evse sim` in its own process group (it runs micropython as a child)."""
    return await asyncio.create_subprocess_exec(
        *EVSE,
        "sim",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )


async def power_cut(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL `evse sim` and the firmware it runs."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await proc.wait()


def test_sim_connects_to_url_slash_id_and_keeps_its_flash(tmp_path):
    data = tmp_path / "flash"

    async def scenario():
        cs = await CentralSystem().start()
        args = ("--data", str(data), "--id", "SIM7", "--url", cs.url())
        proc = await evse_sim(*args)
        try:
            await cs.wait(lambda: len(cs.status) == 3, what="boot")
            assert cs.paths == ["/ocpp/SIM7"]
            reply = await cs.call(call.ChangeConfiguration(key="ConnectionTimeOut", value="77"))
            assert reply.status == "Accepted"
            await power_cut(proc)
            proc = await evse_sim(*args)
            await cs.wait(lambda: len(cs.calls("BootNotification")) == 2, what="second boot")
            reply = await cs.call(call.GetConfiguration(key=["ConnectionTimeOut"]))
            assert reply.configuration_key[0]["value"] == "77"
        finally:
            await power_cut(proc)
            await cs.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert json.loads((data / "station.json").read_text())["id"] == "SIM7"


def test_sim_id_and_url_go_together(tmp_path):
    done = subprocess.run(
        [*EVSE, "sim", "--data", str(tmp_path), "--id", "X"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--id and --url go together" in done.stderr
    done = subprocess.run(
        [*EVSE, "sim", "--data", str(tmp_path), "--id", "X", "--url", "http://h"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "ws:// or wss://" in done.stderr
