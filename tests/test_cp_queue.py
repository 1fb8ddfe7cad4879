"""The offline queue survives power cuts: SIGKILL the micropython process at random moments while
it queues and delivers messages; every message that was queued reaches the "central system" in
order, repeats allowed (the real central system recognises them), none lost."""

import json
import random
import subprocess
import time

from host import mpy
from tests.cp_driver import TESTS


def run(data_dir, mode: str, kill_after: float | None) -> list[tuple[str, int]]:
    argv = mpy.command(TESTS / "mp_cp_queue.py", str(data_dir), mode)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=mpy.environ())
    try:
        if kill_after is None:
            out, _ = proc.communicate(timeout=60)
        else:
            time.sleep(kill_after)  # a random moment to cut the power, not synchronisation
            proc.kill()
            out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    # A cut may tear the last line: only complete lines count.
    lines = [line.split() for line in out.split("\n")[:-1]]
    return [(kind, int(n)) for kind, n in lines]


def test_queue_loses_nothing_across_power_cuts(tmp_path):
    rng = random.Random(1234)
    queued: list[int] = []
    sent: list[int] = []
    for _ in range(12):
        events = run(tmp_path, "run", rng.uniform(0.05, 0.4))
        if not events:
            continue  # cut before it said anything
        kind, opened = events[0]
        if opened == -1:
            assert not queued  # no transaction yet
            opened = 0
        last = max(queued, default=0)
        # The open transaction keeps its last meter value: the last push printed, or one more
        # whose push completed just before the cut.
        assert kind == "O" and opened in (last, last + 1), (opened, last)
        queued += [n for kind, n in events[1:] if kind == "P"] + [opened]
        sent += [n for kind, n in events[1:] if kind == "S"]
    events = run(tmp_path, "drain", None)
    sent += [n for kind, n in events[1:] if kind == "S"]
    assert queued, "nothing was queued before the cuts"
    once = [n for i, n in enumerate(sent) if i == 0 or sent[i - 1] != n]
    # Start (n = 0) first, then every queued message exactly once, in order.
    assert once[0] == 0 and once[1:] == sorted(set(once[1:]))
    assert set(queued) <= set(once)


def test_storage_full_drops_meter_values_then_refuses_starts_keeps_the_stop(tmp_path):
    argv = mpy.command(TESTS / "mp_cp_full.py", str(tmp_path))
    done = subprocess.run(argv, env=mpy.environ(), capture_output=True, text=True, timeout=60)
    summary, order = (json.loads(line) for line in done.stdout.splitlines())
    assert summary["kept"] > 10 and summary["dropped"] > 0  # meter values beyond their limit
    assert 0 < summary["starts"] < 100  # then new transactions, until their limit
    assert summary["stop"] is True  # the finished transaction's Stop always fits
    starts = ["StartTransaction"] * summary["starts"]
    assert order == [
        "StartTransaction",
        *["MeterValues"] * summary["kept"],
        *starts,
        "StopTransaction",
    ]
