"""HTTP file service next to the OCPP endpoint.

GET|HEAD /firmware/<name>     serves DATA/firmware/<name> (the location for UpdateFirmware);
                              a Range of bytes resumes a broken download
PUT|POST /diagnostics/<name>  stores the body as DATA/diagnostics/<name> (GetDiagnostics/GetLog),
                              or <stem>-N<ext> if that name is taken

The port has no authentication (stations fetch and upload with plain URLs), so what one
client can hold is bounded: a request's head must come within TIMEOUT_S, a transfer that
moves less than PACE bytes in a TIMEOUT_S is dropped, at most TRANSFERS run at once (others
get 503), at most CONNECTIONS are open (others are closed at once), files are copied a
chunk at a time, never held whole, and uploads stop at DIAGNOSTICS_QUOTA bytes in the
directory (507), before they can fill the database's disk.
"""

import contextlib
import http.server
import logging
import os
import re
import socket
import tempfile
import threading
import time
from typing import Any

log = logging.getLogger("evse.cs")

MAX_UPLOAD = 64 * 1024 * 1024
DIAGNOSTICS_QUOTA = 1 << 30
TIMEOUT_S = 30
# The least a transfer moves in each TIMEOUT_S (about 550 bytes/s, below a GPRS link's):
# a client trickling a byte now and then would otherwise hold its slot for ever
PACE = 16 * 1024
TRANSFERS = 16
CONNECTIONS = 64  # open at once, waiting for their heads or transferring (_FileServer)
# A chunk's send to a client must end within the socket's timeout, TIMEOUT_S: the same pace
CHUNK = PACE
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_LENGTH = re.compile(r"[0-9]{1,18}")  # digits only: int() takes "-1", " 1" and "1_0" too
_RANGE = re.compile(r"bytes=([0-9]{1,18})-([0-9]{0,18})")


def _handler_class(data_dir: str) -> type[http.server.BaseHTTPRequestHandler]:
    firmware_dir = os.path.join(data_dir, "firmware")
    diagnostics_dir = os.path.join(data_dir, "diagnostics")
    transfers = threading.BoundedSemaphore(TRANSFERS)
    uploading = [0]  # bytes of the uploads under way, counted against DIAGNOSTICS_QUOTA
    quota_lock = threading.Lock()

    class FileHandler(http.server.BaseHTTPRequestHandler):
        timeout = TIMEOUT_S  # the socket's: a client that stalls is dropped

        def handle_one_request(self) -> None:
            """The stdlib's, with bounds: the request's head has TIMEOUT_S in all however
            slowly it comes, and only then takes one of the TRANSFERS."""
            cut = threading.Timer(TIMEOUT_S, _shut, (self.connection,))
            cut.start()
            try:
                self.raw_requestline = self.rfile.readline(65537)
                if len(self.raw_requestline) > 65536:
                    self.send_error(414)
                    return
                if not self.raw_requestline or not self.parse_request():
                    self.close_connection = True
                    return
            except OSError:  # the client went away, or was cut off
                self.close_connection = True
                return
            finally:
                cut.cancel()
            if not transfers.acquire(blocking=False):
                self.close_connection = True
                with contextlib.suppress(OSError):  # the client went away meanwhile
                    self._reply(503, "busy, try again later\n")
                return
            try:
                method = getattr(self, "do_" + self.command, None)
                if method is None:
                    self.send_error(501)
                    return
                method()
                self.wfile.flush()
            except OSError:  # the client went away or stalled (TIMEOUT_S): nothing to answer
                self.close_connection = True
            finally:
                transfers.release()

        def _target(self, prefix: str, directory: str) -> str | None:
            path = self.path.split("?", 1)[0]
            if not path.startswith(prefix):
                return None
            name = path[len(prefix) :]
            if not _NAME.match(name) or name.startswith("."):
                return None
            return os.path.join(directory, name)

        def _reply(self, code: int, text: str) -> None:
            body = text.encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            target = self._target("/firmware/", firmware_dir)
            if target is None or not os.path.isfile(target):
                self._reply(404, "no such firmware file\n")
                return
            with open(target, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start, end = 0, size - 1
                wanted = _RANGE.fullmatch(self.headers.get("Range", ""))
                if wanted:
                    start = int(wanted[1])
                    end = min(int(wanted[2]), size - 1) if wanted[2] else size - 1
                    if start > end:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(206 if wanted else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if wanted:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if self.command != "HEAD":
                    f.seek(start)
                    _copy(f, self.wfile, end - start + 1)

        do_HEAD = do_GET

        def do_PUT(self) -> None:
            target = self._target("/diagnostics/", diagnostics_dir)
            if target is None:
                self._reply(404, "upload to /diagnostics/<file name>\n")
                return
            length = self.headers.get("Content-Length")
            if length is None:
                self._reply(411, "Content-Length required\n")
                return
            if not _LENGTH.fullmatch(length):
                self._reply(400, "Content-Length must be a number of bytes\n")
                return
            size = int(length)
            if size > MAX_UPLOAD:
                self._reply(413, "uploads are up to 64 MiB\n")
                return
            os.makedirs(diagnostics_dir, exist_ok=True)
            with quota_lock:
                full = _bytes_in(diagnostics_dir) + uploading[0] + size > DIAGNOSTICS_QUOTA
                if not full:
                    uploading[0] += size
            if full:
                log.warning("diagnostics upload refused: %s is full", diagnostics_dir)
                self._reply(507, "no room for diagnostics, ask the operator\n")
                return
            # A file of its own per upload, named whole at the end: two uploads of one name
            # do not mix, and a broken one leaves nothing
            fd, part = tempfile.mkstemp(dir=diagnostics_dir, prefix=".upload-")
            os.fchmod(fd, 0o644)  # as a plain file would be (mkstemp's are the owner's only)
            try:
                with os.fdopen(fd, "wb") as f:
                    received = _copy(self.rfile, f, size)
                if received < size:
                    self._reply(400, f"the body ended after {received} of {size} bytes\n")
                    return
                kept = _keep(part, target)
            finally:
                if os.path.exists(part):
                    os.remove(part)
                with quota_lock:
                    uploading[0] -= size
            log.info("diagnostics upload stored as %s", os.path.basename(kept))
            self._reply(201, "stored\n")

        do_POST = do_PUT

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return FileHandler


def _shut(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile
        connection.shutdown(socket.SHUT_RDWR)


def _keep(part: str, target: str) -> str:
    """Name the finished upload `part` `target`, or if that is taken the first free
    `stem-N.ext`, and return the name: an upload never replaces an earlier one (two stations'
    diagnostics of one name, a station's of yesterday)."""
    stem, extension = os.path.splitext(target)
    name, taken = target, 0
    while True:
        try:
            os.link(part, name)  # fails if the name exists, where a rename would replace
            return name
        except FileExistsError:
            taken += 1
            name = f"{stem}-{taken}{extension}"


def _bytes_in(directory: str) -> int:
    """The size of the files in `directory` (uploads under way are counted apart)."""
    with os.scandir(directory) as entries:
        return sum(
            entry.stat().st_size
            for entry in entries
            if entry.is_file() and not entry.name.startswith(".upload-")
        )


def _copy(source: Any, target: Any, size: int) -> int:
    """Copy up to `size` bytes a chunk at a time; returns how many came (fewer: it ended).
    Raises TimeoutError when less than PACE bytes came in a TIMEOUT_S. (Writes to a client
    are bounded by the socket's timeout, which bounds a whole chunk's send.)"""
    copied = 0
    window_end, floor = time.monotonic() + TIMEOUT_S, PACE
    while copied < size:
        chunk = source.read1(min(CHUNK, size - copied))  # what came, not a whole chunk
        if not chunk:
            break
        target.write(chunk)
        copied += len(chunk)
        if time.monotonic() >= window_end:
            if copied < floor:
                raise TimeoutError(f"{copied} bytes came, too slowly")
            window_end, floor = window_end + TIMEOUT_S, copied + PACE
    return copied


class _FileServer(http.server.ThreadingHTTPServer):
    """A thread per connection (and a timer thread while its head comes), at most
    CONNECTIONS of them: a client opening thousands of idle connections would otherwise
    exhaust the process's threads, which the central system's other parts need too. Those
    over the bound are closed at once."""

    daemon_threads = True
    request_queue_size = 128  # connections a burst of stations may have waiting for accept

    def __init__(self, address: tuple[str, int], handler: type) -> None:
        super().__init__(address, handler)
        self.connections = threading.BoundedSemaphore(CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.connections.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread took it
            self.connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


def start_file_server(data_dir: str, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Serve in a daemon thread; call `.shutdown()` to stop. Port 0 picks a free port."""
    os.makedirs(os.path.join(data_dir, "firmware"), exist_ok=True)
    server = _FileServer((host, port), _handler_class(data_dir))
    threading.Thread(target=server.serve_forever, name="cs-files", daemon=True).start()
    return server
