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


ROM_LAUNCHER = build.ROOT / "benchmarks" / "mp_cp_rom.py"


def test_the_romfs_image_holds_every_module_but_main(bundle, tmp_path):
    manifest = json.loads((bundle / "bundle.json").read_text())
    image = (bundle / build.ROMFS_IMAGE).read_bytes()
    assert manifest["romfs"] == {
        "size": len(image),
        "sha256": build.sha256(bundle / "firmware.romfs"),
    }
    lister = tmp_path / "list.py"
    lister.write_text(
        "import os, sys, vfs\n"
        "vfs.mount(vfs.VfsRom(open(sys.argv[1], 'rb').read()), '/rom')\n"
        "def walk(d):\n"
        "    for name, kind, *_ in os.ilistdir(d):\n"
        "        yield from walk(d + '/' + name) if kind == 0x4000 else [d + '/' + name]\n"
        "for path in walk('/rom'):\n"
        "    same = open(path, 'rb').read() == open(sys.argv[2] + path[4:], 'rb').read()\n"
        "    print(path[5:], same)\n"
    )
    out = subprocess.run(
        mpy.command(lister, str(bundle / "firmware.romfs"), str(bundle / "fs")),
        capture_output=True, text=True, timeout=30, env=mpy.environ(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    listed = dict(line.split() for line in out.stdout.splitlines())
    assert set(listed) == set(manifest["files"]) - {"main.py"}
    assert set(listed.values()) == {"True"}  # the same bytes as the .mpy files


class Session:
    """micropython running main.py from the bundle alone (no source on its path): the modules
    from its .mpy files, or from the ROMFS image `image` mounted at /rom (as on a board with a
    ROMFS partition; nothing but asyncio on the path)."""

    def __init__(self, fs, data, image=None):
        argv = mpy.command("main.py", str(data))
        path = f"{fs}:.frozen"
        if image:
            argv = mpy.command(ROM_LAUNCHER, str(image), "main.py", str(data))
            path = ".frozen"
        self.process = subprocess.Popen(
            argv,
            cwd=fs,
            env=dict(mpy.environ(), MICROPYPATH=path),
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


@pytest.mark.parametrize("romfs", [False, True], ids=["mpy", "romfs"])
def test_the_bundle_runs_a_charging_session(bundle, sim_station, tmp_path, romfs):
    data = tmp_path / "data"
    data.mkdir()
    files = station.load(sim_station).device_files()
    (data / "board.json").write_bytes(files["board.json"])  # no station.json: no OCPP
    fs, image = bundle / "fs", None
    if romfs:  # only main.py where it runs: every module must come from /rom
        fs, image = tmp_path / "board", bundle / build.ROMFS_IMAGE
        fs.mkdir()
        (fs / "main.py").write_bytes((bundle / "fs" / "main.py").read_bytes())
    session = Session(fs, data, image)
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
