# Driver for test_cp_queue.py's storage-full test, under micropython: a small journal filled by
# a long offline transaction, then by new ones; prints what was kept, dropped and refused.
import json
import sys

from ocpp import queue

queue.MAX_BYTES, queue.METER_RESERVE, queue.START_RESERVE = 12 * 1024, 4 * 1024, 2 * 1024
q = queue.Queue(sys.argv[1])
start = {"connectorId": 1, "idTag": "FULL", "meterStart": 0, "timestamp": "t"}
local = q.start(start, 0, 0)
kept = dropped = starts = 0
for n in range(1, 400):
    value = {"timestamp": "t", "sampledValue": [{"value": str(n)}]}
    if q.push("MeterValues", {"connectorId": 1, "meterValue": [value]}, local, n, n):
        kept += 1
    else:
        dropped += 1
while starts < 100 and q.start({"connectorId": 2, "idTag": "X", "meterStart": 0}, 0, 0):
    starts += 1
stop = {"meterStop": 400, "timestamp": "t", "reason": "Local"}
stopped = q.push("StopTransaction", stop, local, 400, 400)
order = []
while q.pending():
    action, payload, _ = q.head()
    order.append(action)
    q.done(1 if action == "StartTransaction" else None)
print(json.dumps({"kept": kept, "dropped": dropped, "starts": starts, "stop": stopped}))
print(json.dumps(order))
