"""Live view of the central system: pushes events to dashboards and counts Prometheus metrics.

`Live` is a listener on `CentralSystem.listeners`: it sees each station's connection and
disconnection and every OCPP-J frame in both directions. Events about stored data are
published when the central system answers the station's CALL, which is after the handler
has committed it, so a dashboard that refetches on an event sees the new rows.
"""

import asyncio
import bisect
import itertools
import logging
import re
import time
from collections import defaultdict
from typing import Any

import orjson

from host.cs import schemas
from protocol.ocppj import ERROR_CODES

log = logging.getLogger("evse.web")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SUBSCRIBER_QUEUE = 1000


class Histogram:
    """Counts per latency bucket (each sample in the first bucket that holds it)."""

    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.n += 1
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def cumulative(self) -> list[int]:
        return list(itertools.accumulate(self.counts))


# The head of an OCPP-J frame: message type, unique id and then, for a CALL, the action or,
# for a CALLERROR, the error code. The listener reads only this on the stations' hot path;
# payloads are parsed only while a dashboard listens.
HEAD = re.compile(r'\s*\[\s*([234])\s*,\s*"((?:[^"\\]|\\.)*)"\s*(?:,\s*"((?:[^"\\]|\\.)*)")?')
# Answered CALLs the dashboard hears about.
EVENT_ACTIONS = frozenset(
    ("StatusNotification", "BootNotification", "StartTransaction", "StopTransaction", "MeterValues")
)
# What a metric's label takes for a station's action or error code outside OCPP 1.6: each
# such name had a counter and a histogram of its own, kept for good, so a station sending
# CALLs of made-up actions grew the server's memory and /metrics without bound.
OTHER = "other"


class Live:
    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue] = set()
        # CALLs a station sent us, until we answer: station -> uid -> (action, frame, start)
        self._inbound: dict[str, dict[str, tuple[str, str, float]]] = defaultdict(dict)
        # CALLs we sent a station, until it answers: station -> uid -> action
        self._outbound: dict[str, dict[str, str]] = defaultdict(dict)
        # (direction, action, result) -> count; result is "ok" or the CALLERROR code
        self.messages: dict[tuple[str, str, str], int] = defaultdict(int)
        self.callerrors: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(Histogram)

    # ---- listener -----------------------------------------------------------------------

    def __call__(self, kind: str, station: str, text: str | None) -> None:
        if kind in ("connected", "disconnected"):
            if kind == "disconnected":
                self._inbound.pop(station, None)
                self._outbound.pop(station, None)
            self.publish({"type": "online", "station": station, "online": kind == "connected"})
            return
        head = HEAD.match(text or "")
        if head is None:
            return  # malformed frames are the server's to answer; nothing to show or count
        kind_, uid, name = head.groups()
        try:
            if "\\" in uid:  # escaped characters: the answer may spell the same id otherwise
                uid = orjson.loads(f'"{uid}"')
            if kind == "in":
                self._frame_in(station, kind_, uid, name, text)  # type: ignore[arg-type]
            else:
                self._frame_out(station, kind_, uid, name, text)  # type: ignore[arg-type]
        except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError):
            pass  # a malformed id, or a payload without the fields of its event: the server answers

    def _frame_in(self, station: str, kind: str, uid: str, name: str | None, text: str) -> None:
        if kind == "2":
            if name is not None:
                action = name if schemas.known(name) else OTHER
                self._inbound[station][uid] = (action, text, time.perf_counter())
            return
        action = self._outbound[station].pop(uid, None)
        if action is None:
            return
        result = "ok" if kind == "3" else name if name in ERROR_CODES else OTHER
        self.messages["out", action, result] += 1
        if kind == "4":
            self.callerrors["in", result] += 1
        if self.subscribers:
            answer = orjson.loads(text)[2] if kind == "3" else None
            event = {"station": station, "action": action, "result": result, "answer": answer}
            self.publish({"type": "command"} | event)

    def _frame_out(self, station: str, kind: str, uid: str, name: str | None, text: str) -> None:
        if kind == "2":
            self._outbound[station][uid] = str(name)
            return
        call = self._inbound[station].pop(uid, None)
        result = "ok" if kind == "3" else str(name)
        if kind == "4":
            self.callerrors["out", result] += 1
        if call is None:
            self.messages["in", "unknown", result] += 1
            return
        action, request, start = call
        self.latency[action].observe(time.perf_counter() - start)
        self.messages["in", action, result] += 1
        if kind == "3" and self.subscribers and action in EVENT_ACTIONS:
            self.publish(_event(station, action, orjson.loads(request)[3], orjson.loads(text)[2]))

    # ---- subscribers --------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.subscribers.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A client that cannot keep up is cut off; it reconnects and reloads.
                self.subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(None)  # end of stream, in place of the oldest event


def _event(station: str, action: str, request: dict, answer: dict) -> dict[str, Any]:
    """What the dashboard needs to know about a CALL we have just answered."""
    if action == "StatusNotification":
        return {
            "type": "status",
            "station": station,
            "connector": request["connectorId"],
            "status": request["status"],
            "error_code": request["errorCode"],
            "info": request.get("info"),
        }
    if action == "BootNotification":
        return {"type": "boot", "station": station, "registration": answer.get("status")}
    if action == "StartTransaction":
        return {
            "type": "transaction",
            "event": "started",
            "station": station,
            "connector": request["connectorId"],
            "id_tag": request["idTag"],
            "transaction": answer.get("transactionId"),
        }
    if action == "StopTransaction":
        return {
            "type": "transaction",
            "event": "stopped",
            "station": station,
            "transaction": request["transactionId"],
        }
    if action == "MeterValues":
        return {
            "type": "meter",
            "station": station,
            "connector": request["connectorId"],
            "transaction": request.get("transactionId"),
        }
    raise LookupError(action)
