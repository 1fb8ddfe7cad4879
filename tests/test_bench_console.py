"""The bench console: protocol/console.py on both interpreters, and firmware/console.py serving
a real pseudo-terminal under micropython, talked to with pyserial as a bench would."""

import json
import os
import subprocess
import sys
import time

import pytest
import serial
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host import mpy
from host.bench.link import CONSOLE_FD_ENV, open_pty
from protocol import console as proto
from tests.mp_console_codec import run

ROOT = mpy.ROOT
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a terminal can show: no control characters except the ones quote() escapes.
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x7f")
    | st.sampled_from('\n\r\t"\\ ')
)
WORDS = st.lists(TEXT, max_size=6)
GARBAGE = st.text(max_size=80) | st.sampled_from(
    [
        "ev",
        "ev 1",
        "ev 1 state",
        "ev 1 state Z",
        "ev 0 state C",
        "tag 1",
        "#",
        "# ",
        "#x",
        '"',
        'tag 1 "a',
        "limit 1 nan",
        "limit 1 inf",
        "rcd 1 -",
        "config",
        "config set a",
        "meter 1 bad",
        "selftest 1",
        "selftest rcd x",
        "ev 1 power -5",
        "available 1 yes",
        "report",
    ]
)


def under_micropython(cases):
    # Raw UTF-8, not \uXXXX escapes: MicroPython's json reads a surrogate pair as two
    # characters, which is the transport's problem, not the protocol's.
    proc = subprocess.run(
        mpy.command(ROOT / "tests" / "mp_console_codec.py"),
        input="".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases),
        capture_output=True,
        text=True,
        env=mpy.environ(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@SETTINGS
@given(WORDS)
def test_words_round_trip(words):
    line = proto.join(words)
    assert "\n" not in line and "\r" not in line
    assert proto.split(line) == words


@SETTINGS
@given(
    st.sampled_from(sorted(proto.COMMANDS)),
    st.lists(TEXT, max_size=4),
    st.none() | st.integers(0, 999),
)
def test_formatted_commands_parse_back_or_fail_cleanly(name, args, request_id):
    line = proto.format_command(name, args, request_id)
    try:
        parsed_id, parsed_name, _ = proto.parse_command(line)
    except proto.ConsoleError as e:
        assert e.code == proto.BAD_ARGS
        assert e.request_id == (None if request_id is None else str(request_id))
    else:
        assert parsed_name == name
        assert parsed_id == (None if request_id is None else str(request_id))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(GARBAGE, min_size=1, max_size=40))  # one micropython process per example
def test_garbage_gets_an_error_code_not_an_exception_and_both_interpreters_agree(lines):
    cases = [{"command": line} for line in lines]
    expected = [run(c) for c in cases]
    for result in expected:
        assert result[0] == "ok" or result[1] in (proto.UNKNOWN_COMMAND, proto.BAD_ARGS)
    assert under_micropython(cases) == json.loads(json.dumps(expected))


def test_known_commands_parse_to_typed_arguments():
    assert proto.parse_command("#7 ev 2 state C") == ("7", "ev", [2, "state", "C"])
    assert proto.parse_command("ev 1 power 7400") == (None, "ev", [1, "power", 7400.0])
    assert proto.parse_command("limit 1 clear") == (None, "limit", [1, None])
    assert proto.parse_command('tag 1 "A B"') == (None, "tag", [1, "A B"])
    assert proto.parse_command("weld 1 on")[2] == [1, True]


@SETTINGS
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5), st.integers(4, 40))
def test_line_reader_is_chunking_independent_and_bounded(data, cuts, max_line):
    cuts = sorted(set(c for c in cuts if c < len(data)))
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    whole = run({"chunks": [data.hex()], "max": max_line})
    assert run({"chunks": [c.hex() for c in chunks], "max": max_line}) == whole
    assert all(
        len(line.encode()) <= max_line
        for line in whole
        if line not in ("not-text", "line-too-long")
    )


def test_station_lines_parse():
    assert proto.parse_reply("evt 12 pilot 1 C") == ("evt", 12, "pilot", ["1", "C"])
    assert proto.parse_reply('err #3 bad-args "usage: x"') == ("err", "3", "bad-args", "usage: x")
    assert proto.parse_reply("ok #3 a=1") == ("ok", "3", ["a=1"])
    assert proto.parse_reply("Traceback (most recent call last):")[0] == "log"
    assert proto.parse_reply("evt x pilot")[0] == "log"


def test_parsing_agrees_on_micropython_for_words_and_readers():
    cases = [
        {"words": ["a b", 'q"', "", "\\", "é", "\t"]},
        {
            "chunks": [b"ab\r\ncd".hex(), b"\xff\n\n".hex(), (b"x" * 50 + b"\nok\n").hex()],
            "max": 20,
        },
    ]
    assert under_micropython(cases) == [run(c) for c in cases]


# ---- the console server through a real pseudo-terminal ----------------------------------


@pytest.fixture
def station():
    """firmware/console.py on a stand-in station (tests/mp_console_app.py) under micropython,
    reached through a pseudo-terminal opened with pyserial."""
    master, path = open_pty()
    env = dict(mpy.environ(), **{CONSOLE_FD_ENV: str(master)})
    proc = subprocess.Popen(
        mpy.command(ROOT / "tests" / "mp_console_app.py"), env=env, pass_fds=[master], cwd=ROOT
    )
    os.close(master)
    port = serial.Serial(path, 115200, timeout=0.2)
    sync(port)
    yield proc, port, path
    port.close()
    proc.kill()
    proc.wait(5)


def read_until(port, predicate, timeout=10.0):
    """Station lines up to and including the first one for which predicate(line) holds."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = port.readline()
        if raw:
            lines.append(raw.decode().rstrip("\n"))
            if predicate(lines[-1]):
                return lines
    raise AssertionError(f"timed out; got {lines}")


def sync(port, timeout=10.0):
    """Wait until the console answers (input sent before it starts is discarded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        port.write(b"#sync time\n")
        if any(line.startswith(b"ok #sync") for line in port.readlines()):
            port.reset_input_buffer()
            return
    raise AssertionError("console never answered")


def ask(port, line, request_id):
    port.write(f"#{request_id} {line}\n".encode())
    lines = read_until(port, lambda s: s.startswith((f"ok #{request_id}", f"err #{request_id}")))
    return lines[-1], lines[:-1]


def test_console_answers_commands_and_reports_events(station):
    _, port, _ = station
    reply, _ = ask(port, "info", 1)
    assert "connectors=2" in reply and "board=sim" in reply
    reply, events = ask(port, "ev 1 state C", 2)
    assert reply == "ok #2"
    assert any(e.endswith("pilot 1 C") for e in events)
    reply, events = ask(port, "tag 1 04A1B2C3", 3)
    assert reply == "ok #3 local"
    parsed = [proto.parse_reply(e) for e in events]
    assert ("contactor", ["1", "closed"]) in [p[2:] for p in parsed if p[0] == "evt"]
    reply, events = ask(port, "status", 4)
    states = [proto.parse_reply(e) for e in events if " state " in e]
    assert ["1", "pilot=C", "duty=26.7", "contactor=closed"] == states[0][3][:4]


def test_console_rejects_bad_input_and_keeps_serving(station):
    _, port, _ = station
    assert ask(port, "frobnicate 1", 1)[0] == 'err #1 unknown-command "frobnicate (try: help)"'
    assert ask(port, "ev 1 state Q", 2)[0].startswith("err #2 bad-args")
    assert ask(port, "ev 9 state C", 3)[0] == 'err #3 bad-args "no connector 9"'
    assert ask(port, "selftest rcd 1", 4)[0].startswith("err #4 unsupported")
    port.write(b"\xff\xfe\x00\n" + b"x" * 1000 + b"\n")
    errors = read_until(port, lambda s: "line-too-long" in s)
    assert any("not-text" in e for e in errors)
    assert ask(port, "time", 5)[0].startswith("ok #5 ")


def meter_wh(line):
    parsed = proto.parse_reply(line)
    return float(proto.fields(parsed[3])["wh"])


def test_control_loop_runs_while_a_line_is_half_sent_or_nobody_listens(station):
    proc, port, path = station
    port.write(b"#1 report 100\n")
    read_until(port, lambda s: s == "ok #1")
    port.write(b"ev 1 sta")  # half a command: the console must not wait for the rest
    first = meter_wh(read_until(port, lambda s: "meter 1 " in s)[-1])
    later = meter_wh(read_until(port, lambda s: "meter 1 " in s and meter_wh(s) > first + 50)[-1])
    assert later > first
    port.close()  # no bench: output is dropped, the station goes on
    time.sleep(0.5)  # let it produce output into a terminal nobody reads
    assert proc.poll() is None
    port = serial.Serial(path, 115200, timeout=0.2)
    port.write(b"\n#2 time\n")
    assert read_until(port, lambda s: s.startswith("ok #2"))[-1]
    port.close()


def test_evse_sim_console_serves_the_real_station(tmp_path):
    """`evse sim --console`: the real firmware's console on a pseudo-terminal, like a board."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "host", "sim", "--data", str(tmp_path), "--console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        path = proc.stderr.readline().strip().removeprefix("console: ")
        port = serial.Serial(path, 115200, timeout=0.2)
        sync(port)
        assert ask(port, "ev 1 state B", 1)[0] == "ok #1"
        read_until(port, lambda line: line.endswith(" pilot 1 B"))  # debounced by the station
        reply, events = ask(port, "status", 2)
        assert reply == "ok #2"
        assert any(e.split()[2:5] == ["state", "1", "pilot=B"] for e in events)
        port.close()
    finally:
        proc.kill()
        proc.wait(5)
