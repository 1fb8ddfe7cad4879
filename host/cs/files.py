"""HTTP file service next to the OCPP endpoint.

GET  /firmware/<name>     serves DATA/firmware/<name> (the location for UpdateFirmware)
PUT|POST /diagnostics/<name>  stores the body as DATA/diagnostics/<name> (GetDiagnostics/GetLog)
"""

import http.server
import os
import re
import threading

MAX_UPLOAD = 64 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_LENGTH = re.compile(r"[0-9]{1,18}")  # digits only: int() takes "-1", " 1" and "1_0" too


def _handler_class(data_dir: str) -> type[http.server.BaseHTTPRequestHandler]:
    firmware_dir = os.path.join(data_dir, "firmware")
    diagnostics_dir = os.path.join(data_dir, "diagnostics")

    class FileHandler(http.server.BaseHTTPRequestHandler):
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
            self.wfile.write(body)

        def do_GET(self) -> None:
            target = self._target("/firmware/", firmware_dir)
            if target is None or not os.path.isfile(target):
                self._reply(404, "no such firmware file\n")
                return
            with open(target, "rb") as f:
                data = f.read()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

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
            data = self.rfile.read(size)
            os.makedirs(diagnostics_dir, exist_ok=True)
            with open(target + ".part", "wb") as f:
                f.write(data)
            os.replace(target + ".part", target)
            self._reply(201, "stored\n")

        do_POST = do_PUT

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return FileHandler


def start_file_server(data_dir: str, host: str, port: int) -> http.server.ThreadingHTTPServer:
    """Serve in a daemon thread; call `.shutdown()` to stop. Port 0 picks a free port."""
    os.makedirs(os.path.join(data_dir, "firmware"), exist_ok=True)
    server = http.server.ThreadingHTTPServer((host, port), _handler_class(data_dir))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="cs-files", daemon=True).start()
    return server
