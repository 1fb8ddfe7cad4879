"""`evse run` (what `make run` runs): the whole stack on this machine.

A central system with SQLite, its dashboard and REST API, and one simulated station running
the real firmware under micropython, connected to it with an EV plugged in. Prints where to
look and how to start a charge, then the station's live state; Ctrl-C stops everything.
"""

import json
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path

from host.demo import BOARD, HEADER, row
from host.sim import RESET_EXIT, SimError, SimStation, write_station_config

USER = "operator"
ID_TAG = "DEMO"
READY_PREFIX = "dashboard and REST API: "


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "run",
        help="central system, dashboard and one simulated station (what `make run` runs)",
        description="Start the central system (SQLite in DATA/cs) with its dashboard, and a "
        "simulated station running the real firmware (flash in DATA/<station>) that connects "
        "to it with an EV plugged in. State is kept across runs; Ctrl-C stops everything.",
    )
    parser.add_argument("--data", default="data", help="data directory (default ./data)")
    parser.add_argument("--station", default="SIM-001", help="the simulated station's id")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--ocpp-port", type=int, default=9000)
    parser.add_argument("--http-port", type=int, default=9001, help="firmware/diagnostics files")
    parser.add_argument("--web-port", type=int, default=9002, help="dashboard and REST API")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated board time factor")
    parser.set_defaults(func=run)


def prepare(cs_dir: Path, station_id: str) -> str:
    """Register the station, the demo id tag and the operator; return the operator's password.

    The password is made on the first run and kept, readable by the owner only, in cs_dir."""
    from host.cs import storage
    from host.web import auth, schema

    cs_dir.mkdir(parents=True, exist_ok=True)
    password_file = cs_dir / "operator-password"
    db = storage.Db(storage.database_url(str(cs_dir), None))
    try:
        schema.migrate(db)
        storage.add_station(db, station_id, "accepted")
        storage.set_id_tag(db, ID_TAG)
        if auth.get_user(db, USER) is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            auth.add_user(db, USER, "operator", password)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        db.commit()
    finally:
        db.close()
    return password_file.read_text().strip()


def start_central_system(args, cs_dir: Path) -> tuple[subprocess.Popen, str]:
    """Start `evse cs serve` and return it with the dashboard's address once it listens."""
    from host.cli import UserError

    argv = [sys.executable, "-m", "host", "cs", "serve", "--data", str(cs_dir)]
    argv += ["--host", args.host, "--ocpp-port", str(args.ocpp_port)]
    argv += ["--http-port", str(args.http_port), "--web-port", str(args.web_port)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
    found: list[str] = []
    ready = threading.Event()

    def relay() -> None:  # the server's own lines go on to the terminal
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(READY_PREFIX):
                found.append(line[len(READY_PREFIX) :].strip())
                ready.set()
            print(f"[cs] {line}", end="", flush=True)
        ready.set()

    threading.Thread(target=relay, daemon=True).start()
    if not ready.wait(timeout=60) or not found:
        process.kill()
        raise UserError("the central system did not start (see its messages above)")
    return process, found[0]


def run(args) -> int:
    from host.cli import UserError

    if args.speed <= 0:
        raise UserError("--speed must be positive")
    # Ctrl-C, and a supervisor's SIGTERM, stop everything below, even when this was started
    # with SIGINT ignored (as a shell starts background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    data = Path(args.data)
    cs_dir, station_dir = data / "cs", data / args.station
    password = prepare(cs_dir, args.station)
    central, dashboard = start_central_system(args, cs_dir)
    station = SimStation(station_dir, speed=args.speed)
    try:
        station_dir.mkdir(parents=True, exist_ok=True)
        board_file = station_dir / "board.json"
        if not board_file.exists():
            board_file.write_text(json.dumps(BOARD, indent=1) + "\n")
        write_station_config(station_dir, args.station, f"ws://{args.host}:{args.ocpp_port}/ocpp")
        station.start(timeout=30)
        plug_in(station)
        print_instructions(args, dashboard, password, cs_dir)
        watch(station)
    except KeyboardInterrupt:
        pass
    except SimError as error:
        raise UserError(f"the simulated station stopped: {error}") from None
    finally:
        station.stop()
        central.terminate()
        try:
            central.wait(timeout=10)
        except subprocess.TimeoutExpired:
            central.kill()
    print("Stopped. State is kept in", data)
    return 0


def plug_in(station: SimStation) -> None:
    """The EV at connector 1, plugged in and asking for charge; the station waits. Again after
    each restart of the station: a real EV stays plugged in while the station reboots, but
    the simulated one lives in the station's process and starts unplugged."""
    station.command("power 1 7400")
    station.command("ev 1 C")


def print_instructions(args, dashboard: str, password: str, cs_dir: Path) -> None:
    start = json.dumps({"connectorId": 1, "idTag": ID_TAG})
    print(
        f"""
Dashboard:  {dashboard}   (user {USER}, password {password})
Station {args.station} runs the real firmware on the simulated board; an EV is plugged into
connector 1 and asks for charge. Start a charge from the dashboard (station {args.station},
Remote start, id tag {ID_TAG}) or from another terminal:
  .venv/bin/evse cs send {args.station} RemoteStartTransaction '{start}' --data {cs_dir}
Ctrl-C stops everything.
""",
        flush=True,
    )


def watch(station: SimStation) -> None:
    """Print the station's state every 5 s of board time; restart it after a reset (the
    central system's Reset, or its watchdog's), as a board would reboot, and end when it
    exits any other way."""
    print(HEADER, flush=True)
    station.command("watch 5000")
    while True:
        try:
            line = station.next_line(lambda m: "watch" in m, timeout=30)
        except SimError:
            assert station.process is not None
            code = station.process.poll()
            if code is None:
                continue
            if code != RESET_EXIT:
                raise SimError(f"exit status {code}; output: {station.log[-5:]}") from None
            print("the station reset; restarting", flush=True)
            station.start(timeout=30)
            plug_in(station)
            station.command("watch 5000")
            continue
        print(row(line["watch"]), flush=True)
