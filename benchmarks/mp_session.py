# Runs under micropython (benchmarks/bench_heap.py starts it, with -X heapsize): the station
# control core (Station, meter bus, simulated board and meter) plays a full session on both
# connectors with a manual clock: plug, RCD self-test, charge for a minute of board time,
# pause, resume, an RCD trip and its retry, unplug. Prints the heap in use, then "ok".
import gc

from board import sim
from station import Station

CONFIG = {"board": "sim", "meter": {"model": "SDM630"}, "free_vend": True}


def run(board, station, ms):
    for _ in range(ms // 10):
        board.advance(10)
        now = board.ticks_ms()
        station.step(now)
        station.service(now)


def main():
    board = sim.Board("/tmp", speed=None, config=CONFIG)
    station = Station(board, CONFIG)
    gc.collect()
    setup = gc.mem_alloc()
    for n in (1, 2):
        board.ev(n).set_state("B")
    run(board, station, 500)
    for n in (1, 2):
        board.ev(n).set_state("C")
    run(board, station, 60000)
    board.ev(1).set_state("B")
    run(board, station, 1000)
    board.ev(1).set_state("C")
    board.set_rcd_leak(2, 40)
    run(board, station, 100)
    board.set_rcd_leak(2, 0)
    run(board, station, 5000)
    for connector in station.connectors:
        assert connector.contactor_closed, connector.faults()
        assert connector.reading.energy_wh > 100, connector.reading.energy_wh
    for n in (1, 2):
        board.ev(n).set_state("A")
    run(board, station, 500)
    gc.collect()
    print("heap in use:", setup, "bytes after setup,", gc.mem_alloc(), "after the session")
    print("ok")


main()
