"""Sessions from what really happened: `record` watches a live station (its console and the
OCPP frames relayed to the central system), `import` reads a central system's message log.
Both turn observations into the same kind of session file: the steps that reproduce the charge
and expectations that what followed happens again."""

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from host.bench import network
from host.bench.link import ConsoleLink, Line
from host.bench.session import format_duration


class LogError(Exception):
    """A message log that cannot be imported: names the file and line."""


@dataclass
class Observation:
    ms: int
    kind: str  # pilot, power, contactor, station (CALL from the station), cs (CALL to it)
    value: Any


# ---- observations -> session text ------------------------------------------------------------


def synthesize(observations: list[Observation], connector: int, name: str, origin: str) -> str:
    observations = sorted(observations, key=lambda o: o.ms)
    t0 = observations[0].ms if observations else 0
    steps: list[tuple[int, str]] = []
    has_pilot = any(o.kind == "pilot" for o in observations)
    plugged = False
    power = None
    remote_tags: set[str] = set()
    tagged = False
    statuses: list[str] = []
    energy = False

    def step(ms: int, text: str) -> None:
        steps.append((ms - t0, text))

    for o in observations:
        if o.kind == "pilot":
            letter = o.value
            if letter == "A":
                step(o.ms, "ev unplug")
            elif letter == "B" and not plugged:
                step(o.ms, "ev plug")
            elif letter in "BCD":
                step(o.ms, f"ev state {letter}")
            plugged = letter != "A"
        elif o.kind == "power":
            if power is None or abs(o.value - power) > max(0.05 * power, 100):
                power = o.value
                step(o.ms, f"ev power {o.value:.0f}")
        elif o.kind == "contactor" and o.value == "closed":
            step(o.ms, "expect contactor closed within 10s")
        elif o.kind == "cs":
            action, payload = o.value
            if action == "RemoteStartTransaction":
                remote_tags.add(payload.get("idTag"))
                step(o.ms, f"op remote-start {payload.get('idTag')}")
            elif action == "RemoteStopTransaction":
                step(o.ms, "op remote-stop")
            elif action == "ChangeConfiguration":
                step(o.ms, f"op config {payload.get('key')} {payload.get('value')}")
            elif action == "ChangeAvailability":
                on = "on" if payload.get("type") == "Operative" else "off"
                step(o.ms, f"op available {on}")
        elif o.kind == "station":
            action, payload = o.value
            if payload.get("connectorId", connector) != connector and action != "StopTransaction":
                continue
            tag = payload.get("idTag")
            energy = energy or action == "StartTransaction"
            if action in ("Authorize", "StartTransaction") and tag and not tagged:
                tagged = True
                if tag not in remote_tags:
                    step(o.ms, f"user tag {tag}")
                step(o.ms, f"expect ocpp StartTransaction idTag={tag} within 60s")
            elif action == "StopTransaction":
                tagged = False
                if payload.get("reason") == "Local":
                    step(o.ms, "user stop")
                step(o.ms, "expect ocpp StopTransaction within 60s")
            elif action == "StatusNotification":
                status = payload.get("status")
                if not statuses or statuses[-1] != status:
                    statuses.append(str(status))
                if not has_pilot:
                    plugged = _ev_from_status(o.ms, status, plugged, step)
            elif action == "MeterValues" and not has_pilot:
                watts = _power_of(payload)
                if watts is not None and (
                    power is None or abs(watts - power) > max(0.05 * power, 100)
                ):
                    power = watts
                    step(o.ms, f"ev power {watts:.0f}")
    end = max((ms for ms, _ in steps), default=0)
    if len(statuses) > 1:
        steps.append((end, "expect status " + " ".join(statuses[1:])))
    if energy:
        steps.append((end, "expect energy 5%"))
    lines = [
        f"name {name}",
        f"description {origin}",
        f"connector {connector}",
        f"duration {format_duration(end + 30_000)}",
        "",
    ]
    lines += [f"{format_duration(max(ms, 0)):>9}  {text}" for ms, text in steps]
    return "\n".join(lines) + "\n"


def _ev_from_status(ms: int, status: Any, plugged: bool, step) -> bool:
    """Without the pilot, the connector status tells what the EV did."""
    if status == "Preparing" and not plugged:
        step(ms, "ev plug")
        return True
    if status == "Charging":
        step(ms, "ev state C")
        return True
    if status == "SuspendedEV":
        step(ms, "ev state B")
        return True
    if status == "Available" and plugged:
        step(ms, "ev unplug")
        return False
    return plugged


def _power_of(payload: dict) -> float | None:
    for mv in payload.get("meterValue") or []:
        for sv in mv.get("sampledValue") or []:
            if sv.get("measurand") == "Power.Active.Import":
                try:
                    value = float(sv.get("value"))
                except (TypeError, ValueError):
                    return None
                return value * 1000 if sv.get("unit") == "kW" else value
    return None


# ---- import ------------------------------------------------------------------------------------


def _time_ms(value: Any) -> int:
    if isinstance(value, int | float):
        return int(value * 1000)
    if isinstance(value, str):
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    raise ValueError("no time")


def import_log(lines: list[str], connector: int, station: str | None, path: str) -> str:
    """A session from JSON lines of frames, each an object with the time (`ts`, `time` or
    `timestamp`: ISO 8601 or Unix seconds), the direction (`in`/`station` = from the station,
    `out`/`cs` = to it) and the frame (`text` as sent, or `message`/`frame` decoded)."""
    observations = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            if station and record.get("station") not in (None, station):
                continue
            stamp = next((record[k] for k in ("ts", "time", "timestamp") if k in record), None)
            ms = _time_ms(stamp)
            direction = record.get("direction")
            if direction not in ("in", "out", "station", "cs"):
                raise ValueError(f"direction {direction!r} is not in/out/station/cs")
            frame = record.get("message", record.get("frame", record.get("text")))
            message = json.loads(frame) if isinstance(frame, str) else frame
        except (ValueError, TypeError, KeyError) as e:
            raise LogError(f"{path}:{number}: {e}") from None
        if not (isinstance(message, list) and len(message) == 4 and message[0] == 2):
            continue  # answers carry nothing the session needs
        if not isinstance(message[3], dict):
            continue
        kind = "station" if direction in ("in", "station") else "cs"
        observations.append(Observation(ms, kind, (message[2], message[3])))
    if not observations:
        raise LogError(f"{path}: no OCPP CALL frames found")
    name = "imported"
    return synthesize(observations, connector, name, f"Imported from the OCPP log {path}.")


# ---- record ------------------------------------------------------------------------------------


class StationClock:
    """The station's time (ms) at a host moment, from its console events: the last event's
    time, moved on at the rate the station's clock has run against the host's (a board runs
    at 1x, a simulator at its speed)."""

    def __init__(self) -> None:
        self.first: tuple[int, float] | None = None  # (station ms, host s)
        self.last: tuple[int, float] | None = None

    def observe(self, ms: int, wall: float) -> None:
        if self.first is None:
            self.first = (ms, wall)
        self.last = (ms, wall)

    def ms(self, wall: float) -> int:
        if self.first is None or self.last is None:
            return 0
        (ms0, wall0), (ms1, wall1) = self.first, self.last
        rate = (ms1 - ms0) / 1000 / (wall1 - wall0) if wall1 - wall0 >= 1 else 1.0
        return ms1 + int((wall - wall1) * 1000 * rate)


def record(
    port: str, cs_url: str, listen: tuple[str, int], connector: int, duration_s: float | None
) -> str:
    """Watch a live station until duration_s has passed (or Ctrl-C) and return its session."""
    observations: list[Observation] = []
    lock = threading.Lock()
    clock = StationClock()

    def on_line(line: Line) -> None:
        if line.kind != "evt":
            return
        _, ms, kind, words = line.parsed
        clock.observe(ms, line.wall)
        if not words or words[0] != str(connector):
            return
        with lock:
            if kind in ("pilot", "contactor") and len(words) > 1:
                observations.append(Observation(ms, kind, words[1]))
            elif kind == "meter":
                fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
                if fields.get("w") not in (None, "-"):
                    observations.append(Observation(ms, "power", float(fields["w"])))

    def on_frame(frame: network.Frame) -> None:
        m = frame.message
        if m and m[0] == 2 and len(m) == 4 and isinstance(m[3], dict):
            with lock:
                stamp = clock.ms(time.monotonic())
                observations.append(Observation(stamp, frame.direction, (m[2], m[3])))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    net = network.Network(cs_url, on_frame, {})
    asyncio.run_coroutine_threadsafe(net.start(listen[1], listen[0]), loop).result(10)
    link = ConsoleLink(port, on_line)
    print(f"recording: console {port}, station -> ws://{listen[0]}:{net.port}/ocpp -> {cs_url}")
    started = time.monotonic()
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        link.close()
        asyncio.run_coroutine_threadsafe(net.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    with lock:
        return synthesize(observations, connector, "recorded", f"Recorded from {port}.")
