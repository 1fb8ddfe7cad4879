"""protocol/modbus.py: CRC-16, requests, finding responses in noisy input, register encodings,
register maps; the same cases are replayed under micropython and must agree."""

import math
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import modbus
from tests import mp_modbus
from tests.mp_batch import under_micropython

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

addresses = st.integers(1, 247)
functions = st.sampled_from([modbus.READ_HOLDING, modbus.READ_INPUT])
counts = st.integers(1, 125)


def reference_crc(data):
    """Bit-by-bit Modbus CRC, written from the specification independently of the table."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def response(address, function, registers):
    return modbus.encode_response(address, function, bytes(registers))


def find(data, address, function, count, length=None):
    return modbus.find_response(
        data, len(data) if length is None else length, address, function, count
    )


def agrees_with_micropython(cases, results, floats=False):
    got = under_micropython(mp_modbus.__file__, cases)
    if floats:  # compare as float32 bit patterns: float repr differs between interpreters
        got = [[hex_, struct.pack(">f", value)] for hex_, value in got]
        results = [[hex_, struct.pack(">f", value)] for hex_, value in results]
    assert got == results


# -- CRC and requests ---------------------------------------------------------------------------


def test_crc_of_a_known_request():
    # The request every Eastron document starts with: read 2 input registers from 0 at slave 1.
    assert modbus.read_request(1, 4, 0, 2) == bytes.fromhex("01040000000271cb")


def test_crc_matches_reference_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(st.binary(max_size=300))
    def check(data):
        assert modbus.crc16(data) == reference_crc(data)
        case = {"op": "crc", "data": data.hex()}
        cases.append(case)
        results.append(mp_modbus.run(case))

    check()
    assert under_micropython(mp_modbus.__file__, cases) == results


@SETTINGS
@given(st.binary(min_size=1, max_size=300))
def test_a_frame_with_its_crc_checks_to_zero(data):
    crc = modbus.crc16(data)
    assert modbus.crc16(data + bytes([crc & 0xFF, crc >> 8])) == 0


def test_requests_round_trip_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(addresses, functions, st.integers(0, 0xFFFF), counts)
    def check(address, function, register, count):
        frame = modbus.read_request(address, function, register, count)
        assert len(frame) == 8
        assert modbus.parse_request(frame) == (address, function, register, count)
        case = {
            "op": "request",
            "address": address,
            "function": function,
            "register": register,
            "count": count,
        }
        cases.append(case)
        results.append(mp_modbus.run(case))

    check()
    assert under_micropython(mp_modbus.__file__, cases) == results


@SETTINGS
@given(addresses, functions, st.integers(0, 0xFFFF), counts, st.data())
def test_corrupt_or_truncated_requests_are_ignored(address, function, register, count, data):
    frame = bytearray(modbus.read_request(address, function, register, count))
    cut = data.draw(st.integers(0, 7))
    assert modbus.parse_request(bytes(frame[:cut])) is None
    index = data.draw(st.integers(0, 7))
    frame[index] ^= data.draw(st.integers(1, 255))
    assert modbus.parse_request(bytes(frame)) is None


@pytest.mark.parametrize(
    "args",
    [(0, 4, 0, 1), (248, 4, 0, 1), (1, 6, 0, 1), (1, 4, 0, 0), (1, 3, 0, 126), (1, 3, -1, 1)],
)
def test_bad_request_arguments_are_refused(args):
    with pytest.raises(ValueError):
        modbus.read_request(*args)


# -- finding the response -----------------------------------------------------------------------


@st.composite
def responses(draw):
    address = draw(addresses)
    function = draw(functions)
    count = draw(counts)
    registers = draw(st.binary(min_size=2 * count, max_size=2 * count))
    return address, function, count, response(address, function, registers)


def test_responses_are_found_whole_and_only_whole_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(responses(), st.binary(max_size=20), st.data())
    def check(resp, noise, data):
        address, function, count, frame = resp
        # Noise that could itself look like the start of our frame is a different property.
        noise = bytes(b for b in noise if b != address)
        stream = noise + frame
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream) - 1), max_size=8)))
        for cut in cuts:  # a truncated frame is never accepted, nor is it an error
            assert find(stream, address, function, count, cut) in (
                modbus.INCOMPLETE,
                modbus.GARBAGE,
            )
        assert find(stream, address, function, count) == len(noise) + 3
        case = {
            "op": "find",
            "data": stream.hex(),
            "cuts": cuts,
            "address": address,
            "function": function,
            "count": count,
        }
        cases.append(case)
        results.append(mp_modbus.run(case))

    check()
    assert under_micropython(mp_modbus.__file__, cases) == results


@SETTINGS
@given(responses(), st.data())
def test_any_corrupted_byte_is_never_accepted(resp, data):
    address, function, count, frame = resp
    frame = bytearray(frame)
    index = data.draw(st.integers(0, len(frame) - 1))
    frame[index] ^= data.draw(st.integers(1, 255))
    assert find(bytes(frame), address, function, count) <= 0


@SETTINGS
@given(responses())
def test_a_bad_crc_is_classified_as_crc(resp):
    address, function, count, frame = resp
    broken = frame[:-1] + bytes([frame[-1] ^ 0x01])
    status = find(broken, address, function, count)
    assert status == modbus.CRC_ERROR
    assert modbus.error_code(status) == "crc"


@SETTINGS
@given(addresses, functions, st.integers(1, 255), counts)
def test_exception_responses_are_classified(address, function, code, count):
    frame = modbus.encode_exception(address, function, code)
    assert frame[1] == function | 0x80
    status = find(frame, address, function, count)
    assert status == modbus.EXCEPTION - code
    assert modbus.error_code(status) == f"exception:{code}"
    for cut in range(len(frame)):
        assert find(frame, address, function, count, cut) == modbus.INCOMPLETE


@SETTINGS
@given(responses())
def test_replies_of_another_slave_or_function_are_not_ours(resp):
    address, function, count, frame = resp
    other_address = address % 247 + 1
    other_function = modbus.READ_INPUT if function == modbus.READ_HOLDING else modbus.READ_HOLDING
    assert find(frame, other_address, function, count) <= 0
    assert find(frame, address, other_function, count) <= 0
    if count < 125:  # a response with the wrong byte count is not the one we wait for
        assert find(frame, address, function, count + 1) <= 0


def test_garbage_never_crashes_and_is_classified_on_both_interpreters():
    cases, results = [], []
    allowed = {modbus.INCOMPLETE, modbus.CRC_ERROR, modbus.GARBAGE}

    @SETTINGS
    @given(st.binary(max_size=300), addresses, functions, counts)
    def check(data, address, function, count):
        status = find(data, address, function, count)
        assert status in allowed or status <= modbus.EXCEPTION or 0 < status < len(data)
        if address not in data and len(data) >= modbus.response_length(count):
            assert status == modbus.GARBAGE
            assert modbus.error_code(status) == "garbage"
        case = {
            "op": "find",
            "data": data.hex(),
            "cuts": [],
            "address": address,
            "function": function,
            "count": count,
        }
        cases.append(case)
        results.append(mp_modbus.run(case))

    check()
    assert under_micropython(mp_modbus.__file__, cases) == results


def test_slave_side_rejects_other_functions():
    frame = bytearray(b"\x01\x06\x00\x00\x00\x01")
    crc = modbus.crc16(frame)
    frame += bytes([crc & 0xFF, crc >> 8])
    assert modbus.parse_request(bytes(frame)) is None


# -- register encodings -------------------------------------------------------------------------

INTEGER_RANGES = {
    modbus.U16: (0, 0xFFFF),
    modbus.U32: (0, 0xFFFFFFFF),
    modbus.S32: (-0x80000000, 0x7FFFFFFF),
    modbus.U64: (0, 0xFFFFFFFFFFFFFFFF),
}


def test_integer_encodings_round_trip_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(st.sampled_from(sorted(INTEGER_RANGES)), st.booleans(), st.data())
    def check(kind, swapped, data):
        low, high = INTEGER_RANGES[kind]
        value = data.draw(st.integers(low, high))
        buf = bytearray(8)
        modbus.encode(buf, 0, kind, value, swapped)
        assert modbus.decode(buf, 0, kind, swapped) == value
        width = 2 * modbus.WIDTH[kind]
        big = value.to_bytes(width, "big", signed=kind == modbus.S32)
        words = [big[i : i + 2] for i in range(0, width, 2)]
        assert bytes(buf[:width]) == b"".join(reversed(words) if swapped else words)
        case = {"op": "encode", "kind": kind, "value": value, "swapped": swapped}
        cases.append(case)
        results.append(mp_modbus.run(case))

    check()
    assert under_micropython(mp_modbus.__file__, cases) == results


def test_float_encoding_round_trips_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(st.floats(width=32, allow_nan=False), st.booleans())
    def check(value, swapped):
        buf = bytearray(4)
        modbus.encode(buf, 0, modbus.F32, value, swapped)
        assert modbus.decode(buf, 0, modbus.F32, swapped) == value
        big = struct.pack(">f", value)
        assert bytes(buf) == (big[2:] + big[:2] if swapped else big)
        if not math.isinf(value):
            case = {"op": "encode", "kind": modbus.F32, "value": value, "swapped": swapped}
            cases.append(case)
            results.append(mp_modbus.run(case))

    check()
    agrees_with_micropython(cases, results, floats=True)


def test_known_register_values():
    assert modbus.decode(bytes.fromhex("43660000"), 0, modbus.F32) == 230.0
    assert modbus.decode(bytes.fromhex("00004366"), 0, modbus.F32, swapped=True) == 230.0
    assert modbus.decode(bytes.fromhex("12345678"), 0, modbus.U32, swapped=True) == 0x56781234
    assert modbus.decode(bytes.fromhex("ffffff38"), 0, modbus.S32) == -200
    assert modbus.decode(bytes.fromhex("0000000000000102"), 0, modbus.U64) == 258
    assert math.isnan(modbus.decode(bytes.fromhex("7fc00000"), 0, modbus.F32))


@pytest.mark.parametrize(
    "kind,value", [(modbus.U16, 0x10000), (modbus.U32, -1), (modbus.S32, 1 << 31)]
)
def test_integers_out_of_range_are_refused(kind, value):
    with pytest.raises(ValueError):
        modbus.encode(bytearray(8), 0, kind, value)


# -- register maps ------------------------------------------------------------------------------

FIELDS = {"energy_wh", "energy_export_wh", "power_w", "current_a", "voltage_v", "frequency_hz"}


@pytest.mark.parametrize("model", sorted(modbus.MAPS))
def test_register_maps_are_consistent(model):
    seen = set()
    for function, start, count, _swapped, entries in modbus.MAPS[model]:
        assert function in (modbus.READ_HOLDING, modbus.READ_INPUT)
        assert 1 <= count <= 125
        for field, phase, register, kind, _scale in entries:
            assert field in FIELDS
            assert -1 <= phase < modbus.PHASES[model]
            assert start <= register and register + modbus.WIDTH[kind] <= start + count
            assert (field, phase) not in seen
            seen.add((field, phase))
    phases = modbus.PHASES[model]
    expected = {("energy_wh", -1), ("energy_export_wh", -1), ("power_w", -1), ("frequency_hz", -1)}
    expected |= {(field, p) for field in ("current_a", "voltage_v") for p in range(phases)}
    assert seen == expected


def test_an_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="SDM630"):
        modbus.register_map("SDM72")


def entry(model, field, phase=-1):
    for function, _start, _count, _swapped, entries in modbus.MAPS[model]:
        for name, p, register, kind, scale in entries:
            if (name, p) == (field, phase):
                return function, register, kind, scale
    raise KeyError(field)


def test_register_addresses_from_the_manufacturers_documents():
    # Eastron: input registers (30001 + address), float32; energy in kWh.
    for model in ("SDM630", "SDM120"):
        assert entry(model, "energy_wh") == (modbus.READ_INPUT, 0x0048, modbus.F32, 1000.0)
        assert entry(model, "energy_export_wh") == (modbus.READ_INPUT, 0x004A, modbus.F32, 1000.0)
        assert entry(model, "frequency_hz") == (modbus.READ_INPUT, 0x0046, modbus.F32, 1.0)
        assert entry(model, "voltage_v", 0) == (modbus.READ_INPUT, 0x0000, modbus.F32, 1.0)
        assert entry(model, "current_a", 0) == (modbus.READ_INPUT, 0x0006, modbus.F32, 1.0)
    assert entry("SDM630", "power_w") == (modbus.READ_INPUT, 0x0034, modbus.F32, 1.0)
    assert entry("SDM630", "current_a", 2)[1] == 0x000A
    assert entry("SDM120", "power_w") == (modbus.READ_INPUT, 0x000C, modbus.F32, 1.0)
    # ABB B23: holding registers, integers with fixed resolution.
    assert entry("B23", "energy_wh") == (modbus.READ_HOLDING, 0x5000, modbus.U64, 10.0)
    assert entry("B23", "energy_export_wh") == (modbus.READ_HOLDING, 0x5004, modbus.U64, 10.0)
    assert entry("B23", "voltage_v", 2) == (modbus.READ_HOLDING, 0x5B04, modbus.U32, 0.1)
    assert entry("B23", "current_a", 0) == (modbus.READ_HOLDING, 0x5B0C, modbus.U32, 0.01)
    assert entry("B23", "power_w") == (modbus.READ_HOLDING, 0x5B14, modbus.S32, 0.01)
    assert entry("B23", "frequency_hz") == (modbus.READ_HOLDING, 0x5B2C, modbus.U16, 0.01)
