"""firmware/station/meter.py under micropython: MeterBus polling SimMeters over a loopback UART
(tests/mp_meter.py) — values, faults classified and retried, recovery, never an exception."""

import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.mp_batch import under_micropython

SCRIPT = Path(__file__).with_name("mp_meter.py")

THREE_PHASE = [[230.0, 231.5, 229.25], [16.0, 15.5, 14.25]]
CODES = {"silent": "timeout", "garbage": "garbage", "crc": "crc", "exception": "exception:4"}
ALL_MODELS = [["SDM630", 1], ["SDM120", 2], ["B23", 3]]


def run(*cases):
    return under_micropython(SCRIPT, list(cases))


def f32(value):
    return struct.unpack(">f", struct.pack(">f", value))[0]


def expected_values(model):
    voltages, currents = THREE_PHASE
    phases = 1 if model == "SDM120" else 3
    voltages = voltages[:phases] + [0.0] * (3 - phases)
    currents = currents[:phases] + [0.0] * (3 - phases)
    power = sum(v * i for v, i in zip(voltages, currents, strict=True))
    return voltages, currents, power


@pytest.mark.parametrize("chunk,noise,lag", [(0, "", 0), (1, "00ff", 2), (7, "fe", 1)])
def test_readings_match_the_simulated_meters(chunk, noise, lag):
    interval = 1000
    case = {
        "meters": ALL_MODELS,
        "measure": [THREE_PHASE] * 3,
        "chunk": chunk,
        "noise": noise,
        "lag": lag,
        "timeout_ms": 2000,  # one byte per 10 ms step: a B23 block takes ~1 s to arrive
        "interval_ms": interval,
        "phases": [[6000, {}]],
    }
    [result] = run(case)
    assert result["raised"] is None
    end = result["phases"][0]
    for (model, _address), reading, sim_energy in zip(
        ALL_MODELS, end["readings"], result["sims"], strict=True
    ):
        voltages, currents, power = expected_values(model)
        assert reading["error"] is None and reading["failures"] == 0
        assert end["now"] - 3 * interval <= reading["ok_ms"] <= end["now"]
        if model == "B23":  # integers: 0.1 V, 0.01 A, 0.01 W, 0.01 kWh resolution
            assert reading["voltage_v"] == pytest.approx(voltages, abs=0.05)
            assert reading["current_a"] == pytest.approx(currents, abs=0.005)
            assert reading["power_w"] == pytest.approx(power, abs=0.005)
            resolution = 10.0
        else:
            assert reading["voltage_v"] == [f32(v) for v in voltages]
            assert reading["current_a"] == [f32(i) for i in currents]
            assert reading["power_w"] == f32(power)
            resolution = 0.01
        assert reading["frequency_hz"] == pytest.approx(50.0)
        # Energy as read at most ~3 intervals before the end of the run, when the sim had more.
        lag_wh = power * 3 * interval / 3_600_000
        assert sim_energy - lag_wh - resolution <= reading["energy_wh"] <= sim_energy + resolution
        assert reading["energy_wh"] > 0 and reading["energy_export_wh"] == 0.0
        assert sim_energy == pytest.approx(power * 6000 / 3_600_000)  # the sim integrates power


@pytest.mark.parametrize("model", ["SDM630", "SDM120", "B23"])
def test_power_fed_back_counts_as_export(model):
    voltages, currents = THREE_PHASE
    case = {
        "meters": [[model, 5]],
        "measure": [[voltages, [-i for i in currents]]],
        "phases": [[3600, {}]],
    }
    [result] = run(case)
    [reading] = result["phases"][0]["readings"]
    _, _, power = expected_values(model)
    assert reading["power_w"] == pytest.approx(-power, abs=0.01)
    assert reading["current_a"] == pytest.approx(expected_values(model)[1], abs=0.01)
    assert reading["energy_wh"] == 0.0
    assert 0 < reading["energy_export_wh"] <= result["sims"][0] + 10
    assert reading["energy_export_wh"] == pytest.approx(power * 3 / 3600, abs=power / 3600 + 10)


@pytest.mark.parametrize("fault", sorted(CODES))
def test_each_fault_is_classified_retried_and_recovers(fault):
    retries = 2
    case = {
        "meters": [["SDM630", 1], ["B23", 3]],
        "measure": [THREE_PHASE] * 2,
        "retries": retries,
        "timeout_ms": 100,
        "phases": [[1500, {}], [3000, {"0": fault}], [2500, {"0": None}]],
    }
    [result] = run(case)
    assert result["raised"] is None
    before, during, after = (phase["readings"] for phase in result["phases"])
    assert before[0]["error"] is None and before[0]["ok_ms"] is not None
    # Under the fault: classified, each cycle tried 1 + retries times, no new good reading.
    assert during[0]["error"] == CODES[fault]
    assert during[0]["ok_ms"] == before[0]["ok_ms"]
    assert during[0]["failures"] == 3 * (1 + retries)  # cycles at 2, 3 and 4 s
    # The other meter on the bus is unaffected.
    assert during[1]["error"] is None and during[1]["ok_ms"] > before[1]["ok_ms"]
    # Once the meter behaves again, the next cycle clears the error.
    assert after[0]["error"] is None
    assert after[0]["ok_ms"] > during[0]["ok_ms"]
    assert after[0]["failures"] == during[0]["failures"]


def test_a_meter_missing_from_the_bus_times_out_without_disturbing_others():
    case = {
        "meters": [["SDM630", 1]],
        "polled": [["SDM630", 1], ["SDM120", 9]],
        "measure": [THREE_PHASE],
        "phases": [[2500, {}]],
    }
    [result] = run(case)
    present, missing = result["phases"][0]["readings"]
    assert present["error"] is None and present["ok_ms"] >= 2000
    assert missing["error"] == "timeout" and missing["ok_ms"] is None
    assert result["raised"] is None


def test_a_failing_uart_never_raises_and_is_reported():
    case = {"meters": [["B23", 3]], "broken_uart": True, "phases": [[2500, {}]]}
    [result] = run(case)
    [reading] = result["phases"][0]["readings"]
    assert result["raised"] is None
    assert reading["error"] is not None and reading["ok_ms"] is None


def test_polling_a_dead_line_allocates_nothing():
    case = {"meters": [["SDM630", 1], ["B23", 3]], "dead_locked_ms": 3500, "phases": []}
    [result] = run(case)
    for reading in result["readings"]:
        assert reading["error"] == "timeout"  # a MemoryError inside step would say 'garbage'
        assert reading["failures"] >= 3


FAULTS = st.sampled_from([None, "silent", "garbage", "crc", "exception"])


@st.composite
def scenarios(draw):
    phases = draw(
        st.lists(
            st.tuples(st.sampled_from([300, 1500, 4000]), st.tuples(FAULTS, FAULTS)),
            min_size=1,
            max_size=5,
        )
    )
    noise = bytes(b for b in draw(st.binary(max_size=4)) if b not in (1, 3))
    return {
        "meters": [["SDM630", 1], ["B23", 3]],
        "measure": [THREE_PHASE] * 2,
        "chunk": draw(st.sampled_from([0, 5, 16, 64])),
        "lag": draw(st.integers(0, 2)),
        "noise": noise.hex(),
        "timeout_ms": 250,
        "retries": draw(st.integers(0, 2)),
        "interval_ms": 1000,
        "phases": [[duration, {"0": f0, "1": f1}] for duration, (f0, f1) in phases],
    }


def test_random_fault_sequences_are_always_classified_never_raised():
    cases = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenarios())
    def collect(case):
        cases.append(case)

    collect()
    for case, result in zip(cases, run(*cases), strict=True):
        assert result["raised"] is None
        start = 0
        for (duration, faults), phase in zip(case["phases"], result["phases"], strict=True):
            end = phase["now"]
            for index, reading in enumerate(phase["readings"]):
                assert reading["error"] in (None, *CODES.values())
                fault = faults[str(index)]
                if duration < 4000:  # too short for a verdict on this phase alone
                    continue
                if fault is None:
                    assert reading["error"] is None, (case, phase)
                    assert reading["ok_ms"] >= end - 2500
                else:
                    assert reading["error"] == CODES[fault], (case, phase)
                    assert reading["ok_ms"] is None or reading["ok_ms"] <= start + 1000
            start = end
