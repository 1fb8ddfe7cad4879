# The WebSocket connection to the central system, on asyncio streams.
#
# ws:// or wss:// (TLS, the server certificate verified against the configured CA). OCPP 1.6
# security profiles: 0 none, 1 HTTP Basic "chargePointId:AuthorizationKey", 2 TLS + Basic,
# 3 TLS with a client certificate. Time comes only from the board (the simulator scales it).
#
# One task receives (`recv`, used by the Rpc); any task may `send`. `connect` replaces the
# current connection; when it ends, `recv` raises LinkClosed and then waits for the next one.
import asyncio
import os
import random

import resolver
from protocol import websocket as ws

PROTOCOL = "ocpp1.6"
MAX_MESSAGE = 16384  # largest inbound message (bytes); bigger ones close the link with 1009
HANDSHAKE_TIMEOUT_MS = 30000
MAX_HEAD = 8192  # largest HTTP response head
BACKOFF_BASE_MS = 2000
BACKOFF_CAP_MS = 300000
_RX_CHUNK = 512


class LinkClosed(Exception):
    """The connection ended; `code` is the WebSocket close code (1006: it just dropped)."""

    def __init__(self, code=None, reason=None):
        code = code or ws.CLOSE_ABNORMAL
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def backoff_ms(attempt, random16, base_ms=BACKOFF_BASE_MS, cap_ms=BACKOFF_CAP_MS):
    """Delay before reconnect number `attempt` (0 = the first retry): base * 2^attempt capped
    at cap, with "equal jitter" (a random point in the upper half) from `random16`, 0..65535,
    so that many stations cut off together do not all come back at the same moment."""
    delay = min(cap_ms, base_ms << min(attempt, 20))
    half = delay // 2
    return half + half * random16 // 65536


def parse_url(url):
    """(tls, host, port, path) of a ws:// or wss:// URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("ws", "wss"):
        raise ValueError("url must start with ws:// or wss://")
    tls = scheme == "wss"
    authority, _, path = rest.partition("/")
    host, _, port = authority.rpartition(":")
    if not host or not port.isdigit():
        host, port = authority, "443" if tls else "80"
    if not host:
        raise ValueError("url has no host")
    return tls, host.strip("[]"), int(port), "/" + path


class _Connection:
    def __init__(self, reader, writer, max_size):
        self.reader = reader
        self.writer = writer
        self.frames = ws.FrameReader(max_size)
        self.events = self.frames.feed(b"")  # events of the last chunk not yet handed out


class Link:
    def __init__(self, url, cp_id, profile, auth_key, ca_der, cert_der, key_der, board,
                 max_size=MAX_MESSAGE):
        self.tls, self.host, self.port, path = parse_url(url)
        self.path = path.rstrip("/") + "/" + cp_id
        self.cp_id = cp_id
        self.profile = profile
        self.auth_key = auth_key
        self.ca_der = ca_der
        self.cert_der = cert_der
        self.key_der = key_der
        self.board = board
        self.max_size = max_size
        self.ping_interval_s = 0  # WebSocketPingInterval; 0 = no pings; read before each ping
        self.backoff_base_ms = BACKOFF_BASE_MS
        self.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS
        self.attempt = 0  # failed connects since the last success
        check_profile(self)
        self._conn = None
        self._ready = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._rx = bytearray(_RX_CHUNK)
        self._last_rx = 0
        self._reading = None  # the connection the receiver is blocked reading, if any
        self._read_task = None

    @property
    def connected(self):
        return self._conn is not None

    async def connect(self):
        """Open a new connection (closing the current one); raises OSError or
        ws.HandshakeError when that fails."""
        await self.close(ws.CLOSE_GOING_AWAY)
        task = asyncio.create_task(self._open())
        timer = asyncio.create_task(_cancel_after(self.board, task, self.handshake_timeout_ms))
        try:
            conn = await task
        except asyncio.CancelledError:
            raise OSError(110, "handshake timed out") from None  # ETIMEDOUT
        finally:
            timer.cancel()
        self._conn = conn
        self._last_rx = self.board.real_ms()
        self.attempt = 0
        self._ready.set()
        asyncio.create_task(self._keepalive(conn))

    async def _open(self):
        ctx = self._tls_context() if self.tls else None
        # The address looked up without blocking (open_connection's own lookup blocks the
        # VM); TLS still checks the certificate against the name, which SNI sends.
        address = await resolver.address(self.board, self.host)
        reader, writer = await asyncio.open_connection(
            address, self.port, ssl=ctx, server_hostname=self.host
        )
        try:
            key = ws.new_key(os.urandom(16))
            headers = ()
            if self.profile in (1, 2):
                headers = (("Authorization", ws.basic_auth(self.cp_id, self.auth_key)),)
            host = self.host if self.port == (443 if self.tls else 80) else "%s:%d" % (
                self.host, self.port)
            writer.write(ws.handshake_request(host, self.path, key, (PROTOCOL,), headers))
            await writer.drain()
            ws.check_handshake_response(await _read_head(reader), key, (PROTOCOL,))
        except BaseException:
            _close(writer)
            raise
        return _Connection(reader, writer, self.max_size)

    def _tls_context(self):
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=self.ca_der)
        if self.profile == 3:
            ctx.load_cert_chain(self.cert_der, self.key_der)
        return ctx

    async def backoff(self):
        """Wait before the next connect attempt, longer after each failure."""
        delay = backoff_ms(self.attempt, random.getrandbits(16), self.backoff_base_ms)
        self.attempt += 1
        await self.board.sleep_ms(delay)

    async def send(self, text):
        conn = self._conn
        if conn is None:
            raise LinkClosed()
        await self._send_frame(conn, ws.OP_TEXT, text)

    async def recv(self):
        """The next text message; waits for a connection if there is none. Answers pings.
        Raises LinkClosed when the current connection ends (after closing it properly)."""
        while True:
            conn = self._conn
            if conn is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            try:
                for opcode, value in conn.events:
                    if opcode == ws.OP_TEXT:
                        return value
                    if opcode == ws.OP_PING:
                        await self._send_frame(conn, ws.OP_PONG, value)
                    elif opcode == ws.OP_CLOSE:
                        code = value[0]
                        await self._end(conn, ws.CLOSE_NORMAL if code == ws.CLOSE_NO_STATUS else code)
                        raise LinkClosed(code, value[1])
                    elif opcode == ws.OP_BINARY:  # OCPP-J is text only
                        await self._end(conn, ws.CLOSE_UNSUPPORTED_DATA)
                        raise LinkClosed(ws.CLOSE_UNSUPPORTED_DATA)
            except ws.WebSocketError as e:
                await self._end(conn, e.code)
                raise LinkClosed(e.code, e.reason) from None
            n = await self._read(conn)
            if conn is not self._conn:
                raise LinkClosed()
            if not n:
                self._drop(conn)
                raise LinkClosed()
            self._last_rx = self.board.real_ms()
            conn.events = conn.frames.feed(memoryview(self._rx)[:n])

    async def _read(self, conn):
        """Bytes read from `conn` into self._rx; 0 when it ended or was dropped meanwhile."""
        self._reading = conn
        self._read_task = asyncio.current_task()
        try:
            return await conn.reader.readinto(self._rx)
        except OSError:
            return 0
        except asyncio.CancelledError:
            if self._reading is conn:  # cancelled from outside, not by _drop
                raise
            return 0
        finally:
            self._reading = None

    async def close(self, code=ws.CLOSE_NORMAL):
        conn = self._conn
        if conn is not None:
            await self._end(conn, code)

    async def _end(self, conn, code):
        """Send a close frame with `code` on `conn`, then drop it."""
        if self._conn is conn:
            self._conn = None
            try:
                await self._send_frame(conn, ws.OP_CLOSE, ws.close_payload(code))
            except LinkClosed:
                pass
        self._drop(conn)

    def _drop(self, conn):
        """Forget `conn` and close its socket. A receiver blocked reading it is cancelled:
        closing alone does not wake it once the next connection reuses the descriptor."""
        if self._conn is conn:
            self._conn = None
        task = self._read_task
        if self._reading is conn and task is not None:
            self._reading = None
            task.cancel()
        _close(conn.writer)

    async def _send_frame(self, conn, opcode, payload):
        frame = ws.encode_frame(opcode, payload, os.urandom(4))
        async with self._write_lock:
            try:
                conn.writer.write(frame)
                await conn.writer.drain()
            except OSError:
                self._drop(conn)
                raise LinkClosed() from None

    async def _keepalive(self, conn):
        """Ping every ping_interval_s; a connection silent for two intervals is dropped. The
        interval is read every second, so a change counts at once, not after the old one."""
        board = self.board
        pinged = board.ticks_ms()
        while self._conn is conn:
            await board.sleep_ms(1000)
            interval_ms = self.ping_interval_s * 1000
            if self._conn is not conn or not interval_ms:
                continue
            # Real time, as the peer answers in it (a fast sim's board time runs ahead).
            if board.ticks_diff(board.real_ms(), self._last_rx) > 2 * interval_ms:
                self._drop(conn)  # the receiver reports LinkClosed
                return
            if board.ticks_diff(board.ticks_ms(), pinged) < interval_ms:
                continue
            pinged = board.ticks_ms()
            try:
                await self._send_frame(conn, ws.OP_PING, b"")
            except LinkClosed:
                return


def check_profile(link):
    """Raise ValueError unless the link's settings make its security profile (at start, and
    for the central system's change of SecurityProfile or AuthorizationKey)."""
    profile = link.profile
    if profile not in (0, 1, 2, 3):
        raise ValueError("security profile must be 0..3")
    if profile >= 2 and not link.tls:
        raise ValueError("security profile %d needs a wss:// url" % profile)
    if link.tls and not link.ca_der:
        raise ValueError("wss:// needs the CA certificate")
    if profile in (1, 2) and not link.auth_key:
        raise ValueError("security profile %d needs the authorization key" % profile)
    if profile == 3 and not (link.cert_der and link.key_der):
        raise ValueError("security profile 3 needs a client certificate and key")


def _close(writer):
    """Close the stream's socket now. MicroPython's StreamWriter.close() does nothing (only
    `await wait_closed()` closes the socket), so a dropped connection's socket would stay
    open, in CLOSE-WAIT after the peer's FIN, for the life of the program: one more of the
    board's few sockets lost at each drop. A task blocked on the socket is woken (EBADF)."""
    writer.close()
    writer.s.close()


async def _cancel_after(board, task, ms):
    await board.real_sleep_ms(ms)  # the peer answers in real time, not in a fast sim's board time
    task.cancel()


async def _read_head(reader):
    """The HTTP response head, up to and including the empty line."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = await reader.readline()
        if not line:
            raise OSError(104, "closed during handshake")  # ECONNRESET
        head += line
        if len(head) > MAX_HEAD:
            raise ws.HandshakeError("response head too long")
    return head
