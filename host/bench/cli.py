"""`evse bench`: replay session files against a station, record and import sessions."""

import argparse
import sys
from pathlib import Path
from typing import Any

from host.cli import UserError

DEFAULT_LISTEN = "0.0.0.0:9100"  # where a board on a serial port reaches the bench's relay


def listen_address(text: str) -> tuple[str, int]:
    """[HOST:]PORT for the relay stations connect to."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise UserError(f"--listen {text!r}: use [HOST:]PORT") from None
    if not 0 <= number <= 65535:
        raise UserError(f"--listen {text!r}: port must be 0..65535")
    return host or "0.0.0.0", number


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("bench", help="hardware-in-loop bench: replay, record, import")
    actions = parser.add_subparsers(dest="bench_command", required=True, metavar="ACTION")

    replay = actions.add_parser("replay", help="replay session files against a station")
    replay.add_argument("files", nargs="+", metavar="FILE", help="session files or directories")
    replay.add_argument("--target", default="sim", help="sim (default) or serial:PORT")
    replay.add_argument("--report", metavar="DIR", help="write PNG/HTML/JUnit reports here")
    replay.add_argument("--cs", metavar="URL", help="central system (default: an embedded one)")
    replay.add_argument(
        "--speed",
        type=_speed,
        help="cap on the sim's board time per real time, or max (default: the session's, "
        "else max); the sim's resolution does not depend on it",
    )
    replay.add_argument(
        "--listen",
        metavar="[HOST:]PORT",
        help=f"relay the station connects to (sim: a free loopback port; else {DEFAULT_LISTEN})",
    )
    replay.add_argument(
        "--fixture", action="store_true", help="the board has an EV-simulator fixture"
    )
    replay.set_defaults(func=replay_command)

    record = actions.add_parser("record", help="record a live session from a station console")
    record.add_argument("port", help="the station's console port, e.g. /dev/ttyUSB0")
    record.add_argument("--out", required=True, metavar="FILE", help="session file to write")
    record.add_argument("--cs", required=True, metavar="URL", help="central system to relay to")
    record.add_argument("--listen", default=DEFAULT_LISTEN, metavar="[HOST:]PORT")
    record.add_argument("--duration", metavar="TIME", help="stop after this (default: Ctrl-C)")
    record.add_argument("--connector", type=int, default=1)
    record.set_defaults(func=record_command)

    imp = actions.add_parser("import", help="turn a central system's OCPP log into a session")
    imp.add_argument("log", help="JSON lines of frames (e.g. `evse cs log --json`)")
    imp.add_argument("--out", required=True, metavar="FILE")
    imp.add_argument("--station", help="only this charge point's frames")
    imp.add_argument("--connector", type=int, default=1)
    imp.set_defaults(func=import_command)


def _speed(text: str) -> float:
    from host.bench.session import parse_speed

    try:
        return parse_speed(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def session_files(names: list[str]) -> list[Path]:
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            files += sorted(path.glob("*.session"))
        elif path.exists():
            files.append(path)
        else:
            raise UserError(f"{name}: no such file")
    if not files:
        raise UserError("no session files")
    return files


def make_target(spec: str, speed: float | None, fixture: bool):
    from host.bench.target import SerialTarget, SimTarget

    if spec == "sim":
        return lambda session: SimTarget(speed or session.speed)  # prepare() picks the step
    if spec.startswith("serial:") and len(spec) > 7:
        return lambda session: SerialTarget(spec[7:], fixture)
    raise UserError(f"--target {spec!r}: use sim or serial:PORT")


def replay_command(args: argparse.Namespace) -> int:
    from host.bench import report, session
    from host.bench.replay import Replay

    try:
        sessions = [session.load(f) for f in session_files(args.files)]
    except session.SessionError as e:
        raise UserError(str(e)) from None
    target_for = make_target(args.target, args.speed, args.fixture)
    default = "127.0.0.1:0" if args.target == "sim" else DEFAULT_LISTEN
    listen = listen_address(args.listen or default)
    results = []
    interrupted = False
    for s in sessions:
        print(f"== {s.name} ({s.path})", flush=True)
        try:
            result = Replay(s, target_for(s), args.cs, _progress, listen).run()
        except KeyboardInterrupt:  # Ctrl-C: the sessions done are still reported
            print(f"interrupted during {s.name}", flush=True)
            interrupted = True
            break
        results.append(result)
        _summary(result)
    if args.report and results:
        print(f"report: {report.write(results, args.report)}")
    failed = [r.session.name for r in results if not r.passed]
    print(f"{len(results) - len(failed)} of {len(results)} sessions passed", end="")
    print(f"; failed: {', '.join(failed)}" if failed else "")
    return 130 if interrupted else 1 if failed else 0


def _progress(text: str) -> None:
    print(text, flush=True)


def _summary(result: Any) -> None:
    from host.bench.report import outcome

    for v in result.verdicts:
        where = f"line {v.line}: " if v.line else ""
        detail = f" — {v.detail}" if v.detail else ""
        print(f"  {v.outcome.upper():5} {where}{v.name}{detail}")
    print(
        f"  {outcome(result)}: {result.wall_s:.1f} s for {result.session_ms / 1000:.0f} s "
        f"of station time",
        flush=True,
    )


def record_command(args: argparse.Namespace) -> int:
    from host.bench import record, session

    duration = None
    if args.duration:
        try:
            duration = session.parse_duration(args.duration) / 1000
        except ValueError as e:
            raise UserError(str(e)) from None
    listen = listen_address(args.listen)
    text = record.record(args.port, args.cs, listen, args.connector, duration)
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def import_command(args: argparse.Namespace) -> int:
    from host.bench import record

    try:
        lines = Path(args.log).read_text(encoding="utf-8").splitlines()
        text = record.import_log(lines, args.connector, args.station, args.log)
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{args.log}: {e}") from None
    except record.LogError as e:
        raise UserError(str(e)) from None
    Path(args.out).write_text(text, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0
