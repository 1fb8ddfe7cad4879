# A stand-in station for testing firmware/console.py alone under micropython: the board and
# station objects have the shape of CONTRACTS (board control surface, Station, Connector) and
# record what the console asked for; a control task counts its iterations into the meter
# reading so the test can see the loop keeps running. Usage: micropython mp_console_app.py
import asyncio
import os
import time

import console
from board.pty import PtyPort


class Reading:
    def __init__(self):
        self.energy_wh = 0.0
        self.power_w = 0.0
        self.current_a = [0.0, 0.0, 0.0]
        self.error = None


class Connector:
    def __init__(self, station, n):
        self.station = station
        self.id = n
        self.pilot_state = "A"
        self.duty = 100.0
        self.contactor_closed = False
        self.limit_a = 0.0
        self.external_limit_a = None
        self.available = True
        self.permitted = False
        self.reading = Reading()

    def permit(self, on):
        self.permitted = on
        self.station.update(self)

    def faults(self):
        return []


class Station:
    def __init__(self):
        self.listener = None
        self.connectors = [Connector(self, 1), Connector(self, 2)]

    def faults(self):
        return []

    def clear(self, n):
        pass

    def update(self, c):
        # Just enough behaviour to produce events: C + permit closes the contactor.
        charging = c.pilot_state == "C" and c.permitted
        if charging != c.contactor_closed:
            c.contactor_closed = charging
            c.limit_a = 16.0 if charging else 0.0
            c.duty = 26.7 if charging else 100.0
            self.listener("limit", c.id, c.limit_a)
            self.listener("contactor", c.id, charging)


class EV:
    def __init__(self, station, n):
        self.station = station
        self.n = n

    def set_state(self, state):
        c = self.station.connectors[self.n - 1]
        c.pilot_state = state
        self.station.listener("pilot", self.n, state)
        self.station.update(c)

    def set_power(self, watts):
        self.station.connectors[self.n - 1].reading.power_w = watts

    def set_diode_fault(self, on):
        pass

    def set_ventilation(self, on):
        pass


class Board:
    def __init__(self, station):
        self.evs = [EV(station, 1), EV(station, 2)]
        self.temperature = 25.0
        self.console_port = PtyPort(int(os.getenv("EVSE_CONSOLE_FD")))

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms)

    def temperature_c(self):
        return self.temperature

    def ev(self, n):
        return self.evs[n - 1]

    def set_temperature(self, c):
        self.temperature = c


class App:
    def __init__(self):
        self.station = Station()
        self.board = Board(self.station)
        self.config = {"board": "sim", "phases": 3, "max_current_a": 32}


async def control(app):
    c = app.station.connectors[0]
    while True:
        c.reading.energy_wh += 1  # iterations of the control loop, visible in meter events
        await asyncio.sleep_ms(1)


async def main():
    app = App()
    console.start(app)
    await control(app)


asyncio.run(main())
