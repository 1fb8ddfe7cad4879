"""Central-system capacity: many lightweight simulated stations against `evse cs` and against a
baseline central system written on the `ocpp` package's documented ChargePoint pattern.

Each server runs in its own process (so its memory can be read from /proc); this process is
the load generator: raw WebSocket clients on uvloop (a few dozen bytes of framing code, no
`ocpp` or `websockets` objects, no task or future per message) sending a realistic mix:
StatusNotification, StartTransaction, MeterValues with 10 sampled values, Heartbeat,
StopTransaction. Every station's id tag is known to the server, in a group (parent) tag, so
a StartTransaction is authorised as in a real fleet.

Phases per server: connect-and-boot of all stations, closed-loop throughput (every station
sends its next message as soon as the previous one is answered), then open-loop runs at
fixed rates (`--rate`, one run each) for latency. Prints figures for both servers and their
ratio, and for every phase the CPU of the server (evse cs: its event loop and its database
process) and of this generator, and how long the server waited for a core (other work on the
machine): on a 2-core machine the generator and the server share them. A reference loop
timed before and after the closed loop shows the machine's speed: on a shared virtual
machine it changes from minute to minute, CPU per message with it.

    python benchmarks/bench_cs_load.py                 # default run, about 1.5 minutes
    python benchmarks/bench_cs_load.py --stations 10000 --duration 30 --rate 5000
    python benchmarks/bench_cs_load.py --baseline-stations 0 --rate 6000 8000 10000
"""

import argparse
import asyncio
import base64
import gc
import json
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import uvloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- servers (child processes) ----------------------------------------------------------


def serve_ours(port: int, data_dir: str, stations: int) -> None:
    sys.path.insert(0, ROOT)
    from host.cs import server, storage
    from host.cs.store import Store

    url = f"sqlite:///{data_dir}/cs.sqlite3"
    db = storage.Db(url)  # the fleet's id tags, as an operator has them: in a group
    storage.set_id_tag(db, "FLEET", expiry="2099-12-31T00:00:00Z")
    for i in range(stations):  # one per station: TAG and its number (Client.next_message)
        storage.set_id_tag(db, f"TAG{i:05d}", parent="FLEET", expiry="2099-12-31T00:00:00Z")
    db.commit()
    db.close()

    async def main() -> None:
        store = Store(url)
        await store.open()
        cs = server.CentralSystem(store, unknown="accept")
        await cs.start("127.0.0.1", port)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, report_gc_pauses)
        print("ready", flush=True)
        await asyncio.Event().wait()

    gc.callbacks.append(time_gc_pause)
    uvloop.run(main())  # as `evse cs serve` runs


# Pauses of the cyclic garbage collector in the server (CPU of the event-loop thread, which
# a loaded machine does not inflate), per generation, since the last report
_gc_started = [0.0]
_gc_pauses: list[list[float]] = [[], [], []]


def time_gc_pause(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_started[0] = time.thread_time()
    else:
        _gc_pauses[info["generation"]].append(time.thread_time() - _gc_started[0])


def report_gc_pauses() -> None:
    """On SIGUSR1: one line of JSON, [count, total s, longest s] per generation; reset."""
    print(json.dumps([[len(p), sum(p), max(p, default=0)] for p in _gc_pauses]), flush=True)
    for pauses in _gc_pauses:
        pauses.clear()


def server_gc_pauses(server: subprocess.Popen) -> list[list[float]]:
    assert server.stdout is not None
    server.send_signal(signal.SIGUSR1)
    return json.loads(server.stdout.readline())


def serve_baseline(port: int) -> None:
    """The `ocpp` package's documented central-system pattern, without persistence."""
    from datetime import UTC, datetime

    import websockets
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call_result
    from ocpp.v16.enums import Action, AuthorizationStatus, RegistrationStatus

    def now() -> str:
        return datetime.now(UTC).isoformat()

    class BaselineChargePoint(ChargePoint):
        transaction_ids = iter(range(1, 1 << 62))

        @on(Action.boot_notification)
        def on_boot(self, charge_point_vendor, charge_point_model, **kwargs):
            return call_result.BootNotification(
                current_time=now(), interval=300, status=RegistrationStatus.accepted
            )

        @on(Action.heartbeat)
        def on_heartbeat(self):
            return call_result.Heartbeat(current_time=now())

        @on(Action.status_notification)
        def on_status(self, connector_id, error_code, status, **kwargs):
            return call_result.StatusNotification()

        @on(Action.meter_values)
        def on_meter_values(self, connector_id, meter_value, **kwargs):
            return call_result.MeterValues()

        @on(Action.start_transaction)
        def on_start(self, connector_id, id_tag, meter_start, timestamp, **kwargs):
            return call_result.StartTransaction(
                transaction_id=next(self.transaction_ids),
                id_tag_info={"status": AuthorizationStatus.accepted},
            )

        @on(Action.stop_transaction)
        def on_stop(self, meter_stop, timestamp, transaction_id, **kwargs):
            return call_result.StopTransaction()

    async def on_connect(websocket):
        charge_point_id = websocket.request.path.strip("/").split("/")[-1]
        await BaselineChargePoint(charge_point_id, websocket).start()

    async def main() -> None:
        async with websockets.serve(
            on_connect, "127.0.0.1", port, subprotocols=["ocpp1.6"], backlog=4096
        ):
            print("ready", flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())


BOOT = '{"chargePointVendor":"Bench","chargePointModel":"Load"}'


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int, kernel_only: bool = False, main_thread: bool = False) -> float:
    """CPU time of a process, or of its main thread (the event loop), user + kernel or
    kernel only (its system calls)."""
    with open(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) + (0 if kernel_only else int(fields[11]))
    return ticks / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started (evse cs: its database process)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return children


def database_cpu(helpers: list[int]) -> float:
    return sum(cpu_seconds(pid) for pid in helpers)


def server_cpu(pid: int, helpers: list[int]) -> float:
    """The server's CPU, its database process (`helpers`) included."""
    return cpu_seconds(pid) + database_cpu(helpers)


def runnable_wait_seconds(pid: int) -> float:
    """Time the process's main thread was ready to run but waited for a core (other work
    on the machine): what makes wall-clock figures lower than its CPU figures promise."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


# ---- the load generator -----------------------------------------------------------------


def frame(text: str) -> bytes:
    """A client text frame; the all-zero mask key leaves the payload as it is (RFC 6455
    requires a mask key, any value is valid)."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return header + b"\0\0\0\0" + payload


def sampled_values() -> str:
    values = []
    for phase in ("L1", "L2", "L3"):
        values.append(
            f'{{"value":"230.{random.randint(0, 9)}","measurand":"Voltage",'
            f'"phase":"{phase}-N","unit":"V"}}'
        )
        values.append(
            f'{{"value":"15.{random.randint(0, 9)}","measurand":"Current.Import",'
            f'"phase":"{phase}","unit":"A"}}'
        )
        values.append(
            f'{{"value":"3450","measurand":"Power.Active.Import","phase":"{phase}","unit":"W"}}'
        )
    values.append('{"value":"123456","measurand":"Energy.Active.Import.Register","unit":"Wh"}')
    return "[" + ",".join(values) + "]"


# The stations' clocks span a few minutes of seconds: each second's text is made once
_TIMESTAMPS: dict[int, str] = {}


class Client(asyncio.Protocol):
    """One simulated station: handshake, BootNotification, then one outstanding CALL at a
    time. Callback-driven (no task or future per message) so that the generator stays far
    cheaper than the server it measures."""

    def __init__(self, gen: "Generator", station_id: str, booted: asyncio.Future):
        self.gen = gen
        self.id = station_id
        self.buffer = b""
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.booted = booted  # settled once the BootNotification is answered (or it failed)
        self.busy = False  # a CALL awaits its answer
        self.action = ""
        self.sent_at = 0.0
        self.uid = 0
        # A station's clock: set from the central system's (BootNotification) or by NTP, so
        # near the server's; a minute apart at most here, and one second on per message.
        self.seconds = int(time.time()) - random.randint(0, 60)
        self.transaction = 0
        # Stations start at different points of the mix, so that every window of the run
        # sees the whole mix rather than all stations sending the same action at once.
        self.step = random.randrange(12)

    def connection_made(self, transport):  # type: ignore[override]
        self.transport = transport
        self.gen.transports.append(transport)
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            (
                f"GET /ocpp/{self.id} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            status = buffer[: buffer.find(b"\r\n")]
            buffer = buffer[end + 4 :]
            if b" 101 " not in status:
                self.buffer = b""
                self._fail(RuntimeError(status.decode()))
                return
            self.open = True
            self.send("BootNotification", BOOT)
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, start = struct.unpack("!H", buffer[2:4])[0], 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                length, start = struct.unpack("!Q", buffer[2:10])[0], 10
            if len(buffer) < start + length:
                break
            payload = buffer[start : start + length]
            buffer = buffer[start + length :]
            if opcode == 0x9:  # ping -> pong
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 0x1 and self.busy:
                self._on_reply(payload)
        self.buffer = buffer

    def _on_reply(self, reply: bytes) -> None:
        latency = time.perf_counter() - self.sent_at
        self.busy = False
        if reply[1:2] != b"3":
            self.gen.errors += 1
        if self.action == "StartTransaction":
            marker = reply.find(b'"transactionId":')
            self.transaction = int(reply[marker + 16 :].split(b",")[0].split(b"}")[0])
        elif self.action == "BootNotification":
            if not self.booted.done():
                self.booted.set_result(None)
            return
        self.gen.on_answer(self, latency)

    def _fail(self, error: Exception) -> None:
        if not self.booted.done():
            self.booted.set_exception(error)

    def connection_lost(self, exc):  # type: ignore[override]
        self.gen.closed += self.open
        if self.busy:
            self.busy = False
            self.gen.in_flight -= 1
        self._fail(ConnectionError("closed before the BootNotification was answered"))

    def send(self, action: str, payload: str) -> None:
        self.uid += 1
        self.busy = True
        self.action = action
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(frame(f'[2,"{self.uid}","{action}",{payload}]'))

    def timestamp(self) -> str:
        self.seconds += 1
        text = _TIMESTAMPS.get(self.seconds)
        if text is None:  # formatting each time was a tenth of the generator's CPU
            text = _TIMESTAMPS[self.seconds] = time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.seconds)
            )
        return text

    def next_message(self) -> tuple[str, str]:
        """The mix, one charging session per cycle of 12 messages."""
        self.step = (self.step + 1) % 12
        step = self.step
        if step == 0:
            return "StatusNotification", (
                '{"connectorId":1,"errorCode":"NoError","status":"Preparing",'
                f'"timestamp":"{self.timestamp()}"}}'
            )
        if step == 1:
            return "StartTransaction", (
                f'{{"connectorId":1,"idTag":"TAG{self.id[2:]}","meterStart":0,'
                f'"timestamp":"{self.timestamp()}"}}'
            )
        if step == 10:
            return "StopTransaction", (
                f'{{"transactionId":{self.transaction},"meterStop":1000,'
                f'"timestamp":"{self.timestamp()}"}}'
            )
        if step == 11:
            return "StatusNotification", (
                '{"connectorId":1,"errorCode":"NoError","status":"Available",'
                f'"timestamp":"{self.timestamp()}"}}'
            )
        if step == 6:
            return "Heartbeat", "{}"
        return "MeterValues", (
            f'{{"connectorId":1,"transactionId":{self.transaction},"meterValue":'
            f'[{{"timestamp":"{self.timestamp()}","sampledValue":{self.gen.samples}}}]}}'
        )

    def send_next(self) -> None:
        self.gen.in_flight += 1
        self.send(*self.next_message())


class Generator:
    def __init__(self, port: int):
        self.port = port
        self.clients: list[Client] = []
        self.errors = 0
        self.closed = 0
        self.failed = 0
        self.failure = ""
        self.transports: list[asyncio.BaseTransport] = []
        self.samples = sampled_values()
        self.in_flight = 0  # messages sent and not answered yet
        self.latencies: list[float] = []
        self.window_end = 0.0  # answers after this are not counted
        self.closed_loop_on = False  # answer -> next message at once

    def on_answer(self, client: Client, latency: float) -> None:
        self.in_flight -= 1
        now = time.perf_counter()
        if now <= self.window_end:
            self.latencies.append(latency)
            if self.closed_loop_on:
                client.send_next()

    async def connect_and_boot(self, n: int, prefix: str, timeout: float) -> float:
        """Connect and boot `n` stations, at most 1,000 handshakes in flight; a station
        that fails, or is not booted within `timeout` seconds, is counted in `failed` and
        left out."""
        loop = asyncio.get_running_loop()
        numbers = iter(range(n))

        async def worker() -> None:
            for i in numbers:
                booted = loop.create_future()
                station = Client(self, f"{prefix}{i:05d}", booted)
                try:
                    _, client = await loop.create_connection(
                        lambda station=station: station, "127.0.0.1", self.port
                    )
                    await booted
                except (OSError, RuntimeError) as error:
                    self.failed += 1
                    self.failure = repr(error)
                    continue
                self.clients.append(client)

        t0 = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(min(n, 1000))]
        _, late = await asyncio.wait(workers, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        missing = n - len(self.clients) - self.failed
        if missing:
            self.failed += missing
            self.failure = f"not booted within {timeout:g} s"
        booted = {client.transport for client in self.clients}
        for transport in self.transports:
            if transport not in booted:
                transport.abort()  # type: ignore[attr-defined]
        return time.perf_counter() - t0

    async def _drain(self, timeout: float) -> None:
        """Wait (bounded) for the answers still in flight."""
        deadline = time.perf_counter() + timeout
        while self.in_flight > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)

    async def closed_loop(self, seconds: float, on_stop) -> list[float]:
        """Every station sends its next message as soon as the previous one is answered.
        Returns the latencies of the messages answered within `seconds`; `on_stop` runs at
        the end of the window, before waiting for the messages still in flight."""
        self.latencies = []
        self.window_end = time.perf_counter() + seconds
        self.closed_loop_on = True
        for client in self.clients:
            client.send_next()
        await asyncio.sleep(seconds)
        on_stop()
        self.closed_loop_on = False
        await self._drain(10)
        return self.latencies

    async def open_loop(self, rate: float, seconds: float, on_stop) -> tuple[int, list[float], int]:
        """Send at `rate` messages/s spread over the stations; a station still waiting for
        its previous answer skips its turn (counted). `on_stop` runs at the end of the
        window, before waiting for the answers still in flight."""
        self.latencies = []
        self.window_end = float("inf")
        skipped = 0
        t0 = time.perf_counter()
        sent = 0
        index = 0
        while (now := time.perf_counter()) < t0 + seconds:
            for _ in range(int((now - t0) * rate) - sent):
                client = self.clients[index % len(self.clients)]
                index += 1
                sent += 1
                if client.busy:
                    skipped += 1
                else:
                    client.send_next()
            await asyncio.sleep(0.001)
        on_stop()
        await self._drain(10)
        return sent, self.latencies, skipped

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()  # type: ignore[attr-defined]


def reference_ms() -> float:
    """How long a fixed piece of Python takes, run while the machine is otherwise quiet: its
    speed at the moment. On a shared virtual machine it varies by half from minute to
    minute, and every figure with it. Wall time, not CPU time: time the hypervisor gives to
    others counts as CPU time of neither."""
    t0 = time.perf_counter()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.perf_counter() - t0) * 1000


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def start_server(kind: str, port: int, data_dir: str, stations: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--data", data_dir]
        + ["--stations", str(stations)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise RuntimeError(f"{kind} server did not start")
    return process


async def open_phase(gen: Generator, server: subprocess.Popen, rate: int, seconds: float) -> dict:
    """One open-loop phase at `rate` msg/s: answered rate, latency, CPU, collector pauses."""
    server_gc_pauses(server)  # resets the server's count
    helpers = child_pids(server.pid)
    cpu0 = server_cpu(server.pid, helpers)
    own0, wait0 = time.process_time(), runnable_wait_seconds(server.pid)
    window = []
    _, latencies, skipped = await gen.open_loop(
        rate,
        seconds,
        lambda: window.extend(
            [
                server_cpu(server.pid, helpers) - cpu0,
                time.process_time() - own0,
                runnable_wait_seconds(server.pid) - wait0,
            ]
        ),
    )
    return {
        "rate": rate,
        "server_cpu": window[0] / seconds,
        "generator_cpu": window[1] / seconds,
        "server_wait": window[2] / seconds,
        "done": len(latencies) / seconds,
        "skipped": skipped,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "gc": server_gc_pauses(server),
    }


async def measure(kind: str, args: argparse.Namespace, port: int, data_dir: str) -> dict:
    server = start_server(kind, port, data_dir, args.stations)
    try:
        gen = Generator(port)
        rss0 = rss_kib(server.pid)
        helpers = child_pids(server.pid)
        stations = args.stations if kind == "evse" else args.baseline_stations
        cpu0, own0 = server_cpu(server.pid, helpers), time.process_time()
        boot_s = await gen.connect_and_boot(stations, "CP", args.connect_timeout)
        boot_cpu = server_cpu(server.pid, helpers) - cpu0
        boot_generator_cpu = time.process_time() - own0
        if not gen.clients:
            raise SystemExit(f"{kind}: no station booted within {args.connect_timeout:g} s")
        await asyncio.sleep(1)  # let the server settle (garbage, batched writes)
        per_connection = (rss_kib(server.pid) - rss0) * 1024 / max(1, len(gen.clients))
        speed_before = reference_ms()
        cpu0, wait0 = server_cpu(server.pid, helpers), runnable_wait_seconds(server.pid)
        kernel0 = cpu_seconds(server.pid, kernel_only=True)
        database0 = database_cpu(helpers)
        loop0 = cpu_seconds(server.pid, main_thread=True)
        window_cpu = []
        own0 = time.process_time()
        latencies = await gen.closed_loop(
            args.duration,
            lambda: window_cpu.extend(
                [
                    server_cpu(server.pid, helpers) - cpu0,
                    time.process_time() - own0,
                    runnable_wait_seconds(server.pid) - wait0,
                    cpu_seconds(server.pid, kernel_only=True) - kernel0,
                    cpu_seconds(server.pid, main_thread=True) - loop0,
                    database_cpu(helpers) - database0,
                ]
            ),
        )
        await asyncio.sleep(1)  # the server finishes what the closed loop left
        result = {
            "reference_ms": (speed_before, reference_ms()),
            "stations": len(gen.clients),
            "failed": gen.failed,
            "failure": gen.failure,
            "boot_s": boot_s,
            "boot_cpu_ms": boot_cpu * 1000 / max(1, len(gen.clients)),
            "boot_generator_cpu": boot_generator_cpu / boot_s,
            "bytes_per_connection": per_connection,
            "msgs_per_s": len(latencies) / args.duration,
            "server_cpu": window_cpu[0] / args.duration,
            "generator_cpu": window_cpu[1] / args.duration,
            "server_wait": window_cpu[2] / args.duration,
            "cpu_us_per_msg": window_cpu[0] * 1e6 / max(1, len(latencies)),
            "kernel_share": window_cpu[3] / max(1e-9, window_cpu[0] - window_cpu[5]),
            "loop_us_per_msg": window_cpu[4] * 1e6 / max(1, len(latencies)),
            "database_us_per_msg": window_cpu[5] * 1e6 / max(1, len(latencies)),
            "database_cpu": window_cpu[5] / args.duration,
            "closed_p50_ms": percentile(latencies, 50) * 1000,
            "closed_p99_ms": percentile(latencies, 99) * 1000,
        }
        if kind == "evse":
            result["open"] = [
                await open_phase(gen, server, rate, args.duration) for rate in args.rate
            ]
        result["errors"] = gen.errors
        result["closed"] = gen.closed
        gen.close()
        return result
    finally:
        server.kill()
        server.wait()


def report(kind: str, r: dict) -> None:
    print(
        f"{kind}: {r['stations']} stations connected and booted in {r['boot_s']:.2f} s "
        f"(load generator {r['boot_generator_cpu']:.0%} of a core); "
        f"server memory {r['bytes_per_connection'] / 1024:.1f} KiB per connection"
    )
    if r["failed"]:
        print(f"{kind}: {r['failed']} stations not connected or booted ({r['failure']})")
    print(
        f"{kind}: server CPU {r['boot_cpu_ms']:.2f} ms per connect-and-boot, "
        f"{r['cpu_us_per_msg']:.0f} us per message: {r['loop_us_per_msg']:.0f} us on the "
        f"event-loop thread"
        + (
            f", {r['database_us_per_msg']:.0f} us in the database process"
            if r["database_us_per_msg"]
            else ""
        )
        + f" (and {r['kernel_share']:.0%} of the server process's CPU in the kernel)"
    )
    print(
        f"{kind}: machine speed, a reference loop before and after the closed loop: "
        + ", ".join(f"{ms:.0f} ms" for ms in r["reference_ms"])
        + " (less is faster)"
    )
    print(
        f"{kind}: closed loop {r['msgs_per_s']:,.0f} msg/s (CPU: server {r['server_cpu']:.0%}"
        + (f" of which database process {r['database_cpu']:.0%}" if r["database_cpu"] else "")
        + ", "
        f"load generator {r['generator_cpu']:.0%} of a core; server waited for a core "
        f"{r['server_wait']:.0%} of the time), "
        f"p50 {r['closed_p50_ms']:.1f} ms, p99 {r['closed_p99_ms']:.1f} ms"
    )
    for o in r.get("open", []):
        print(
            f"{kind}: at {o['rate']:,} msg/s offered: {o['done']:,.0f} msg/s answered "
            f"({o['skipped']} turns skipped, station busy), "
            f"p50 {o['p50_ms']:.1f} ms, p99 {o['p99_ms']:.1f} ms "
            f"(CPU: server {o['server_cpu']:.0%}, "
            f"load generator {o['generator_cpu']:.0%} of a core; server waited for a "
            f"core {o['server_wait']:.0%} of the time)"
        )
        print(
            f"{kind}: garbage-collector pauses (CPU) at {o['rate']:,} msg/s offered: "
            + "; ".join(
                f"generation {g}: {n}, {total * 1000:.0f} ms in all, longest {most * 1000:.1f} ms"
                for g, (n, total, most) in enumerate(o["gc"])
            )
        )
    print(f"{kind}: {r['errors']} CALLERRORs, {r['closed']} connections closed by the server")


async def main(args: argparse.Namespace) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    # The generator's own collector pauses (its 10,000 stations rescanned) would count as
    # the server's latency; what it throws away is freed by reference counting.
    gc.disable()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max(args.stations, args.baseline_stations) + 1000
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before the run "
        "(other work on the machine lowers every wall-clock figure below)"
    )
    data_dir = tempfile.mkdtemp(prefix="evse-bench-cs-")
    try:
        ours = await measure("evse", args, args.port, data_dir)
        report("evse cs", ours)
        if args.baseline_stations:
            base = await measure("baseline", args, args.port + 1, data_dir)
            report("baseline (ocpp ChargePoint pattern, no persistence)", base)
            print(
                "ratio evse cs / baseline CPU per message: "
                f"{base['cpu_us_per_msg'] / ours['cpu_us_per_msg']:.1f}x less for evse cs"
            )
            print(
                f"ratio evse cs / baseline throughput: "
                f"{ours['msgs_per_s'] / base['msgs_per_s']:.1f}x"
            )
        size = os.path.getsize(os.path.join(data_dir, "cs.sqlite3"))
        print(f"SQLite database after the run: {size / 2**20:.0f} MiB")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stations", type=int, default=10000)
    parser.add_argument(
        "--baseline-stations", type=int, default=1000, help="stations for the baseline (0 skips it)"
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds per phase")
    parser.add_argument(
        "--connect-timeout", type=float, default=30, help="bound on connect-and-boot, s"
    )
    parser.add_argument(
        "--rate", type=int, nargs="+", default=[5000], help="open-loop rates, msg/s, one phase each"
    )
    parser.add_argument("--port", type=int, default=9600)
    parser.add_argument("--serve", choices=("evse", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve == "evse":
        serve_ours(arguments.port, arguments.data, arguments.stations)
    elif arguments.serve == "baseline":
        serve_baseline(arguments.port)
    else:
        uvloop.run(main(arguments))  # libuv keeps the generator's share of the CPU small
