"""The real firmware (firmware/main.py) under micropython with the simulated board, driven over
its simulator control lines (station/simctl.py) on stdin/stdout."""

import asyncio
import json
from pathlib import Path

from host import mpy

MAIN = mpy.FIRMWARE / "main.py"
RESET_EXIT = 75  # exit status of the simulated board when it resets


class Firmware:
    def __init__(self, data_dir: Path, url: str, cp_id: str = "CP1", **station):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        config = {"id": cp_id, "url": url, **station}
        (data_dir / "station.json").write_text(json.dumps(config))
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr = b""
        self._lines: asyncio.Queue[dict] = asyncio.Queue()

    async def start(
        self, heapsize: int | None = None, timeout: float = 20, env: dict | None = None
    ) -> None:
        """Start the firmware; `env`: another module layout (default: sources, mpy.environ())."""
        argv = mpy.command(MAIN, str(self.data_dir), heapsize=heapsize)
        self.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env or mpy.environ(),
        )
        self._lines = asyncio.Queue()
        loop = asyncio.get_running_loop()
        loop.create_task(self._read_stdout(self.proc, self._lines))
        loop.create_task(self._read_stderr(self.proc))
        ready = await asyncio.wait_for(self._lines.get(), timeout)
        assert "ready" in ready, ready

    async def _read_stdout(self, proc, lines) -> None:
        assert proc.stdout
        async for raw in proc.stdout:
            try:
                lines.put_nowait(json.loads(raw))
            except ValueError:
                lines.put_nowait({"text": raw.decode(errors="replace")})

    async def _read_stderr(self, proc) -> None:
        assert proc.stderr
        async for raw in proc.stderr:
            self.stderr += raw

    async def command(self, text: str, timeout: float = 10) -> dict:
        """Send one simulator command, return its answer."""
        assert self.proc and self.proc.stdin
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        while True:
            reply = await asyncio.wait_for(self._lines.get(), timeout)
            if {"ok", "error", "status"} & reply.keys():
                assert "error" not in reply, reply
                return reply

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
        assert self.proc
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        """Power cut: SIGKILL, nothing gets to run."""
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


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
