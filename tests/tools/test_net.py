import json
import socket
import struct
import subprocess
import threading
from pathlib import Path

from host import mpy
from tests.dns_responder import Responder

HERE = Path(__file__).parent
NTP_TO_UNIX = 2208988800
SERVER_TIME = 1_800_000_000  # 2027-01-15, Unix seconds


def run_net(*args: str) -> dict:
    result = subprocess.run(
        mpy.command(HERE / "mp_net.py", *args),
        env=mpy.environ(HERE / "mp_fakes"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_on_the_simulated_board_the_network_is_up_at_once():
    assert run_net("simulated") == {"up": True, "called": True, "on_up": 1}


def ntp_server(sock: socket.socket, queries: list) -> None:
    """Answer NTP queries with SERVER_TIME until the socket is closed."""
    while True:
        try:
            query, peer = sock.recvfrom(512)
        except OSError:
            return
        queries.append(query)
        answer = bytearray(48)
        answer[0] = (0 << 6) | (3 << 3) | 4  # no leap warning, version 3, server
        answer[1] = 2  # stratum
        answer[40:44] = struct.pack("!I", SERVER_TIME + NTP_TO_UNIX)
        sock.sendto(bytes(answer), peer)


def test_wifi_comes_up_sets_the_clock_from_a_named_server_and_reconnects_after_a_drop():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    queries: list = []
    threading.Thread(target=ntp_server, args=(sock, queries), daemon=True).start()
    try:
        with Responder({"time.test": "127.0.0.1"}) as dns:
            result = run_net("wifi", str(sock.getsockname()[1]), str(dns.port))
    finally:
        sock.close()
    assert [name for _, name in dns.queries] == ["time.test"]  # its name, looked up once
    assert result["first_up"] and result["reconnected"]
    assert result["connects_before_drop"] == 1 and result["ssid"] == "depot"
    assert result["on_up"] == 1  # OCPP is started once, not at every reconnect
    assert result["clock"] == [SERVER_TIME]  # one sync: the next is due in an hour
    assert len(queries) == 1 and queries[0][0] & 0x07 == 3  # client mode
