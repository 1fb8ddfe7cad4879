"""The real firmware (firmware/main.py) under micropython with the simulated board, for the
asyncio tests beside a central system: host.sim.SimStation, its blocking calls run in threads
so the central system's event loop keeps serving meanwhile."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from host import mpy
from host.sim import RESET_EXIT, SimStation
from tests.cp_centralsystem import CentralSystem

__all__ = ["RESET_EXIT", "Firmware", "LoopThread", "RomStation", "booted", "paired"]
ROM_LAUNCHER = Path(__file__).resolve().parents[1] / "benchmarks" / "mp_cp_rom.py"


class RomStation(SimStation):
    """The simulated station running a bundle made by `evse build --target unix`: its main.py,
    and the firmware from the bundle's ROMFS image mounted at /rom (as on a board with a ROMFS
    partition), or from its .mpy files when `romfs` is False. Nothing else is on the path."""

    def __init__(self, data_dir, bundle: Path, romfs: bool = True, **kwargs):
        super().__init__(data_dir, **kwargs)
        self.bundle = bundle
        self.romfs = romfs

    def argv(self):
        main = str(self.bundle / "fs" / "main.py")
        if self.romfs:
            image = str(self.bundle / "firmware.romfs")
            return mpy.command(
                ROM_LAUNCHER, image, main, str(self.data_dir), heapsize=self.heapsize
            )
        return mpy.command(main, str(self.data_dir), heapsize=self.heapsize)

    def environ(self):
        path = ".frozen" if self.romfs else f"{self.bundle / 'fs'}:.frozen"
        return dict(super().environ(), MICROPYPATH=path)


class Firmware:
    def __init__(self, data_dir: Path, url: str, cp_id: str = "CP1", **station):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        config = {"id": cp_id, "url": url, **station}
        (data_dir / "station.json").write_text(json.dumps(config))
        self.sim: SimStation | None = None

    async def start(
        self,
        heapsize: int | None = None,
        timeout: float = 20,
        env: dict | None = None,
        speed: float = 1.0,
        bundle: Path | None = None,
        romfs: bool = True,
    ) -> None:
        """Start the firmware; `env`: environment overrides (e.g. a .mpy module layout);
        `speed`: board time per real time; `bundle`: run that `evse build` bundle (see
        RomStation) instead of the sources."""
        if bundle is not None:
            self.sim = RomStation(
                self.data_dir, bundle, romfs, speed=speed, heapsize=heapsize, env=env
            )
        else:
            self.sim = SimStation(self.data_dir, speed=speed, heapsize=heapsize, env=env)
        await asyncio.to_thread(self.sim.start, timeout)

    def alive(self) -> bool:
        return bool(self.sim and self.sim.process and self.sim.process.poll() is None)

    def output(self) -> str:
        """Everything the firmware printed (stdout and stderr)."""
        return "\n".join(self.sim.log) if self.sim else ""

    async def command(self, text: str, timeout: float = 10) -> dict:
        """Send one simulator command, return its answer (an error answer raises)."""
        assert self.sim
        return await asyncio.to_thread(self.sim.command, text, timeout)

    async def connector(self, n: int) -> dict:
        status = (await self.command("status"))["status"]
        return status["connectors"][n - 1]

    async def wait_connector(self, n: int, field: str, value, timeout: float = 10) -> None:
        """Wait until connector n's status `field` is `value` (polling, bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (await self.connector(n))[field] != value:
            assert loop.time() < deadline, f"connector {n}: {field} never became {value}"
            await asyncio.sleep(0.05)

    async def wait_contactor(self, n: int, closed: bool, timeout: float = 10) -> None:
        """The station may take a few seconds to open it: the EV gets time to stop drawing."""
        await self.wait_connector(n, "contactor", closed, timeout)

    async def wait_permitted(self, n: int, permitted: bool, timeout: float = 10) -> None:
        await self.wait_connector(n, "permitted", permitted, timeout)

    async def wait_exit(self, timeout: float = 20) -> int:
        assert self.sim
        return await asyncio.to_thread(self.sim.wait_exit, timeout)

    async def kill(self) -> None:
        """Power cut: SIGKILL, nothing gets to run."""
        if self.sim:
            await asyncio.to_thread(self.sim.kill)


class LoopThread:
    """An asyncio loop in a background thread, so synchronous (hypothesis) tests can drive
    the central system and the firmware: `run(coro, timeout)`."""

    def __init__(self):
        import threading

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.asynccontextmanager
async def paired(tmp_path: Path, **station) -> AsyncIterator[tuple[CentralSystem, Firmware]]:
    """A test central system and a firmware station pointed at it, not started yet (a test
    sets up the central system first); at the end the station is killed and the central
    system stopped, whatever happened."""
    cs = await CentralSystem().start()
    fw = Firmware(tmp_path / "flash", cs.url(), **station)
    try:
        yield cs, fw
    finally:
        await fw.kill()
        await cs.stop()


@contextlib.asynccontextmanager
async def booted(tmp_path: Path, **station) -> AsyncIterator[tuple[CentralSystem, Firmware]]:
    """`paired`, with the station started and its three connectors reported."""
    async with paired(tmp_path, **station) as (cs, fw):
        await fw.start()
        await cs.wait(lambda: len(cs.status) == 3, what="status of connectors 0, 1, 2")
        yield cs, fw
