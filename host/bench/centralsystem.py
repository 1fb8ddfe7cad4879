"""The central system a replay runs against when no `--cs URL` is given: the project's own
(host/cs) on a throw-away SQLite database, accepting any station and the session's id tags."""

import tempfile
from pathlib import Path


class EmbeddedCentralSystem:
    def __init__(self, tags: set[str]):
        self.tags = tags
        self._dir = tempfile.TemporaryDirectory(prefix="evse-bench-cs-")
        self._cs = None
        self._store = None

    async def start(self) -> str:
        """Start on a free port; the URL stations connect to (append /<id>)."""
        from host.cs import server, storage
        from host.cs.store import Store

        self._store = Store("sqlite:///" + str(Path(self._dir.name) / "cs.sqlite3"))
        await self._store.open()
        for tag in self.tags:
            await self._store.call(storage.set_id_tag, tag)
        self._cs = server.CentralSystem(self._store, unknown="accept", ping_interval_s=60)
        await self._cs.start("127.0.0.1", 0)
        return f"ws://127.0.0.1:{self._cs.port}/ocpp"

    async def stop(self) -> None:
        if self._cs is not None:
            await self._cs.stop()
        if self._store is not None:
            await self._store.close()
        self._dir.cleanup()
