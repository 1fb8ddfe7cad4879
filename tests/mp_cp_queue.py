# Driver for test_cp_queue.py, under micropython: pushes numbered MeterValues into the offline
# queue and delivers them, printing "P n" once a push returned (durable), "S n" when the head is
# handed to the "central system", "O meter" for the open transaction found at start. It runs until
# killed, or with argv[2] == "drain" until the queue is empty.
import sys

from ocpp.queue import Queue

q = Queue(sys.argv[1])
drain = sys.argv[2] == "drain"
tx = q.open_tx(1)
print("O", tx[2] if tx else -1)
if tx is None:
    local = q.start({"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "t"}, 0, 0)
    tx = [local, "T", 0, 0]
n = tx[2]
step = 0
while True:
    step += 1
    if not drain and step % 3:
        n += 1
        q.push("MeterValues", {"connectorId": 1, "n": n}, tx[0], n, n)
        print("P", n)
    elif q.pending():
        action, payload, _ = q.head()
        print("S", payload.get("n", 0))
        q.done(7 if action == "StartTransaction" else None)
    elif drain:
        break
