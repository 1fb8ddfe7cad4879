# Driver for tests/test_cp_operations.py, run under micropython: the charge point's clock policy
# and UnlockConnector on the simulated board. argv[1]: the data directory. Prints one JSON object.
import json
import sys

import app as firmware_app
import net
from board import sim
from ocpp.core import ChargePoint
from ocpp.queue import Queue

data_dir = sys.argv[1]
board = sim.Board(data_dir, config={"board": "sim", "watchdog_ms": 60000})
cp = ChargePoint(board, firmware_app.App(data_dir, board).station, Queue(data_dir), 3)
far = "2030-01-01T00:00:00Z"  # the central system's clock, far from the board's
result = {}

net.synced_ms = board.ticks_ms()  # NTP answered just now: its time wins
result["ntp_synced"] = [cp.set_clock(far), board.time()]
net.synced_ms = board.ticks_ms() - net.NTP_TRUST_MS - 1  # NTP silent for too long
result["ntp_stale"] = [cp.set_clock(far), board.time()]
net.synced_ms = None  # no NTP at all
result["no_ntp"] = [cp.set_clock("2031-01-01T00:00:00Z"), board.time()]


def unlock(connector_id):
    return cp.on_UnlockConnector({"connectorId": connector_id})["status"]


result["unlock_without_actuator"] = [unlock(n) for n in (0, 1, 2, 3)]
board.unlock = lambda n: n == 1  # an actuator that unlocks connector 1 and jams on 2
result["unlock_with_actuator"] = [unlock(n) for n in (0, 1, 2, 3)]
print(json.dumps(result))
