"""Live view of the central system: pushes events to dashboards and counts Prometheus metrics.

`Live` is a listener on `CentralSystem.listeners`: it sees each station's connection and
disconnection and every OCPP-J frame in both directions. Events about stored data are
published when the central system answers the station's CALL, which is after the handler
has committed it, so a dashboard that refetches on an event sees the new rows.
"""

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import orjson

log = logging.getLogger("evse.web")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SUBSCRIBER_QUEUE = 1000


class Histogram:
    __slots__ = ("counts", "total", "n")

    def __init__(self) -> None:
        self.counts = [0] * len(LATENCY_BUCKETS)
        self.total = 0.0
        self.n = 0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        self.n += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.counts[i] += 1


class Live:
    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue] = set()
        # CALLs a station sent us, until we answer: station -> uid -> (action, payload, start)
        self._inbound: dict[str, dict[str, tuple[str, Any, float]]] = defaultdict(dict)
        # CALLs we sent a station, until it answers: station -> uid -> action
        self._outbound: dict[str, dict[str, str]] = defaultdict(dict)
        # (direction, action, result) -> count; result is "ok" or the CALLERROR code
        self.messages: dict[tuple[str, str, str], int] = defaultdict(int)
        self.callerrors: dict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.dropped_subscribers = 0

    # ---- listener -----------------------------------------------------------------------

    def __call__(self, kind: str, station: str, text: str | None) -> None:
        try:
            if kind == "in":
                self._frame_in(station, orjson.loads(text))  # type: ignore[arg-type]
            elif kind == "out":
                self._frame_out(station, orjson.loads(text))  # type: ignore[arg-type]
            elif kind in ("connected", "disconnected"):
                if kind == "disconnected":
                    self._inbound.pop(station, None)
                    self._outbound.pop(station, None)
                self.publish({"type": "online", "station": station, "online": kind == "connected"})
        except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError):
            pass  # malformed frames are the server's to answer; nothing to show or count

    def _frame_in(self, station: str, message: list) -> None:
        if message[0] == 2:
            self._inbound[station][message[1]] = (message[2], message[3], time.perf_counter())
            return
        action = self._outbound[station].pop(message[1], None)
        if action is None:
            return
        result = "ok" if message[0] == 3 else str(message[2])
        self.messages["out", action, result] += 1
        if message[0] == 4:
            self.callerrors["in", result] += 1
        self.publish(
            {
                "type": "command",
                "station": station,
                "action": action,
                "result": result,
                "answer": message[2] if message[0] == 3 else None,
            }
        )

    def _frame_out(self, station: str, message: list) -> None:
        if message[0] == 2:
            self._outbound[station][message[1]] = message[2]
            return
        call = self._inbound[station].pop(message[1], None)
        if message[0] == 4:
            self.callerrors["out", str(message[2])] += 1
        if call is None:
            self.messages["in", "unknown", "ok" if message[0] == 3 else str(message[2])] += 1
            return
        action, payload, start = call
        self.latency[action].observe(time.perf_counter() - start)
        if message[0] == 4:
            self.messages["in", action, str(message[2])] += 1
            return
        self.messages["in", action, "ok"] += 1
        event = _event(station, action, payload, message[2])
        if event is not None:
            self.publish(event)

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
                self.dropped_subscribers += 1
                queue.get_nowait()
                queue.put_nowait(None)  # end of stream, in place of the oldest event


def _event(station: str, action: str, request: dict, answer: dict) -> dict[str, Any] | None:
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
    return None
