"""The simulated board for the unix port: virtual pins, simulated EVs, RCDs, contactors with
feedback, a temperature sensor and Modbus meters on a simulated RS-485 bus.

Clocks. Board time (`ticks_ms`, `sleep_ms`, `time`) is step-locked: it stands still while
tasks run and moves by `step_ms` (10 ms, a board's control period, up to MAX_STEP_MS) once per
round of the event loop, in which every ready task, the control task included, runs once. So a
control step never spans more than `step_ms` of board time, whatever the host's load, and
`sleep_ms` waits for board time to get there. Rounds run back to back, as fast as the host
allows, but board time never runs ahead of real time * `speed` (a cap; `INFINITY`: none). Real
time (`real_ms`, `real_sleep_ms`) is the host's: the stall guard and the watchdog count it (see
app.py), and so does anything waiting on the outside world. `speed=None` is a manual clock that
only `advance(ms)` moves and that serves as both (deterministic tests). Hardware "interrupts"
(the watchdog and the guard timer, both counting real time) are delivered whenever board time
is read or moves.

Everything the control loop calls per step (`sample_pilot`, `set_pwm`, `set_contactor`, the
inputs) allocates nothing, so the station's safety path can be proven allocation-free here.
The control surface (`ev(n)`, `set_*`, `meter_fault`) is for tests, the demo and the console.
"""

import time

import asyncio
from board.sim_meter import SimMeter
from protocol import pilot

VOLTAGE_V = 230.0
MANUAL_EPOCH = 1767225600  # 2026-01-01T00:00:00Z: board.time() origin of a manual clock
RESET_EXIT = 75  # exit status of the simulated board when it resets
STEP_MS = 10  # board time per round of the event loop (one control step): a board's period
MAX_STEP_MS = 50  # coarsest step the station is designed for (50 ms pilot debounce)
INFINITY = float("inf")  # speed: no cap, as fast as the host allows
CATCH_UP_MS = 100  # real time the sim may fall behind its speed cap and then catch up

# High-plateau voltage each EV state presents (E: pilot shorted to earth, F: to -12 V).
_LEVEL_MV = {"A": 12000, "B": 9000, "C": 6000, "D": 3000, "E": 0, "F": -12000}


class SimEV:
    """The vehicle at one connector: pilot state (its S2 switch and resistors), diode, power."""

    def __init__(self, board):
        self._board = board
        self.state = "A"
        self.diode_fault = False
        self.ventilation = False  # needs ventilation: charges in D instead of C
        self.power_w = 7400.0
        self.obey_limit = True  # False: draws its power whatever the pilot offers

    def set_state(self, state):
        if state not in _LEVEL_MV:
            raise ValueError("EV state must be one of A B C D E F")
        self._board.sync()
        self.state = state

    def set_diode_fault(self, fault):
        self._board.sync()
        self.diode_fault = bool(fault)

    def set_power(self, watts):
        self._board.sync()
        self.power_w = float(watts)

    def set_ventilation(self, needed):
        self._board.sync()
        self.ventilation = bool(needed)

    def set_obey_limit(self, obey):
        self._board.sync()
        self.obey_limit = bool(obey)

    def presented(self):
        if self.state == "C" and self.ventilation:
            return "D"
        return self.state


class SimConnector:
    """Per-connector hardware: pilot PWM and ADC, contactor and feedback, proximity, RCD."""

    def __init__(self, board, number, address, model, rcd_trip_ma):
        self._board = board
        self.number = number
        self.ev = SimEV(board)
        self.meter = SimMeter(model, address)
        self.phases = self.meter.phases
        self.has_feedback = True
        self.has_rcd = True
        self.has_proximity = False
        self.duty = pilot.DUTY_OFF
        self.contactor = False  # the output pin
        self.welded = False
        self.changed_ms = 0  # board time of the last output change (energy bookkeeping)
        self.opened_ms = 0  # real time the contactor output last went low (latency benchmark)
        self.high_mv = 12000
        self.low_mv = 12000
        self.noise_mv = 0
        self.override = None  # (high_mv, low_mv) forced readings
        self.proximity = -1
        self.rcd_test = False
        self.rcd_dead = False  # does not respond to its self-test
        self.leak_ma = 0
        self.rcd_trip_ma = rcd_trip_ma
        self._seed = number * 7919

    # The control loop's interface (shared with the esp32 board).
    def set_pwm(self, permille):
        if permille != self.duty:
            self.duty = permille
            self.changed_ms = self._board.now()

    def sample_pilot(self):
        if self.override is not None:
            self.high_mv = self.override[0]
            self.low_mv = self.override[1]
            return
        level = _LEVEL_MV[self.ev.presented()]
        if self.duty <= pilot.DUTY_F:
            high = low = -12000
        elif self.duty >= pilot.DUTY_OFF:
            high = low = level
        else:
            high = level
            low = -level if self.ev.diode_fault and level > 0 else -12000
        self.high_mv = high + self._noise()
        self.low_mv = low + self._noise()

    def set_contactor(self, on):
        if on != self.contactor:
            self.contactor = on
            self.changed_ms = self._board.now()
            if not on:
                self.opened_ms = self._board.real_ms()

    def contactor_feedback(self):
        return self.contactor or self.welded

    def proximity_ohms(self):
        return self.proximity

    def set_rcd_test(self, on):
        self.rcd_test = on

    def rcd_tripped(self):
        if self.rcd_test and not self.rcd_dead:
            return True
        return self.contactor_feedback() and self.leak_ma >= self.rcd_trip_ma

    def _noise(self):
        if not self.noise_mv:
            return 0
        self._seed = (self._seed * 1103515245 + 12345) & 0x7FFFFFFF
        return self._seed % (2 * self.noise_mv + 1) - self.noise_mv

    # Physics for the simulated meter.
    def current_a(self):
        """Per-phase current the EV draws now."""
        ev = self.ev
        if not self.contactor_feedback() or ev.presented() not in ("C", "D"):
            return 0.0
        amps = ev.power_w / (VOLTAGE_V * self.phases)
        if ev.obey_limit:
            amps = min(amps, pilot.limit_for_duty(self.duty) / 10)
        return amps


class SimUart:
    """RS-485 bus: a master write reaches every simulated meter; the addressed one replies."""

    def __init__(self, board):
        self._board = board
        self._rx = b""

    def write(self, buf):
        self._board.sync()
        for connector in self._board.connectors:
            reply = connector.meter.handle(bytes(buf))
            if reply:
                self._rx += reply
        return len(buf)

    def read(self):
        data, self._rx = self._rx, b""
        return data or None

    def flush_input(self):
        self._rx = b""


class Board:
    simulated = True

    def __init__(
        self, data_dir=".", connectors=2, speed=1.0, config=None, step_ms=STEP_MS, console_port=None
    ):
        config = config or {}
        self.data_dir = data_dir
        self.config = config
        meter = config.get("meter") or {}
        model = meter.get("model", "SDM630")
        rcd_trip_ma = 30 if (config.get("rcd") or {}).get("type", "A") == "A" else 6
        specs = config.get("connectors") or [{} for _ in range(connectors)]
        if speed is not None and not speed > 0:
            raise ValueError("sim speed must be positive")
        if not 1 <= step_ms <= MAX_STEP_MS:
            raise ValueError("sim step must be 1..%d ms" % MAX_STEP_MS)
        self.speed = speed
        self.step_ms = step_ms
        self._now = 0  # board time, ms since start
        self._sleepers = []  # (due board ms, asyncio.Event) of the tasks in sleep_ms
        self._clock = None  # the task that moves board time (started by the first sleep_ms)
        self._t0 = time.ticks_ms()
        self._epoch = MANUAL_EPOCH if speed is None else int(time.time())
        self.connectors = [
            SimConnector(self, n, spec.get("meter_address", n), model, rcd_trip_ma)
            for n, spec in enumerate(specs, 1)
        ]
        self.meter_uart = SimUart(self)
        self.console_port = console_port  # the bench console's port (board/pty.py), or None
        self._temperature = 25
        self._synced_ms = 0
        self._wdt_timeout = 0
        self._wdt_fed = 0
        self._guard = None
        self._guard_period = 0
        self._guard_due = 0
        self.resets = 0

    # Time.
    def real_ms(self):
        """Real ms since start, without delivering interrupts (the unix port's ticks period is
        2**62, so it never wraps); the manual clock when there is one."""
        if self.speed is None:
            return self._now
        return time.ticks_diff(time.ticks_ms(), self._t0)

    def now(self):
        """Board time without delivering interrupts (ms since start)."""
        return self._now

    def ticks_ms(self):
        now = self._now
        self._interrupts(now)
        return now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, ticks, delta):
        return ticks + delta

    def time(self):
        return self._epoch + self._now // 1000

    def set_time(self, unix_seconds):
        """Set the clock (OCPP follows the central system's): only the offset changes."""
        self._epoch = int(unix_seconds) - self._now // 1000

    def advance(self, ms):
        """Manual clock: move board time forward by `ms`, waking sleepers and delivering due
        interrupts."""
        if self.speed is not None:
            raise ValueError("advance() needs a manual clock (speed=None)")
        self._move_to(self._now + ms)

    async def sleep_ms(self, ms):
        """Sleep until board time has moved on by `ms` (0: until it next moves)."""
        if self._clock is None and self.speed is not None:
            self._clock = asyncio.create_task(self._run_clock())  # board time starts to run
        woken = asyncio.Event()
        self._sleepers.append((self._now + max(ms, 0), woken))
        await woken.wait()

    async def real_sleep_ms(self, ms):
        """Sleep `ms` of real time (of the manual clock when there is one)."""
        if self.speed is None:
            await self.sleep_ms(ms)
        else:
            await asyncio.sleep_ms(ms)

    async def _run_clock(self):
        """Move board time one step_ms per round of the event loop (every ready task runs
        between two rounds, so the control task steps once per round), as fast as the host
        allows but never ahead of real time * speed. When the host falls behind by more than
        CATCH_UP_MS, the pace restarts from where board time is rather than racing on."""
        paced_real, paced_board = self.real_ms(), self._now
        while True:
            target = self._now + self.step_ms
            if self.speed != INFINITY:
                real = self.real_ms()
                allowed = paced_board + (real - paced_real) * self.speed
                if allowed > target + self.speed * CATCH_UP_MS:  # far behind: pace from here
                    paced_real, paced_board = real, self._now
                elif target - allowed >= self.speed:  # a whole real ms ahead: wait
                    await asyncio.sleep_ms(int((target - allowed) / self.speed))
            self._move_to(target)
            await asyncio.sleep_ms(0)

    def _move_to(self, now):
        self._now = now
        self._interrupts(now)
        sleepers = self._sleepers
        i = 0
        while i < len(sleepers):
            if sleepers[i][0] <= now:
                sleepers.pop(i)[1].set()
            else:
                i += 1

    # Watchdog, guard timer, reset: they count real time, as the hardware's do.
    def wdt_start(self, timeout_ms):
        self._wdt_timeout = timeout_ms
        self._wdt_fed = self.real_ms()

    def wdt_feed(self):
        self._wdt_fed = self.real_ms()

    def start_guard(self, period_ms, callback):
        """Call `callback(ticks_ms)` every `period_ms` of real time, whatever the tasks are
        doing."""
        self._guard = callback
        self._guard_period = period_ms
        self._guard_due = self.real_ms() + period_ms

    def _interrupts(self, now):
        real = self.real_ms()
        if self._guard is not None and real >= self._guard_due:
            self._guard_due = real + self._guard_period
            self._guard(now)
        if self._wdt_timeout and real - self._wdt_fed > self._wdt_timeout:
            self.reset()

    def reset(self):
        """As the hardware does: every output off, then the program ends."""
        for connector in self.connectors:
            connector.set_contactor(False)
            connector.set_pwm(pilot.DUTY_OFF)
        self.resets += 1
        self._wdt_timeout = 0
        print("RESET watchdog")
        raise SystemExit(RESET_EXIT)

    def dns_server(self):
        """board.json's "dns" [address, port] (a test's server), else None: the host resolves
        names at once, so the unix port's getaddrinfo does it."""
        server = self.config.get("dns")
        return (server[0], server[1]) if server else None

    # Station-wide inputs.
    def temperature_c(self):
        return self._temperature

    # Control surface (connectors numbered from 1).
    def ev(self, n):
        return self.connectors[n - 1].ev

    def set_temperature(self, celsius):
        self._temperature = int(celsius)

    def set_rcd_leak(self, n, milliamps):
        self.sync()
        self.connectors[n - 1].leak_ma = milliamps

    def set_rcd_dead(self, n, dead):
        self.connectors[n - 1].rcd_dead = bool(dead)

    def set_weld(self, n, welded):
        self.sync()
        self.connectors[n - 1].welded = bool(welded)

    def set_proximity(self, n, ohms):
        """Ohms of the cable's proximity resistor (-1: open); enables the proximity input."""
        connector = self.connectors[n - 1]
        connector.has_proximity = True
        connector.proximity = ohms

    def set_pilot_noise(self, n, millivolts):
        self.connectors[n - 1].noise_mv = int(millivolts)

    def set_pilot_mv(self, n, high_mv, low_mv=None):
        """Force the ADC readings (out-of-range tests); high_mv None restores the EV's."""
        connector = self.connectors[n - 1]
        connector.override = None if high_mv is None else (high_mv, high_mv if low_mv is None else low_mv)

    def meter_fault(self, n, fault):
        self.connectors[n - 1].meter.fault = fault

    def sync(self):
        """Integrate each meter's energy up to now, splitting at the last output change."""
        now = self.now()
        for connector in self.connectors:
            start = self._synced_ms
            if connector.changed_ms > start:
                connector.meter.advance(connector.changed_ms - start)
                start = connector.changed_ms
            amps = connector.current_a()
            connector.meter.measure((VOLTAGE_V,) * 3, (amps,) * 3)
            connector.meter.advance(max(0, now - start))
        self._synced_ms = now
