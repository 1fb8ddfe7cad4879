"""The whole firmware (main.py, app, supervision) as a micropython process on the sim board."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from host import mpy
from host.sim import RESET_EXIT, SimError, SimStation


def event(kind, value=None):
    def matches(line):
        if "event" not in line or line["event"][0] != kind:
            return False
        return value is None or line["event"][2] == value

    return matches


def run_script(name, *args):
    """The JSON result a micropython script beside this file prints; it must exit cleanly."""
    done = subprocess.run(
        mpy.command(Path(__file__).with_name(name), *args),
        capture_output=True,
        text=True,
        env=mpy.environ(),
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def charging(tmp_path):
    station = SimStation(tmp_path).start()
    try:
        for command in ("permit 1 1", "ev 1 B", "ev 1 C"):
            station.command(command)
        station.next_line(event("contactor", True), timeout=5)
        yield station
    finally:
        station.stop()


def test_a_session_through_the_app(charging):
    charging.command("ev 1 B")
    charging.next_line(event("contactor", False), timeout=2)
    status = charging.status()
    assert status["connectors"][0]["pilot"] == "B"
    assert not status["connectors"][0]["contactor"]


def test_a_bad_sim_command_is_answered_an_error_and_the_station_runs_on(charging):
    for command in ("limit 1 inf", "limit 1 nan", "limit 1 x"):  # inf: an OverflowError
        with pytest.raises(SimError, match=command):
            charging.command(command)
    status = charging.status()
    assert status["faults"] == [] and status["connectors"][0]["contactor"] is True


def test_a_stalled_loop_opens_the_contactor_and_recovers(charging):
    charging.command("stall 400")  # blocks the event loop like a runaway task
    charging.next_line(event("contactor", False), timeout=2)
    stall = charging.next_line(event("fault"), timeout=2)["event"][2]
    assert (stall["code"], stall["message"], stall["latched"]) == ("hang", "stall", False)
    charging.next_line(event("fault_cleared"), timeout=2)
    charging.next_line(event("contactor", True), timeout=2)


def test_a_crash_in_any_task_opens_at_once_then_the_watchdog_resets(charging):
    charging.command("crash")
    charging.next_line(event("contactor", False), timeout=2)
    crash = charging.next_line(event("fault"), timeout=2)["event"][2]
    assert (crash["code"], crash["message"], crash["latched"]) == ("hang", "crash", True)
    assert charging.wait_exit(timeout=10) == RESET_EXIT  # watchdog_ms is 2000
    assert "RESET watchdog" in charging.log


def test_a_hang_longer_than_the_watchdog_resets_with_the_contactor_open(charging):
    charging.send("stall 5000")  # the guard opens at once but cannot report before the reset
    assert charging.wait_exit(timeout=10) == RESET_EXIT


@pytest.mark.parametrize(("speed", "step"), [(1, 10), (50, 10), ("max", 50)])
def test_board_time_moves_by_control_steps_and_supervision_counts_real_time(speed, step):
    """Each control step spans one sim step of board time, whatever the speed or the host's
    load; board time never runs ahead of real time * speed. A 20 ms block of the event loop
    is no stall, a 300 ms one is, at any speed."""
    result = run_script("mp_clocks.py", str(speed), "20", "300", str(step))
    steps, board_ms = result["steps"], result["board_ms"]
    assert abs(board_ms - steps * step) <= step  # one step per sim step
    if speed == 1:
        assert 400 <= board_ms <= 510  # the host keeps up with real time
    elif speed != "max":
        assert board_ms <= 510 * speed
    assert steps >= 20  # even on a busy host
    assert result["closed"]
    assert result["short"] == {"closed": True, "hang": []}
    assert result["long"] == {"closed": False, "hang": ["stall"]}


def test_a_call_waits_for_its_answer_in_real_time_however_fast_the_sim_runs():
    """The central system answers in real time: 400 ms is far more than the CALL's 30 s
    time-out in the board time of a sim running flat out, and still no time-out."""
    result = run_script("mp_timeouts.py", "400")
    assert result["answer"] == {"ok": True}
    assert result["board_ms"] > 30_000  # the sim did run past the time-out in board time


def test_bad_board_json_is_a_clear_error(tmp_path):
    (tmp_path / "board.json").write_text("{not json")
    with pytest.raises(SimError, match="board.json is not valid JSON"):
        SimStation(tmp_path).start()
    (tmp_path / "board.json").write_text(json.dumps({"board": "sim", "limits": {"nope": 1}}))
    with pytest.raises(SimError, match="unknown key nope"):
        SimStation(tmp_path).start()


def test_bad_commands_are_answered_not_fatal(tmp_path):
    with SimStation(tmp_path) as station:
        for line in ("ev 9 C", "ev 1 X", "power 1 lots", "frobnicate", "leak"):
            with pytest.raises(SimError):
                station.command(line)
        assert station.status()["connectors"][0]["pilot"] == "A"


def test_evse_demo_plays_its_session():
    done = subprocess.run(
        [sys.executable, "-m", "host", "demo", "--speed", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "closed" in done.stdout and "Demo finished." in done.stdout
    assert " C " in done.stdout and " B " in done.stdout
