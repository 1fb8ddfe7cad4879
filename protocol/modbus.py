"""Modbus RTU codec for energy meters: CRC-16, read requests, responses, register encodings.

Sans-I/O and allocation-lean: runs unchanged on MicroPython and CPython. The master side builds
read requests (function 0x03 read holding registers, 0x04 read input registers) and finds the
response to a request in whatever bytes arrived (leading noise, partial frames, corrupt frames);
the slave side (used by the simulated meter) parses requests and encodes responses.

Register values are decoded from and encoded into buffers in place: f32 (IEEE 754), u16, u32,
s32 and u64, with big-endian words (the Modbus convention: high word first) or swapped words
(low word first), each word always big-endian.

Register maps (`MAPS`) describe what the station reads from each supported meter model as a
tuple of blocks, one read request each: (function, first register, register count, swapped
words, entries). An entry is (field, phase, register, kind, scale): the decoded raw value times
scale is the value of `field` of a meter Reading (phase -1: a scalar field; 0..2: an index of a
per-phase list). Sources: Eastron SDM630 and SDM120 Modbus protocol documents (input registers,
float32, energy in kWh), ABB B23/B24 user manual register map (holding registers, integers:
energy u64 in 0.01 kWh, voltage u32 in 0.1 V, current u32 in 0.01 A, power s32 in 0.01 W,
frequency u16 in 0.01 Hz).
"""

import struct
from array import array

READ_HOLDING = 0x03
READ_INPUT = 0x04
MAX_FRAME = 256  # RTU frame limit: address + PDU (253) + CRC

# Response status from `find_response` besides the (positive) offset of the register data.
INCOMPLETE = 0  # no verdict yet: wait for more bytes (or time out)
CRC_ERROR = -1  # a frame for this request arrived with a wrong CRC
GARBAGE = -2  # enough bytes arrived and none of them can start the awaited frame
EXCEPTION = -0x100  # EXCEPTION - code: the slave answered with exception `code` (1..255)

# Exception codes of the Modbus application protocol.
ILLEGAL_FUNCTION = 1
ILLEGAL_DATA_ADDRESS = 2
ILLEGAL_DATA_VALUE = 3
SLAVE_DEVICE_FAILURE = 4

# Register encodings and their width in registers.
F32, U16, U32, S32, U64 = 0, 1, 2, 3, 4
WIDTH = (2, 1, 2, 2, 4)


def _crc_table():
    table = array("H", bytes(512))
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[byte] = crc
    return table


_CRC_TABLE = _crc_table()


def crc16(data, start=0, end=-1):
    """Modbus CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF) of data[start:end]; end -1
    means the end of data. The frame carries it low byte first."""
    table = _CRC_TABLE
    crc = 0xFFFF
    for i in range(start, len(data) if end < 0 else end):
        crc = (crc >> 8) ^ table[(crc ^ data[i]) & 0xFF]
    return crc


def _seal(frame, length):
    """Write the CRC of frame[:length] at frame[length:length + 2]."""
    crc = crc16(frame, 0, length)
    frame[length] = crc & 0xFF
    frame[length + 1] = crc >> 8


def _crc_ok(frame, start, length):
    crc = crc16(frame, start, start + length)
    end = start + length
    return frame[end] == crc & 0xFF and frame[end + 1] == crc >> 8


def read_request(address, function, register, count):
    """The 8-byte request reading `count` registers from `register` of slave `address`."""
    if not 1 <= address <= 247 or function not in (READ_HOLDING, READ_INPUT):
        raise ValueError("bad address or function")
    if not 1 <= count <= 125 or not 0 <= register <= 0xFFFF:
        raise ValueError("bad register range")
    frame = bytearray(8)
    struct.pack_into(">BBHH", frame, 0, address, function, register, count)
    _seal(frame, 6)
    return bytes(frame)


def response_length(count):
    """Length of a normal response to a request for `count` registers."""
    return 5 + 2 * count


def find_response(buf, length, address, function, count):
    """Look for the response to a read request in buf[:length] (bytes received so far).

    Returns the offset of the register data (> 0) once a complete valid response is there,
    EXCEPTION - code for a valid exception response, CRC_ERROR for a frame of the right shape
    with a wrong CRC, GARBAGE when at least a full response's worth of bytes arrived and no
    frame can still complete, else INCOMPLETE. Leading noise bytes are skipped (RS-485 lines
    often glitch when the driver turns around); the first complete frame-shaped candidate
    decides, so a corrupt answer is reported as such rather than waited on."""
    data_bytes = 2 * count
    waiting = INCOMPLETE  # verdict while a candidate is still incomplete
    last = length - 1
    for start in range(length):
        if buf[start] != address:
            continue
        if start == last:
            return waiting
        code = buf[start + 1]
        if code == function | 0x80:
            if start + 5 > length:
                return waiting
            if _crc_ok(buf, start, 3):
                return EXCEPTION - buf[start + 2]
            waiting = CRC_ERROR
        elif code == function:
            if start + 2 == length:
                return waiting
            if buf[start + 2] != data_bytes:
                continue
            if start + 5 + data_bytes > length:
                return waiting
            if _crc_ok(buf, start, 3 + data_bytes):
                return start + 3
            waiting = CRC_ERROR
    if waiting == CRC_ERROR:
        return CRC_ERROR
    return GARBAGE if length >= response_length(count) else INCOMPLETE


def error_code(status):
    """Short classification of a failed `find_response` status, as meter readings report it."""
    if status == CRC_ERROR:
        return "crc"
    if status <= EXCEPTION:
        return "exception:%d" % (EXCEPTION - status)
    return "garbage"


# Slave side.


def parse_request(frame):
    """(address, function, register, count) of a valid 8-byte read request, else None."""
    if len(frame) != 8 or not _crc_ok(frame, 0, 6):
        return None
    request = struct.unpack_from(">BBHH", frame, 0)
    if request[1] not in (READ_HOLDING, READ_INPUT):
        return None
    return request


def encode_response(address, function, data):
    """A normal read response carrying the register bytes `data`."""
    frame = bytearray(5 + len(data))
    frame[0] = address
    frame[1] = function
    frame[2] = len(data)
    frame[3 : 3 + len(data)] = data
    _seal(frame, 3 + len(data))
    return bytes(frame)


def encode_exception(address, function, code):
    """An exception response: the function code with its high bit set, then the code."""
    frame = bytearray(5)
    frame[0] = address
    frame[1] = function | 0x80
    frame[2] = code
    _seal(frame, 3)
    return bytes(frame)


# Register encodings.

_scratch = bytearray(4)


def _words(buf, offset, words, swapped):
    """The unsigned integer in `words` registers at buf[offset:]."""
    value = 0
    for i in range(words):
        j = offset + 2 * (words - 1 - i if swapped else i)
        value = (value << 16) | (buf[j] << 8) | buf[j + 1]
    return value


def _put_words(buf, offset, words, swapped, value):
    for i in range(words):
        j = offset + 2 * (i if swapped else words - 1 - i)
        buf[j] = (value >> 8) & 0xFF
        buf[j + 1] = value & 0xFF
        value >>= 16


def decode(buf, offset, kind, swapped=False):
    """The value of encoding `kind` at buf[offset:] (float for F32, int otherwise)."""
    if kind == F32:
        struct.pack_into(">I", _scratch, 0, _words(buf, offset, 2, swapped))
        return struct.unpack_from(">f", _scratch, 0)[0]
    value = _words(buf, offset, WIDTH[kind], swapped)
    if kind == S32 and value & 0x80000000:
        value -= 0x100000000
    return value


def encode(buf, offset, kind, value, swapped=False):
    """Write `value` with encoding `kind` at buf[offset:]; integers must fit the encoding."""
    if kind == F32:
        struct.pack_into(">f", _scratch, 0, value)
        value = struct.unpack_from(">I", _scratch, 0)[0]
        words = 2
    else:
        words = WIDTH[kind]
        low = -0x80000000 if kind == S32 else 0
        if not low <= value < low + (1 << (16 * words)):
            raise ValueError("value out of range")
        value &= (1 << (16 * words)) - 1
    _put_words(buf, offset, words, swapped, value)


# Register maps of the supported meters (see the module docstring for the entry layout).

PHASES = {"SDM630": 3, "SDM120": 1, "B23": 3}


def register_map(model):
    """The register map of a supported meter model; ValueError names the supported ones."""
    if model not in MAPS:
        raise ValueError("unknown meter model %r (supported: SDM630, SDM120, B23)" % (model,))
    return MAPS[model]

_SDM_FREQUENCY_AND_ENERGY = (
    READ_INPUT,
    0x0046,
    6,
    False,
    (
        ("frequency_hz", -1, 0x0046, F32, 1.0),
        ("energy_wh", -1, 0x0048, F32, 1000.0),  # kWh
        ("energy_export_wh", -1, 0x004A, F32, 1000.0),
    ),
)

MAPS = {
    "SDM630": (
        (
            READ_INPUT,
            0x0000,
            12,
            False,
            (
                ("voltage_v", 0, 0x0000, F32, 1.0),
                ("voltage_v", 1, 0x0002, F32, 1.0),
                ("voltage_v", 2, 0x0004, F32, 1.0),
                ("current_a", 0, 0x0006, F32, 1.0),
                ("current_a", 1, 0x0008, F32, 1.0),
                ("current_a", 2, 0x000A, F32, 1.0),
            ),
        ),
        (READ_INPUT, 0x0034, 2, False, (("power_w", -1, 0x0034, F32, 1.0),)),
        _SDM_FREQUENCY_AND_ENERGY,
    ),
    "SDM120": (
        (
            READ_INPUT,
            0x0000,
            14,
            False,
            (
                ("voltage_v", 0, 0x0000, F32, 1.0),
                ("current_a", 0, 0x0006, F32, 1.0),
                ("power_w", -1, 0x000C, F32, 1.0),
            ),
        ),
        _SDM_FREQUENCY_AND_ENERGY,
    ),
    "B23": (
        (
            READ_HOLDING,
            0x5000,
            8,
            False,
            (
                ("energy_wh", -1, 0x5000, U64, 10.0),  # 0.01 kWh
                ("energy_export_wh", -1, 0x5004, U64, 10.0),
            ),
        ),
        (
            READ_HOLDING,
            0x5B00,
            0x2D,
            False,
            (
                ("voltage_v", 0, 0x5B00, U32, 0.1),
                ("voltage_v", 1, 0x5B02, U32, 0.1),
                ("voltage_v", 2, 0x5B04, U32, 0.1),
                ("current_a", 0, 0x5B0C, U32, 0.01),
                ("current_a", 1, 0x5B0E, U32, 0.01),
                ("current_a", 2, 0x5B10, U32, 0.01),
                ("power_w", -1, 0x5B14, S32, 0.01),
                ("frequency_hz", -1, 0x5B2C, U16, 0.01),
            ),
        ),
    ),
}
