"""Properties of the station over hypothesis-generated EV and fault sequences, played through
the firmware under micropython (a batch of sequences per micropython process)."""

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.firmware.harness import config, play

STEP_MS = 10
DEADLINE_MS = 20  # after a trigger the contactor must be open by then
SILENCE_MS = config()["limits"]["meter_silence_ms"]
STOP_TIMEOUT_MS = config()["limits"]["stop_timeout_ms"]
N = st.sampled_from([1, 2])

EVENT = st.one_of(
    st.tuples(st.just("ev"), N, st.sampled_from("AABBCCCDEF")),
    st.tuples(st.just("ev"), N, st.sampled_from("BC")),
    st.tuples(st.just("diode"), N, st.sampled_from([0, 0, 1])),
    st.tuples(st.just("vent"), N, st.sampled_from([0, 1])),
    st.tuples(st.just("leak"), N, st.sampled_from([0, 0, 10, 40])),
    st.tuples(st.just("rcddead"), N, st.sampled_from([0, 0, 0, 1])),
    st.tuples(st.just("weld"), N, st.sampled_from([0, 0, 0, 1])),
    st.tuples(st.just("temp"), st.sampled_from([25, 25, 65, 79, 85, -60, 500])),
    st.tuples(st.just("meter"), N, st.sampled_from([None, None, "silent", "garbage", "crc"])),
    st.tuples(st.just("permit"), N, st.sampled_from([0, 1, 1])),
    st.tuples(st.just("available"), N, st.sampled_from([0, 1, 1])),
    st.tuples(st.just("limit"), N, st.sampled_from([None, None, 0, 5, 10, 16.5, 40])),
    st.tuples(st.just("clear"), st.sampled_from([0, 1, 2])),
    st.tuples(st.just("noise"), N, st.sampled_from([0, 800])),
    st.tuples(st.just("power"), N, st.sampled_from([0, 3000, 11000, 40000])),
    st.tuples(st.just("obey"), N, st.sampled_from([0, 1, 1])),
    st.tuples(st.just("proximity"), N, st.sampled_from([-1, 5, 100, 680, 1500])),
    # Out-of-range ADC readings (None: the EV's own again).
    st.tuples(st.just("pilot_mv"), N, st.sampled_from([None, 20000, -20000]), st.just(-12000)),
)
SEQUENCE = st.lists(st.tuples(st.sampled_from([0, 10, 30, 200, 600, 1500]), EVENT), max_size=30)
SCENARIO = st.tuples(st.booleans(), st.booleans(), SEQUENCE)


# Both EVs plug in and ask for charge first, so that sequences start from charging sessions.
SESSIONS = [["ev", 1, "B"], ["ev", 2, "B"], ["run", 300], ["ev", 1, "C"], ["ev", 2, "C"]]


def scenario(ventilation, free_vend, sequence):
    script = list(SESSIONS)
    for delay, event in sequence:
        script += [["run", delay], list(event)]
    script.append(["run", 1000])
    return {
        "config": config(ventilation=ventilation, free_vend=free_vend),
        "script": script,
        "trace": True,
    }


def event_times(script):
    """(time, event) of each event of a script: runs advance the clock, events take none."""
    now, timed = 0, []
    for op in script:
        if op[0] == "run":
            now += op[1] // STEP_MS * STEP_MS
        else:
            timed.append((now, op))
    return timed


def deadline(event, n, ventilation):
    """If `event` forces connector n open until the next event at least: how long the station
    may take to open it. None if it does not."""
    name, args = event[0], event[1:]
    if name == "temp":
        return DEADLINE_MS if args[0] >= 80 or args[0] < -40 else None
    if name == "clear" or args[0] != n:
        return None
    value = args[1]
    if name == "ev" and not (value == "C" or (value == "D" and ventilation)):
        return DEADLINE_MS
    if name == "vent" and value and not ventilation:
        return DEADLINE_MS  # an EV that needs ventilation presents D
    if name == "diode" and value:
        # Seen only with PWM on; with the offer withdrawn the stop timeout bounds it.
        return STOP_TIMEOUT_MS + DEADLINE_MS
    if name == "pilot_mv" and value is not None:
        return DEADLINE_MS  # out of range: state F
    if name == "meter" and value:
        return SILENCE_MS + DEADLINE_MS
    if (name in ("permit", "available") and not value) or (name == "limit" and value in (0, 5)):
        return STOP_TIMEOUT_MS + DEADLINE_MS  # the EV may take this long to stop drawing
    return None


def subject(event):
    """What an event sets: (name,) for the station, (name, connector) for a connector."""
    return tuple(event[:1] if event[0] in ("temp", "clear") else event[:2])


def check(scenario_, result, ventilation):
    assert result["error"] is None, result["error"]
    end = result["end"]
    timed = event_times(scenario_["script"])
    for n in (1, 2):
        entries = [e for e in result["trace"] if e[1] == n]
        ends = [e[0] for e in entries[1:]] + [end + STEP_MS]
        latched, previous_t, was_out, pwm_off_since = set(), -1, False, None
        for entry, until in zip(entries, ends, strict=True):
            t, _, ev, out, duty, _, faults, _, _, rcd_input = entry
            assert "hang" not in faults, f"an exception escaped the control step at {t}"
            active = [f for f in faults.replace("|", ",").split(",") if f]
            if out:
                assert ev == "C" or (ev == "D" and ventilation), f"{n} closed in {ev} at {t}"
                assert all(f == "derating" for f in active), f"{n} closed with {active} at {t}"
                assert was_out or 0 < duty < 100, f"{n} closed without PWM at {t}"
                if duty == 100:  # offer withdrawn: the EV has stop_timeout_ms to stop
                    pwm_off_since = t if pwm_off_since is None else pwm_off_since
                    assert until - pwm_off_since <= STOP_TIMEOUT_MS + STEP_MS, f"{n} at {t}"
                if rcd_input:
                    assert until - t <= STEP_MS, f"{n}: RCD trip at {t} not acted on"
            # A latched fault stays until a clear of its connector (or of the station, 0).
            now_latched = {f for f in active if f.endswith("!")}
            cleared = any(
                e[0] == "clear" and e[1] in (0, n) and previous_t <= te < t for te, e in timed
            )
            assert cleared or latched <= now_latched, f"{n}: {latched - now_latched} went at {t}"
            latched, previous_t, was_out = now_latched, t, out
            if not (out and duty == 100):
                pwm_off_since = None
        for index, (te, event) in enumerate(timed):
            allowed_ms = deadline(event, n, ventilation)
            if allowed_ms is None:
                continue
            # The trigger holds until the next event that sets the same thing.
            later = [t for t, e in timed[index + 1 :] if subject(e) == subject(event)]
            next_event = later[0] if later else end + STEP_MS
            if next_event <= te + allowed_ms:
                continue  # undone before the deadline
            for entry, until in zip(entries, ends, strict=True):
                closed_after_deadline = until > te + allowed_ms and entry[0] < next_event
                assert not (entry[3] and closed_after_deadline), (
                    f"{event}@{te}: {n} closed at {entry[0]}"
                )


# Each example costs a micropython run (about a second), so shrinking would take minutes:
# a failure is reported as generated (the batch is small enough to read).
@settings(
    max_examples=12,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(SCENARIO, min_size=6, max_size=6))
def test_safety_properties_hold_over_generated_sequences(batch):
    scenarios = [scenario(*s) for s in batch]
    for (ventilation, _, _), s, result in zip(batch, scenarios, play(*scenarios), strict=True):
        check(s, result, ventilation)
