"""Reports of replays: a timeline plot (PNG), an HTML page per session and an index, and
JUnit XML for CI systems."""

import html
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from host.bench.replay import Event, Result
from host.bench.session import format_duration

PILOT_LEVELS = "ABCDEF"


def write(results: list[Result], directory: str | Path) -> Path:
    """Write every report into `directory`; returns the index page."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    names = _unique_names(results)
    for name, result in zip(names, results, strict=True):
        if not result.skipped:
            plot(result, out / f"{name}.png")
        (out / f"{name}.html").write_text(page(result, name), encoding="utf-8")
    junit(results, names).write(out / "junit.xml", encoding="utf-8", xml_declaration=True)
    index = out / "index.html"
    index.write_text(index_page(results, names), encoding="utf-8")
    return index


def _unique_names(results: list[Result]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for r in results:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", r.session.name) or "session"
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return names


def outcome(result: Result) -> str:
    if result.skipped:
        return "skipped"
    return "passed" if result.passed else "FAILED"


# ---- plot ------------------------------------------------------------------------------------


def _steps(events: list[Event], kind: str, connector: int, convert) -> tuple[list, list]:
    xs, ys = [], []
    for e in events:
        if e.kind == kind and e.connector == connector and e.ms >= 0:
            value = convert(e.value)
            if value is not None:
                xs.append(e.ms / 60_000)
                ys.append(value)
    return xs, ys


def _meter(value: list, key: str, scale: float = 1.0) -> float | None:
    for word in value:
        k, _, v = word.partition("=")
        if k == key and v not in ("", "-"):
            try:
                return float(v) * scale
            except ValueError:
                return None
    return None


def plot(result: Result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.session.connector
    events = sorted(result.timeline, key=lambda e: e.ms)
    end = max(result.session.end_ms, max((e.ms for e in events), default=0)) / 60_000
    fig, axes = plt.subplots(6, 1, figsize=(10, 11), sharex=True)
    rows = [
        ("pilot", lambda v: PILOT_LEVELS.find(v) if v in PILOT_LEVELS else None, "pilot state"),
        ("contactor", lambda v: 1 if v == "closed" else 0 if v == "open" else None, "contactor"),
        ("limit", lambda v: v, "limit (A)"),
        ("meter", lambda v: _meter(v, "w", 1 / 1000), "power (kW)"),
        ("meter", lambda v: _meter(v, "wh", 1 / 1000), "energy (kWh)"),
    ]
    for ax, (kind, convert, label) in zip(axes, rows, strict=False):
        xs, ys = _steps(events, kind, c, convert)
        if xs:
            xs.append(end)
            ys.append(ys[-1])
            ax.step(xs, ys, where="post")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].set_yticks(range(len(PILOT_LEVELS)), list(PILOT_LEVELS))
    axes[1].set_yticks([0, 1], ["open", "closed"])
    calls = [(e.ms / 60_000, e.value[2]) for e in events if _station_call(e) and e.ms >= 0]
    actions = sorted({a for _, a in calls})
    ax = axes[5]
    if calls:
        ax.scatter([x for x, _ in calls], [actions.index(a) for _, a in calls], marker="|", s=80)
        ax.set_yticks(range(len(actions)), actions, fontsize=7)
    ax.set_ylabel("OCPP (station)")
    ax.set_xlabel("session time (min)")
    ax.grid(True, alpha=0.3)
    for e in events:
        if e.source == "bench" and e.kind != "ev_power" and e.ms >= 0:
            for a in axes:
                a.axvline(e.ms / 60_000, color="grey", alpha=0.25, linewidth=0.8)
        elif e.kind == "reset":  # the station restarted by itself
            for a in axes:
                a.axvline(e.ms / 60_000, color="red", alpha=0.6, linewidth=1.2)
    fig.suptitle(f"{result.session.name} on {result.target}: {outcome(result)}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _station_call(e: Event) -> bool:
    return e.kind == "station" and bool(e.value) and e.value[0] == 2


# ---- HTML --------------------------------------------------------------------------------------

STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    ".pass,.passed{color:#070}.fail,.FAILED,.error{color:#b00;font-weight:bold}"
    ".skip,.skipped{color:#777}pre{font-size:12px}"
)


def page(result: Result, name: str) -> str:
    e = html.escape
    s = result.session
    rows = "".join(
        f"<tr><td>{v.line or ''}</td><td>{e(v.name)}</td>"
        f"<td class='{v.outcome}'>{v.outcome}</td><td>{e(v.detail)}</td></tr>"
        for v in result.verdicts
    )
    frames = "\n".join(
        f"{format_duration(max(ev.ms, 0)):>9} {'->' if ev.kind == 'station' else '<-'} "
        f"{e(str(ev.value))}"
        for ev in sorted(result.timeline, key=lambda ev: ev.ms)
        if ev.source == "ocpp"
    )
    image = "" if result.skipped else f"<img src='{e(name)}.png' alt='timeline'>"
    log = e("\n".join(result.log[-200:]))
    return (
        f"<!doctype html><meta charset='utf-8'><title>{e(s.name)}</title><style>{STYLE}</style>"
        f"<h1>{e(s.name)} <span class='{outcome(result)}'>{outcome(result)}</span></h1>"
        f"<p>{e(s.description)}</p><p>file {e(s.path)}, target {e(result.target)}, "
        f"{format_duration(result.session_ms)} of station time in {result.wall_s:.1f} s "
        f"({result.speedup:.0f}× real time)</p>"
        f"<table><tr><th>line</th><th>expectation</th><th>verdict</th><th>detail</th></tr>"
        f"{rows}</table>{image}"
        f"<details><summary>OCPP messages</summary><pre>{frames}</pre></details>"
        f"<details><summary>station log</summary><pre>{log}</pre></details>"
    )


def index_page(results: list[Result], names: list[str]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td><a href='{e(n)}.html'>{e(r.session.name)}</a></td>"
        f"<td class='{outcome(r)}'>{outcome(r)}</td><td>{r.wall_s:.1f} s</td>"
        f"<td>{e(r.aborted or next((v.detail for v in r.verdicts if v.outcome != 'pass'), ''))}"
        "</td></tr>"
        for n, r in zip(names, results, strict=True)
    )
    return (
        f"<!doctype html><meta charset='utf-8'><title>bench report</title><style>{STYLE}</style>"
        "<h1>Bench report</h1><table><tr><th>session</th><th>verdict</th><th>time</th>"
        f"<th>first problem</th></tr>{rows}</table>"
    )


# ---- JUnit ------------------------------------------------------------------------------------


def junit(results: list[Result], names: list[str]) -> ET.ElementTree:
    suites = ET.Element("testsuites", name="evse bench")
    for name, r in zip(names, results, strict=True):
        suite = ET.SubElement(suites, "testsuite", name=name, time=f"{r.wall_s:.3f}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        for v in r.verdicts:
            label = f"line {v.line}: {v.name}" if v.line else v.name
            case = ET.SubElement(suite, "testcase", classname=f"bench.{name}", name=label)
            counts["tests"] += 1
            if v.outcome == "fail":
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=v.detail or "failed")
            elif v.outcome == "error":
                counts["errors"] += 1
                ET.SubElement(case, "error", message=v.detail or "error")
            elif v.outcome == "skip":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=v.detail)
        for key, value in counts.items():
            suite.set(key, str(value))
    return ET.ElementTree(suites)
