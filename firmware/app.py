"""The station application: board, station, the control task and its supervisor, and the
optional tasks (OCPP, console) that hook in at the marked lines of `App.main`.

Two clocks. Board time (`board.ticks_ms()`, `sleep_ms`, `time()`) is what the station lives
in: the control period, debounce, fault timers, meter and OCPP intervals. Real time
(`board.real_ms()`, `real_sleep_ms`) is what supervision counts, since a hang is a hang in real
time: the stall guard and the watchdog. On a board both are the same clock. The simulated board
(board/sim.py) moves board time by a fixed step per round of its event loop, at most `speed`
times real time, so every control step spans at most one sim step of board time whatever the
host's load, and a slow host is a slower simulation, not a hung board.

Safety supervision, in layers that no other work can starve:
- the control task steps the station every CONTROL_PERIOD_MS and records when a step completed;
- a hardware timer (the guard) opens every contactor when steps stop for STALL_MS, whatever
  the tasks are doing;
- the hardware watchdog is fed only while steps keep completing and no task has crashed, so a
  hang or a crash ends in a reset, and at reset the contactor outputs are low;
- an exception escaping any task opens every contactor at once and latches a 'hang' fault.
"""

import json
import sys

import asyncio
from board import load, path
from station import Station

CONTROL_PERIOD_MS = 10  # board time
# Real time, both:
STALL_MS = 100  # no completed step for this long: contactors open (IEC 61851-1 allows 100 ms)
GUARD_PERIOD_MS = 20


def read_station_config(data_dir):
    """station.json as a dict; missing means no OCPP (the station still charges)."""
    try:
        with open(path(data_dir, "station.json")) as f:
            return json.loads(f.read())
    except OSError:
        return {}


class App:
    def __init__(self, data_dir, board=None):
        self.data_dir = data_dir
        self.board = board if board is not None else load(data_dir)
        self.config = self.board.config
        self.station_config = read_station_config(data_dir)
        self.station = Station(self.board, self.config)
        self.stepped_ms = self.board.real_ms()  # real time the last step completed
        self.crashed = False

    def start(self):
        """Start the control task and its supervision (inside the running event loop)."""
        board = self.board
        self.stepped_ms = board.real_ms()
        asyncio.get_event_loop().set_exception_handler(self._on_crash)
        board.start_guard(GUARD_PERIOD_MS, self._guard)
        board.wdt_start(int(self.config.get("watchdog_ms", 2000)))
        asyncio.create_task(self._control())
        asyncio.create_task(self._supervise())

    async def main(self):
        # Optional tasks are created first (their imports take a while, with the contactors
        # open) and run once main() waits; the control task starts last. One line each:
        # OCPP charge point (when station.json has "url"):
        if self.station_config.get("url"):
            import net
            from ocpp import chargepoint

            net.start(self, lambda: chargepoint.start(self))  # OCPP once the network is up
        # console (imported only when the board has a console port):
        if self.board.console_port is not None:
            from console import start as start_console

            start_console(self)
        if self.board.simulated:
            from station import simctl

            simctl.start(self)
        self.start()
        while True:
            await asyncio.sleep(3600)

    async def _control(self):
        board, station = self.board, self.station
        due = board.ticks_ms()
        while True:
            now = board.ticks_ms()
            station.step(now)
            self.stepped_ms = board.real_ms()
            station.service(now)
            due = board.ticks_add(due, CONTROL_PERIOD_MS)
            wait = board.ticks_diff(due, board.ticks_ms())
            if wait < 0:  # overrun (or a sim step longer than the period): from now on
                due = board.ticks_ms()
                wait = 0
            await board.sleep_ms(wait)

    def _healthy(self):
        board = self.board
        return not self.crashed and board.ticks_diff(board.real_ms(), self.stepped_ms) < STALL_MS

    async def _supervise(self):
        board = self.board
        period = int(self.config.get("watchdog_ms", 2000)) // 4
        while True:
            if self._healthy():
                board.wdt_feed()
            await board.real_sleep_ms(period)

    def _guard(self, now):
        """Timer interrupt: a stalled control loop must not leave a contactor closed."""
        if not self._healthy():
            self.station.open_all(now, "crash" if self.crashed else "stall", self.crashed)

    def _on_crash(self, loop, context):
        self.crashed = True
        self.station.open_all(self.board.ticks_ms(), "crash", True)
        error = context.get("exception")
        if error is not None:
            sys.print_exception(error)


def run(data_dir, board=None):
    asyncio.run(App(data_dir, board).main())
