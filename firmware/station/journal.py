"""An append-only journal of records on flash that survives a power cut at any moment.

The OCPP offline queue writes each transaction message here before sending it and acknowledges
it once the central system confirmed it. The backlog stays on flash: the heap holds a handful
of counters and offsets, and reading the oldest pending record reads only that record.

On-flash format: one file, a sequence of records, integers big-endian:

    offset  size  field
    0       1     magic 0xA5
    1       1     kind: 1 DATA, 2 ACK, 3 MARK
    2       2     payload length n (0 for ACK and MARK)
    4       4     sequence number
    8       n     payload (DATA only: the caller's bytes)
    8+n     4     CRC-32 (IEEE 802.3, as zlib/binascii.crc32) of bytes 0 .. 8+n-1

- DATA records carry strictly increasing sequence numbers (1, 2, ...).
- ACK s: every DATA record with sequence number <= s is delivered. Acks only grow.
- MARK s: sequence numbers up to s were issued (keeps numbering increasing across compaction).

Power-cut safety: a record is written in one go and flushed (the fsync of the port) before
`append`/`ack` return, so only the last record can be torn. On open, every record is checked
(header, length, CRC); damaged bytes are skipped up to the next intact record (a torn tail,
or a corrupt record in the middle whose neighbours survive), and a journal that had any
damage is rewritten clean. Compaction writes the live state (ACK, MARK, pending DATA records)
to `<path>.tmp`, flushes it and renames it over the journal; a `<path>.tmp` found on open is
an unfinished compaction and is deleted, unless the journal itself is missing (cut between
removing and renaming on a file system whose rename does not replace), then it is the journal.

Size: `max_bytes` bounds the journal file; compaction needs as much again while it runs.
`append` raises `JournalFull` when the record would not fit even after compaction (or would
leave less than `reserve` bytes free, so a caller can keep room for messages that must never
be dropped).
"""

import binascii
import os
import struct

MAGIC = 0xA5
DATA, ACK, MARK = 1, 2, 3
HEADER = 8
OVERHEAD = 12  # header + CRC
MAX_PAYLOAD = 0xFFFF
_HEAD = 2 * OVERHEAD  # the ACK and MARK records that start a compacted journal
_CHUNK = 256
_MAGIC_BYTE = b"\xa5"


class JournalFull(Exception):
    pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class Journal:
    def __init__(self, path, max_bytes):
        self.path = path
        self.max_bytes = max_bytes
        self._tmp = path + ".tmp"
        self._header = bytearray(HEADER)
        self._crc = bytearray(4)
        self._chunk = bytearray(_CHUNK)
        self._acked = 0  # highest acknowledged sequence number
        self._last = 0  # highest sequence number issued
        self._size = 0  # bytes of the journal file
        self._first = 0  # offset of the oldest pending DATA record (= _size when none)
        self._pending = 0  # pending DATA records
        self._live = 0  # bytes of pending DATA records
        self._generation = 0  # counts compactions (iterators restart after one)
        self._damaged = False  # the last scan skipped damaged bytes
        if _exists(path):
            if _exists(self._tmp):
                os.remove(self._tmp)
        elif _exists(self._tmp):
            os.rename(self._tmp, path)
        else:
            open(path, "wb").close()
        self._file = open(path, "r+b")
        self._load()

    # Public interface.

    @property
    def pending(self):
        """Number of records appended and not yet acknowledged."""
        return self._pending

    @property
    def size(self):
        """Bytes the journal file occupies."""
        return self._size

    def append(self, data, reserve=0):
        """Write `data` as a new record, durable when this returns; return its sequence number.
        Raises JournalFull when it does not fit, or leaves less than `reserve` bytes free."""
        need = OVERHEAD + len(data)
        if len(data) > MAX_PAYLOAD or _HEAD + self._live + need + reserve > self.max_bytes:
            raise JournalFull()
        if self._size + need > self.max_bytes:
            self._compact()
        seq = self._last + 1
        self._write(self._file, self._size, DATA, seq, data)
        self._last = seq
        if not self._pending:
            self._first = self._size
        self._size += need
        self._pending += 1
        self._live += need
        return seq

    def first(self):
        """(seq, data) of the oldest unacknowledged record, or None."""
        if not self._pending:
            return None
        return self._read(self._first)

    def ack(self, seq):
        """Record, durably, that every record up to `seq` was delivered."""
        if seq <= self._acked:
            return
        if seq > self._last:
            raise ValueError("ack beyond the last record")
        self._acked = seq
        if self._size + OVERHEAD > self.max_bytes:
            self._compact()  # its ACK record persists the acknowledgement
            return
        self._write(self._file, self._size, ACK, seq, b"")
        self._size += OVERHEAD
        self._skip_delivered()
        if not self._pending and self._size > self.max_bytes // 4:
            self._compact()

    def __iter__(self):
        """Pending records, oldest first, as (seq, data); acks and appends may interleave."""
        generation = self._generation
        offset = self._first
        seq = self._acked
        while True:
            if generation != self._generation:  # compacted: offsets moved, find our place
                generation = self._generation
                offset = self._offset_after(seq)
            if offset >= self._size:
                return
            kind, length, record_seq = self._header_at(offset)
            if kind == DATA and record_seq > max(seq, self._acked):
                seq = record_seq
                yield self._read(offset)
            offset += OVERHEAD + length

    def compact(self):
        """Rewrite the journal with only what is still needed (power-cut safe)."""
        self._compact()

    def close(self):
        self._file.close()

    # Records.

    def _write(self, file, offset, kind, seq, data):
        header = self._header
        struct.pack_into(">BBHI", header, 0, MAGIC, kind, len(data), seq)
        crc = binascii.crc32(data, binascii.crc32(header)) & 0xFFFFFFFF
        struct.pack_into(">I", self._crc, 0, crc)
        file.seek(offset)
        file.write(header)
        if data:
            file.write(data)
        file.write(self._crc)
        file.flush()

    def _header_at(self, offset):
        self._file.seek(offset)
        self._file.readinto(self._header)
        _, kind, length, seq = struct.unpack_from(">BBHI", self._header, 0)
        return kind, length, seq

    def _read(self, offset):
        _, length, seq = self._header_at(offset)
        return seq, self._file.read(length)

    def _intact(self, offset):
        """Whether an undamaged record starts at `offset` (header now in self._header)."""
        file = self._file
        file.seek(offset)
        header = self._header
        if file.readinto(header) != HEADER or header[0] != MAGIC or not DATA <= header[1] <= MARK:
            return False
        length = (header[2] << 8) | header[3]
        if offset + OVERHEAD + length > self._size:
            return False
        crc = binascii.crc32(header)
        chunk = memoryview(self._chunk)
        while length:
            n = file.readinto(chunk[: min(length, _CHUNK)])
            crc = binascii.crc32(chunk[:n], crc)
            length -= n
        file.readinto(self._crc)
        return struct.unpack_from(">I", self._crc, 0)[0] == crc & 0xFFFFFFFF

    def _next_magic(self, offset):
        """Offset of the next magic byte at or after `offset`, else the file size."""
        file = self._file
        while offset < self._size:
            file.seek(offset)
            n = file.readinto(self._chunk)
            found = self._chunk.find(_MAGIC_BYTE, 0, n)
            if found >= 0:
                return offset + found
            offset += n
        return self._size

    def _scan(self):
        """Yield (offset, kind, length, seq) of every intact record in file order, skipping
        damaged bytes and DATA records whose sequence number does not increase."""
        self._damaged = False
        offset = 0
        last_data = 0
        while offset < self._size:
            if self._intact(offset):
                _, kind, length, seq = struct.unpack_from(">BBHI", self._header, 0)
                if kind != DATA or seq > last_data:
                    if kind == DATA:
                        last_data = seq
                    yield offset, kind, length, seq
                    offset += OVERHEAD + length
                    continue
            self._damaged = True
            offset = self._next_magic(offset + 1)

    # State.

    def _load(self):
        self._size = self._file.seek(0, 2)
        for _, kind, length, seq in self._scan():
            if kind == ACK:
                self._acked = max(self._acked, seq)
            else:
                self._last = max(self._last, seq)
            if kind == DATA:
                self._pending += 1
                self._live += OVERHEAD + length
        self._last = max(self._last, self._acked)
        if self._damaged:
            self._compact()
        else:
            self._skip_delivered()  # from offset 0, discounting delivered records

    def _skip_delivered(self):
        """Move `_first` past acknowledged DATA records and ACK/MARK records."""
        while self._first < self._size:
            kind, length, seq = self._header_at(self._first)
            if kind == DATA:
                if seq > self._acked:
                    return
                self._pending -= 1
                self._live -= OVERHEAD + length
            self._first += OVERHEAD + length

    def _offset_after(self, seq):
        """Offset of the first pending DATA record after `seq`, else the file size."""
        offset = self._first
        while offset < self._size:
            kind, length, record_seq = self._header_at(offset)
            if kind == DATA and record_seq > seq:
                return offset
            offset += OVERHEAD + length
        return self._size

    def _compact(self):
        out = open(self._tmp, "wb")
        try:
            self._write(out, 0, ACK, self._acked, b"")
            self._write(out, OVERHEAD, MARK, self._last, b"")
            size = _HEAD
            pending = 0
            for offset, kind, length, seq in self._scan():
                if kind == DATA and seq > self._acked:
                    self._copy(offset, OVERHEAD + length, out)
                    size += OVERHEAD + length
                    pending += 1
            out.flush()
        finally:
            out.close()
        self._file.close()
        try:
            os.rename(self._tmp, self.path)
        except OSError:  # file systems whose rename does not replace (see the docstring)
            os.remove(self.path)
            os.rename(self._tmp, self.path)
        self._file = open(self.path, "r+b")
        self._size = size
        self._first = _HEAD if pending else size
        self._pending = pending
        self._live = size - _HEAD
        self._generation += 1

    def _copy(self, offset, length, out):
        chunk = memoryview(self._chunk)
        self._file.seek(offset)
        while length:
            n = self._file.readinto(chunk[: min(length, _CHUNK)])
            out.write(chunk[:n])
            length -= n
