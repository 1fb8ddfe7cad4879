"""DNS for IPv4 host names (RFC 1035), sans I/O: the A query for a name, and the addresses and
TTL of its answer. No sockets, no clocks; runs unchanged on MicroPython and CPython."""

TYPE_A = 1
TYPE_CNAME = 5
CLASS_IN = 1
MAX_NAME = 253  # characters of a dotted name (255 bytes encoded)
MAX_CNAMES = 8  # aliases followed within one answer


def is_numeric(host):
    """True for an IPv4 address in dotted decimal or an IPv6 literal: nothing to look up."""
    if ":" in host:
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(
        0 < len(part) <= 3 and all(c in "0123456789" for c in part) and int(part) < 256
        for part in parts
    )


def _labels(name):
    """The wire form of dotted `name`, ASCII lower case (names compare case-insensitively)."""
    raw = name.encode().lower()
    if raw.endswith(b"."):
        raw = raw[:-1]
    if not raw or len(raw) > MAX_NAME:
        raise ValueError("bad host name")
    out = bytearray()
    for label in raw.split(b"."):
        if not 0 < len(label) < 64:
            raise ValueError("bad host name")
        out.append(len(label))
        out += label
    out.append(0)
    return bytes(out)


def query(ident, name):
    """The A query (recursion desired) with id `ident` (0..65535) for host `name`."""
    header = bytes((ident >> 8, ident & 0xFF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0))
    return header + _labels(name) + b"\x00\x01\x00\x01"


def _u16(data, at):
    if at + 2 > len(data):
        raise ValueError("truncated")
    return data[at] << 8 | data[at + 1]


def _name(data, at):
    """(wire name lower case, offset after it) at `at`; compression pointers must point
    backwards, so a loop of pointers cannot run for ever."""
    out = bytearray()
    end = None
    while True:
        if at >= len(data):
            raise ValueError("truncated")
        length = data[at]
        if length >= 0xC0:
            target = _u16(data, at) & 0x3FFF
            if target >= at:
                raise ValueError("bad pointer")
            if end is None:
                end = at + 2
            at = target
        elif length >= 0x40:
            raise ValueError("bad label")
        else:
            if at + 1 + length > len(data):
                raise ValueError("truncated")
            out += data[at : at + 1 + length]
            if len(out) > MAX_NAME + 2:
                raise ValueError("name too long")
            if not length:
                return bytes(out).lower(), at + 1 if end is None else end
            at += 1 + length


def answer(data, ident, name):
    """(addresses, ttl seconds) of the response `data` to query(ident, name): the IPv4
    addresses as text, [] when the server says the name has none (NXDOMAIN, no A record, a
    server failure). ValueError when `data` is malformed or no answer to that query (another
    id or name: a late answer to an earlier try, or a forgery), to be ignored."""
    if len(data) < 12 or _u16(data, 0) != ident:
        raise ValueError("not our id")
    flags = _u16(data, 2)
    if not flags & 0x8000 or flags & 0x7800:  # not a response, or not to a standard query
        raise ValueError("not an answer")
    if _u16(data, 4) != 1:
        raise ValueError("not one question")
    names = [_labels(name)]
    qname, at = _name(data, 12)
    if qname != names[0] or _u16(data, at) != TYPE_A or _u16(data, at + 2) != CLASS_IN:
        raise ValueError("not our question")
    at += 4
    if flags & 0x020F:  # truncated, or an error code: no address to be had over UDP
        return [], 0
    addresses = []
    ttl = 0x7FFFFFFF  # the largest a TTL may be
    for _ in range(_u16(data, 6)):
        owner, at = _name(data, at)
        kind = _u16(data, at)
        rclass = _u16(data, at + 2)
        seconds = _u16(data, at + 4) << 16 | _u16(data, at + 6)
        size = _u16(data, at + 8)
        at += 10
        if at + size > len(data):
            raise ValueError("truncated")
        if owner in names and rclass == CLASS_IN and kind in (TYPE_A, TYPE_CNAME):
            if kind == TYPE_A:
                if size != 4:
                    raise ValueError("bad address")
                addresses.append("%d.%d.%d.%d" % tuple(data[at : at + 4]))
            elif len(names) > MAX_CNAMES:
                raise ValueError("too many aliases")
            else:
                names.append(_name(data, at)[0])
            if seconds & 0x80000000:  # RFC 2181: a TTL with the top bit set counts as 0
                seconds = 0
            ttl = min(ttl, seconds)
        at += size
    return addresses, ttl if addresses else 0
