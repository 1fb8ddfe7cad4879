"""Replaying a session against a station (the simulated one or a board on a serial port) and
the central system behind the bench's relay, then judging every expectation.

Threads: the console link reads station lines on its own thread; the relay and the embedded
central system run on an asyncio loop thread; the session's steps are played here. Everything
seen lands on one timeline in session time (station ms since the session started), which the
expectations are judged against once the run is over.

The station's clock is read, not assumed: a simulated station runs as fast as its host allows
(up to its speed cap), so the bench asks for the station's time (`time`) while it waits for a
step's moment and stamps each step with the time the station gave just before it. Only OCPP
frames, which reach the bench's relay rather than the console, get a time estimated from the
newest reading and the rate the station's clock was seen to run at.

A station that restarts by itself (watchdog, brown-out, crash: its console says `hello` again,
its clock from 0) stays on the bench's timeline: its clock is shifted to go on from the time
the bench estimates for its `hello`, the restart is on the timeline and, unless the session
expects one, a finding; what the bench had set up is applied again before it goes on.
"""

import asyncio
import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host.bench import network
from host.bench.link import (
    CommandFailed,
    ConsoleLink,
    GarbledReply,
    Line,
    StationReset,
    StationSilent,
)
from host.bench.session import Session, Step, format_duration
from host.bench.target import Target
from protocol import console as proto

VOLTAGE_V = 230.0
SILENCE_S = 10.0  # real seconds without a line from the station: it stopped answering
CONNECT_S = 20.0  # real seconds for the station to answer its console after start
OPERATOR_TIMEOUT_S = 10.0
DEFAULT_EV_POWER_W = 7400.0
CLOCK_POLL_S = 0.02  # real seconds between readings of the station's clock while waiting
RATE_WINDOW_S = 0.01  # the rate of the station's clock is measured over this much real time
FRAME_SLACK_S = 0.005  # how far apart in real time the console and the relay may see one moment
REPORT_EVERY_S = 0.05  # meter lines at least this far apart in real time (at the speed cap)
TIME_ATTEMPTS = 3  # `time` requests lost in resets of the station, or garbled, in a row
LAST_WORDS = 3  # station log lines before a restart's `hello` kept as its reason


@dataclass
class Event:
    ms: int  # session time (station ms since the session started)
    source: str  # station, ocpp, bench
    kind: str  # station: pilot, contactor, limit, meter, fault, reset, ...; ocpp: station|cs
    connector: int
    value: Any


@dataclass
class Verdict:
    name: str
    line: int | None
    outcome: str  # pass, fail, skip, error
    detail: str = ""


@dataclass
class Result:
    session: Session
    target: str
    verdicts: list[Verdict] = field(default_factory=list)
    timeline: list[Event] = field(default_factory=list)
    wall_s: float = 0.0  # the whole run: start, session, teardown
    play_s: float = 0.0  # the session's steps, from its time 0 to its end
    session_ms: int = 0
    aborted: str = ""
    log: list[str] = field(default_factory=list)  # non-protocol station lines
    late_ms: dict[int, int] = field(default_factory=dict)  # step line -> how late it ran
    rate: float = 1.0  # station ms per real ms, as measured over the run

    @property
    def passed(self) -> bool:
        return not self.aborted and all(v.outcome in ("pass", "skip") for v in self.verdicts)

    @property
    def skipped(self) -> bool:
        return bool(self.verdicts) and all(v.outcome == "skip" for v in self.verdicts)

    @property
    def speedup(self) -> float:
        return self.session_ms / 1000 / self.wall_s if self.wall_s else 0.0


class Unplayable(Exception):
    """The station cannot play the session: it lacks the session's connector, or refused a
    command that sets it up (e.g. `ev` on a board without an EV-simulator fixture)."""


def skip(session: Session, target: str, reason: str) -> Result:
    return Result(session, target, [Verdict(session.name, None, "skip", reason)])


class Replay:
    def __init__(
        self,
        session: Session,
        target: Target,
        cs_url: str | None = None,
        progress: Callable[[str], None] = print,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        silence_s: float = SILENCE_S,
    ):
        self.session = session
        self.listen = listen
        self.silence_s = silence_s
        self.target = target
        self.cs_url = cs_url
        self.progress = progress
        self.rate = target.speed if math.isfinite(target.speed) else 100.0  # until measured
        self.connector = session.connector
        self.result = Result(session, target.name)
        self._lock = threading.Lock()
        self._t0: int | None = None  # station ms at session time 0
        self._clock = (time.monotonic(), 0)  # (wall, station ms) of the newest reading
        self._rate_from = self._clock  # the reading the rate is measured from
        self._readings: list[tuple[float, int]] = []  # (wall, station ms) of every reading
        self._frames: list[tuple[Event, float]] = []  # OCPP frames and when they arrived
        self._ev = {"state": "A", "power": DEFAULT_EV_POWER_W}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.link: ConsoleLink | None = None
        self.net: network.Network | None = None
        self.phases = 3
        self.connectors: int | None = None  # as the station's `info` gives them
        self._unplayable = False
        self._starting = False  # the bench is (re)starting the station: its `hello` is expected
        self._last_words: list[str] = []  # station log lines since its last protocol line
        self._reset = threading.Event()  # it restarted by itself: set it up again

    # ---- timeline ----------------------------------------------------------------------

    def _station_ms(self) -> int:
        """The station's clock now, estimated from its newest reading and its rate."""
        wall, ms = self._clock
        return ms + int((time.monotonic() - wall) * self.rate * 1000)

    def _read_clock(self, wall: float, ms: int) -> None:
        """A reading of the station's clock (an event's time, a `time` answer)."""
        with self._lock:  # readings come from the console's thread and from this one
            if ms < self._clock[1]:
                return
            self._clock = (wall, ms)
            self._readings.append(self._clock)
            since_wall, since_ms = self._rate_from
            if wall - since_wall >= RATE_WINDOW_S:  # long enough to measure the rate over
                measured = (ms - since_ms) / (wall - since_wall) / 1000
                self.rate = max(0.1, (self.rate + measured) / 2)
                self._rate_from = self._clock

    def _time(self, request: str = "") -> int:
        """The station's clock: asked now, or the answer to a `time` request already sent.
        StationSilent when it does not answer; a request lost in a reset of the station, or
        whose answer the line garbled, is asked again."""
        link = self.link
        assert link is not None
        for _ in range(TIME_ATTEMPTS):
            try:
                ms = link.time(request, self.silence_s)
            except (StationReset, GarbledReply):
                request = ""  # lost in a reset (ask the restarted station), or garbled
                continue
            except StationSilent:
                raise StationSilent(f"station silent for {self.silence_s:g} s") from None
            self._read_clock(time.monotonic(), ms)
            return ms
        raise StationReset(
            f"no answer to `time` in {TIME_ATTEMPTS} tries: the station reset, or the line"
            " garbled the answer, each time"
        )

    def _add(self, station_ms: int, source: str, kind: str, connector: int, value: Any) -> Event:
        with self._lock:
            t0 = self._t0 if self._t0 is not None else station_ms
            event = Event(station_ms - t0, source, kind, connector, value)
            self.result.timeline.append(event)
        return event

    def _on_line(self, line: Line) -> None:
        if line.kind == "log":
            self.result.log.append(line.parsed[1])
            self._last_words = [*self._last_words, line.parsed[1]][-LAST_WORDS:]
            return
        last_words, self._last_words = self._last_words, []
        if line.kind != "evt":
            return
        _, ms, kind, words = line.parsed
        if kind == "hello" and not self._starting:
            self._restarted(line.wall, ms, last_words)
            return
        self._read_clock(line.wall, ms)
        # A line garbled on the wire ("²" is a digit to isdigit, not to int) must not stop
        # the console's reader, nor put a value the judge cannot read on the timeline.
        connector = int(words[0]) if words and words[0].isdecimal() else 0
        if kind == "state" and connector:
            fields = proto.fields(words[1:])
            for key in ("pilot", "contactor", "limit"):
                if key in fields:
                    value = _float(fields[key]) if key == "limit" else fields[key]
                    self._add(ms, "station", key, connector, value)
            return
        value: Any = words[1:]
        if kind in ("pilot", "contactor", "limit"):
            if len(words) < 2:
                return
            value = _float(words[1]) if kind == "limit" else words[1]
        self._add(ms, "station", kind, connector, value)

    def _restarted(self, wall: float, ms: int, last_words: list[str]) -> None:
        """The station restarted by itself (its `hello` at ms on its new clock, shifted by the
        old offset): its clock goes on from the bench's estimate for that moment."""
        assert self.link is not None
        with self._lock:
            clock_wall, clock_ms = self._clock
            now = clock_ms + int((wall - clock_wall) * self.rate * 1000)
        self.link.offset_ms += now - ms  # on the reader thread: the lines after it are shifted
        self._read_clock(wall, now)
        self._add(now, "station", "reset", 0, last_words)
        self._reset.set()

    def _on_frame(self, frame: network.Frame) -> None:
        wall = time.monotonic()
        event = self._add(self._station_ms(), "ocpp", frame.direction, 0, frame.message)
        self._frames.append((event, wall))

    def _retime_frames(self) -> None:
        """OCPP frames reach the relay, not the console: once the run is over, their station
        time is interpolated between the readings of the station's clock around them."""
        readings = sorted(self._readings)
        walls = [wall for wall, _ in readings]
        t0 = self._t0 or 0
        for event, wall in self._frames:
            i = bisect.bisect(walls, wall)
            if 0 < i < len(readings):
                (w0, ms0), (w1, ms1) = readings[i - 1], readings[i]
                ms = ms0 + (ms1 - ms0) * (wall - w0) / (w1 - w0) if w1 > w0 else ms0
                event.ms = int(ms) - t0

    # ---- running -----------------------------------------------------------------------

    def run(self) -> Result:
        session, result = self.session, self.result
        if session.pending:
            return skip(session, self.target.name, "pending: " + session.pending)
        missing = [r for r in session.requires if r not in self.target.features]
        if missing:
            return skip(session, self.target.name, f"needs the {'/'.join(missing)} target")
        started = time.monotonic()
        self.target.prepare(session)
        self._thread.start()
        cs = None
        try:
            upstream = self.cs_url
            if upstream is None:
                from host.bench.centralsystem import EmbeddedCentralSystem

                cs = EmbeddedCentralSystem(_tags(session))
                upstream = self._async(cs.start(), 30)
            self.net = network.Network(
                upstream, self._on_frame, session.tag_status, self._station_ms
            )
            self._async(self.net.start(self.listen[1], self.listen[0]), 10)
            self._connect()
            if "sim" in self.target.features:  # a fresh station: online before time 0
                self.net.booted.wait(CONNECT_S)
            self._play()
        except (StationSilent, OSError) as e:
            result.aborted = f"{e}"
        except Unplayable as e:
            result.aborted = f"{e}"
            self._unplayable = True
        finally:
            if self._t0 is not None:  # how far the session got, also when it was cut short
                result.session_ms = min(self._station_ms() - self._t0, session.end_ms)
            with self._lock:  # what the teardown (EV unplugged, stop) makes happen is not judged
                judged = len(result.timeline)
            self._teardown()
            if self.net is not None:
                self._async(self.net.stop(), 10, quiet=True)
            if cs is not None:
                self._async(cs.stop(), 10, quiet=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            result.wall_s = time.monotonic() - started
            result.rate = self.rate
        if result.aborted:  # after _teardown, which adds what the station printed
            name = "station set up for the session" if self._unplayable else "station answering"
            result.verdicts.append(Verdict(name, None, "error", result.aborted))
        if self._t0 is None:  # it never reached time 0: nothing to judge
            result.verdicts[:0] = [
                Verdict(s.text, s.line, "skip", "not played")
                for s in session.steps
                if s.actor == "expect"
            ]
            return result
        self._retime_frames()
        allowance = int(self.rate * FRAME_SLACK_S * 1000)
        result.verdicts[:0] = judge(
            session, result.timeline[:judged], self.phases, result.late_ms, allowance
        )
        resets = [e for e in result.timeline[:judged] if e.kind == "reset"]
        if resets and not _expects_reset(session):
            detail = ", ".join(
                f"at {format_duration(max(e.ms, 0))}"
                + (f" ({' | '.join(e.value)})" if e.value else "")
                for e in resets
            )
            result.verdicts.append(
                Verdict("no station reset", None, "fail", f"the station reset {detail}")
            )
        return result

    def _async(self, coro: Any, timeout: float, quiet: bool = False) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except Exception:
            if quiet:
                return None
            raise

    def _sync(self) -> None:
        """Wait until the console answers: input sent before it starts is lost."""
        assert self.link is not None
        deadline = time.monotonic() + CONNECT_S
        while True:
            try:
                self.link.command("time", timeout=0.5)
                return
            except StationSilent:
                if time.monotonic() > deadline:
                    raise StationSilent(f"station console silent for {CONNECT_S:g} s") from None

    def _connect(self, offset_ms: int = 0, attempts: int = 3) -> None:
        """Start the station and reach its console. A station that resets while starting
        (the sim's watchdog on a loaded machine) starts again, as a board would reboot."""
        assert self.net is not None
        self._starting = True
        try:
            for _ in range(attempts):
                port = self.target.start(self.net.url)
                if self.link is None:
                    self.link = ConsoleLink(port, self._on_line)
                else:
                    self.link.reopen(port, offset_ms)
                    self._clock = self._rate_from = (time.monotonic(), offset_ms)
                try:
                    self._sync()
                    return
                except (StationSilent, OSError) as e:
                    if self.target.alive() is not False:
                        raise
                    self.result.log.append(f"bench: the station reset while starting ({e})")
            raise StationSilent(f"the station reset {attempts} times while starting")
        finally:
            self._starting = False

    def _setup(self) -> None:
        link = self.link
        assert link is not None
        info = dict(w.split("=", 1) for w in link.command("info") if "=" in w)
        self.phases = int(info.get("phases", 3))
        self.connectors = int(info.get("connectors", 1))
        if self.connector > self.connectors:
            raise Unplayable(
                f"the session uses connector {self.connector}; the station has {self.connectors}"
            )
        try:
            self._set_up()
        except CommandFailed as e:
            raise Unplayable(f"setting up the station: {e}") from None

    def _set_up(self) -> None:
        """What the bench sets up on the station, at the start and after every restart: a
        restarted station has its defaults and reports no changes."""
        assert self.link is not None
        self.link.command("report", self._report_ms())
        if "ev" in self.target.features:
            self._ev_apply()  # the EV stayed plugged in
        self.link.command("status")  # ask for the state

    def _report_ms(self) -> int:
        speed = self.target.speed if math.isfinite(self.target.speed) else 200.0
        return max(1000, int(speed * REPORT_EVERY_S * 1000))

    def _ev_apply(self) -> None:
        assert self.link is not None
        self.link.command("ev", self.connector, "power", self._ev["power"])
        self.link.command("ev", self.connector, "state", self._ev["state"])

    def _play(self) -> None:
        link = self.link
        assert link is not None
        self._setup()
        self._t0 = self._time()
        played = time.monotonic()
        with self._lock:  # events before the start keep their place, before 0
            for event in self.result.timeline:
                event.ms -= self._t0
        self._add(self._t0, "bench", "ev_power", self.connector, self._ev["power"])
        for step in self.session.steps:
            self._wait(step.at_ms)
            if step.actor != "expect":
                self._do(step)
        # Each deadline counts from when the step before it really ran: a late step puts the
        # end off by as much.
        self._wait(self.session.end_ms + max(self.result.late_ms.values(), default=0))
        self.result.play_s = time.monotonic() - played

    def _wait(self, session_ms: int) -> None:
        """Until the station's clock reaches session_ms, read every CLOCK_POLL_S at most and
        sooner as it nears (its rate varies with its load); a station that goes silent ends
        the run, one that restarted is set up again."""
        assert self._t0 is not None
        target = self._t0 + session_ms
        while True:
            if self._reset.is_set():
                self._reset.clear()
                self._set_up()
            if (ahead := target - self._time()) <= 0:
                return
            time.sleep(min(CLOCK_POLL_S, ahead / 2000 / self.rate))

    def _do(self, step: Step) -> None:
        """Play a step, stamped with the station's time: `time` goes out just before the step's
        command and is answered after it, so the console usually runs both in one poll (a
        power cut is stamped first: the station it asks is gone afterwards)."""
        link = self.link
        assert link is not None
        self.progress(f"  {format_duration(step.at_ms):>9}  {step.text}")
        cut = step.verb == "power-cut"
        started = self._time() if cut else 0
        request = "" if cut else link.send("time")
        error = ""
        try:
            answer = self._action(step)
        except (CommandFailed, StationReset) as e:
            error = str(e)
        except (TimeoutError, ConnectionError) as e:
            error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if request:
            started = self._time(request)
        with self._lock:
            self.result.late_ms[step.line] = started - (self._t0 or 0) - step.at_ms
        if error:
            self.result.verdicts.append(Verdict(step.text, step.line, "error", error))
            return
        self._add(started, "bench", step.actor, self.connector, (step.text, answer))

    def _action(self, step: Step) -> Any:
        link, net, c = self.link, self.net, self.connector
        assert link is not None and net is not None
        verb, args = step.verb, step.args
        if step.actor == "ev":
            if verb in ("plug", "unplug", "state"):
                self._ev["state"] = {"plug": "B", "unplug": "A"}.get(verb) or args[0]
                return link.command("ev", c, "state", self._ev["state"])
            if verb == "power":
                self._ev["power"] = args[0]
                self._add(self._station_ms(), "bench", "ev_power", c, args[0])
            return link.command("ev", c, verb, args[0])
        if step.actor == "user":
            return link.command("tag", c, args[0]) if verb == "tag" else link.command("stop", c)
        if step.actor == "hw":
            if verb == "power-cut":
                return self._power_cut(args[0])
            if verb == "selftest":
                return link.command("selftest", "rcd", c)
            if verb == "temp":
                return link.command("temp", args[0])
            return link.command(verb, c, args[0])
        if step.actor == "net":
            if verb == "latency":  # station time, so a session means the same at any speed
                net.latency_ms = args[0]
                return None
            coro = {"drop": net.drop, "cs-down": net.down, "cs-up": net.up}[verb]()
            return self._async(coro, 10)
        # operator
        if verb == "limit":
            return link.command("limit", c, args[0])
        if verb == "clear":
            return link.command("clear", c)
        action, payload = self._operator_call(verb, args)
        return self._async(net.call(action, payload, OPERATOR_TIMEOUT_S), OPERATOR_TIMEOUT_S + 1)

    def _operator_call(self, verb: str, args: tuple) -> tuple[str, dict]:
        c = self.connector
        if verb == "remote-start":
            return "RemoteStartTransaction", {"connectorId": c, "idTag": args[0]}
        if verb == "remote-stop":
            return "RemoteStopTransaction", {"transactionId": self._transaction_id()}
        if verb == "config":
            return "ChangeConfiguration", {"key": args[0], "value": args[1]}
        kind = "Operative" if args[0] else "Inoperative"
        return "ChangeAvailability", {"connectorId": c, "type": kind}

    def _transaction_id(self) -> int:
        """The id the central system gave the latest StartTransaction."""
        with self._lock:
            events = list(self.result.timeline)
        starts = {
            e.value[1] for e in events if e.kind == "station" and _call(e.value, "StartTransaction")
        }
        for e in reversed(events):
            m = e.value
            if e.kind == "cs" and m and m[0] == 3 and m[1] in starts and isinstance(m[2], dict):
                return int(m[2].get("transactionId", 0))
        raise ConnectionError("no transaction to stop")

    def _power_cut(self, off_ms: int) -> None:
        cut_at = self._station_ms()
        self.target.kill()
        time.sleep(off_ms / 1000 / self.rate)  # the power stays off this long
        self._connect(cut_at + off_ms)
        self._set_up()

    def _teardown(self) -> None:
        """Leave the station safe: EV gone, charge stopped, contactor open — and check it."""
        link = self.link
        skip = ""
        if link is None or (self.result.aborted and self.target.alive() is False):
            skip = "station not running"
        elif self.connectors is not None and self.connector > self.connectors:
            skip = f"the station has no connector {self.connector}"
        if skip:
            self.result.verdicts.append(Verdict("contactor open after the run", None, "skip", skip))
            self._close()
            return
        state = "unknown"
        if self.result.aborted and not self._unplayable:  # silent: asking only delays the verdict
            detail = "contactor state unknown: the station stopped answering"
            self.result.verdicts.append(
                Verdict("contactor open after the run", None, "fail", detail)
            )
            self._close()
            return
        try:
            if "ev" in self.target.features:
                link.command("ev", self.connector, "state", "A", timeout=2)
            link.command("stop", self.connector, timeout=2)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                state = self._contactor_now()
                if state == "open":
                    break
                time.sleep(0.05)
        except (StationSilent, CommandFailed, OSError) as e:
            state = f"unknown ({e})"
        outcome = "pass" if state == "open" else "fail"
        detail = "" if state == "open" else f"contactor is {state}"
        self.result.verdicts.append(Verdict("contactor open after the run", None, outcome, detail))
        self._close()

    def _contactor_now(self) -> str:
        assert self.link is not None
        self.link.command("status", timeout=2)
        with self._lock:
            for e in reversed(self.result.timeline):
                if e.kind == "contactor" and e.connector == self.connector:
                    return str(e.value)
        return "unknown"

    def _close(self) -> None:
        if self.link is not None:
            self.link.close()
        output = self.target.output().splitlines()
        self.result.log += output
        if self.result.aborted and output and self.target.alive() is False:
            self.result.aborted += f" (station's last words: {output[-1]})"
        self.target.stop()


def _float(word: str | None) -> float | None:
    try:
        return float(word) if word not in (None, "-") else None
    except ValueError:
        return None


def _expects_reset(session: Session) -> bool:
    """A session may restart the station on purpose (a configuration key that needs a reboot):
    it then expects a BootNotification."""
    return any(
        (s.actor, s.verb) == ("expect", "ocpp") and s.args[0] == "BootNotification"
        for s in session.steps
    )


def _call(message: list, action: str | None = None) -> bool:
    return bool(message) and message[0] == 2 and (action is None or message[2] == action)


def _tags(session: Session) -> set[str]:
    return {
        s.args[0]
        for s in session.steps
        if (s.actor, s.verb) in (("user", "tag"), ("op", "remote-start"))
    }


# ---- judging ---------------------------------------------------------------------------------


def judge(
    session: Session,
    timeline: list[Event],
    phases: int,
    late_ms: dict[int, int],
    allowance_ms: int = 0,
) -> list[Verdict]:
    """Verdicts of the session's expectations. Each deadline counts from when the step
    before it really ran (a step may run a little after its time), but from no later than
    the step after it really ran, which may change what is expected; OCPP frames may be up to
    allowance_ms off their estimated times."""
    ran = {s.line: s.at_ms + late_ms[s.line] for s in session.steps if s.line in late_ms}
    verdicts = []
    late = 0
    for i, step in enumerate(session.steps):
        if step.actor != "expect":
            late = late_ms.get(step.line, late)
            continue
        start = step.at_ms + late
        after = next((s for s in session.steps[i + 1 :] if s.line in ran), None)
        if after is not None:
            start = max(step.at_ms, min(start, ran[after.line]))
        ok, detail = _check(step, session, timeline, phases, start - step.at_ms, allowance_ms)
        verdicts.append(Verdict(step.text, step.line, "pass" if ok else "fail", detail))
    return verdicts


def _check(
    step: Step, session: Session, timeline: list[Event], phases: int, late: int, allowance: int
) -> tuple[bool, str]:
    c = session.connector
    start = step.at_ms + late
    end = start + (step.within_ms or 0)
    if step.verb in ("contactor", "pilot", "limit"):
        wanted = step.args[0]
        seen = None
        values = []
        for e in timeline:
            if e.kind != step.verb or e.connector != c or e.ms > end:
                continue
            if e.ms <= start:
                seen = e.value
            else:
                values.append(e.value)
        candidates = [seen, *values]
        if any(_same(v, wanted) for v in candidates):
            return True, ""
        return False, f"{step.verb} was {_describe(candidates)} from {format_duration(start)} on"
    if step.verb == "fault":
        for e in timeline:
            if e.kind == "fault" and e.connector in (0, c) and start <= e.ms <= end:
                if e.value and e.value[0] == step.args[0]:
                    return True, ""
        return False, f"no {step.args[0]} fault by {format_duration(end)}"
    if step.verb == "ocpp":
        return _check_ocpp(step, timeline, max(start - allowance, 0), end + allowance)
    if step.verb == "status":
        observed = statuses(timeline, c)
        it = iter(observed)
        if all(any(s == o for o in it) for s in step.args):
            return True, ""
        return False, "observed " + (" ".join(observed) or "no StatusNotification")
    return _check_energy(step, timeline, c, phases)


def _same(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, float):
        return isinstance(value, float) and abs(value - wanted) < 0.5
    return value == wanted


def _describe(values: list) -> str:
    out: list = []
    for v in values:
        if not out or out[-1] != v:
            out.append(v)
    return " then ".join(str(v) for v in out[-6:]) if out else "never reported"


def _check_ocpp(step: Step, timeline: list[Event], start: int, end: int) -> tuple[bool, str]:
    action = step.args[0]
    near = []
    for e in timeline:
        if e.kind == "station" and _call(e.value, action):
            if start <= e.ms <= end:
                mismatch = _mismatch(e.value[3], step.fields)
                if not mismatch:
                    return True, ""
                near.append(mismatch)
            else:
                near.append(f"one at {format_duration(max(e.ms, 0))}")
    detail = f"no {action} between {format_duration(start)} and {format_duration(end)}"
    return False, detail + (f" ({'; '.join(near[:3])})" if near else "")


def _mismatch(payload: Any, fields: tuple) -> str:
    for path, wanted in fields:
        value = payload
        for key in path.split("."):
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif isinstance(value, dict) and key in value:
                value = value[key]
            else:
                return f"{path} missing"
        if _text(value) != wanted:
            return f"{path}={_text(value)}"
    return ""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def statuses(timeline: list[Event], connector: int) -> list[str]:
    out: list[str] = []
    for e in timeline:
        if e.kind == "station" and _call(e.value, "StatusNotification"):
            payload = e.value[3]
            if isinstance(payload, dict) and payload.get("connectorId") == connector:
                status = payload.get("status")
                if not out or out[-1] != status:
                    out.append(str(status))
    return out


def drawn_wh(timeline: list[Event], connector: int, phases: int) -> float:
    """Energy the EV drew by the bench's own account: its power, capped by the limit the
    station advertised, while the contactor was closed and the EV asked for charge."""
    state = {"contactor": "open", "pilot": "A", "limit": 0.0, "ev_power": DEFAULT_EV_POWER_W}
    total = 0.0
    last_ms = 0
    for e in sorted(timeline, key=lambda e: e.ms):
        if e.connector != connector or e.kind not in state:
            continue
        if e.ms > last_ms:
            total += _power(state, phases) * (e.ms - last_ms) / 3_600_000
            last_ms = e.ms
        state[e.kind] = e.value
    return total


def _power(state: dict, phases: int) -> float:
    if state["contactor"] != "closed" or state["pilot"] not in ("C", "D"):
        return 0.0
    cap = (state["limit"] or 0.0) * VOLTAGE_V * phases
    return min(float(state["ev_power"] or 0.0), cap)


def measured_wh(timeline: list[Event], connector: int) -> tuple[float | None, str]:
    """The station's own account: its last transaction's meterStop - meterStart, else the
    change of its meter register over the session."""
    start = stop = None
    for e in timeline:
        if e.kind == "station" and _call(e.value) and isinstance(e.value[3], dict):
            payload = e.value[3]
            if e.value[2] == "StartTransaction" and payload.get("connectorId") == connector:
                start, stop = payload.get("meterStart"), None
            elif e.value[2] == "StopTransaction" and start is not None:
                stop = payload.get("meterStop")
    if isinstance(start, int | float) and isinstance(stop, int | float):
        return float(stop - start), "transaction"
    registers = [
        _float(proto.fields(e.value).get("wh"))
        for e in timeline
        if e.kind == "meter" and e.connector == connector and e.ms >= 0
    ]
    readings = [wh for wh in registers if wh is not None]
    if len(readings) >= 2:
        return readings[-1] - readings[0], "meter register"
    return None, "no meter readings"


def _check_energy(step: Step, timeline: list[Event], c: int, phases: int) -> tuple[bool, str]:
    tolerance = step.args[0] / 100
    drawn = drawn_wh(timeline, c, phases)
    measured, source = measured_wh(timeline, c)
    if measured is None:
        return False, source
    ok = abs(measured - drawn) <= max(tolerance * drawn, 1.0)  # meterStop counts whole Wh
    return ok, f"{source} {measured:.0f} Wh, EV drew {drawn:.0f} Wh"
