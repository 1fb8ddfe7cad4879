"""Host names to IPv4 addresses without blocking the event loop.

socket.getaddrinfo blocks the whole VM until lwIP gives up on an unreachable DNS server
(seconds: the watchdog resets the board). Here the A query is a non-blocking UDP exchange with
the DNS server the board reports, polled, retried, bounded in time. A board that reports none
(the simulated one: the host resolves names at once) leaves the name to getaddrinfo.
"""

import random

from protocol import dns

TRIES = 3
WAIT_MS = 1000  # per try
POLL_MS = 50
MAX_ANSWER = 512  # a DNS answer over UDP
MAX_TTL_S = 3600  # an address is looked up again after an hour at most
CACHE_SIZE = 4  # names kept (the central system's and the NTP server's)

_cache = {}  # name -> (address, board.time() when looked up, ttl seconds)


async def address(board, host):
    """The address to connect to for `host`: itself when numeric, else its IPv4 address as
    text. Raises OSError when it cannot be had (no answer, no such name)."""
    if dns.is_numeric(host):
        return host
    server = board.dns_server()
    if server is None:
        if board.simulated:
            return host
        raise OSError(-2, "no DNS server")
    now = board.time()
    hit = _cache.get(host)
    # Wall-clock seconds, not ticks: ticks wrap, an entry unused for days would look fresh.
    if hit is not None and 0 <= now - hit[1] < hit[2]:
        return hit[0]
    addresses, ttl = await _ask(board, server, host)
    if not addresses:
        raise OSError(-2, "no address for " + host)  # EAI_NONAME, as getaddrinfo says
    if len(_cache) >= CACHE_SIZE:
        _cache.clear()
    _cache[host] = (addresses[0], now, min(ttl, MAX_TTL_S))
    return addresses[0]


async def _ask(board, server, host):
    """(addresses, ttl) from the DNS server at (ip, port) `server`; OSError on time-out."""
    import socket  # here: a port without sockets (the WebAssembly one) imports the rest
    ident = random.getrandbits(16)  # one for every try: a late answer to the first one counts
    try:
        query = dns.query(ident, host)
    except ValueError:
        raise OSError(-2, "bad host name " + host) from None
    to = socket.getaddrinfo(server[0], server[1])[0][-1]  # numeric: no lookup
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # pyright: ignore[reportAttributeAccessIssue]
    try:
        sock.setblocking(False)
        for _ in range(TRIES):
            sock.sendto(query, to)
            for _ in range(WAIT_MS // POLL_MS):
                await board.real_sleep_ms(POLL_MS)  # the server answers in real time
                try:
                    data = sock.recv(MAX_ANSWER)
                except OSError:  # nothing yet
                    continue
                try:
                    return dns.answer(data, ident, host)
                except ValueError:  # malformed, or not an answer to our query
                    continue
    finally:
        sock.close()
    raise OSError(110, "no answer from the DNS server")  # ETIMEDOUT
