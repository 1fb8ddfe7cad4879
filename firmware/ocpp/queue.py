# Offline queue of transaction messages (StartTransaction, MeterValues, StopTransaction).
#
# Each message is appended to the power-cut-safe journal (<data_dir>/txqueue.jnl) before it may
# be sent, and acknowledged there only once the central system answered it; a message answered
# but not yet acknowledged when the power goes is sent again (the central system recognises the
# repeat). The backlog stays on flash; RAM holds the journal's counters and the open transactions.
#
# Journal record: JSON {"a": action, "p": payload, "l": local tx id, "m": meter Wh, "w": time}.
# Beside it, <data_dir>/txstate.json (written atomically) keeps what outlives acknowledged
# records: the next local transaction id, the central system's transactionId of each local id
# still in use, and the open transactions (for the PowerLoss stop after a power cut). The journal
# is always written first, and on start its pending records bring the state up to date.
#
# Storage-full policy (journal of MAX_BYTES): a MeterValues is dropped when it would leave less
# than METER_RESERVE free; no transaction starts when that would leave less than START_RESERVE;
# a StopTransaction always fits in the reserve (at most one per started transaction).
import json

from ocpp.config import load_json, save_json
from station.journal import Journal, JournalFull

MAX_BYTES = 512 * 1024
METER_RESERVE = 16 * 1024
START_RESERVE = 8 * 1024


class Queue:
    def __init__(self, data_dir):
        base = data_dir.rstrip("/") + "/"
        self.state_path = base + "txstate.json"
        state = load_json(self.state_path, {})
        self.next_local = state.get("n", 1)
        self.real = {int(k): v for k, v in state.get("r", {}).items()}  # local -> transactionId
        self.open = {int(k): v for k, v in state.get("o", {}).items()}  # connector -> open tx
        self.journal = Journal(base + "txqueue.jnl", MAX_BYTES)
        self.cached = None  # (seq, record) of the head
        used = set(tx[0] for tx in self.open.values())
        for _, data in self.journal:
            r = json.loads(data)
            used.add(r["l"])
            self.next_local = max(self.next_local, r["l"] + 1)
            self._track(r["a"], r["p"], r["l"], r["m"], r["w"])
        self.real = {k: v for k, v in self.real.items() if k in used}
        self._save()

    def _save(self):
        save_json(self.state_path, {"n": self.next_local, "r": self.real, "o": self.open})

    def _track(self, action, payload, local, meter, when):
        if action == "StartTransaction":
            self.open[payload["connectorId"]] = [local, payload["idTag"], meter, when]
            return
        for connector, tx in self.open.items():
            if tx[0] == local:
                if action == "StopTransaction":
                    del self.open[connector]
                elif when >= tx[3]:  # not older than a note()
                    tx[2], tx[3] = meter, when
                return

    def pending(self):
        return self.journal.pending

    def start(self, payload, meter, when):
        """Queue a StartTransaction; its local transaction id, or None when storage is full."""
        local = self.next_local
        if not self._push("StartTransaction", payload, local, meter, when, START_RESERVE):
            return None
        self.next_local += 1
        self._save()
        return local

    def push(self, action, payload, local, meter, when):
        """Queue a MeterValues (False: dropped, storage full) or a StopTransaction."""
        reserve = METER_RESERVE if action == "MeterValues" else 0
        if not self._push(action, payload, local, meter, when, reserve):
            return False
        self._save()
        return True

    def _push(self, action, payload, local, meter, when, reserve):
        record = {"a": action, "p": payload, "l": local, "m": meter, "w": when}
        try:
            self.journal.append(json.dumps(record).encode(), reserve)
        except JournalFull:
            return False
        self._track(action, payload, local, meter, when)
        return True

    def head(self):
        """(action, payload, local tx id) of the oldest message not yet answered."""
        cached = self.cached
        if cached is None:
            first = self.journal.first()
            if first is None:
                raise IndexError("queue empty")
            cached = self.cached = first[0], json.loads(first[1])
        r = cached[1]
        return r["a"], r["p"], r["l"]

    def done(self, real_id):
        """The head was answered (or given up); `real_id`: the transactionId of a Start."""
        action, _, local = self.head()
        seq = self.cached[0] if self.cached else 0
        if real_id is not None:
            self.real[local] = real_id
            self._save()  # before the ack: a cut in between resends the Start, nothing lost
        self.journal.ack(seq)
        self.cached = None
        if action == "StopTransaction" and self.real.pop(local, None) is not None:
            self._save()

    def note(self, local, meter, when):
        """Keep the meter register of running transaction `local` on flash (for its PowerLoss
        stop after a power cut)."""
        self._track("MeterValues", None, local, meter, when)
        self._save()

    def real_tx(self, local):
        return self.real.get(local)

    def open_tx(self, connector_id):
        """[local, idTag, meter Wh, time] of the transaction running at `connector_id`."""
        return self.open.get(connector_id)
