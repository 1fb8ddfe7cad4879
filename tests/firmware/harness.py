"""Plays scenarios through the firmware under `micropython` (tests/firmware/driver.py)."""

import json
import subprocess
from pathlib import Path

from host import mpy

DRIVER = Path(__file__).with_name("driver.py")

# Short timings so scenarios stay brief; the defaults are documented in firmware/station/limits.py.
LIMITS = {
    "rcd_retry_ms": 200,
    "overcurrent_ms": 500,
    "meter_silence_ms": 3000,
    "stop_timeout_ms": 1000,
}


def config(**changes):
    """A sim board.json with a meter, free vend and the short test timings."""
    base = {
        "board": "sim",
        "max_current_a": 32,
        "meter": {"model": "SDM630"},
        "free_vend": True,
        "limits": dict(LIMITS),
    }
    base.update(changes)
    return base


def play(*scenarios, timeout=120):
    """Results of the scenarios, played in one micropython process."""
    text = "".join(json.dumps(s) + "\n" for s in scenarios)
    done = subprocess.run(
        mpy.command(DRIVER),
        input=text,
        capture_output=True,
        text=True,
        env=mpy.environ(),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(scenarios), done.stdout + done.stderr
    return results


def play_one(script, trace=False, **changes):
    (result,) = play({"config": config(**changes), "script": script, "trace": trace})
    assert result["error"] is None, result["error"]
    return result
