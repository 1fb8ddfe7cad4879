"""Modbus RTU energy meters on one RS-485 bus, polled without blocking.

`MeterBus.step(now_ms)` advances one small state machine: send the next read request, collect
the bytes of its response, decode it into the meter's `Reading`, or classify the failure and
retry. Meters are polled round-robin, one transaction at a time (a half-duplex bus has one
master and one talker). Nothing raises out of `step`: a bad meter shows up as `Reading.error`
and an `ok_ms` that stops advancing (the station turns a silent meter into a safe state).

Requests are built once when a meter is added and responses land in one preallocated buffer,
so a poll allocates only the UART's chunks and the decoded numbers.
"""

# pyright's search path lacks the `time` stub for now (make typecheck config): hence the ignore.
import time  # pyright: ignore[reportMissingImports]

from protocol import modbus

TIMEOUT_MS = 500  # 9600 Bd: a 45-register response takes ~100 ms on the wire, plus meter latency
RETRIES = 2  # attempts after the first before a meter is marked in error for this cycle
INTERVAL_MS = 1000  # each meter is read about once a second
GAP_MS = 5  # line silence between frames (RTU needs 3.5 characters, 4 ms at 9600 Bd)


class Reading:
    """Latest values of one meter. Values are meaningful once `ok_ms` is not None;
    `error` is None or 'timeout', 'crc', 'garbage', 'exception:N' (Modbus exception code N)."""

    def __init__(self):
        self.energy_wh = 0.0
        self.energy_export_wh = 0.0
        self.power_w = 0.0
        self.current_a = [0.0, 0.0, 0.0]
        self.voltage_v = [0.0, 0.0, 0.0]
        self.frequency_hz = 0.0
        self.ok_ms = None
        self.error = None
        self.failures = 0  # failed transactions (each attempt), for diagnostics


class _Meter:
    def __init__(self, model, address):
        self.address = address
        self.blocks = modbus.register_map(model)
        self.requests = [modbus.read_request(address, b[0], b[1], b[2]) for b in self.blocks]
        self.reading = Reading()


_IDLE, _WAITING = 0, 1


class MeterBus:
    def __init__(self, uart, now_ms, timeout_ms=TIMEOUT_MS, retries=RETRIES, interval_ms=INTERVAL_MS):
        self.uart = uart
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.interval_ms = interval_ms
        self._meters = []
        self._rx = bytearray(modbus.MAX_FRAME)
        self._received = 0
        self._state = _IDLE
        self._meter = 0  # index of the meter being read
        self._block = 0  # index of its block being read
        self._attempt = 0
        self._due = now_ms  # when the next request may go out
        self._cycle_start = now_ms
        self._sent_ms = now_ms

    def add(self, model, address):
        """Poll a meter of `model` (a key of protocol.modbus.MAPS) at Modbus `address`."""
        meter = _Meter(model, address)
        self._meters.append(meter)
        return meter.reading

    def step(self, now_ms):
        """Advance the bus by what can be done now; never blocks, never raises."""
        try:
            if self._state == _WAITING:
                self._collect(now_ms)
            elif self._meters and time.ticks_diff(now_ms, self._due) >= 0:
                self._send(now_ms)
        except Exception:  # a driver bug or a UART error must not stop the station
            self._state = _IDLE
            self._fail(now_ms, "garbage")

    def _send(self, now_ms):
        meter = self._meters[self._meter]
        self.uart.flush_input()
        self.uart.write(meter.requests[self._block])
        self._received = 0
        self._sent_ms = now_ms
        self._state = _WAITING

    def _collect(self, now_ms):
        chunk = self.uart.read()
        if chunk:
            # Bytes beyond a maximal frame are noise: dropping them ends in 'garbage'.
            take = min(len(self._rx) - self._received, len(chunk))
            end = self._received + take
            self._rx[self._received : end] = chunk if take == len(chunk) else chunk[:take]
            self._received = end
        block = self._meters[self._meter].blocks[self._block]
        status = modbus.find_response(
            self._rx, self._received, self._meters[self._meter].address, block[0], block[2]
        )
        if status > 0:
            self._state = _IDLE
            self._store(block, status, now_ms)
        elif status < 0:
            self._state = _IDLE
            self._fail(now_ms, modbus.error_code(status))
        elif time.ticks_diff(now_ms, self._sent_ms) >= self.timeout_ms:
            self._state = _IDLE
            self._fail(now_ms, "garbage" if self._received else "timeout")

    def _store(self, block, data_offset, now_ms):
        reading = self._meters[self._meter].reading
        start, swapped = block[1], block[3]
        for field, phase, register, kind, scale in block[4]:
            value = modbus.decode(self._rx, data_offset + 2 * (register - start), kind, swapped)
            value *= scale
            if phase < 0:
                setattr(reading, field, value)
            else:
                getattr(reading, field)[phase] = value
        self._attempt = 0
        self._block += 1
        if self._block == len(self._meters[self._meter].blocks):
            reading.ok_ms = now_ms
            reading.error = None
            self._next_meter(now_ms)
        else:
            self._due = time.ticks_add(now_ms, GAP_MS)

    def _fail(self, now_ms, code):
        if not self._meters:
            return
        reading = self._meters[self._meter].reading
        reading.failures += 1
        self._attempt += 1
        if self._attempt > self.retries:
            reading.error = code
            self._attempt = 0
            self._next_meter(now_ms)
        else:
            self._due = time.ticks_add(now_ms, GAP_MS)

    def _next_meter(self, now_ms):
        self._block = 0
        self._meter += 1
        if self._meter < len(self._meters):
            self._due = time.ticks_add(now_ms, GAP_MS)
            return
        self._meter = 0
        self._due = time.ticks_add(self._cycle_start, self.interval_ms)
        if time.ticks_diff(self._due, now_ms) < GAP_MS:  # the cycle overran: start the next one
            self._due = time.ticks_add(now_ms, GAP_MS)
        self._cycle_start = self._due
