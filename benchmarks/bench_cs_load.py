"""Central-system capacity: many lightweight simulated stations against `evse cs` and against a
baseline central system written on the `ocpp` package's documented ChargePoint pattern.

Each server runs in its own process (so its memory can be read from /proc); this process is
the load generator: raw WebSocket clients on asyncio (a few dozen bytes of framing code, no
`ocpp` or `websockets` objects per station) sending a realistic mix: StatusNotification,
StartTransaction, MeterValues with 10 sampled values, Heartbeat, StopTransaction.

Phases per server: connect-and-boot of all stations, closed-loop throughput (every station
sends its next message as soon as the previous one is answered), then an open-loop run at a
fixed rate for latency. Prints figures for both servers and their ratio.

    python benchmarks/bench_cs_load.py                 # default run, about 1.5 minutes
    python benchmarks/bench_cs_load.py --stations 10000 --duration 30 --rate 5000
"""

import argparse
import asyncio
import base64
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- servers (child processes) ----------------------------------------------------------


def serve_ours(port: int, data_dir: str) -> None:
    sys.path.insert(0, ROOT)
    from host.cs import server, storage

    async def main() -> None:
        store = storage.Store(f"sqlite:///{data_dir}/cs.sqlite3")
        await store.open()
        cs = server.CentralSystem(store, unknown="accept")
        await cs.start("127.0.0.1", port)
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


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


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def _future() -> asyncio.Future:
    """A future whose exception counts as seen even when its waiter was cancelled."""
    future = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


class Client(asyncio.Protocol):
    """One simulated station: handshake, then one outstanding CALL at a time."""

    def __init__(self, gen: "Generator", station_id: str):
        self.gen = gen
        self.id = station_id
        self.buffer = b""
        self.open = False
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future | None = None
        self.uid = 0
        self.seconds = 1_700_000_000 + random.randint(0, 10**6)
        self.transaction = 0
        self.step = 0
        self.handshake_done = _future()

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
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.buffer[: self.buffer.find(b"\r\n")]
            self.buffer = self.buffer[end + 4 :]
            if self.handshake_done.done():  # given up on (connect phase timed out)
                return
            if b" 101 " not in status:
                self.handshake_done.set_exception(RuntimeError(status.decode()))
                return
            self.open = True
            self.handshake_done.set_result(None)
        while len(self.buffer) >= 2:
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            start = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length, start = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length, start = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < start + length:
                return
            payload = self.buffer[start : start + length]
            self.buffer = self.buffer[start + length :]
            if opcode == 0x9:  # ping -> pong
                assert self.transport is not None
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif opcode == 0x1 and self.reply is not None and not self.reply.done():
                self.reply.set_result(payload)

    def connection_lost(self, exc):  # type: ignore[override]
        self.gen.closed += self.open
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(ConnectionError("closed"))
        if not self.handshake_done.done():
            self.handshake_done.set_exception(ConnectionError("closed during handshake"))

    async def call(self, action: str, payload: str) -> bytes:
        self.uid += 1
        self.reply = _future()
        assert self.transport is not None
        self.transport.write(frame(f'[2,"{self.uid}","{action}",{payload}]'))
        return await self.reply

    def timestamp(self) -> str:
        self.seconds += 1
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.seconds))

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
                f'{{"connectorId":1,"idTag":"TAG{self.id[-4:]}","meterStart":0,'
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

    async def send_next(self) -> float:
        action, payload = self.next_message()
        t0 = time.perf_counter()
        reply = await self.call(action, payload)
        if action == "StartTransaction":
            marker = reply.find(b'"transactionId":')
            self.transaction = int(reply[marker + 16 :].split(b",")[0].split(b"}")[0])
        if reply[1:2] != b"3":
            self.gen.errors += 1
        return time.perf_counter() - t0


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

    async def connect_and_boot(self, n: int, prefix: str, timeout: float) -> float:
        """Connect and boot `n` stations, at most 1,000 handshakes in flight; a station
        that fails, or is not booted within `timeout` seconds, is counted in `failed` and
        left out."""
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(1000)

        async def one(i: int) -> None:
            async with limit:
                try:
                    _, client = await loop.create_connection(
                        lambda: Client(self, f"{prefix}{i:05d}"), "127.0.0.1", self.port
                    )
                    await client.handshake_done
                    await client.call("BootNotification", BOOT)
                except (OSError, RuntimeError) as error:
                    self.failed += 1
                    self.failure = repr(error)
                    return
                self.clients.append(client)

        t0 = time.perf_counter()
        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        self.failed += len(late)
        if late:
            self.failure = f"not booted within {timeout:g} s"
        await asyncio.gather(*late, return_exceptions=True)
        booted = {client.transport for client in self.clients}
        for transport in self.transports:
            if transport not in booted:
                transport.abort()  # type: ignore[attr-defined]
        return time.perf_counter() - t0

    async def closed_loop(self, seconds: float, on_stop) -> list[float]:
        """Every station sends its next message as soon as the previous one is answered.
        Returns the latencies of the messages answered within `seconds`; `on_stop` runs at
        the end of the window, before waiting for the messages still in flight."""
        latencies: list[float] = []
        stop = time.perf_counter() + seconds

        async def run(client: Client) -> None:
            while time.perf_counter() < stop:
                try:
                    latency = await client.send_next()
                except ConnectionError:
                    return  # counted in `closed`
                if time.perf_counter() <= stop:
                    latencies.append(latency)

        tasks = [asyncio.create_task(run(c)) for c in self.clients]
        await asyncio.sleep(seconds)
        on_stop()
        await asyncio.gather(*tasks)
        return latencies

    async def open_loop(self, rate: float, seconds: float) -> tuple[int, list[float], int]:
        """Send at `rate` messages/s spread over the stations; a station still waiting for
        its previous answer skips its turn (counted)."""
        latencies: list[float] = []
        skipped = 0
        busy: set[Client] = set()

        async def one(client: Client) -> None:
            busy.add(client)
            try:
                latencies.append(await client.send_next())
            except ConnectionError:
                pass  # counted in `closed`
            finally:
                busy.discard(client)

        tasks = set()
        t0 = time.perf_counter()
        sent = 0
        index = 0
        while (now := time.perf_counter()) < t0 + seconds:
            due = int((now - t0) * rate) - sent
            for _ in range(due):
                client = self.clients[index % len(self.clients)]
                index += 1
                sent += 1
                if client in busy:
                    skipped += 1
                    continue
                task = asyncio.create_task(one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.001)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        return sent, latencies, skipped

    def close(self) -> None:
        for transport in self.transports:
            transport.abort()  # type: ignore[attr-defined]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def start_server(kind: str, port: int, data_dir: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port), "--data", data_dir],
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


async def measure(kind: str, args: argparse.Namespace, port: int, data_dir: str) -> dict:
    server = start_server(kind, port, data_dir)
    try:
        gen = Generator(port)
        rss0 = rss_kib(server.pid)
        stations = args.stations if kind == "evse" else args.baseline_stations
        cpu0 = cpu_seconds(server.pid)
        boot_s = await gen.connect_and_boot(stations, "CP", args.connect_timeout)
        boot_cpu = cpu_seconds(server.pid) - cpu0
        if not gen.clients:
            raise SystemExit(f"{kind}: no station booted within {args.connect_timeout:g} s")
        await asyncio.sleep(1)  # let the server settle (garbage, batched writes)
        per_connection = (rss_kib(server.pid) - rss0) * 1024 / max(1, len(gen.clients))
        cpu0 = cpu_seconds(server.pid)
        window_cpu = []
        own0 = time.process_time()
        latencies = await gen.closed_loop(
            args.duration,
            lambda: window_cpu.extend([cpu_seconds(server.pid) - cpu0, time.process_time() - own0]),
        )
        result = {
            "stations": len(gen.clients),
            "failed": gen.failed,
            "failure": gen.failure,
            "boot_s": boot_s,
            "boot_cpu_ms": boot_cpu * 1000 / max(1, len(gen.clients)),
            "bytes_per_connection": per_connection,
            "msgs_per_s": len(latencies) / args.duration,
            "server_cpu": window_cpu[0] / args.duration,
            "generator_cpu": window_cpu[1] / args.duration,
            "cpu_us_per_msg": window_cpu[0] * 1e6 / max(1, len(latencies)),
            "closed_p50_ms": percentile(latencies, 50) * 1000,
            "closed_p99_ms": percentile(latencies, 99) * 1000,
        }
        if kind == "evse":
            sent, latencies, skipped = await gen.open_loop(args.rate, args.duration)
            result.update(
                rate=args.rate,
                rate_done=len(latencies) / args.duration,
                rate_skipped=skipped,
                open_p50_ms=percentile(latencies, 50) * 1000,
                open_p99_ms=percentile(latencies, 99) * 1000,
            )
        result["errors"] = gen.errors
        result["closed"] = gen.closed
        gen.close()
        return result
    finally:
        server.kill()
        server.wait()


def report(kind: str, r: dict) -> None:
    print(
        f"{kind}: {r['stations']} stations connected and booted in {r['boot_s']:.2f} s; "
        f"server memory {r['bytes_per_connection'] / 1024:.1f} KiB per connection"
    )
    if r["failed"]:
        print(f"{kind}: {r['failed']} stations not connected or booted ({r['failure']})")
    print(
        f"{kind}: server CPU {r['boot_cpu_ms']:.2f} ms per connect-and-boot, "
        f"{r['cpu_us_per_msg']:.0f} us per message: {1e6 / r['cpu_us_per_msg']:,.0f} msg/s "
        "per core of this machine"
    )
    print(
        f"{kind}: closed loop {r['msgs_per_s']:,.0f} msg/s (CPU: server {r['server_cpu']:.0%}, "
        f"load generator {r['generator_cpu']:.0%} of a core), "
        f"p50 {r['closed_p50_ms']:.1f} ms, p99 {r['closed_p99_ms']:.1f} ms"
    )
    if "rate" in r:
        print(
            f"{kind}: at {r['rate']:,} msg/s offered: {r['rate_done']:,.0f} msg/s answered "
            f"({r['rate_skipped']} turns skipped, station busy), "
            f"p50 {r['open_p50_ms']:.1f} ms, p99 {r['open_p99_ms']:.1f} ms"
        )
    print(f"{kind}: {r['errors']} CALLERRORs, {r['closed']} connections closed by the server")


async def main(args: argparse.Namespace) -> None:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
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
    parser.add_argument("--rate", type=int, default=5000, help="open-loop rate, msg/s")
    parser.add_argument("--port", type=int, default=9600)
    parser.add_argument("--serve", choices=("evse", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve == "evse":
        serve_ours(arguments.port, arguments.data)
    elif arguments.serve == "baseline":
        serve_baseline(arguments.port)
    else:
        asyncio.run(main(arguments))
