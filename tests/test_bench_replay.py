"""The bench: session files, replay against the simulated station (micropython, console on a
pseudo-terminal, OCPP through the bench's relay to the embedded central system), reports,
import of OCPP logs, and a station that stops answering."""

import asyncio
import itertools
import json
import math
import os
import signal
import termios
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.bench import record, report, session
from host.bench.centralsystem import EmbeddedCentralSystem
from host.bench.link import ConsoleLink, open_pty
from host.bench.replay import Event, Replay, judge
from host.bench.session import format_duration
from host.bench.target import MAX_STEP_MS, STEP_MS, SerialTarget, SimTarget, step_for
from host.cli import main
from host.sim import RESET_EXIT
from protocol import console as proto
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / "sessions").glob("*.session"))


# ---- session files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("0s ev plug\n0s ev flap", 2, "unknown action ev 'flap'"),
        ("# comment\n\n0s ev plug\nspeed fast", 4, "speed: 'fast' is not a number"),
        ("0s ev plug\nspeed 0", 2, "speed must be > 0 or max"),
        ("0s ev plug\n+5 ev unplug", 2, "bad time '5'"),
        ("0s expect contactor closed", 1, "usage: expect contactor open|closed within"),
        ("0s expect ocpp Boot x within 1s", 1, "expected field=value, got 'x'"),
        ("0s expect status Charging Sleeping", 1, "usage: expect status"),
        ("0s hw weld maybe", 1, "'maybe' is not on|off"),
        ("0s robot dance", 1, "unknown actor 'robot'"),
        ("0s ev plug\nfrobnicate 3", 2, "unknown statement 'frobnicate'"),
        ("tag-status X Maybe\n0s ev plug", 1, "usage: tag-status"),
    ],
)
def test_a_broken_session_names_the_line_and_the_problem(text, line, problem):
    with pytest.raises(session.SessionError) as error:
        session.parse(text, "broken.session")
    assert str(error.value).startswith(f"broken.session:{line}: ")
    assert problem in str(error.value)


def test_times_relative_and_absolute():
    s = session.parse("1:00:00 ev plug\n+90s user tag A\n+0s expect pilot B within 250ms")
    assert [st.at_ms for st in s.steps] == [3_600_000, 3_690_000, 3_690_000]
    assert s.steps[2].within_ms == 250
    assert session.format_duration(3_690_000) == "1h1m30s"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**9))
def test_durations_round_trip(ms):
    assert session.parse_duration(session.format_duration(ms)) == ms


WORDS = st.sampled_from(
    [
        "0s",
        "+1s",
        "1:00:00",
        "ev",
        "plug",
        "state",
        "C",
        "expect",
        "ocpp",
        "within",
        "5s",
        "x=1",
        "speed",
        "-1",
        "name",
        "user",
        "tag",
        "#",
        "hw",
        "temp",
        "nan",
        "power-cut",
        "op",
        "limit",
    ]
)
LINES = st.lists(WORDS, max_size=6).map(" ".join) | st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, min_size=1, max_size=8))
def test_any_text_parses_or_names_a_line(lines):
    try:
        s = session.parse("\n".join(lines), "f.session")
    except session.SessionError as e:
        assert str(e).startswith("f.session:")
    else:
        assert all(step.at_ms >= 0 for step in s.steps)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_sessions_parse(path):
    s = session.load(path)
    assert s.steps and s.description


def test_the_sim_step_keeps_every_deadline_ten_steps_long():
    """The sim's resolution is its step, whatever the speed: the coarsest step (fastest
    replay) that still gives the tightest deadline ten control steps."""
    tight = session.parse("0s ev plug\n+0s expect pilot B within 200ms", "t.session")
    assert step_for(tight) == 20
    assert (
        step_for(session.parse("0s ev plug\n+0s expect pilot B within 50ms", "b.session"))
        == STEP_MS
    )
    loose = session.parse("0s ev plug\n+0s expect pilot B within 1m", "l.session")
    assert step_for(loose) == MAX_STEP_MS
    assert step_for(session.parse("0s ev plug", "n.session")) == MAX_STEP_MS
    assert session.parse("speed max\n0s ev plug").speed == math.inf
    assert session.parse("0s ev plug").speed == session.DEFAULT_SPEED


def test_a_deadline_counts_from_the_step_before_but_not_past_the_step_after():
    """A late step moves the deadlines after it, but not beyond the next step that ran on
    time: that step may change what the expectation looks at."""
    s = session.parse(
        "0s ev state C\n+5s expect contactor open within 1s\n+0s user tag X\n"
        "+0s expect contactor closed within 1s",
        "j.session",
    )
    timeline = [
        Event(0, "station", "contactor", 1, "open"),
        Event(5400, "station", "contactor", 1, "closed"),  # the tag, run at 5300
    ]
    verdicts = judge(s, timeline, 3, {1: 1500, 3: 300})
    assert [v.outcome for v in verdicts] == ["pass", "pass"]
    late = judge(s, timeline[:1], 3, {1: 1500, 3: 300})
    assert [v.outcome for v in late] == ["pass", "fail"]


# What a noisy serial line makes of station lines: bit flips, truncations, digits of other
# scripts, raw bytes.
NOISY_WORD = st.sampled_from(
    ["C", "closed", "pilOt=C", "pilot=", "limit=3q", "wh=1q0.5", "wh=", "w=x", "rcd"]
) | st.text(max_size=8)
NOISE = st.tuples(
    st.sampled_from(["12", "١٢", "1x"]),
    st.sampled_from(["state", "pilot", "contactor", "limit", "meter", "fault"]),
    st.sampled_from(["1", "²", "١", ""]),
    st.lists(NOISY_WORD, max_size=4),
).map(lambda t: " ".join(["evt", *t[:3], *t[3]]).encode()) | st.binary(max_size=60)
NOISE_SESSION = """
0s ev plug
+0s expect pilot B within 1s
+0s expect contactor closed within 1s
+0s expect limit 16 within 1s
+0s expect fault rcd within 1s
+0s expect status Charging
+0s expect energy 3%
"""


def test_noise_on_the_console_line_stops_neither_the_reader_nor_the_judge(tmp_path):
    master, path = open_pty()
    s = session.parse(NOISE_SESSION, "noise.session")
    bench = Replay(s, SerialTarget(path))
    link = ConsoleLink(path, bench._on_line)
    probes = itertools.count()

    @settings(max_examples=200, deadline=None)
    @given(st.lists(NOISE, max_size=4))
    def noise_then_a_reply(lines):
        probe = f"p{next(probes)}"
        os.write(master, b"\n".join([*lines, f"ok #{probe}".encode(), b""]))
        link.reply(probe, "probe", timeout=5)  # the reader still reads
        judge(s, bench.result.timeline, 3, {})

    try:
        noise_then_a_reply()
    finally:
        link.close()
        os.close(master)
    assert any(e.kind == "meter" for e in bench.result.timeline)
    report.write([bench.result], tmp_path)  # the plot reads the timeline too


def test_a_garbled_answer_to_time_is_asked_again():
    """A bit flipped in the number of a `time` answer ended the replay with a traceback."""
    master, path = open_pty()
    bench = Replay(session.parse(NOISE_SESSION, "noise.session"), SerialTarget(path))
    bench.link = ConsoleLink(path, bench._on_line)
    requests = proto.LineReader(max_line=4096)

    def station():  # answers two `time` requests: the first answer garbled on the line
        for answer in ("3125p", "3125"):
            lines: list = []
            while not lines:
                lines = requests.feed(os.read(master, 4096))
            request_id, name, _ = proto.parse_command(lines[0])
            assert name == "time"
            os.write(master, f"ok #{request_id} {answer}\n".encode())

    answering = threading.Thread(target=station, daemon=True)
    answering.start()
    try:
        assert bench._time() == 3125
    finally:
        answering.join(5)
        bench.link.close()
        os.close(master)


# ---- replay against the simulated station -----------------------------------------------------


# At most half a core per simulated station: two test workers, each with a station and a bench,
# share two cores, and a station starved of CPU for 100 ms trips its (real-time) stall guard.
TEST_SPEED = 50.0


def replay(s, **kwargs):
    lines = []
    result = Replay(s, SimTarget(min(s.speed, TEST_SPEED)), progress=lines.append, **kwargs).run()
    return result, lines


def early_steps(result):
    """Steps that ran before their time: the bench reads the station's clock while it waits,
    so none may (a guess of the station's speed would run them early on a slow host)."""
    return {line: ms for line, ms in result.late_ms.items() if ms < 0}


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_session_replays_on_the_sim(path):
    s = session.load(path)
    if s.pending:
        pytest.skip(f"pending: {s.pending}")
    result, _ = replay(s)
    problems = [
        f"line {v.line}: {v.name}: {v.detail}" for v in result.verdicts if v.outcome != "pass"
    ]
    assert result.passed, "\n".join(problems + result.log[-5:])
    assert not early_steps(result)


QUICK = """
name quick
description A short local charge.
0s  ev plug
+1s user tag 04A1B2C3
+0s expect ocpp StartTransaction idTag=04A1B2C3 within 10s
+1s ev state C
+0s expect contactor closed within 5s
+10s ev unplug
+0s expect contactor open within 1s
+0s expect pilot F within 1s
"""


def test_report_files_and_verdicts(tmp_path):
    result, progress = replay(session.parse(QUICK, "quick.session"))
    verdicts = {v.name: v.outcome for v in result.verdicts}
    assert verdicts["expect contactor closed within 5s"] == "pass"
    assert verdicts["expect contactor open within 1s"] == "pass"
    assert verdicts["expect pilot F within 1s"] == "fail"  # the EV never shorts the pilot
    assert verdicts["contactor open after the run"] == "pass"
    assert any("user tag 04A1B2C3" in line for line in progress)
    index = report.write([result], tmp_path)
    assert index.exists() and (tmp_path / "quick.html").exists()
    assert (tmp_path / "quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    suite = suites.find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["line 11: expect pilot F within 1s"]


def test_the_bench_s_teardown_meets_no_expectation():
    """The EV charges to the end of the run: that the bench then unplugs it and presses stop
    must not pass an expectation the station never met, even with a `duration` ending before
    a deadline (as a recorded session's)."""
    s = session.parse(
        "duration 10s\n0s ev plug\n+1s user tag 04A1B2C3\n+1s ev state C\n"
        "+0s expect contactor closed within 10s\n+5s expect contactor open within 30s\n"
        "+0s expect status Charging Available",
        "teardown.session",
    )
    assert s.end_ms == 37_000
    result, _ = replay(s)
    verdicts = {v.line: v.outcome for v in result.verdicts}
    assert verdicts == {5: "pass", 6: "fail", 7: "fail", None: "pass"}, result.verdicts
    assert result.session_ms == 37_000


def test_the_speed_caps_the_station_clock_and_changes_no_verdict():
    s = session.parse(QUICK, "quick.session")
    capped = Replay(s, SimTarget(10), progress=lambda _: None).run()
    faster = Replay(s, SimTarget(TEST_SPEED), progress=lambda _: None).run()
    # Never ahead of 10x real time, but for the 100 ms of real time the sim may catch up.
    assert capped.session_ms <= 10 * (capped.play_s * 1000 + 100) + MAX_STEP_MS
    outcomes = [[(v.name, v.outcome) for v in r.verdicts] for r in (capped, faster)]
    assert outcomes[0] == outcomes[1]
    assert not early_steps(capped) and not early_steps(faster)


def test_a_station_that_stops_answering_ends_the_run_with_a_verdict():
    s = session.parse("0s ev plug\n+1s ev state C\n+1m ev unplug", "frozen.session")
    target = SimTarget(s.speed)
    frozen = threading.Event()

    def freeze_on_second_step(line):
        if "ev state C" in line and target.proc is not None:
            os.kill(target.proc.pid, signal.SIGSTOP)  # hung: alive, silent
            frozen.set()

    try:
        result = Replay(s, target, progress=freeze_on_second_step, silence_s=2).run()
    finally:
        if target.proc is not None and target.proc.poll() is None:
            os.kill(target.proc.pid, signal.SIGKILL)
    assert frozen.is_set()
    assert not result.passed
    # Frozen before the step's command or between steps: either way a clear verdict, quickly.
    assert "no reply to `ev`" in result.aborted or "station silent for 2 s" in result.aborted
    assert result.wall_s < 30
    last = {v.name: v for v in result.verdicts}["contactor open after the run"]
    assert last.outcome == "fail" and "stopped answering" in last.detail


WATCHDOG_S = 2.0  # firmware/app.py's default watchdog_ms


class RebootingSim(SimTarget):
    """The simulated station as a board on a serial port: what it prints (the sim's "RESET
    watchdog") comes on the console's line, as on a board's REPL UART, and after a reset its
    firmware starts again on the same line, as a board reboots: the bench is told of it only
    by the console."""

    def start(self, cs_url):
        self._write_config(cs_url)
        self.master, path = open_pty()
        self.spawn(self.master, stdout=self.master)
        return path

    def hang(self):
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def reset_by_watchdog(self):
        """After a hang past the watchdog: the firmware resets when it runs again and boots on
        the same line; what the bench sent meanwhile, unread, is lost as in a board's UART."""
        assert self.proc is not None
        time.sleep(WATCHDOG_S * 1.25)  # the hang, not a wait for anything
        os.kill(self.proc.pid, signal.SIGCONT)
        assert self.proc.wait(10) == RESET_EXIT
        termios.tcflush(self.master, termios.TCIFLUSH)
        self.spawn(self.master, stdout=self.master)

    def stop(self):
        super().stop()
        os.close(self.master)


REBOOT = """
name reboot
description The board hangs while charging; its watchdog resets it.
1m    ev plug
+1s   user tag 04A1B2C3
+0s   expect ocpp StartTransaction idTag=04A1B2C3 within 20s
+1s   ev state C
+0s   expect contactor closed within 10s
+20s  ev power 7000
+0s   expect contactor open within 10s
+0s   expect ocpp StopTransaction reason=PowerLoss within 1m
+30s  ev unplug
+0s   expect pilot A within 10s
"""


def test_a_board_that_resets_mid_session_goes_on_on_the_bench_s_timeline():
    """The board hangs as the bench sends `ev power` (and the `time` stamping it): both are
    lost in the reset that follows. The run goes on: the restarted station's clock from 0 is
    shifted onto the bench's timeline, the EV set up again, and the reset is a finding with
    the reason the station printed."""
    s = session.parse(REBOOT, "reboot.session")
    target = RebootingSim(TEST_SPEED)
    reset = threading.Thread(target=target.reset_by_watchdog)

    def hang_at_the_power_step(line):
        if "ev power 7000" in line:
            target.hang()
            reset.start()

    try:
        result = Replay(s, target, progress=hang_at_the_power_step).run()
    finally:
        reset.join(30)
    verdicts = {v.line or v.name: (v.outcome, v.detail) for v in result.verdicts}
    resets = [e for e in result.timeline if e.kind == "reset"]
    assert len(resets) == 1 and resets[0].value[0] == "RESET watchdog", result.timeline
    said = " | ".join(resets[0].value)  # and what the restarted sim prints before its `hello`
    at = format_duration(resets[0].ms)
    assert verdicts == {
        6: ("pass", ""),
        8: ("pass", ""),
        9: ("error", "the station reset before answering `ev`"),
        10: ("pass", ""),
        11: ("pass", ""),
        13: ("pass", ""),
        "no station reset": ("fail", f"the station reset at {at} ({said})"),
        "contactor open after the run": ("pass", ""),
    }, result.log[-20:]
    # On the bench's timeline: the reset after the hang began, the lost step stamped once the
    # station answered again, what followed after it, and no step waiting for the restarted
    # clock to catch up (the unplug, due by then, right after).
    assert resets[0].ms > 82_000
    assert 82_000 + result.late_ms[9] >= resets[0].ms
    after = result.timeline[result.timeline.index(resets[0]) :]
    assert all(e.ms >= resets[0].ms for e in after if e.source != "ocpp")
    assert ("pilot", "C") in [(e.kind, e.value) for e in after]  # the EV set up again
    assert 112_000 + result.late_ms[12] - (82_000 + result.late_ms[9]) < 10_000
    assert not early_steps(result)


def test_a_session_on_a_connector_the_station_lacks_gets_a_verdict_not_a_traceback():
    s = session.parse("connector 3\n0s ev plug\n+0s expect pilot B within 2s", "c3.session")
    result, _ = replay(s)
    assert {v.name: (v.outcome, v.detail) for v in result.verdicts} == {
        "expect pilot B within 2s": ("skip", "not played"),
        "contactor open after the run": ("skip", "the station has no connector 3"),
        "station set up for the session": (
            "error",
            "the session uses connector 3; the station has 2",
        ),
    }
    assert not result.passed


def test_pending_sessions_are_skipped_with_their_reason():
    s = session.parse("pending waiting for smart charging\n0s ev plug", "p.session")
    result = Replay(s, SimTarget()).run()
    assert result.skipped and result.verdicts[0].detail == "pending: waiting for smart charging"


# ---- import -------------------------------------------------------------------------------------


def frame(ts, direction, message):
    return json.dumps(
        {"station": "CP1", "ts": ts, "direction": direction, "text": json.dumps(message)}
    )


def test_import_turns_an_ocpp_log_into_a_session_that_parses():
    status = "StatusNotification"
    log = [
        frame(
            "2026-01-01T10:00:00Z",
            "in",
            [2, "1", status, {"connectorId": 1, "status": "Preparing", "errorCode": "NoError"}],
        ),
        frame("2026-01-01T10:00:01Z", "out", [3, "1", {}]),
        frame("2026-01-01T10:00:05Z", "in", [2, "2", "Authorize", {"idTag": "T1"}]),
        frame(
            "2026-01-01T10:00:06Z",
            "in",
            [
                2,
                "3",
                "StartTransaction",
                {"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": "x"},
            ],
        ),
        frame(
            "2026-01-01T10:00:07Z",
            "in",
            [2, "4", status, {"connectorId": 1, "status": "Charging", "errorCode": "NoError"}],
        ),
        frame(
            "2026-01-01T10:10:07Z",
            "in",
            [
                2,
                "5",
                "MeterValues",
                {
                    "connectorId": 1,
                    "meterValue": [
                        {
                            "timestamp": "x",
                            "sampledValue": [
                                {"value": "3.6", "measurand": "Power.Active.Import", "unit": "kW"}
                            ],
                        }
                    ],
                },
            ],
        ),
        frame(
            "2026-01-01T11:00:00Z",
            "in",
            [
                2,
                "6",
                "StopTransaction",
                {
                    "transactionId": 1,
                    "meterStop": 7000,
                    "timestamp": "x",
                    "reason": "EVDisconnected",
                },
            ],
        ),
        frame(
            "2026-01-01T11:00:01Z",
            "in",
            [2, "7", status, {"connectorId": 1, "status": "Available", "errorCode": "NoError"}],
        ),
        frame(
            "2026-01-01T11:00:01Z",
            "in",
            [2, "8", status, {"connectorId": 2, "status": "Faulted", "errorCode": "OtherError"}],
        ),
    ]
    text = record.import_log(log, 1, "CP1", "cs.jsonl")
    s = session.parse(text, "imported.session")
    steps = [(st.at_ms, st.text) for st in s.steps]
    assert (0, "ev plug") in steps
    assert (5000, "user tag T1") in steps
    assert (7000, "ev state C") in steps
    assert (607_000, "ev power 3600") in steps
    assert (3_601_000, "ev unplug") in steps
    assert any(t == "expect status Charging Available" for _, t in steps)
    assert any(t == "expect energy 5%" for _, t in steps)


def test_import_names_the_bad_line():
    with pytest.raises(record.LogError, match=r"cs.jsonl:2: "):
        record.import_log(
            [frame(0, "in", [2, "1", "Heartbeat", {}]), "{not json"], 1, None, "cs.jsonl"
        )


# ---- record ---------------------------------------------------------------------------------


def test_recorded_frames_get_the_station_s_time_at_the_station_s_speed():
    clock = record.StationClock()
    assert clock.ms(50.0) == 0  # nothing heard yet
    clock.observe(10_000, 100.0)
    assert clock.ms(100.5) == 10_500  # one event: a board's 1x
    clock.observe(15_000, 101.0)  # the station ran 5 s in 1 s: a simulator at 5x
    assert clock.ms(101.2) == 16_000
    clock.observe(15_400, 101.2)
    assert clock.ms(101.2) == 15_400  # its own events, as they are


def test_record_a_live_sim_session_into_a_session_file():
    """The station's console and its relayed OCPP frames become steps and expectations; the EV
    is driven through the simulator's own stdin control, as a person would at a real board."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cs = EmbeddedCentralSystem(set())
    cs_url = asyncio.run_coroutine_threadsafe(cs.start(), loop).result(30)
    listen = free_port()
    target = SimTarget(5.0)
    port = target.start(f"ws://127.0.0.1:{listen}/ocpp")
    recorded = {}

    def run_recorder():
        recorded["text"] = record.record(port, cs_url, ("127.0.0.1", listen), 1, 8.0)

    recorder = threading.Thread(target=run_recorder)
    try:
        recorder.start()
        time.sleep(2)  # the recorder and the station find each other
        assert target.proc is not None and target.proc.stdin is not None
        for command, pause in (("ev 1 B", 0.5), ("permit 1 1", 0.5), ("ev 1 C", 3), ("ev 1 A", 0)):
            target.proc.stdin.write(f"{command}\n".encode())
            target.proc.stdin.flush()
            time.sleep(pause)
        recorder.join(30)
    finally:
        target.stop()
        asyncio.run_coroutine_threadsafe(cs.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
    s = session.parse(recorded["text"], "recorded.session")
    texts = [step.text for step in s.steps]
    assert texts.index("ev plug") < texts.index("ev state C") < texts.index("ev unplug")
    assert "expect contactor closed within 10s" in texts
    assert any(t.startswith("expect status Preparing") for t in texts)


# ---- the command ------------------------------------------------------------------------------


def test_ctrl_c_still_reports_the_sessions_done(tmp_path, capsys, monkeypatch):
    """An engineer stopping a long run lost the report of every session already done."""
    done = tmp_path / "done.session"
    done.write_text("0s ev plug\n+0s expect pilot B within 2s\n+1s ev unplug\n")
    long = tmp_path / "long.session"
    long.write_text("0s ev plug\n+1h ev unplug\n")
    run = Replay.run

    def interrupted_in_long(self):
        if self.session.name == "long":
            raise KeyboardInterrupt  # Ctrl-C while it runs
        return run(self)

    monkeypatch.setattr(Replay, "run", interrupted_in_long)
    argv = ["bench", "replay", str(done), str(long), "--report", str(tmp_path / "out")]
    assert main(argv) == 130
    out = capsys.readouterr().out
    assert "interrupted during long" in out and "1 of 1 sessions passed" in out
    assert "done" in (tmp_path / "out" / "junit.xml").read_text()


def test_evse_bench_replay_command(tmp_path, capsys):
    good = tmp_path / "short.session"
    good.write_text("0s ev plug\n+0s expect pilot B within 2s\n+3s ev unplug\n")
    assert main(["bench", "replay", str(good), "--report", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "PASS  line 2: expect pilot B within 2s" in out and "1 of 1 sessions passed" in out
    assert (tmp_path / "out" / "junit.xml").exists()
    for speed, problem in (("0", "speed must be > 0 or max"), ("fast", "'fast' is not a number")):
        with pytest.raises(SystemExit):
            main(["bench", "replay", str(good), "--speed", speed])
        assert problem in capsys.readouterr().err
    bad = tmp_path / "bad.session"
    bad.write_text("0s ev plug\n0s ev jump\n")
    assert main(["bench", "replay", str(good), str(bad)]) == 2  # refused before anything runs
    assert f"{bad}:2: unknown action ev 'jump'" in capsys.readouterr().err
