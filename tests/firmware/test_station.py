"""Scripted EV and fault sequences through the station firmware under micropython."""

from tests.firmware.harness import config, play, play_one

PLUG = [["ev", 1, "B"], ["run", 500]]
CHARGE = PLUG + [["ev", 1, "C"], ["run", 1500]]


def connector(result, label, n=1):
    return result["snaps"][label]["connectors"][n - 1]


def test_a_session_offers_closes_meters_and_opens_on_c_to_b():
    result = play_one(
        [["run", 200], ["snap", "idle"]]
        + PLUG
        + [["snap", "plugged"], ["ev", 1, "C"], ["run", 3000], ["snap", "charging"]]
        + [["ev", 1, "B"], ["run", 10], ["snap", "paused"], ["ev", 1, "A"], ["run", 10]]
        + [["snap", "unplugged"]]
    )
    idle, plugged = connector(result, "idle"), connector(result, "plugged")
    assert (idle["pilot"], idle["duty"], idle["out"]) == ("A", 100, False)
    assert (plugged["pilot"], plugged["duty"], plugged["out"]) == ("B", 53.3, False)
    charging = connector(result, "charging")
    assert charging["contactor"] and charging["out"] and charging["limit"] == 32
    assert charging["energy"] > 0
    paused = connector(result, "paused")
    assert not paused["out"] and paused["pilot"] == "B"
    unplugged = connector(result, "unplugged")
    assert (unplugged["duty"], unplugged["limit"]) == (100, 0)
    kinds = [e[0] for e in result["events"]]
    assert kinds.count("contactor") == 2 and "fault" not in kinds


def test_without_permit_no_pwm_and_a_withdrawn_permit_stops_gracefully():
    result = play_one(
        PLUG
        + [["ev", 1, "C"], ["run", 500], ["snap", "unpermitted"], ["permit", 1, 1], ["run", 500]]
        + [["snap", "charging"], ["permit", 1, 0], ["run", 100], ["snap", "stopping"]]
        + [["run", 1000], ["snap", "stopped"]],
        free_vend=False,
    )
    unpermitted = connector(result, "unpermitted")
    assert (unpermitted["duty"], unpermitted["out"]) == (100, False)
    assert connector(result, "charging")["out"]
    stopping = connector(result, "stopping")
    assert stopping["duty"] == 100 and stopping["out"]  # the EV gets time to stop drawing
    assert not connector(result, "stopped")["out"]  # stop_timeout_ms later, open anyway


def test_limit_is_the_minimum_of_max_cable_thermal_and_external():
    result = play_one(
        [["proximity", 1, 680]]  # a 20 A cable
        + CHARGE
        + [["snap", "cable"], ["limit", 1, 10], ["run", 20], ["snap", "external"]]
        + [["limit", 1, 5], ["run", 20], ["snap", "below6"], ["limit", 1, None], ["run", 500]]
        + [["temp", 70], ["run", 20], ["snap", "derating"], ["temp", 25], ["run", 20]]
        + [["snap", "cool"]],
        max_current_a=16,
    )
    assert connector(result, "cable")["limit"] == 16  # board max below the 20 A cable
    assert connector(result, "external")["limit"] == 10
    assert connector(result, "external")["duty"] == 16.6
    below = connector(result, "below6")
    assert below["duty"] == 100 and below["limit"] == 0
    derating = result["snaps"]["derating"]
    assert derating["faults"] == "derating" and derating["connectors"][0]["out"]
    assert connector(result, "derating")["limit"] == 11  # 16 A at 60 °C .. 6 A at 80 °C
    assert result["snaps"]["cool"]["faults"] == ""


def test_ventilation_state_d_only_when_allowed():
    script = PLUG + [["vent", 1, 1], ["ev", 1, "C"], ["run", 500], ["snap", "d"]]
    assert not connector(play_one(script), "d")["out"]
    assert connector(play_one(script, ventilation=True), "d")["out"]


def test_pilot_faults_and_diode_open_at_once():
    for fault, code in (
        (["ev", 1, "E"], "pilot_e"),
        (["ev", 1, "F"], "pilot_f"),
        (["diode", 1, 1], "diode"),
        (["pilot_mv", 1, 20000, -12000], "pilot_f"),
    ):
        result = play_one(CHARGE + [["snap", "before"], fault, ["run", 10], ["snap", "after"]])
        assert connector(result, "before")["out"]
        after = connector(result, "after")
        assert not after["out"] and after["faults"] == code, (fault, after)


def test_a_rcd_trip_opens_at_once_retries_then_latches_until_cleared():
    result = play_one(
        CHARGE
        + [["leak", 1, 40], ["run", 10], ["snap", "tripped"], ["run", 1000], ["snap", "retried"]]
        + [["run", 2000], ["snap", "latched"], ["leak", 1, 0], ["run", 1000], ["snap", "held"]]
        + [["clear", 1], ["run", 1000], ["snap", "cleared"]]
    )
    tripped = connector(result, "tripped")
    assert not tripped["out"] and tripped["faults"] == "rcd"
    assert connector(result, "latched")["faults"] == "rcd!"
    held = connector(result, "held")
    assert held["faults"] == "rcd!" and not held["out"] and held["duty"] == 100
    assert connector(result, "cleared")["out"]
    trips = [e for e in result["events"] if e[0] == "fault" and e[2] == "rcd"]
    assert len(trips) == 4  # rcd_retries = 3 trips are retried; the 4th latches


def test_rcd_self_test_runs_before_each_session_and_a_dead_rcd_latches():
    result = play_one([["rcddead", 1, 1]] + CHARGE + [["run", 2000], ["snap", "dead"]])
    dead = connector(result, "dead")
    assert dead["faults"] == "rcd_selftest!" and dead["duty"] == 100 and not dead["out"]
    result = play_one(
        [["ev", 1, "B"], ["run", 60], ["snap", "testing"], ["run", 100], ["snap", "passed"]]
    )
    assert connector(result, "testing")["rcd_test"] and connector(result, "testing")["duty"] == 100
    assert connector(result, "passed")["duty"] == 53.3


def test_a_welded_contactor_latches_and_refuses_new_sessions():
    result = play_one(
        CHARGE
        + [["weld", 1, 1], ["ev", 1, "B"], ["run", 500], ["snap", "welded"], ["ev", 1, "A"]]
        + [["run", 100]]
        + CHARGE
        + [["snap", "refused"], ["clear", 1], ["run", 100], ["snap", "still"], ["weld", 1, 0]]
        + [["clear", 1], ["run", 1000], ["snap", "repaired"]]
    )
    assert connector(result, "welded")["faults"] == "weld!"
    refused = connector(result, "refused")
    assert refused["duty"] == 100 and not refused["contactor"]
    assert connector(result, "still")["faults"] == "weld!"  # cause still there: not cleared
    assert connector(result, "repaired")["contactor"]


def test_overcurrent_for_the_configured_time_opens_until_unplugged():
    result = play_one(
        CHARGE
        + [["obey", 1, 0], ["power", 1, 40000], ["run", 2500], ["snap", "over"]]
        + [["ev", 1, "A"], ["run", 100], ["obey", 1, 1]]
        + CHARGE
        + [["snap", "again"]]
    )
    over = connector(result, "over")
    assert not over["out"] and over["faults"] == "overcurrent"
    assert connector(result, "again")["out"]


def test_an_ev_following_a_lower_limit_within_the_tolerance_keeps_charging():
    """IEC 61851-1 gives the EV 5 s to follow a lower PWM (overcurrent_ms). One that does so
    after 4.8 s charges on, wherever the meter's polls fall (they come once a second, so the
    reading at the 5 s mark may predate the EV's change); one that does not is stopped."""
    scenarios = []
    for phase_ms in (0, 250, 500, 750):
        script = (
            [["power", 1, 22000]]  # 32 A on three phases
            + CHARGE
            + [["run", 2000 + phase_ms], ["limit", 1, 10], ["obey", 1, 0], ["run", 4800]]
            + [["obey", 1, 1], ["run", 3000], ["snap", "followed"], ["limit", 1, 6]]
            + [["obey", 1, 0], ["run", 7000], ["snap", "ignored"]]
        )
        limits = {"overcurrent_ms": 5000}
        scenarios.append({"config": config(limits=limits), "script": script})
    for result in play(*scenarios):
        assert result["error"] is None, result["error"]
        followed = connector(result, "followed")
        assert followed["out"] and followed["faults"] == "", followed
        assert connector(result, "ignored")["faults"] == "overcurrent"


def test_a_short_excess_is_tolerated():
    result = play_one(
        CHARGE
        + [["obey", 1, 0], ["power", 1, 40000], ["run", 1000], ["obey", 1, 1], ["run", 3000]]
        + [["snap", "after"]],
        limits={"overcurrent_ms": 5000},
    )
    assert connector(result, "after")["out"]


def test_overtemperature_stops_and_resumes_below_the_hysteresis():
    result = play_one(
        CHARGE
        + [["temp", 85], ["run", 10], ["snap", "hot"], ["temp", 78], ["run", 500], ["snap", "warm"]]
        + [["temp", 70], ["run", 1000], ["snap", "cooler"]]
    )
    assert result["snaps"]["hot"]["faults"] == "overtemp"
    assert not connector(result, "hot")["out"]
    assert not connector(result, "warm")["out"]  # 78 °C is within the 5 °C hysteresis
    assert connector(result, "cooler")["out"]


def test_a_silent_or_garbled_meter_leads_to_the_safe_state_and_recovers():
    for fault in ("silent", "garbage", "crc", "exception"):
        result = play_one(
            CHARGE
            + [["meter", 1, fault], ["run", 1000], ["snap", "early"], ["run", 4000]]
            + [["snap", "safe"], ["meter", 1, None], ["run", 3000], ["snap", "back"]]
        )
        assert connector(result, "early")["out"], fault
        safe = connector(result, "safe")
        assert not safe["out"] and safe["duty"] == 100 and safe["faults"] == "meter", fault
        assert connector(result, "back")["out"], fault


def test_pilot_noise_within_the_hysteresis_does_not_interrupt():
    result = play_one(CHARGE + [["noise", 1, 1200], ["run", 5000], ["snap", "noisy"]])
    assert connector(result, "noisy")["out"]
    assert [e for e in result["events"] if e[0] == "contactor"] == [["contactor", 1, True]]


def test_connectors_are_independent():
    result = play_one(
        CHARGE
        + [["ev", 2, "B"], ["run", 500], ["ev", 2, "C"], ["run", 1000], ["snap", "both"]]
        + [["leak", 2, 40], ["run", 10], ["snap", "one"]]
    )
    assert connector(result, "both", 1)["out"] and connector(result, "both", 2)["out"]
    assert connector(result, "one", 1)["out"] and not connector(result, "one", 2)["out"]


def test_the_safety_path_allocates_nothing():
    """Every step of a session, its faults and their contactor openings run with the heap
    locked (a MemoryError would fail the scenario)."""
    result = play_one(
        [["heap_lock", 100], ["ev", 1, "B"], ["heap_lock", 500], ["ev", 1, "C"]]
        + [["heap_lock", 3000], ["snap", "charging"], ["ev", 1, "B"], ["heap_lock", 20]]
        + [["ev", 1, "C"], ["heap_lock", 500], ["leak", 1, 40], ["heap_lock", 500]]
        + [["leak", 1, 0], ["diode", 1, 1], ["heap_lock", 500], ["diode", 1, 0], ["temp", 90]]
        + [["heap_lock", 100], ["temp", 25], ["heap_lock", 500], ["meter", 1, "silent"]]
        + [["heap_lock", 4000], ["meter", 1, None], ["heap_lock", 2000], ["weld", 1, 1]]
        + [["ev", 1, "E"], ["heap_lock", 500], ["snap", "end"]]
    )
    assert connector(result, "charging")["out"]
    # The diode fault holds until the EV unplugs (PWM is off, so it cannot be re-checked).
    assert connector(result, "end")["faults"] == "weld!,diode,pilot_e"


def test_an_exception_in_a_step_opens_that_connector_and_latches_hang():
    # A driver returning junk instead of millivolts makes the step raise inside.
    result = play_one(
        CHARGE
        + [["ev", 2, "B"], ["run", 500], ["ev", 2, "C"], ["run", 1000]]
        + [["pilot_mv", 1, "junk", "junk"], ["run", 10], ["snap", "broken"]]
        + [["pilot_mv", 1, None, None], ["run", 500], ["snap", "held"], ["clear", 1]]
        + [["run", 1000], ["snap", "cleared"]]
    )
    broken = connector(result, "broken")
    assert not broken["out"] and broken["faults"] == "hang!"
    assert connector(result, "broken", 2)["out"]  # the other connector carries on
    assert connector(result, "held")["faults"] == "hang!" and not connector(result, "held")["out"]
    assert connector(result, "cleared")["out"]


def test_sessions_and_the_weld_check_work_after_days_of_uptime_on_the_esp32s_ticks():
    """The ESP32's ticks wrap every 2**30 ms: a time stamp from boot reads as in the future
    from 6.2 days of uptime on. Neither the RCD self-test (due since boot) nor the weld check
    (open since boot) may wait for the next 6.2 days."""
    days = 2**29 + 10_000  # a little over 6.2 days after boot
    session, weld = play(
        {
            "config": config(meter=None),
            "script": [["run", 1000], ["idle", days]] + CHARGE + [["snap", "charging"]],
            "esp32_ticks": True,
        },
        {
            "config": config(meter=None),
            "script": [["run", 1000], ["idle", days], ["weld", 1, 1], ["run", 500], ["snap", "w"]],
            "esp32_ticks": True,
        },
    )
    assert session["error"] is None and weld["error"] is None
    charging = connector(session, "charging")
    assert charging["out"] and charging["duty"] == 53.3, charging
    assert connector(weld, "w")["faults"] == "weld!"
