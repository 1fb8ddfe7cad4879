"""RFC 6455 WebSocket, client side, without I/O: the opening handshake and the frame codec.

Runs unchanged on MicroPython and CPython. The caller owns the socket and the randomness:
it passes the 16 random bytes of the handshake key and the 4-byte mask of each frame.
"""

import binascii
import hashlib

OP_CONTINUATION = 0
OP_TEXT = 1
OP_BINARY = 2
OP_CLOSE = 8
OP_PING = 9
OP_PONG = 10

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005  # reported for a close frame without a code; never sent
CLOSE_ABNORMAL = 1006  # reported when the connection drops without a close frame; never sent
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_CONTROL = 125


class WebSocketError(Exception):
    """The peer broke the protocol: close the connection with `code`."""

    def __init__(self, code, reason):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class HandshakeError(Exception):
    """The server refused or botched the opening handshake; `status` is its HTTP status or None."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def _base64(data):
    return binascii.b2a_base64(data, newline=False).decode()


def new_key(random16):
    """Sec-WebSocket-Key from 16 random bytes."""
    return _base64(random16)


def accept_key(key):
    """The Sec-WebSocket-Accept a server must answer to `key`."""
    # sha1 exists on every port with networking; pyright's resolution of hashlib misses it
    digest = hashlib.sha1(key.encode() + _GUID).digest()  # pyright: ignore[reportAttributeAccessIssue]
    return _base64(digest)


def basic_auth(user, password):
    """Value of an HTTP Basic Authorization header."""
    return "Basic " + _base64((user + ":" + password).encode())


def handshake_request(host, path, key, protocols=("ocpp1.6",), headers=()):
    """The HTTP upgrade request (bytes). `host` includes ":port" when not the default;
    `headers` is a sequence of (name, value) pairs added as they are."""
    lines = [
        "GET " + path + " HTTP/1.1",
        "Host: " + host,
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + key,
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: " + ", ".join(protocols),
    ]
    for name, value in headers:
        if "\r" in name + value or "\n" in name + value:
            raise ValueError("line break in header " + name)
        lines.append(name + ": " + value)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def check_handshake_response(head, key, protocols=("ocpp1.6",)):
    """Validate the server's response head (bytes up to the empty line) to our request with
    `key`. Returns the subprotocol the server chose; raises HandshakeError otherwise."""
    try:
        lines = head.decode().split("\r\n")
    except UnicodeError:
        raise HandshakeError("response head is not text") from None
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1."):
        raise HandshakeError("not an HTTP response")
    try:
        status = int(status_line[1])
    except ValueError:
        raise HandshakeError("bad HTTP status") from None
    if status != 101:
        raise HandshakeError("HTTP status %d" % status, status)
    fields = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise HandshakeError("bad header line", status)
            fields[name.strip().lower()] = value.strip()
    if fields.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("Upgrade is not websocket", status)
    tokens = [t.strip().lower() for t in fields.get("connection", "").split(",")]
    if "upgrade" not in tokens:
        raise HandshakeError("Connection is not upgrade", status)
    if fields.get("sec-websocket-accept") != accept_key(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept", status)
    if "sec-websocket-extensions" in fields:
        raise HandshakeError("extension not offered", status)
    chosen = fields.get("sec-websocket-protocol")
    if chosen not in protocols:
        raise HandshakeError("subprotocol %s not offered" % chosen, status)
    return chosen


def encode_frame(opcode, payload, mask_key=None, fin=True):
    """One frame as a bytearray. Clients must pass a 4-byte `mask_key`; None gives an unmasked
    (server) frame. `payload` is bytes-like or str (sent as UTF-8)."""
    if isinstance(payload, str):
        payload = payload.encode()
    length = len(payload)
    if length < 126:
        head = 2
    elif length < 0x10000:
        head = 4
    else:
        head = 10
    start = head if mask_key is None else head + 4
    frame = bytearray(start + length)
    frame[0] = (0x80 if fin else 0) | opcode
    mask_bit = 0 if mask_key is None else 0x80
    if head == 2:
        frame[1] = mask_bit | length
    elif head == 4:
        frame[1] = mask_bit | 126
        frame[2:4] = length.to_bytes(2, "big")
    else:
        frame[1] = mask_bit | 127
        frame[2:10] = length.to_bytes(8, "big")
    if mask_key is None:
        frame[start:] = payload
    else:
        frame[head:start] = mask_key
        for i in range(length):
            frame[start + i] = payload[i] ^ mask_key[i & 3]
    return frame


def close_payload(code, reason=""):
    """Payload of a close frame; the reason is cut to fit a control frame."""
    return (code.to_bytes(2, "big") + reason.encode())[:_MAX_CONTROL]


def _valid_close_code(code):
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def _valid_utf8(data):
    """Strict UTF-8 check (Unicode table 3-7): MicroPython's decoder accepts overlong forms,
    surrogates and code points above U+10FFFF."""
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c < 0x80:
            i += 1
            continue
        lo, hi = 0x80, 0xBF
        if 0xC2 <= c <= 0xDF:
            more = 1
        elif 0xE0 <= c <= 0xEF:
            more = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        elif 0xF0 <= c <= 0xF4:
            more = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        else:
            return False
        if i + more >= n or not lo <= data[i + 1] <= hi:
            return False
        for j in range(i + 2, i + more + 1):
            if not 0x80 <= data[j] <= 0xBF:
                return False
        i += more + 1
    return True


def _text(data):
    """Decode a text payload or raise WebSocketError(1007)."""
    try:
        text = str(data, "utf-8")
    except UnicodeError:
        raise WebSocketError(CLOSE_INVALID_DATA, "invalid UTF-8") from None
    if len(text) != len(data) and not _valid_utf8(data):  # equal lengths: all ASCII
        raise WebSocketError(CLOSE_INVALID_DATA, "invalid UTF-8")
    return text


class FrameReader:
    """Incremental decoder of server frames.

    `feed(data)` buffers bytes and returns an iterator of (opcode, value) for each complete
    message or control frame: (OP_TEXT, str), (OP_BINARY, bytes), (OP_PING, bytes),
    (OP_PONG, bytes), (OP_CLOSE, (code, reason)). Fragments are joined. A protocol violation
    raises WebSocketError with the close code to send; the reader is then unusable.
    """

    def __init__(self, max_size=65536):
        self.max_size = max_size  # largest message, in bytes of payload
        self._buf = bytearray()  # received bytes; those before _pos are consumed
        self._pos = 0
        self._message = bytearray()  # fragments of the message being assembled
        self._message_op = 0  # its opcode, 0 when no fragmented message is open

    def feed(self, data):
        if self._pos:
            self._buf[: self._pos] = b""
            self._pos = 0
        self._buf.extend(data)
        return self._events()

    def _events(self):
        while True:
            event = self._next()
            if event is None:
                return
            if event is not True:
                yield event

    def _next(self):
        """The next event, True for a consumed non-final fragment, None when more bytes are
        needed."""
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        fin = b0 & 0x80
        opcode = b0 & 0x0F
        if b0 & 0x70:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        if b1 & 0x80:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "masked server frame")
        length = b1 & 0x7F
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "unknown opcode")
            if not fin or length > _MAX_CONTROL:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad control frame")
        elif opcode > OP_BINARY:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "unknown opcode")
        elif (opcode == OP_CONTINUATION) != bool(self._message_op):
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad fragmentation")
        head = 2
        if length == 126:
            head = 4
            if available < head:
                return None
            length = buf[pos + 2] << 8 | buf[pos + 3]
        elif length == 127:
            head = 10
            if available < head:
                return None
            if buf[pos + 2] & 0x80:
                raise WebSocketError(CLOSE_PROTOCOL_ERROR, "length out of range")
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        if opcode < OP_CLOSE and len(self._message) + length > self.max_size:
            raise WebSocketError(CLOSE_TOO_BIG, "message too big")
        if available < head + length:
            return None
        start = pos + head
        self._pos = start + length
        payload = memoryview(buf)[start : self._pos]
        if opcode == OP_CLOSE:
            return OP_CLOSE, self._close(payload)
        if opcode >= OP_CLOSE:
            return opcode, bytes(payload)
        message = self._message
        if not fin:
            message.extend(payload)
            self._message_op = self._message_op or opcode
            return True
        if self._message_op:
            message.extend(payload)
            opcode = self._message_op
            payload = message
        value = _text(payload) if opcode == OP_TEXT else bytes(payload)
        if self._message_op:
            self._message_op = 0
            message[:] = b""
        return opcode, value

    @staticmethod
    def _close(payload):
        if not payload:
            return CLOSE_NO_STATUS, ""
        if len(payload) < 2:
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad close payload")
        code = payload[0] << 8 | payload[1]
        if not _valid_close_code(code):
            raise WebSocketError(CLOSE_PROTOCOL_ERROR, "bad close code")
        return code, _text(payload[2:])
