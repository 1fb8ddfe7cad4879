"""What a charger is: connectors with their pilot and contactor, station-wide temperature
limits and faults, and the meters. `step()` is the allocation-free safety path; `service()`
does the rest (meter bus, fault time stamps, events) and may allocate."""

import sys

from protocol import pilot
from station.connector import Connector, amps
from station.fault import Fault
from station.limits import Limits

_EVENTS = 32  # events between two service() calls; a step raises only a few


class Station:
    def __init__(self, board, config):
        self.board = board
        self.config = config
        self.limits = Limits(config)
        now = board.ticks_ms()
        self.meter_bus = None
        meter = config.get("meter")
        specs = config.get("connectors") or [{} for _ in board.connectors]
        if len(specs) != len(board.connectors):
            raise ValueError("board.json: connectors do not match the board")
        if meter:
            from station.meter import MeterBus

            self.meter_bus = MeterBus(board.meter_uart, now)
        self.connectors = []
        for number, (hw, spec) in enumerate(zip(board.connectors, specs), 1):
            reading = None
            if self.meter_bus is not None:
                address = spec.get("meter_address", number)
                reading = self.meter_bus.add(meter.get("model", "SDM630"), address)
            self.connectors.append(Connector(self, hw, number, self.limits, reading, now))
        self._f_overtemp = Fault("overtemp", 0)
        self._f_derating = Fault("derating", 0)
        self._f_hang = Fault("hang", 0)
        self._faults = (self._f_overtemp, self._f_derating, self._f_hang)
        self.thermal_a10 = pilot.MAX_A10
        self.listener = None  # fn(kind, connector_id, value), called from service()
        self._kinds = [""] * _EVENTS
        self._ids = [0] * _EVENTS
        self._values = [None] * _EVENTS
        self._head = 0
        self._count = 0
        self.events_dropped = 0

    def step(self, now):
        """One control iteration for every connector; never raises, allocates nothing."""
        if self._f_hang.active and not self._f_hang.latched:
            self.set_fault(self._f_hang, False, now)  # a step runs again: the stall is over
        stop = False
        try:
            self._check_temperature(now)
            stop = self._f_overtemp.active or self._f_hang.active
        except Exception:  # a failing sensor must not keep the contactors closed
            stop = True
        for connector in self.connectors:
            try:
                connector.step(now, self.thermal_a10, stop)
            except Exception:
                connector.hw.set_contactor(False)
                connector.crashed(now, "step")

    def open_all(self, now, message, latched):
        """Open every contactor now with a station 'hang' fault (the guard, crash handler);
        an unlatched one ends with the next step."""
        for connector in self.connectors:
            connector.open_now(now)
        self._f_hang.message = message
        self.set_fault(self._f_hang, True, now, latched)

    def service(self, now):
        """The work beside the safety path: poll meters, stamp faults, deliver events."""
        if self.meter_bus is not None:
            self.meter_bus.step(now)
        for fault in self.all_faults():
            if fault.active:
                self._stamp(fault, now)
        while self._count:
            index = self._head
            kind, number, value = self._kinds[index], self._ids[index], self._values[index]
            self._values[index] = None
            self._head = (index + 1) % _EVENTS
            self._count -= 1
            if kind == "fault":
                self._stamp(value, now)
            if self.listener is not None:
                try:
                    self.listener(kind, number, amps(value) if kind == "limit" else value)
                except Exception as error:  # a listener's bug must not stop the station
                    sys.print_exception(error)

    def _stamp(self, fault, now):
        if not fault.since:
            board = self.board
            fault.since = board.time() - board.ticks_diff(now, fault.since_ms) // 1000

    def faults(self):
        """Active station-wide faults (connector 0)."""
        return [f for f in self._faults if f.active]

    def all_faults(self):
        """Every possible fault of the station and its connectors, active or not."""
        faults = list(self._faults)
        for connector in self.connectors:
            faults.extend(connector.fault_slots)
        return faults

    def clear(self, connector_id):
        """Clear latched faults of a connector (0: the station) whose cause is gone; True when
        none stays latched there."""
        if connector_id:
            return self.connectors[connector_id - 1].clear()
        if self._f_hang.active:
            self.unlatch(self._f_hang)
        return True

    # Used by the connectors (allocation-free).
    def emit(self, kind, connector_id, value):
        if self._count == _EVENTS:
            self.events_dropped += 1
            return
        index = (self._head + self._count) % _EVENTS
        self._kinds[index] = kind
        self._ids[index] = connector_id
        self._values[index] = value
        self._count += 1

    def set_fault(self, fault, active, now, latched=False):
        """Switch a fault on or off; a latched one goes off only through clear()."""
        if active:
            if not fault.active:
                fault.active = True
                fault.latched = latched
                fault.since = 0
                fault.since_ms = now
                self.emit("fault", fault.connector, fault)
            elif latched:
                fault.latched = True
        elif fault.active and not fault.latched:
            self.unlatch(fault)

    def unlatch(self, fault):
        fault.active = False
        fault.latched = False
        self.emit("fault_cleared", fault.connector, fault)

    def _check_temperature(self, now):
        """Derate linearly from derate_c to 6 A at overtemp_c; stop at overtemp_c (or when the
        sensor reads nonsense) until it is temp_hysteresis_c below."""
        limits = self.limits
        celsius = self.board.temperature_c()
        if celsius >= limits.overtemp_c or celsius < -40:
            self.set_fault(self._f_overtemp, True, now)
        elif celsius < limits.overtemp_c - limits.temp_hysteresis_c:
            self.set_fault(self._f_overtemp, False, now)
        if self._f_overtemp.active:
            self.thermal_a10 = 0
        elif celsius > limits.derate_c:
            span = limits.max_a10 - pilot.MIN_A10
            over = celsius - limits.derate_c
            self.thermal_a10 = limits.max_a10 - span * over // (limits.overtemp_c - limits.derate_c)
        else:
            self.thermal_a10 = pilot.MAX_A10
        derating = not self._f_overtemp.active and self.thermal_a10 < limits.max_a10
        self.set_fault(self._f_derating, derating, now)
