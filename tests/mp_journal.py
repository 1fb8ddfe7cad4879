"""station.journal under micropython, two ways.

`mp_journal.py` (batch): one JSON case per input line: {"path", "max_bytes", "file": hex or
null (bytes to place at path first; null leaves the path alone), "ops": [...]}; prints one JSON
result per case: {"results": [one per op], "pending": [[seq, hex], ...], "size": bytes}.
With "summary": true, "pending" is [count, first seq, last seq] instead.
Ops: ["append", hex, reserve] -> seq or "full"; ["fill", count, size] appends `count`
records of `size` bytes, the k-th (from 1) k's low byte repeated -> last seq;
["ack", seq] -> null or "error"; ["first"] -> [seq, hex] or null;
["iter"] -> [[seq, hex], ...]; ["ack_while_iterating"] -> seqs seen; ["compact"]; ["reopen"].

`mp_journal.py crash PATH MAX_BYTES SEED` (power-cut test): opens the journal, prints
"O <json of pending [[seq, nonce hex, intact]]>", then appends, acknowledges and compacts at
random forever, printing what it is about to do and what completed:
"a <nonce>" then "A <seq>" (or "F": full); "k <seq>" then "K <seq>"; "c" then "C".
A payload is its 4-byte nonce repeated, so a record can be checked on its own.
"""

import json
import os
import random
import sys

from station.journal import Journal, JournalFull


def pending(journal):
    return [[seq, data.hex()] for seq, data in journal]


def summary(journal):
    seqs = [seq for seq, _ in journal]
    return [len(seqs), seqs[0] if seqs else None, seqs[-1] if seqs else None]


def apply(journal, op):
    name = op[0]
    if name == "append":
        try:
            return journal.append(bytes.fromhex(op[1]), op[2])
        except JournalFull:
            return "full"
    if name == "fill":
        seq = None
        for k in range(1, op[1] + 1):
            seq = journal.append(bytes([k & 0xFF]) * op[2])
        return seq
    if name == "ack":
        try:
            journal.ack(op[1])
        except ValueError:
            return "error"
        return None
    if name == "first":
        record = journal.first()
        return None if record is None else [record[0], record[1].hex()]
    if name == "iter":
        return pending(journal)
    if name == "ack_while_iterating":
        seen = []
        for seq, _ in journal:
            seen.append(seq)
            journal.ack(seq)
        return seen
    if name == "compact":
        journal.compact()
        return None
    raise ValueError(name)


def batch():
    for line in sys.stdin:
        case = json.loads(line)
        path = case["path"]
        if case["file"] is not None:
            for stale in (path, path + ".tmp"):
                try:
                    os.remove(stale)
                except OSError:
                    pass
            with open(path, "wb") as file:
                file.write(bytes.fromhex(case["file"]))
        journal = Journal(path, case["max_bytes"])
        results = []
        for op in case["ops"]:
            if op[0] == "reopen":
                journal.close()
                journal = Journal(path, case["max_bytes"])
                results.append(None)
            else:
                results.append(apply(journal, op))
        listed = summary(journal) if case.get("summary") else pending(journal)
        out = {"results": results, "pending": listed, "size": journal.size}
        journal.close()
        print(json.dumps(out))


def payload(nonce, length):
    return (nonce * (length // 4 + 1))[:length]


def crash(path, max_bytes, seed):
    random.seed(seed)
    journal = Journal(path, max_bytes)
    records = []
    for seq, data in journal:
        nonce = data[:4]
        records.append([seq, nonce.hex(), data == payload(nonce, len(data))])
    print("O " + json.dumps(records))
    while True:
        choice = random.getrandbits(4)
        if choice < 9:
            nonce = bytes(random.getrandbits(8) for _ in range(4))
            print("a " + nonce.hex())
            try:
                print("A", journal.append(payload(nonce, 4 + random.getrandbits(8))))
            except JournalFull:
                print("F")
        elif choice < 15:
            first = journal.first()
            if first is not None:
                seq = first[0] + random.getrandbits(2)
                try:
                    print("k", seq)
                    journal.ack(seq)
                    print("K", seq)
                except ValueError:  # beyond the last record
                    print("K -1")
        else:
            print("c")
            journal.compact()
            print("C")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "crash":
        crash(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        batch()
