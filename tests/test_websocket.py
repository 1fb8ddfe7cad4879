"""protocol/websocket.py: handshake, frame encoder and incremental decoder, on CPython and
under micropython (the same cases, compared result for result).

Server frames are built with the `websockets` package's own frame serializer, and our client
frames are parsed with its parser, so both directions are checked against an independent
implementation."""

import base64
import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from protocol import websocket as ws
from tests.mp_codecs import run, under_micropython

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def server_frame(opcode, payload, fin=True):
    return Frame(Opcode(opcode), bytes(payload), fin).serialize(mask=False)


def raw_frame(first_byte, payload):
    """A short unmasked frame written by hand, for frames `websockets` refuses to build."""
    return bytes([first_byte, len(payload)]) + payload


def parse_client_frame(data):
    reader = StreamReader()
    reader.feed_data(bytes(data))
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True)
    try:
        next(parser)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


def read_case(data, cuts=(), max_size=1 << 20):
    return {"op": "read", "data": bytes(data).hex(), "cuts": sorted(cuts), "max_size": max_size}


# -- handshake ----------------------------------------------------------------------------------


def test_accept_key_matches_rfc_example():
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_request_carries_key_subprotocol_and_auth():
    key = ws.new_key(bytes(range(16)))
    request = ws.handshake_request(
        "cs.example:9000", "/ocpp/CP1", key, headers=[("Authorization", ws.basic_auth("CP1", "s"))]
    ).decode()
    assert request.startswith("GET /ocpp/CP1 HTTP/1.1\r\n")
    assert request.endswith("\r\n\r\n")
    lines = request.split("\r\n")
    assert "Host: cs.example:9000" in lines
    assert "Sec-WebSocket-Key: " + key in lines
    assert "Sec-WebSocket-Protocol: ocpp1.6" in lines
    assert "Sec-WebSocket-Version: 13" in lines
    assert "Authorization: Basic " + base64.b64encode(b"CP1:s").decode() in lines
    assert len(base64.b64decode(key)) == 16


def test_handshake_request_refuses_header_injection():
    with pytest.raises(ValueError):
        ws.handshake_request("h", "/", "k", headers=[("X", "a\r\nEvil: 1")])


KEY = ws.new_key(os.urandom(16))
GOOD = {
    "Upgrade": "websocket",
    "Connection": "keep-alive, Upgrade",
    "Sec-WebSocket-Accept": base64.b64encode(
        hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    ).decode(),
    "Sec-WebSocket-Protocol": "ocpp1.6",
}


def response(status="HTTP/1.1 101 Switching Protocols", **changes):
    fields = dict(GOOD)
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    lines = [status] + [f"{name}: {value}" for name, value in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_good_response_gives_the_subprotocol():
    assert ws.check_handshake_response(response(), KEY) == "ocpp1.6"
    lines = response().decode().split("\r\n")
    lowered = [lines[0]] + [
        name.lower() + ":" + value
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    ]
    head = ("\r\n".join(lowered) + "\r\n\r\n").encode()
    assert ws.check_handshake_response(head, KEY) == "ocpp1.6"


@pytest.mark.parametrize(
    "head, status",
    [
        (response("HTTP/1.1 401 Unauthorized"), 401),
        (response("HTTP/1.1 200 OK"), 200),
        (response("SSH-2.0-OpenSSH"), None),
        (response(Upgrade=None), 101),
        (response(Upgrade="h2c"), 101),
        (response(Connection="keep-alive"), 101),
        (response(Sec_WebSocket_Accept=None), 101),
        (response(Sec_WebSocket_Accept=base64.b64encode(b"x" * 20).decode()), 101),
        (response(Sec_WebSocket_Protocol=None), 101),
        (response(Sec_WebSocket_Protocol="ocpp2.0.1"), 101),
        (response(Sec_WebSocket_Extensions="permessage-deflate"), 101),
        (b"HTTP/1.1 101 OK\r\nbroken header\r\n\r\n", 101),
        (b"\xff\xfe", None),
    ],
)
def test_bad_responses_are_refused(head, status):
    with pytest.raises(ws.HandshakeError) as raised:
        ws.check_handshake_response(head, KEY)
    assert raised.value.status == status


# -- client frames (encoder) -------------------------------------------------------------------

lengths = st.one_of(st.integers(0, 130), st.sampled_from([65535, 65536, 70000]))


@SETTINGS
@given(
    opcode=st.sampled_from([1, 2, 8, 9, 10]),
    length=lengths,
    mask=st.binary(min_size=4, max_size=4),
    fin=st.booleans(),
    data=st.data(),
)
def test_client_frames_parse_with_websockets(opcode, length, mask, fin, data):
    if opcode >= 8:
        length, fin = min(length, 125), True
    payload = (
        data.draw(st.binary(min_size=length, max_size=length))
        if length < 200
        else (os.urandom(length))
    )
    frame = ws.encode_frame(opcode, payload, mask, fin)
    parsed = parse_client_frame(frame)
    assert (parsed.opcode, parsed.data, parsed.fin) == (opcode, payload, fin)
    assert frame[1] & 0x80


def test_text_payload_is_sent_as_utf8():
    frame = ws.encode_frame(ws.OP_TEXT, "żółw", b"abcd")
    assert parse_client_frame(frame).data == "żółw".encode()


# -- server frames (decoder) -------------------------------------------------------------------


@st.composite
def streams(draw):
    """(bytes, frames) for a valid sequence of server frames: messages of text or binary,
    fragmented at random, with pings and pongs between fragments."""
    frames = []
    for _ in range(draw(st.integers(0, 4))):
        opcode = draw(st.sampled_from([ws.OP_TEXT, ws.OP_BINARY]))
        if opcode == ws.OP_TEXT:
            payload = draw(st.text(max_size=60)).encode()
        else:
            payload = draw(st.binary(max_size=200))
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0] + cuts, cuts + [len(payload)], strict=True)]
        for index, piece in enumerate(pieces):
            frames.append((opcode if index == 0 else 0, piece, index == len(pieces) - 1))
            if draw(st.booleans()):
                control = draw(st.sampled_from([ws.OP_PING, ws.OP_PONG]))
                frames.append((control, draw(st.binary(max_size=125)), True))
    if draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1008, 1011, 3000, 4999]))
        frames.append((ws.OP_CLOSE, ws.close_payload(code, draw(st.text(max_size=20))), True))
    data = b"".join(server_frame(*frame) for frame in frames)
    return data, frames


def expected(frames, max_size):
    """What the reader must report for `frames`: the events, then an error code or None."""
    events, message, opcode = [], b"", 0
    for op, payload, fin in frames:
        if op >= 8:
            if op == ws.OP_CLOSE:
                code = int.from_bytes(payload[:2], "big")
                events.append([op, [code, payload[2:].decode()]])
            else:
                events.append([op, payload.hex()])
            continue
        if len(message) + len(payload) > max_size:
            return [events, ws.CLOSE_TOO_BIG]
        opcode = op or opcode
        message += payload
        if fin:
            events.append([opcode, message.decode() if opcode == 1 else message.hex()])
            message = b""
    return [events, None]


def test_decoder_matches_model_and_micropython():
    cases, results = [], []

    @SETTINGS
    @given(stream=streams(), max_size=st.integers(0, 250), data=st.data())
    def check(stream, max_size, data):
        raw, frames = stream
        cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=6))
        case = read_case(raw, cuts, max_size)
        result = run(case)
        assert result == expected(frames, max_size)
        cases.append(case)
        results.append(result)

    check()
    assert under_micropython(cases) == results


def test_lengths_of_16_and_64_bits_byte_by_byte():
    for size in (126, 65535, 65536, 70001):
        payload = os.urandom(size)
        raw = server_frame(ws.OP_BINARY, payload)
        reader = ws.FrameReader(size)
        events = []
        for i in range(0, len(raw), 4093):
            events += reader.feed(raw[i : i + 4093])
        assert events == [(ws.OP_BINARY, payload)]


def test_oversized_message_is_refused_from_its_header_alone():
    header = server_frame(ws.OP_BINARY, b"x" * 70000)[:10]
    with pytest.raises(ws.WebSocketError) as raised:
        list(ws.FrameReader(65536).feed(header))
    assert raised.value.code == ws.CLOSE_TOO_BIG


def test_fragments_count_toward_the_maximum():
    reader = ws.FrameReader(10)
    assert list(reader.feed(server_frame(1, b"123456", fin=False))) == []
    with pytest.raises(ws.WebSocketError) as raised:
        list(reader.feed(server_frame(0, b"12345")))
    assert raised.value.code == ws.CLOSE_TOO_BIG


def masked(opcode, payload):
    return bytes(ws.encode_frame(opcode, payload, b"\x01\x02\x03\x04"))


VIOLATIONS = {
    "masked server frame": masked(1, b"hi"),
    "reserved bit": raw_frame(0xC1, b"hi"),
    "unknown data opcode": bytes([0x83, 0]),
    "unknown control opcode": bytes([0x8B, 0]),
    "fragmented ping": raw_frame(0x09, b""),
    "long ping": bytes([0x89, 126, 0, 126]) + b"x" * 126,
    "continuation first": server_frame(0, b"x"),
    "text inside fragmented text": server_frame(1, b"a", fin=False) + server_frame(1, b"b"),
    "64-bit length with top bit": bytes([0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1]),
    "close with one byte": bytes([0x88, 1, 3]),
    "close code 1005": server_frame(8, (1005).to_bytes(2, "big")),
    "close code 999": server_frame(8, (999).to_bytes(2, "big")),
    "close code 2000": server_frame(8, (2000).to_bytes(2, "big")),
    "close code 5000": server_frame(8, (5000).to_bytes(2, "big")),
}
INVALID_TEXT = {
    "lone continuation byte": server_frame(1, b"\x80"),
    "overlong": server_frame(1, b"\xc0\x80"),
    "surrogate": server_frame(1, b"\xed\xa0\x80"),
    "above U+10FFFF": server_frame(1, b"\xf4\x90\x80\x80"),
    "truncated": server_frame(1, b"ok\xe2\x82"),
    "split then truncated": server_frame(1, b"\xe2", fin=False) + server_frame(0, b"\x82"),
    "close reason": server_frame(8, b"\x03\xe8\xff"),
}


def test_protocol_violations_close_1002_and_bad_text_1007_on_both_interpreters():
    cases = [read_case(raw) for raw in VIOLATIONS.values()]
    cases += [read_case(raw) for raw in INVALID_TEXT.values()]
    want = [[[], 1002]] * len(VIOLATIONS) + [[[], 1007]] * len(INVALID_TEXT)
    assert [run(case) for case in cases] == want
    assert under_micropython(cases) == want


def test_close_without_code_reports_1005():
    assert list(ws.FrameReader().feed(server_frame(8, b""))) == [(ws.OP_CLOSE, (1005, ""))]


def test_utf8_check_matches_cpython_decoder_on_both_interpreters():
    cases, results = [], []

    @SETTINGS
    @given(
        st.one_of(
            st.binary(max_size=12),
            st.text(max_size=6).map(lambda s: s.encode("utf-8", "surrogatepass")),
            st.lists(
                st.sampled_from(
                    [
                        b"\xc0",
                        b"\xe0",
                        b"\xed",
                        b"\xf0",
                        b"\xf4",
                        b"\x80",
                        b"\x9f",
                        b"\xa0",
                        b"\xbf",
                        b"\x8f",
                        b"\x90",
                        b"a",
                    ]
                ),
                max_size=6,
            ).map(b"".join),
        )
    )
    def check(data):
        try:
            data.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        case = {"op": "utf8", "data": data.hex()}
        assert run(case) is valid
        cases.append(case)
        results.append(valid)

    check()
    assert under_micropython(cases) == results


def test_random_bytes_never_crash_the_reader():
    cases, results = [], []

    @SETTINGS
    @given(
        st.one_of(
            st.binary(max_size=64),
            streams().flatmap(
                lambda s: st.tuples(st.integers(0, max(len(s[0]) - 1, 0)), st.integers(0, 255)).map(
                    lambda edit: s[0][: edit[0]] + bytes([edit[1]]) + s[0][edit[0] + 1 :]
                )
            ),
        ),
        st.lists(st.integers(0, 64), max_size=4),
    )
    def check(raw, cuts):
        case = read_case(raw, [min(c, len(raw)) for c in cuts], max_size=100)
        result = run(case)
        assert result[1] in (None, 1002, 1007, 1009)
        cases.append(case)
        results.append(result)

    check()
    assert under_micropython(cases) == results
