"""Session files: timed steps and expectations for one charge, written by people.

A session is plain text, one statement per line; `#` starts a comment. Header lines (anywhere,
usually first) describe the session; step lines start with a time. See README "Bench sessions".

    name normal-charge
    description Plug in, present a tag, charge one hour at 7.4 kW, unplug.
    connector 1
    0s      ev plug
    +2s     user tag 04A1B2C3
    +0s     expect contactor closed within 10s
    ...

Times are station (board) time: `90s`, `2m30s`, `1h5m`, `1:05:00`, or `+10s` after the previous
step. Errors name the file and line.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from protocol import console as proto

DEFAULT_SPEED = 100.0  # steps land within a few hundred ms of station time of their time


class SessionError(Exception):
    """A session file that cannot be run: the message names the file, line and problem."""


@dataclass(frozen=True)
class Step:
    line: int
    at_ms: int
    actor: str  # ev, user, hw, net, op, expect
    verb: str
    args: tuple = ()
    within_ms: int | None = None  # expectations with a deadline
    fields: tuple = ()  # expect ocpp: (("path", "value"), ...)
    text: str = ""  # the statement as written, for reports


@dataclass
class Session:
    name: str
    path: str = ""
    description: str = ""
    pending: str = ""  # reason why the session cannot run yet; replay skips it
    connector: int = 1
    speed: float = DEFAULT_SPEED  # the sim's speed cap ("max": none); see host/bench/target.py
    duration_ms: int | None = None
    tag_status: dict = field(default_factory=dict)  # idTag -> status the CS answers
    steps: list[Step] = field(default_factory=list)
    requires: tuple = ()  # "sim": steps that need the simulated station

    @property
    def end_ms(self) -> int:
        """When the run ends: `duration`, but never before the last deadline (the bench's
        teardown comes after the end and must not be what meets an expectation)."""
        last = max((s.at_ms + (s.within_ms or 0) for s in self.steps), default=0)
        return max(self.duration_ms, last) if self.duration_ms is not None else last + 10_000


# ---- times ---------------------------------------------------------------------------------

_UNITS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|h|m|s))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_CLOCK = re.compile(r"^(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)$")


def parse_duration(text: str) -> int:
    """Milliseconds of `90s`, `2m30s`, `1h`, `250ms`, `1:05:00`; ValueError otherwise."""
    clock = _CLOCK.match(text)
    if clock:
        h, m, s = clock.groups()
        return round((int(h) * 3600 + int(m) * 60 + float(s)) * 1000)
    if not _DURATION.match(text):
        raise ValueError(f"bad time {text!r} (use e.g. 90s, 2m30s, 1h, 250ms or 1:05:00)")
    return round(sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))


def format_duration(ms: int) -> str:
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return out or "0s"


# ---- statements ----------------------------------------------------------------------------

ONOFF = ("on", "off")
CONTACTOR = ("open", "closed")
STATUSES = (
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
)
TAG_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")
FAULT_CODES = (
    "rcd",
    "rcd_selftest",
    "weld",
    "overcurrent",
    "overtemp",
    "derating",
    "meter",
    "diode",
    "pilot_e",
    "pilot_f",
    "proximity",
    "hang",
)

# actor -> verb -> (argument kinds, usage). Kinds: w word, n number >= 0, d duration,
# b on|off, or a tuple of allowed words. Expectations take "within <duration>" where marked.
GRAMMAR: dict[str, dict[str, tuple[tuple, str]]] = {
    "ev": {
        "plug": ((), "ev plug  (state B)"),
        "unplug": ((), "ev unplug  (state A)"),
        "state": ((tuple(proto.EV_STATES),), "ev state A|B|C|D"),
        "power": (("n",), "ev power <watts>"),
        "diode": (("b",), "ev diode on|off"),
        "vent": (("b",), "ev vent on|off"),
    },
    "user": {
        "tag": (("w",), "user tag <idTag>"),
        "stop": ((), "user stop"),
    },
    "hw": {
        "meter": ((proto.METER_FAULTS,), "hw meter ok|silent|garbage|crc|exception"),
        "rcd": (("n",), "hw rcd <leak mA>"),
        "temp": (("n",), "hw temp <celsius>"),
        "weld": (("b",), "hw weld on|off"),
        "power-cut": (("d",), "hw power-cut <duration>  (simulated station only)"),
        "selftest": ((), "hw selftest  (RCD self-test)"),
    },
    "net": {
        "drop": ((), "net drop  (the central system closes the link)"),
        "cs-down": ((), "net cs-down"),
        "cs-up": ((), "net cs-up"),
        "latency": (("d",), "net latency <duration>  (station time, before each CS reply)"),
    },
    "op": {
        "remote-start": (("w",), "op remote-start <idTag>"),
        "remote-stop": ((), "op remote-stop"),
        "config": (("w", "w"), "op config <key> <value>"),
        "limit": (("l",), "op limit <amps>|clear"),
        "available": (("b",), "op available on|off"),
        "clear": ((), "op clear  (clear latched faults)"),
    },
    "expect": {
        "contactor": ((CONTACTOR,), "expect contactor open|closed within <duration>"),
        "pilot": ((tuple("ABCDEF"),), "expect pilot A..F within <duration>"),
        "fault": ((FAULT_CODES,), "expect fault <code> within <duration>"),
        "limit": (("n",), "expect limit <amps> within <duration>"),
        "ocpp": (("w",), "expect ocpp <Action> [field=value ...] within <duration>"),
        "status": (("+", STATUSES), "expect status <Status> <Status> ...  (in this order)"),
        "energy": (("%",), "expect energy <tolerance>%  (station's energy vs what the EV drew)"),
    },
}
WITHIN = {"contactor", "pilot", "fault", "limit", "ocpp"}
SIM_ONLY = {("hw", "power-cut")}


def parse(text: str, path: str = "<session>") -> Session:
    session = Session(name=Path(path).stem)
    previous_ms = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        try:
            if words[0][0].isdigit() or words[0][0] == "+":
                step = _step(number, words, previous_ms)
                previous_ms = step.at_ms
                session.steps.append(step)
            else:
                _header(session, words, line)
        except ValueError as e:
            raise SessionError(f"{path}:{number}: {e}") from None
    if not session.steps and not session.pending:
        raise SessionError(f"{path}: no steps (a step line starts with a time, e.g. `0s ev plug`)")
    session.path = path
    session.steps.sort(key=lambda s: s.at_ms)  # stable: same-time steps keep file order
    session.requires = tuple(
        sorted({"sim" for s in session.steps if (s.actor, s.verb) in SIM_ONLY})
    )
    return session


def load(path: str | Path) -> Session:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SessionError(f"{path}: cannot read: {e}") from None
    return parse(text, str(path))


def _header(session: Session, words: list[str], line: str) -> None:
    key, rest = words[0], line[len(words[0]) :].strip()
    if key == "name":
        session.name = _one(words, "name <name>")
    elif key == "description":
        session.description = rest
    elif key == "pending":
        if not rest:
            raise ValueError("pending needs a reason")
        session.pending = rest
    elif key == "connector":
        session.connector = int(_number(_one(words, "connector <n>"), "connector"))
        if session.connector < 1:
            raise ValueError("connector counts from 1")
    elif key == "speed":
        session.speed = parse_speed(_one(words, "speed <factor>|max"))
    elif key == "duration":
        session.duration_ms = parse_duration(_one(words, "duration <time>"))
    elif key == "tag-status":
        if len(words) != 3 or words[2] not in TAG_STATUSES:
            raise ValueError(f"usage: tag-status <idTag> {'|'.join(TAG_STATUSES)}")
        session.tag_status[words[1]] = words[2]
    else:
        raise ValueError(
            f"unknown statement {key!r}: a step starts with a time (e.g. `+5s ev plug`); "
            "headers are name, description, pending, connector, speed, duration, tag-status"
        )


def _one(words: list[str], usage: str) -> str:
    if len(words) != 2:
        raise ValueError(f"usage: {usage}")
    return words[1]


def parse_speed(word: str) -> float:
    """A sim speed cap: a number > 0, or `max` (no cap: math.inf)."""
    if word == "max":
        return math.inf
    speed = _number(word, "speed")
    if speed <= 0:
        raise ValueError("speed must be > 0 or max")
    return speed


def _number(word: str, what: str) -> float:
    try:
        value = float(word)
    except ValueError:
        raise ValueError(f"{what}: {word!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError(f"{what}: {word!r} is not a number >= 0")
    return value


def _step(number: int, words: list[str], previous_ms: int) -> Step:
    time_word = words[0]
    at_ms = previous_ms + parse_duration(time_word[1:]) if time_word[0] == "+" else None
    if at_ms is None:
        at_ms = parse_duration(time_word)
    if len(words) < 3:
        raise ValueError("a step needs a time, an actor and an action, e.g. `+5s ev plug`")
    actor, verb, args = words[1], words[2], words[3:]
    verbs = GRAMMAR.get(actor)
    if verbs is None:
        raise ValueError(f"unknown actor {actor!r} (one of {', '.join(GRAMMAR)})")
    spec = verbs.get(verb)
    if spec is None:
        raise ValueError(f"unknown action {actor} {verb!r} (one of {', '.join(verbs)})")
    kinds, usage = spec
    within_ms = None
    if verb in WITHIN and actor == "expect":
        if len(args) < 2 or args[-2] != "within":
            raise ValueError(f"usage: {usage}")
        within_ms = parse_duration(args[-1])
        args = args[:-2]
    fields: tuple = ()
    if (actor, verb) == ("expect", "ocpp") and args:
        fields = tuple(_field(word) for word in args[1:])
        args = args[:1]
    text = " ".join(words[1:])
    return Step(number, at_ms, actor, verb, _args(kinds, args, usage), within_ms, fields, text)


def _field(word: str) -> tuple[str, str]:
    key, eq, value = word.partition("=")
    if not eq or not key:
        raise ValueError(f"expected field=value, got {word!r}")
    return key, value


def _args(kinds: tuple, args: list[str], usage: str) -> tuple:
    if kinds and kinds[0] == "+":
        if not args or any(a not in kinds[1] for a in args):
            raise ValueError(f"usage: {usage}")
        return tuple(args)
    if len(args) != len(kinds):
        raise ValueError(f"usage: {usage}")
    out: list = []
    for kind, word in zip(kinds, args, strict=True):
        if isinstance(kind, tuple):
            if word not in kind:
                raise ValueError(f"{word!r} is not one of {'|'.join(kind)} (usage: {usage})")
            out.append(word)
        elif kind == "n":
            out.append(_number(word, usage))
        elif kind == "d":
            out.append(parse_duration(word))
        elif kind == "b":
            if word not in ONOFF:
                raise ValueError(f"{word!r} is not on|off (usage: {usage})")
            out.append(word == "on")
        elif kind == "l":
            out.append(None if word == "clear" else _number(word, usage))
        elif kind == "%":
            if not word.endswith("%"):
                raise ValueError(f"usage: {usage}")
            out.append(_number(word[:-1], usage))
        else:
            out.append(word)
    return tuple(out)
