# The control core's full session of benchmarks/mp_session.py (Station, meter bus, simulated
# board and meters, both connectors: plug, charge a minute, pause, resume, an RCD trip and its
# retry, unplug), cut into steps of one control period (10 ms of board time) so that it runs on
# both the unix port and the WebAssembly port, whose heap is collected only between calls from
# JavaScript (benchmarks/heap32.mjs calls step() once per call; imports are steps too).
# Prints "ok" at the end; benchmarks/bench_heap32.py looks for the smallest heap size for that.
import gc
import sys

CONFIG = {"board": "sim", "meter": {"model": "SDM630"}, "free_vend": True}
STEP_MS = 10  # longer steps would leave the 32-bit port more garbage it cannot collect


def session():
    """Yields after each import, and after each step of at most STEP_MS of board time."""
    from board import sim

    yield
    from station import Station

    yield
    board = sim.Board("/tmp", speed=None, config=CONFIG)
    station = Station(board, CONFIG)
    yield

    def run(ms):
        while ms > 0:
            for _ in range(min(ms, STEP_MS) // 10):
                board.advance(10)
                now = board.ticks_ms()
                station.step(now)
                station.service(now)
            ms -= STEP_MS
            yield

    for n in (1, 2):
        board.ev(n).set_state("B")
    yield from run(500)
    for n in (1, 2):
        board.ev(n).set_state("C")
    yield from run(60000)
    board.ev(1).set_state("B")
    yield from run(1000)
    board.ev(1).set_state("C")
    board.set_rcd_leak(2, 40)
    yield from run(100)
    board.set_rcd_leak(2, 0)
    yield from run(5000)
    for connector in station.connectors:
        assert connector.contactor_closed, connector.faults()
        assert connector.reading.energy_wh > 100, connector.reading.energy_wh
    for n in (1, 2):
        board.ev(n).set_state("A")
    yield from run(500)


steps = session()


def step():
    """Runs the next step; False after the last."""
    try:
        next(steps)
    except StopIteration:
        print("ok")
        return False
    gc.collect()
    return True


if sys.platform != "webassembly":
    while step():
        pass
