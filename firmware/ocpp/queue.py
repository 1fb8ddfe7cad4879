# Offline queue of transaction messages (StartTransaction, MeterValues, StopTransaction).
#
# Every message is appended to <data_dir>/txqueue.log and flushed before anyone may send it, and
# leaves the queue only when the central system has answered it: a power cut at any moment loses
# nothing that was queued (a message answered but not yet marked done is sent again; the central
# system recognises the repeat). One record per line: 8 hex digits of CRC-32, a space, JSON. A torn
# or corrupt record ends the log: it and anything after it is dropped at the next start.
#
# Records: {"q": seq, "a": action, "p": payload, "l": local tx id, "m": meter Wh, "w": time}
#          {"d": seq, "x": central system's transactionId (StartTransaction only)}
#          {"s": state} first record after a compaction (see _state()).
# Only a few integers and the open transactions live in RAM; the backlog stays on flash.
#
# Storage-full policy: with METER_LIMIT messages waiting, new MeterValues are not queued (dropped);
# with START_LIMIT waiting, no new transaction starts; a StopTransaction is always queued (at most
# one per started transaction, so CAPACITY bounds the backlog).
import json
import os
from binascii import crc32

CAPACITY = 1200
START_LIMIT = CAPACITY - 50
METER_LIMIT = CAPACITY - 100
COMPACT_BYTES = 32 * 1024  # rewrite the log when it is this big and everything is delivered


def _line(record):
    body = json.dumps(record)
    return "%08x %s\n" % (crc32(body.encode()), body)


def _records(f):
    """(offset, line, record) of each intact record from the file position; stops at the first
    torn or corrupt one, yielding (offset, None, None) for it."""
    offset = f.tell()
    while True:
        line = f.readline()
        if not line:
            return
        record = None
        if line[-1:] == b"\n" and len(line) > 10 and line[8:9] == b" ":
            body = line[9:-1]
            try:
                if int(line[:8], 16) == crc32(body):
                    record = json.loads(body)
            except ValueError:
                pass
        if type(record) is not dict:
            yield offset, None, None
            return
        yield offset, line, record
        offset += len(line)


class Queue:
    def __init__(self, data_dir):
        self.path = data_dir.rstrip("/") + "/txqueue.log"
        self.next_local = 1  # next local transaction id
        self.next_seq = 1  # seq of the next message pushed
        self.head_seq = 1  # seq of the oldest message not yet delivered
        self.real = {}  # local tx id -> central system's transactionId
        self.open = {}  # connector id -> [local, idTag, meter Wh, time] of a running transaction
        self.head_offset = 0  # where to look for the head record
        self.cached = None  # the head record
        self._replay()
        self.file = open(self.path, "ab")

    # ---- replay and compaction

    def _replay(self):
        torn = False
        try:
            with open(self.path, "rb") as f:
                for _, line, record in _records(f):
                    if line is None:
                        torn = True
                    else:
                        self._apply(record)
        except OSError:
            return  # no log yet
        if torn:
            self._compact()

    def _apply(self, r):
        if "q" in r:
            self.next_seq = r["q"] + 1
            local = r["l"]
            self.next_local = max(self.next_local, local + 1)
            self._track(r["a"], r["p"], local, r["m"], r["w"])
        elif "d" in r:
            self.head_seq = r["d"] + 1
            if "x" in r:
                self.real[r["l"]] = r["x"]
        elif "s" in r:
            s = r["s"]
            self.next_local, self.next_seq, self.head_seq = s["n"], s["q"], s["h"]
            self.real = {int(k): v for k, v in s["r"].items()}
            self.open = {int(k): v for k, v in s["o"].items()}

    def _track(self, action, payload, local, meter, when):
        if action == "StartTransaction":
            self.open[payload["connectorId"]] = [local, payload["idTag"], meter, when]
            return
        for connector, tx in self.open.items():
            if tx[0] == local:
                if action == "StopTransaction":
                    del self.open[connector]
                else:
                    tx[2], tx[3] = meter, when
                return

    def _state(self):
        return {
            "s": {
                "n": self.next_local,
                "q": self.next_seq,
                "h": self.head_seq,
                "r": {str(k): v for k, v in self.real.items()},
                "o": {str(k): v for k, v in self.open.items()},
            }
        }

    def _compact(self):
        """Rewrite the log as the state and the undelivered messages (atomically: rename)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as out:
            out.write(_line(self._state()).encode())
            with open(self.path, "rb") as f:
                for _, line, record in _records(f):
                    if record is not None and record.get("q", 0) >= self.head_seq:
                        out.write(line)
        os.rename(tmp, self.path)
        self.head_offset = 0
        self.cached = None

    # ---- the queue

    def _append(self, record):
        self.file.write(_line(record).encode())
        self.file.flush()

    def new_tx(self):
        local = self.next_local
        self.next_local += 1
        return local

    def pending(self):
        return self.next_seq - self.head_seq

    def room_for_start(self):
        return self.pending() < START_LIMIT

    def push(self, action, payload, local, meter, when):
        """Store a message durably. MeterValues beyond METER_LIMIT are dropped (False)."""
        if action == "MeterValues" and self.pending() >= METER_LIMIT:
            return False
        record = {"q": self.next_seq, "a": action, "p": payload, "l": local, "m": meter, "w": when}
        self._append(record)
        self.next_seq += 1
        self._track(action, payload, local, meter, when)
        return True

    def head(self):
        """(action, payload, local tx id) of the oldest undelivered message."""
        if self.cached is None:
            self.file.flush()
            with open(self.path, "rb") as f:
                f.seek(self.head_offset)
                for offset, _, record in _records(f):
                    if record is not None and record.get("q") == self.head_seq:
                        self.head_offset = offset
                        self.cached = record
                        break
        r = self.cached
        if r is None:
            raise OSError("queue head missing")
        return r["a"], r["p"], r["l"]

    def done(self, real_id):
        """The head was answered (or given up): `real_id` is the transactionId of a Start."""
        action, _, local = self.head()
        record = {"d": self.head_seq, "l": local}
        if real_id is not None:
            record["x"] = real_id
            self.real[local] = real_id
        self._append(record)
        self.head_seq += 1
        self.cached = None
        if action == "StopTransaction":
            self.real.pop(local, None)
        if self.pending() == 0 and os.stat(self.path)[6] > COMPACT_BYTES:
            self.file.close()
            self._compact()
            self.file = open(self.path, "ab")

    def real_tx(self, local):
        return self.real.get(local)

    def open_tx(self, connector_id):
        """[local, idTag, meter Wh, time] of a transaction left running at `connector_id`."""
        return self.open.get(connector_id)
