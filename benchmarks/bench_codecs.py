"""WebSocket frame and OCPP-J codec rates and allocations, under micropython vs CPython.

Run with CPython: it measures in-process, then runs itself under `micropython` as a worker
(argument `worker`) and prints both side by side. Allocation is bytes allocated per operation:
on MicroPython the growth of gc.mem_alloc() with the collector disabled; on CPython the
tracemalloc peak of one operation (a different measure, shown for scale)."""

import json
import sys

from protocol import ocppj
from protocol import websocket as ws

MICROPYTHON = sys.implementation.name == "micropython"
METER_VALUES = {
    "connectorId": 1,
    "transactionId": 42,
    "meterValue": [
        {
            "timestamp": "2026-01-01T12:00:00Z",
            "sampledValue": [
                {"value": "12345.6", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
                {"value": "10.4", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
            ],
        }
    ],
}
MASK = b"\x11\x22\x33\x44"


def cases():
    text = ocppj.encode_call("a1b2c3d4e5f6-17", "MeterValues", METER_VALUES)
    result = ocppj.encode_result("a1b2c3d4e5f6-17", {"status": "Accepted", "n": [1, 2, 3]})
    server_frame = bytes(ws.encode_frame(ws.OP_TEXT, text))
    big = memoryview(bytes(ws.encode_frame(ws.OP_TEXT, "x" * 4096)))
    reader = ws.FrameReader(8192)

    def decode_chunks():
        for i in range(0, len(big), 512):
            for _ in reader.feed(big[i : i + 512]):
                pass

    return [
        (
            "ws encode " + str(len(text)) + " B masked",
            lambda: ws.encode_frame(ws.OP_TEXT, text, MASK),
        ),
        ("ws decode " + str(len(text)) + " B frame", lambda: list(reader.feed(server_frame))),
        ("ws decode 4 KiB in 512 B chunks", decode_chunks),
        (
            "ocppj encode MeterValues CALL",
            lambda: ocppj.encode_call("u1", "MeterValues", METER_VALUES),
        ),
        ("ocppj decode MeterValues CALL", lambda: ocppj.decode(text)),
        ("ocppj decode CALLRESULT", lambda: ocppj.decode(result)),
    ]


def measure(fn, seconds=0.5):
    """(operations per second, bytes allocated per operation)."""
    import gc
    import time

    if MICROPYTHON:
        clock, scale = time.ticks_us, 1e-6
        elapsed = time.ticks_diff
    else:
        clock, scale = time.perf_counter, 1.0

        def elapsed(b, a):
            return b - a

    fn()
    count, start = 0, clock()
    while elapsed(clock(), start) * scale < seconds:
        for _ in range(10):
            fn()
        count += 10
    rate = count / (elapsed(clock(), start) * scale)
    if MICROPYTHON:
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        for _ in range(20):
            fn()
        allocated = (gc.mem_alloc() - before) // 20
        gc.enable()
    else:
        import tracemalloc

        tracemalloc.start()
        fn()
        allocated = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return rate, allocated


def worker():
    print(json.dumps([[name] + list(measure(fn)) for name, fn in cases()]))


def main():
    import subprocess
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from host import mpy

    done = subprocess.run(
        mpy.command(__file__, "worker", heapsize=4 * 1024 * 1024),
        env=mpy.environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        sys.exit("micropython worker failed:\n" + done.stderr)
    micro = json.loads(done.stdout)
    print("command: .venv/bin/python benchmarks/bench_codecs.py")
    print(f"{'':34} {'mpy ops/s':>14} {'mpy B/op':>14} {'CPython ops/s':>14} {'CPy peak B':>14}")
    for (name, fn), (_, m_rate, m_bytes) in zip(cases(), micro, strict=True):
        rate, peak = measure(fn)
        print(f"{name:34} {m_rate:14.0f} {m_bytes:14d} {rate:14.0f} {peak:14d}")


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker()
    else:
        main()
