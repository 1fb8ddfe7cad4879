"""firmware/station/journal.py under micropython: behaviour against a model, the documented
on-flash format (checked with an independent encoder/parser written here), recovery from
truncation and corruption at any byte, and real power cuts (SIGKILL of the process)."""

import json
import random
import signal
import struct
import subprocess
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host import mpy
from tests.mp_batch import under_micropython

SCRIPT = Path(__file__).with_name("mp_journal.py")
DATA, ACK, MARK = 1, 2, 3
OVERHEAD = 12
HEAD = 2 * OVERHEAD  # ACK + MARK at the start of a compacted journal
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the documented format, implemented independently ------------------------------------------


def record(kind, seq, payload=b""):
    body = struct.pack(">BBHI", 0xA5, kind, len(payload), seq) + payload
    return body + struct.pack(">I", zlib.crc32(body))


def parse_clean(blob):
    """Records of a journal file that must be entirely well-formed: [(kind, seq, payload)]."""
    records, offset = [], 0
    while offset < len(blob):
        magic, kind, length, seq = struct.unpack_from(">BBHI", blob, offset)
        end = offset + 8 + length
        assert magic == 0xA5 and kind in (DATA, ACK, MARK)
        assert struct.unpack_from(">I", blob, end)[0] == zlib.crc32(blob[offset:end])
        records.append((kind, seq, blob[offset + 8 : end]))
        offset = end + 4
    return records


def pending_of(records):
    acked = max([seq for kind, seq, _ in records if kind == ACK], default=0)
    return [[seq, payload.hex()] for kind, seq, payload in records if kind == DATA and seq > acked]


# -- behaviour against a model ------------------------------------------------------------------


class Model:
    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.records = []  # (seq, data) of every append
        self.acked = 0
        self.last = 0

    def pending(self):
        return [[seq, data.hex()] for seq, data in self.records if seq > self.acked]

    def append(self, data, reserve):
        live = sum(OVERHEAD + len(bytes.fromhex(d)) for _, d in self.pending())
        if HEAD + live + OVERHEAD + len(data) + reserve > self.max_bytes:
            return "full"
        self.last += 1
        self.records.append((self.last, data))
        return self.last

    def ack(self, seq):
        if seq > self.last:
            return "error"
        self.acked = max(self.acked, seq)
        return None


@st.composite
def op_sequences(draw):
    max_bytes = draw(st.integers(300, 3000))
    model = Model(max_bytes)
    ops, expected = [], []
    for _ in range(draw(st.integers(1, 40))):
        name = draw(
            st.sampled_from(
                ["append"] * 4
                + ["ack", "ack", "first", "iter", "compact", "reopen"]
                + ["ack_while_iterating"]
            )
        )
        if name == "append":
            data = draw(st.binary(max_size=draw(st.sampled_from([8, 300]))))
            reserve = draw(st.sampled_from([0, 0, 100]))
            ops.append(["append", data.hex(), reserve])
            expected.append(model.append(data, reserve))
        elif name == "ack":
            seq = model.acked + draw(st.integers(-1, 4))
            ops.append(["ack", seq])
            expected.append(model.ack(seq))
        elif name == "first":
            ops.append(["first"])
            pending = model.pending()
            expected.append(pending[0] if pending else None)
        elif name in ("iter", "ack_while_iterating"):
            ops.append([name])
            pending = model.pending()
            if name == "iter":
                expected.append(pending)
            else:
                expected.append([seq for seq, _ in pending])
                if pending:
                    model.ack(pending[-1][0])
        else:
            ops.append([name])
            expected.append(None)
    return max_bytes, ops, expected, model.pending()


def test_journal_behaves_like_its_model(tmp_path):
    cases, wanted = [], []

    @SETTINGS
    @given(op_sequences())
    def collect(sequence):
        max_bytes, ops, expected, pending = sequence
        path = str(tmp_path / f"j{len(cases)}")
        cases.append({"path": path, "max_bytes": max_bytes, "file": "", "ops": ops})
        wanted.append((expected, pending))

    collect()
    results = under_micropython(SCRIPT, cases)
    for case, (expected, pending), result in zip(cases, wanted, results, strict=True):
        assert result["results"] == expected, case
        assert result["pending"] == pending, case
        assert result["size"] <= case["max_bytes"]
        blob = Path(case["path"]).read_bytes()
        assert len(blob) == result["size"]
        assert pending_of(parse_clean(blob)) == pending  # the format is what the docstring says


def test_file_layout_is_as_documented(tmp_path):
    path = str(tmp_path / "j")
    ops = [["append", "68656c6c6f", 0], ["append", "", 0], ["ack", 1]]
    [result] = under_micropython(
        SCRIPT, [{"path": path, "max_bytes": 1000, "file": None, "ops": ops}]
    )
    assert result["results"] == [1, 2, None]
    assert Path(path).read_bytes() == record(DATA, 1, b"hello") + record(DATA, 2) + record(ACK, 1)
    # Compaction keeps the acknowledgement, the numbering and the pending record.
    [result] = under_micropython(
        SCRIPT, [{"path": path, "max_bytes": 1000, "file": None, "ops": [["compact"]]}]
    )
    assert Path(path).read_bytes() == record(ACK, 1) + record(MARK, 2) + record(DATA, 2)


def test_a_backlog_of_a_thousand_records_round_trips(tmp_path):
    path = str(tmp_path / "j")
    ops = [["fill", 1000, 300], ["reopen"], ["first"], ["ack", 500], ["reopen"], ["first"]]
    case = {"path": path, "max_bytes": 400_000, "file": "", "ops": ops, "summary": True}
    [result] = under_micropython(SCRIPT, [case])
    assert result["results"][0] == 1000
    assert result["results"][2] == [1, "01" * 300]
    assert result["results"][5] == [501, f"{501 & 0xFF:02x}" * 300]
    assert result["pending"] == [500, 501, 1000]
    assert result["size"] == 1000 * (OVERHEAD + 300) + OVERHEAD  # + the ACK record


def test_a_full_journal_refuses_then_accepts_after_acks(tmp_path):
    path = str(tmp_path / "j")
    record_size = OVERHEAD + 100
    fits = (2000 - HEAD) // record_size
    ops = [["append", "00" * 100, 0] for _ in range(fits + 1)]
    ops += [["ack", 3], ["append", "00" * 100, 0], ["append", "00" * 100, 2000]]
    [result] = under_micropython(
        SCRIPT, [{"path": path, "max_bytes": 2000, "file": "", "ops": ops}]
    )
    assert result["results"][:fits] == list(range(1, fits + 1))
    assert result["results"][fits] == "full"
    assert result["results"][-2] == fits + 1  # room again: compaction reclaimed acked records
    assert result["results"][-1] == "full"  # the reserve is kept free
    assert result["size"] <= 2000


# -- recovery from truncation and corruption at any byte ----------------------------------------


@st.composite
def journal_files(draw):
    """A well-formed journal: [(kind, seq, payload)] and its bytes, maybe compacted before."""
    records = []
    last = draw(st.sampled_from([0, 0, 7]))
    if last:
        records += [(ACK, draw(st.integers(0, last)), b""), (MARK, last, b"")]
    acked = records[0][1] if records else 0
    for _ in range(draw(st.integers(1, 12))):
        if draw(st.integers(0, 3)) or last == acked:
            last += 1
            records.append((DATA, last, draw(st.binary(max_size=60))))
        else:
            acked = draw(st.integers(acked + 1, last))
            records.append((ACK, acked, b""))
    blobs = [record(kind, seq, payload) for kind, seq, payload in records]
    return records, blobs


def damage(draw, blobs):
    """Truncate, flip one byte, or overwrite a run of bytes: (new bytes, indexes of the
    records left whole)."""
    blob = b"".join(blobs)
    starts = [sum(len(b) for b in blobs[:i]) for i in range(len(blobs))]
    how = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if how == "truncate":
        cut = draw(st.integers(0, len(blob)))
        whole = [i for i, s in enumerate(starts) if s + len(blobs[i]) <= cut]
        return blob[:cut], whole
    at = draw(st.integers(0, len(blob) - 1))
    if how == "flip":
        new = bytearray(blob)
        new[at] ^= draw(st.integers(1, 255))
    else:
        noise = draw(st.binary(min_size=1, max_size=40))
        new = bytearray(blob[:at] + noise + blob[at + len(noise) :])[: len(blob)]
    changed = [i for i in range(len(blob)) if new[i] != blob[i]]
    whole = [
        i for i, s in enumerate(starts) if not any(s <= c < s + len(blobs[i]) for c in changed)
    ]
    return bytes(new), whole


def test_recovery_after_truncation_or_corruption_anywhere(tmp_path):
    cases, wanted = [], []

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(journal_files(), st.data())
    def collect(journal, data):
        records, blobs = journal
        blob, whole = damage(data.draw, blobs)
        survivors = [records[i] for i in whole]
        next_seq = max([seq for _, seq, _ in survivors], default=0) + 1
        path = str(tmp_path / f"j{len(cases)}")
        ops = [["iter"], ["append", "ff", 0], ["reopen"], ["iter"]]
        cases.append({"path": path, "max_bytes": 10_000, "file": blob.hex(), "ops": ops})
        wanted.append((pending_of(survivors), next_seq))

    collect()
    results = under_micropython(SCRIPT, cases)
    for case, (pending, next_seq), result in zip(cases, wanted, results, strict=True):
        # Every record the damage did not touch is still there; nothing else appears.
        assert result["results"][0] == pending, case
        # Numbering goes on above everything that survived, and the file is clean again.
        assert result["results"][1] == next_seq, case
        assert result["results"][3] == pending + [[next_seq, "ff"]], case
        parse_clean(Path(case["path"]).read_bytes())


def test_unfinished_compaction_is_discarded_or_completed(tmp_path):
    path = tmp_path / "j"
    journal = record(DATA, 1, b"a") + record(DATA, 2, b"b")
    compacted = record(ACK, 1) + record(MARK, 2) + record(DATA, 2, b"b")
    # Cut while writing the new file: the journal is intact, the partial copy is dropped.
    path.write_bytes(journal)
    Path(f"{path}.tmp").write_bytes(compacted[:30])
    case = {"path": str(path), "max_bytes": 1000, "file": None, "ops": [["iter"]]}
    [result] = under_micropython(SCRIPT, [case])
    assert result["results"][0] == [[1, "61"], [2, "62"]]
    assert not Path(f"{path}.tmp").exists()
    # Cut after removing the journal, before renaming the finished copy: the copy is it.
    path.unlink()
    Path(f"{path}.tmp").write_bytes(compacted)
    [result] = under_micropython(SCRIPT, [case])
    assert result["results"][0] == [[2, "62"]]


# -- power cuts: SIGKILL at random moments ------------------------------------------------------


def intact(nonce_hex, data_hex):
    nonce = bytes.fromhex(nonce_hex)
    data = bytes.fromhex(data_hex)
    return data == bytes(nonce[i % 4] for i in range(len(data)))


class CrashModel:
    """What the killed processes reported as done, and what may have been in flight."""

    def __init__(self):
        self.appended = {}  # seq -> nonce of every append that returned
        self.acked = 0  # highest acknowledgement that returned (or was found persisted)
        self.issued = 0  # highest sequence number seen

    def check_reopened(self, found, in_flight):
        """`found`: [[seq, nonce, intact]] pending after reopening; `in_flight`: the last
        started, unfinished operation (kind, value) or None."""
        seqs = [seq for seq, _, _ in found]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert all(ok for _, _, ok in found), found
        ack_options = {self.acked}
        if in_flight and in_flight[0] == "k":
            ack_options.add(max(self.acked, in_flight[1]))
        new_seq = None
        if in_flight and in_flight[0] == "a" and seqs and seqs[-1] == self.issued + 1:
            new_seq = seqs[-1]  # the append in flight made it to flash whole
            assert found[-1][1] == in_flight[1]
        durable = [seq for seq in seqs if seq != new_seq]
        matches = [
            acked
            for acked in ack_options
            if durable == sorted(s for s in self.appended if s > acked)
        ]
        assert matches, (found, in_flight, self.acked, sorted(self.appended)[-5:])
        self.acked = max(matches)
        for seq, nonce, _ in found:
            self.appended[seq] = nonce
        self.issued = max([self.issued, *seqs])
        self.forget_acked()

    def forget_acked(self):
        for seq in [s for s in self.appended if s <= self.acked]:
            del self.appended[seq]

    def completed(self, line, started):
        if line[0] == "A":
            seq = int(line[1])
            assert seq > self.issued and seq > self.acked  # numbering never goes back
            self.appended[seq] = started[1]
            self.issued = seq
        elif line[0] == "K" and int(line[1]) >= 0:
            self.acked = max(self.acked, int(line[1]))
            self.forget_acked()


def run_until_killed(path, max_bytes, seed, lines_before_kill):
    """Start the crash driver, let it report `lines_before_kill` lines, SIGKILL it, and
    return every line it printed."""
    command = mpy.command(SCRIPT, "crash", str(path), str(max_bytes), str(seed))
    with subprocess.Popen(
        command, env=mpy.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        lines = []
        try:
            while len(lines) < lines_before_kill:
                line = process.stdout.readline()
                assert line, process.stderr.read()
                lines.append(line)
        finally:
            process.send_signal(signal.SIGKILL)
        rest = process.stdout.read()  # not communicate(): it would skip readline's buffer
    lines += rest.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # cut short by the kill: the operation it announces had not started
    return [line.split() for line in lines]


def test_power_cuts_at_random_moments_lose_nothing_and_resurrect_nothing(tmp_path):
    path = tmp_path / "journal"
    rng = random.Random(20261126)
    model = CrashModel()
    in_flight = None
    for run in range(40):
        lines = run_until_killed(path, 6000, run, rng.randint(2, 120))
        assert lines[0][0] == "O"
        model.check_reopened(json.loads(" ".join(lines[0][1:])), in_flight)
        in_flight = None
        for line in lines[1:]:
            if not line:
                continue
            if line[0] in ("a", "k"):
                in_flight = (line[0], line[1] if line[0] == "a" else int(line[1]))
            elif line[0] in ("A", "K", "F"):
                model.completed(line, in_flight)
                in_flight = None
            elif line[0] == "c":
                in_flight = ("c", None)
            elif line[0] == "C":
                in_flight = None
    # A last reopen after the last cut must pass the same checks.
    lines = run_until_killed(path, 6000, 999, 1)
    model.check_reopened(json.loads(" ".join(lines[0][1:])), in_flight)
