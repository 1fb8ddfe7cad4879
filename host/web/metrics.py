"""Prometheus metrics of the central system, in the text exposition format."""

from typing import TYPE_CHECKING, Any

from host.web.live import LATENCY_BUCKETS, Live

if TYPE_CHECKING:
    from host.cs.server import CentralSystem


def _labels(**labels: Any) -> str:
    def escape(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def prometheus(cs: "CentralSystem", live: Live, counts: dict[str, Any]) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    metric(
        "evse_cs_connected_stations",
        "gauge",
        "Stations with an open WebSocket.",
        [("", len(cs.sessions))],
    )
    metric(
        "evse_cs_stations",
        "gauge",
        "Stations known to the central system.",
        [("", counts["stations"])],
    )
    metric(
        "evse_cs_faulted_connectors",
        "gauge",
        "Connectors reporting a fault.",
        [("", counts["faulted_connectors"])],
    )
    metric(
        "evse_cs_active_transactions",
        "gauge",
        "Transactions not yet stopped.",
        [("", counts["active_transactions"])],
    )
    metric(
        "evse_cs_messages_total",
        "counter",
        "OCPP CALLs by direction (in: from stations), action and result (ok or CALLERROR code;"
        " other: an action or code not of OCPP 1.6).",
        [
            (_labels(direction=d, action=a, result=res), n)
            for (d, a, res), n in sorted(live.messages.items())
        ],
    )
    metric(
        "evse_cs_callerrors_total",
        "counter",
        "CALLERRORs by direction (out: sent by the central system) and error code.",
        [(_labels(direction=d, code=c), n) for (d, c), n in sorted(live.callerrors.items())],
    )
    samples: list[tuple[str, Any]] = []
    for action, histogram in sorted(live.latency.items()):
        for bound, n in zip(LATENCY_BUCKETS, histogram.cumulative(), strict=False):
            samples.append((_labels(action=action, le=bound), n))
        samples.append((_labels(action=action, le="+Inf"), histogram.n))
    metric(
        "evse_cs_handler_latency_seconds",
        "histogram",
        "Time from a station's CALL to the central system's answer.",
        [("_bucket" + labels, n) for labels, n in samples],
    )
    lines.extend(
        f"evse_cs_handler_latency_seconds_{part}{_labels(action=action)} {value}"
        for action, histogram in sorted(live.latency.items())
        for part, value in (("sum", f"{histogram.total:.6f}"), ("count", histogram.n))
    )
    metric(
        "evse_cs_commands_queued",
        "gauge",
        "Commands waiting for their station.",
        [("", counts["queued_commands"])],
    )
    metric(
        "evse_cs_calls_awaiting_answer",
        "gauge",
        "Commands sent, awaiting the station's answer.",
        [("", sum(len(s.pending) for s in cs.sessions.values()))],
    )
    metric(
        "evse_cs_storage_queue",
        "gauge",
        "Database statements and calls not committed yet.",
        [("", cs.store.queued)],
    )
    metric(
        "evse_web_event_subscribers",
        "gauge",
        "Dashboards receiving live events.",
        [("", len(live.subscribers))],
    )
    return "\n".join(lines) + "\n"
