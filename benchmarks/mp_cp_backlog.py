# Under micropython: fill the offline queue of data dir argv[1] with argv[2] messages, as a
# station offline for a long time would: one transaction's Start, MeterValues, and its Stop.
import sys

from ocpp import isotime
from ocpp.queue import Queue

data_dir, count = sys.argv[1], int(sys.argv[2])
q = Queue(data_dir)
t0 = 1767225600
start = {"connectorId": 1, "idTag": "BACKLOG", "meterStart": 1000, "timestamp": isotime.format(t0)}
local = q.start(start, 1000, t0)
for i in range(1, count - 1):
    when, meter = t0 + 60 * i, 1000 + 120 * i
    value = {"value": f"{meter}", "context": "Sample.Periodic", "unit": "Wh"}
    value["measurand"] = "Energy.Active.Import.Register"
    payload = {
        "connectorId": 1,
        "meterValue": [{"timestamp": isotime.format(when), "sampledValue": [value]}],
    }
    assert q.push("MeterValues", payload, local, meter, when)
when = t0 + 60 * (count - 1)
stop = {
    "meterStop": 1000 + 120 * count,
    "timestamp": isotime.format(when),
    "reason": "Local",
    "idTag": "BACKLOG",
}
assert q.push("StopTransaction", stop, local, 1000 + 120 * count, when)
print(q.pending(), q.journal.size)
