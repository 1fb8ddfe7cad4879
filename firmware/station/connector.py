"""One charging point: pilot state, current offer, contactor sequencing and its safety checks.

`step()` is the safety path. It runs every ~10 ms, allocates nothing (all state and every Fault
is preallocated, arithmetic is on small ints) and decides the contactor first: it may close
only in C (or D with ventilation) with PWM on, charging permitted and no fault; anything else
opens it within the same step.
"""

from protocol import pilot
from station.fault import Fault

A, B, C, D, E, F = pilot.STATES
# Faults that open the contactor and withdraw the offer; 'derating' only lowers the limit.
CONNECTOR_FAULTS = (
    "rcd",
    "rcd_selftest",
    "weld",
    "overcurrent",
    "meter",
    "diode",
    "pilot_e",
    "pilot_f",
    "proximity",
    "hang",
)
_RCD_IDLE, _RCD_TRIP, _RCD_RELEASE = 0, 1, 2


def amps(a10):
    """Tenths of an ampere as a number of amperes (int when whole)."""
    return a10 // 10 if a10 % 10 == 0 else a10 / 10


class Connector:
    def __init__(self, station, hw, number, limits, reading, now):
        self._station = station
        self._board = station.board  # the clock
        self.hw = hw
        self.id = number
        self._limits = limits
        self.reading = reading  # meter Reading, None without a meter
        self.pilot_state = A
        self._pending = A
        self._pending_ms = 0
        self._duty = pilot.DUTY_OFF
        self._limit_a10 = 0
        self._external_a10 = pilot.MAX_A10
        self._external_limit = None  # as set, for reading back
        self.available = True
        self._permitted = limits.free_vend
        self._closed = False  # commanded
        self.contactor_closed = False  # commanded and confirmed by the feedback
        # A time stamp is compared only while a wait runs (a flag says so): the board's ticks
        # wrap, so one long past would read as in the future (after 6.2 days on an ESP32).
        self._opened_ms = now
        self._settling = True  # opened less than weld_check_ms ago
        self._stop_ms = now
        self._stopping = False
        self._rcd_ok = False  # self-test passed this session
        self._rcd_phase = _RCD_IDLE
        self._rcd_ms = 0
        self._rcd_due_ms = now
        self._rcd_waiting = False  # the pause after a trip or a failed self-test
        self._rcd_failures = 0
        self._rcd_trips = 0
        self._over = False
        self._over_ms = 0
        self._meter_ok_ms = None
        self._meter_seen_ms = now  # a grace period from boot for the first reading
        self.fault_slots = [Fault(code, number) for code in CONNECTOR_FAULTS]  # every possible
        (
            self._f_rcd,
            self._f_rcd_selftest,
            self._f_weld,
            self._f_overcurrent,
            self._f_meter,
            self._f_diode,
            self._f_pilot_e,
            self._f_pilot_f,
            self._f_proximity,
            self._f_hang,
        ) = self.fault_slots
        hw.set_contactor(False)
        hw.set_pwm(pilot.DUTY_OFF)

    # Public API (used by OCPP and the console; may allocate).
    @property
    def duty(self):
        """PWM duty in percent; 100 = no PWM (nothing offered)."""
        return amps(self._duty)

    @property
    def limit_a(self):
        """The current offered on the pilot in amperes; 0 when not offering."""
        return amps(self._limit_a10)

    @property
    def external_limit_a(self):
        return self._external_limit

    @external_limit_a.setter
    def external_limit_a(self, value):
        """Smart charging's limit in amperes; None = none. Below 6 A nothing is offered."""
        self._external_a10 = pilot.MAX_A10 if value is None else max(0, int(value * 10))
        self._external_limit = value

    def permit(self, allowed):
        """Authorization: without it the pilot stays at 100 % and the contactor open."""
        self._permitted = bool(allowed)

    @property
    def permitted(self):
        return self._permitted

    def faults(self):
        return [f for f in self.fault_slots if f.active]

    def clear(self):
        """Clear latched faults whose cause is gone; True when none stays latched."""
        hw = self.hw
        for fault in self.fault_slots:
            if not (fault.active and fault.latched):
                continue
            if fault is self._f_weld and hw.has_feedback and hw.contactor_feedback():
                continue
            if fault is self._f_rcd and hw.rcd_tripped():
                continue
            if fault is self._f_rcd_selftest:
                self._rcd_failures = 0
            if fault is self._f_rcd:
                self._rcd_trips = 0
            self._station.unlatch(fault)
        return not any(f.active and f.latched for f in self.fault_slots)

    # The safety path.
    def step(self, now, thermal_a10, station_stop):
        hw = self.hw
        limits = self._limits
        hw.sample_pilot()
        self._track_pilot(now, hw.high_mv)
        state = self.pilot_state
        connected = state == B or state == C or state == D
        if state == A:
            self._new_session()
        if 0 < self._duty < pilot.DUTY_OFF and connected:
            self._set(self._f_diode, not pilot.diode_ok(hw.low_mv, limits.diode_mv), now)
        cable_a10 = pilot.MAX_A10
        if hw.has_proximity and connected:
            cable_a10 = pilot.cable_capacity(hw.proximity_ohms())
            self._set(self._f_proximity, cable_a10 == 0, now)
        if hw.has_rcd:
            self._check_rcd(now, connected)
        if self.reading is not None:
            self._check_meter(now)
        self._check_weld(now)
        if self._closed:
            self._check_current(now)

        stop = station_stop
        for fault in self.fault_slots:
            if fault.active:
                stop = True
        limit = min(limits.max_a10, cable_a10, thermal_a10, self._external_a10)
        offer = (
            connected
            and not stop
            and self.available
            and self._permitted
            and (self._rcd_ok or not hw.has_rcd)
            and limit >= pilot.MIN_A10
        )
        may_close = state == C or (state == D and limits.ventilation)
        close = offer and may_close and 0 < self._duty < pilot.DUTY_OFF
        if not close and self._closed and may_close and not stop:
            # Offer withdrawn while charging: give the EV time to stop drawing current.
            if not self._stopping:
                self._stopping = True
                self._stop_ms = now
            close = self._board.ticks_diff(now, self._stop_ms) < limits.stop_timeout_ms
        else:
            self._stopping = False
        self._drive(now, close, pilot.duty_for_limit(limit) if offer else pilot.DUTY_OFF)
        offered = limit if offer else 0
        if offered != self._limit_a10:
            self._limit_a10 = offered
            self._station.emit("limit", self.id, offered)

    def _drive(self, now, close, duty):
        hw = self.hw
        if close != self._closed:
            self._closed = close
            hw.set_contactor(close)
            if not close:
                self._opened_ms = now
                self._settling = True
        hw.set_pwm(duty)
        self._duty = duty
        confirmed = close and (hw.contactor_feedback() or not hw.has_feedback)
        if confirmed != self.contactor_closed:
            self.contactor_closed = confirmed
            self._station.emit("contactor", self.id, confirmed)

    def open_now(self, now):
        """Emergency: contactor and PWM off at once (the guard and crash handlers call this)."""
        self._drive(now, False, pilot.DUTY_OFF)

    def crashed(self, now, message):
        """The step failed: open, and refuse sessions until cleared."""
        self.open_now(now)
        self._f_hang.message = message
        self._set(self._f_hang, True, now, True)

    def _track_pilot(self, now, high_mv):
        """Debounce: a state that can lead to closing must persist; a safer one counts at once."""
        limits = self._limits
        old = self.pilot_state
        new = pilot.classify(high_mv, old, limits.pilot_thresholds_mv, limits.pilot_hysteresis_mv)
        if new == old:
            self._pending = old
            return
        old_may_close = old == C or (old == D and limits.ventilation)
        new_may_close = new == C or (new == D and limits.ventilation)
        if not (new == A or new == E or new == F or (old_may_close and not new_may_close)):
            if new != self._pending:
                self._pending = new
                self._pending_ms = now
                return
            if self._board.ticks_diff(now, self._pending_ms) < limits.pilot_debounce_ms:
                return
        self._pending = new
        self.pilot_state = new
        self._set(self._f_pilot_e, new == E, now)
        self._set(self._f_pilot_f, new == F, now)
        self._station.emit("pilot", self.id, new)

    def _new_session(self):
        """The EV left (state A): per-session conditions start afresh."""
        if self._rcd_phase != _RCD_IDLE:
            self.hw.set_rcd_test(False)
            self._rcd_phase = _RCD_IDLE
        self._rcd_ok = False
        self._set(self._f_diode, False, 0)
        self._set(self._f_overcurrent, False, 0)
        self._set(self._f_proximity, False, 0)
        if not self._f_rcd.latched:
            self._rcd_trips = 0
        if not self._f_rcd_selftest.latched:
            self._rcd_failures = 0

    def _check_rcd(self, now, connected):
        hw = self.hw
        limits = self._limits
        if self._rcd_phase == _RCD_IDLE:
            if hw.rcd_tripped():
                if not self._f_rcd.active:  # a trip: the contactor opens in this step
                    self._rcd_trips += 1
                    self._rcd_ok = False
                    self._set(self._f_rcd, True, now, self._rcd_trips > limits.rcd_retries)
                self._rcd_due_ms = self._board.ticks_add(now, limits.rcd_retry_ms)
                self._rcd_waiting = True
                return
            if self._f_rcd.active and not self._f_rcd.latched:
                self._set(self._f_rcd, False, now)
            if self._rcd_waiting and self._board.ticks_diff(now, self._rcd_due_ms) >= 0:
                self._rcd_waiting = False
            if (
                connected
                and not self._rcd_ok
                and not self._f_rcd.latched
                and not self._f_rcd_selftest.latched
                and not self._closed
                and not self._rcd_waiting
            ):
                hw.set_rcd_test(True)
                self._rcd_phase = _RCD_TRIP
                self._rcd_ms = now
            return
        if self._rcd_phase == _RCD_TRIP and hw.rcd_tripped():
            hw.set_rcd_test(False)
            self._rcd_phase = _RCD_RELEASE
            self._rcd_ms = now
        elif self._rcd_phase == _RCD_RELEASE and not hw.rcd_tripped():
            self._rcd_phase = _RCD_IDLE
            self._rcd_ok = True
            self._rcd_failures = 0
        elif self._board.ticks_diff(now, self._rcd_ms) > limits.rcd_test_ms:
            hw.set_rcd_test(False)
            self._rcd_phase = _RCD_IDLE
            self._rcd_failures += 1
            self._rcd_due_ms = self._board.ticks_add(now, limits.rcd_retry_ms)
            self._rcd_waiting = True
            if self._rcd_failures >= limits.rcd_retries:
                self._set(self._f_rcd_selftest, True, now, True)

    def _check_meter(self, now):
        """No good reading for meter_silence_ms: safe state until readings resume."""
        ok_ms = self.reading.ok_ms
        if ok_ms is not None and ok_ms != self._meter_ok_ms:
            self._meter_ok_ms = ok_ms
            self._meter_seen_ms = now
            self._set(self._f_meter, False, now)
        elif self._board.ticks_diff(now, self._meter_seen_ms) > self._limits.meter_silence_ms:
            self._set(self._f_meter, True, now)

    def _check_weld(self, now):
        hw = self.hw
        if self._settling:
            waited = self._board.ticks_diff(now, self._opened_ms)
            self._settling = waited < self._limits.weld_check_ms
        if hw.has_feedback and not self._closed and not self._settling and hw.contactor_feedback():
            self._set(self._f_weld, True, now, True)

    def _check_current(self, now):
        """Measured current above the limit plus margin for overcurrent_ms: stop the session.
        The threshold is rounded up to whole amperes so the float reading compares with an int.
        The excess counts from when it is first seen (a lower limit included) and has lasted
        once a reading taken overcurrent_ms later still shows it: the reading at hand may be
        up to a poll older than now, from before the EV followed the limit."""
        reading = self.reading
        if reading is None or self._f_meter.active:
            return
        threshold = (self._limit_a10 + 9) // 10 + self._limits.overcurrent_margin_a
        over = False
        for current in reading.current_a:
            if current > threshold:
                over = True
        if not over:
            self._over = False
        elif not self._over:
            self._over = True
            self._over_ms = now
        elif (
            reading.ok_ms is not None
            and self._board.ticks_diff(reading.ok_ms, self._over_ms) >= self._limits.overcurrent_ms
        ):
            self._set(self._f_overcurrent, True, now)

    def _set(self, fault, active, now, latched=False):
        self._station.set_fault(fault, active, now, latched)
