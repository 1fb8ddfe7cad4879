"""The bundle `evse build` makes is what runs on a station: run a charging session from it."""

import json
import subprocess
import time

import pytest

from host import mpy
from host.tools import build, station


@pytest.fixture
def bundle(unix_bundle_once):
    return unix_bundle_once


def test_every_module_is_compiled_but_main(bundle):
    manifest = json.loads((bundle / "bundle.json").read_text())
    sources = [board for _, board in build.sources()]
    expected = {"main.py"} | {name[:-3] + ".mpy" for name in sources if name != "main.py"}
    assert set(manifest["files"]) == expected
    assert {
        p.relative_to(bundle / "fs").as_posix() for p in (bundle / "fs").rglob("*.*")
    } == expected
    assert "protocol/__init__.mpy" in expected and "net.mpy" in expected
    assert manifest["target"] == "unix" and manifest["version"]
    assert all(build.sha256(bundle / "fs" / n) == h for n, h in manifest["files"].items())


def test_the_freeze_manifest_names_every_module_but_main(bundle):
    text = (bundle / "manifest.py").read_text()
    for _, board in build.sources():
        assert (f"'{board}'" in text) is (board != "main.py"), board


def test_a_board_bundle_leaves_the_simulator_out(tmp_path):
    bundle = build.build("esp32", tmp_path)
    assert "board/esp32.mpy" in bundle["files"] and "net.mpy" in bundle["files"]
    for name in build.SIMULATION_ONLY:
        assert name[:-3] + ".mpy" not in bundle["files"]
        assert f"'{name}'" not in (tmp_path / "manifest.py").read_text()
    assert bundle["target"] == "esp32"


class Session:
    """micropython running main.py from the bundle alone (no source on its path)."""

    def __init__(self, fs, data):
        self.process = subprocess.Popen(
            mpy.command("main.py", str(data)),
            cwd=fs,
            env=dict(mpy.environ(), MICROPYPATH=f"{fs}:.frozen"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        assert "ready" in self.read()

    def read(self) -> dict:
        assert self.process.stdout
        while True:
            answer = self.process.stdout.readline()
            assert answer, self.process.stderr.read() if self.process.stderr else "exited"
            if answer.startswith("{") and "event" not in (reply := json.loads(answer)):
                return reply

    def send(self, line: str) -> dict:
        assert self.process.stdin
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.read()

    def connector(self, n: int) -> dict:
        return self.send("status")["status"]["connectors"][n - 1]

    def wait(self, n: int, condition, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.connector(n)
            if condition(state):
                return state
            assert time.monotonic() < deadline, state


def test_the_bundle_runs_a_charging_session(bundle, sim_station, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    files = station.load(sim_station).device_files()
    (data / "board.json").write_bytes(files["board.json"])  # no station.json: no OCPP
    session = Session(bundle / "fs", data)
    try:
        assert session.send("permit 1 1") == {"ok": "permit"}
        session.send("ev 1 B")
        session.send("ev 1 C")
        session.send("power 1 7000")
        charging = session.wait(1, lambda c: c["contactor"] and (c["energy"] or 0) > 0)
        assert charging["pilot"] == "C" and 0 < charging["limit"] <= 16  # board.json's 16 A
        session.send("ev 1 A")
        stopped = session.wait(1, lambda c: not c["contactor"])
        assert stopped["pilot"] == "A"
        session.process.communicate("quit\n", timeout=10)
        assert session.process.returncode == 0
    finally:
        session.process.kill()
        session.process.wait(timeout=10)
