"""Boot-to-Accepted time of the firmware's charge point: from starting the micropython process
(firmware/main.py, simulated board) to the central system answering BootNotification Accepted,
over ws:// and wss:// on 127.0.0.1. Baseline: the same process start without OCPP (until the
simulator reports ready)."""

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cp_centralsystem import CentralSystem, make_tls  # noqa: E402
from tests.cp_station import Firmware  # noqa: E402

RUNS = 5


async def boot_once(base: Path, scheme: str) -> tuple[float, float]:
    """(seconds to 'ready', seconds to Accepted) of one cold start."""
    flash = base / "flash"
    ssl = make_tls(flash) if scheme == "wss" else None
    cs = await CentralSystem().start(ssl=ssl)
    extra = {"security_profile": 0, "ca": "ca.der"} if ssl else {}
    fw = Firmware(flash, cs.url(scheme), **extra)
    try:
        t0 = time.perf_counter()
        await fw.start()
        ready = time.perf_counter() - t0

        def accepted():
            return any(who == "cs" and m[0] == 3 for who, m in cs.frames)

        await cs.wait(accepted, timeout=30, what="Accepted")
        return ready, time.perf_counter() - t0
    finally:
        await fw.kill()
        await cs.stop()


async def main() -> None:
    for scheme in ("ws", "wss"):
        readies, accepts = [], []
        for _ in range(RUNS):
            with tempfile.TemporaryDirectory() as tmp:
                ready, accepted = await boot_once(Path(tmp), scheme)
            readies.append(ready)
            accepts.append(accepted)
        print(
            json.dumps(
                {
                    "transport": scheme,
                    "runs": RUNS,
                    "process_start_to_ready_ms (baseline)": round(
                        1000 * statistics.median(readies)
                    ),
                    "process_start_to_boot_accepted_ms": round(1000 * statistics.median(accepts)),
                    "ready_to_accepted_ms": round(
                        1000 * statistics.median(map(float.__sub__, accepts, readies))
                    ),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
