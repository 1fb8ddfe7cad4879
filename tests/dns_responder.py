"""DNS written independently of protocol/dns.py, for its tests: a response encoder and a
responder on 127.0.0.1 that answers A queries (or stays silent) for the firmware tests."""

import socket
import struct
import threading


def wire_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def record(owner: bytes, kind: int, ttl: int, data: bytes, rclass: int = 1) -> bytes:
    """A resource record; `owner` in wire form (b"\\xc0\\x0c": the question's name)."""
    return owner + struct.pack("!HHIH", kind, rclass, ttl, len(data)) + data


def a_record(owner: bytes, address: str, ttl: int) -> bytes:
    return record(owner, 1, ttl, socket.inet_aton(address))


def response(
    ident: int, qname: bytes, records=(), rcode: int = 0, flags: int = 0x8180, qtype: int = 1
) -> bytes:
    """A response to the query (ident, qname) carrying `records` as its answers."""
    header = struct.pack("!HHHHHH", ident, flags | rcode, 1, len(records), 0, 0)
    return header + qname + struct.pack("!HH", qtype, 1) + b"".join(records)


def parse_query(data: bytes) -> tuple[int, str, int, int]:
    """(id, name, flags, qtype) of a query."""
    ident, flags, qdcount = struct.unpack("!HHH", data[:6])
    assert qdcount == 1
    labels, at = [], 12
    while data[at]:
        labels.append(data[at + 1 : at + 1 + data[at]].decode())
        at += 1 + data[at]
    qtype, qclass = struct.unpack("!HH", data[at + 1 : at + 5])
    assert qclass == 1 and at + 5 == len(data)
    return ident, ".".join(labels), flags, qtype


class Responder:
    """A DNS server thread on 127.0.0.1: answers A queries for the names of `hosts`
    ({name: address}, TTL 300 s) and NXDOMAIN for others, or nothing while `silent`.
    `queries` lists (id, name) of every query received."""

    def __init__(self, hosts: dict[str, str], silent: bool = False):
        self.hosts = hosts
        self.silent = silent
        self.queries: list[tuple[int, str]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:  # closed
                return
            ident, name, _, _ = parse_query(data)
            self.queries.append((ident, name))
            if self.silent:
                continue
            qname = wire_name(name)
            if name in self.hosts:
                answer = response(ident, qname, [a_record(b"\xc0\x0c", self.hosts[name], 300)])
            else:
                answer = response(ident, qname, rcode=3)
            self.sock.sendto(answer, peer)

    def __enter__(self) -> "Responder":
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
