"""Network bring-up: Wi-Fi station mode kept connected, or Ethernet; the clock from NTP.

`start(app, on_up)` runs a task that brings the network of station.json up, sets the clock,
calls `on_up()` once (the app starts OCPP there) and then keeps the link up for the life of
the station, reconnecting with back-off. On the simulated board the host's network is already
up and its clock right: `up()` answers True at once and the clock is left alone.

Nothing here may block the event loop for long (the control task must keep stepping):
connecting is polled, NTP is a non-blocking UDP exchange, and so is the DNS lookup of the NTP
server (resolver.py), at each sync (its answer is cached for its TTL).
"""

import asyncio
import struct

import resolver

CONNECT_TIMEOUT_MS = 20000
CHECK_MS = 5000  # how often the link is checked once up
RETRY_FIRST_MS = 1000
RETRY_MAX_MS = 60000
NTP_PORT = 123
NTP_WAIT_MS = 2000
NTP_POLL_MS = 50
NTP_RESYNC_MS = 3600000  # the ESP32's RTC drifts by seconds a day
NTP_TRUST_MS = 2 * NTP_RESYNC_MS  # the clock counts as NTP's this long after an answer
NTP_TO_UNIX = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)

_nic = None
synced_ms = None  # board ticks of the last NTP answer that set the clock


def ntp_synced(board):
    """True while the clock was set from NTP recently (one missed resync is fine): then NTP is
    the time source and the central system's currentTime is not followed."""
    return synced_ms is not None and board.ticks_diff(board.ticks_ms(), synced_ms) < NTP_TRUST_MS


def _interface(network_config):
    """The network interface station.json asks for, created once and activated."""
    global _nic
    if _nic is None:
        import network  # pyright: ignore[reportMissingImports]

        if "ethernet" in network_config:
            from machine import Pin  # pyright: ignore[reportMissingImports]

            eth = network_config["ethernet"]
            options = {
                "mdc": Pin(eth["mdc"]),
                "mdio": Pin(eth["mdio"]),
                "phy_type": getattr(network, "PHY_" + eth["phy"]),
                "phy_addr": eth.get("phy_addr", 0),
            }
            if "power" in eth:
                options["power"] = Pin(eth["power"])
            if "ref_clk" in eth:
                options["ref_clk"] = Pin(eth["ref_clk"])
            _nic = network.LAN(**options)
        else:
            _nic = network.WLAN(network.STA_IF)
        hostname = network_config.get("ethernet", network_config.get("wifi", {})).get("hostname")
        if hostname:
            network.hostname(hostname)
        _nic.active(True)
    return _nic


async def up(board, station_config, timeout_ms=CONNECT_TIMEOUT_MS):
    """Bring the network up; True once the interface has an address, False on time-out."""
    if board.simulated:
        return True
    network_config = station_config.get("network") or {}
    nic = _interface(network_config)
    # (The stubs lack LAN.isconnected(), which the ESP32 port has.)
    if nic.isconnected():  # pyright: ignore[reportAttributeAccessIssue]
        return True
    wifi = network_config.get("wifi")
    if wifi is not None:  # nic is a WLAN
        # drop a half-open association before trying again
        nic.disconnect()  # pyright: ignore[reportAttributeAccessIssue]
        nic.connect(wifi["ssid"], wifi.get("password"))  # pyright: ignore[reportAttributeAccessIssue]
    started = board.ticks_ms()
    while not nic.isconnected():  # pyright: ignore[reportAttributeAccessIssue]
        if board.ticks_diff(board.ticks_ms(), started) > timeout_ms:
            return False
        await board.sleep_ms(100)
    return True


async def ntp_address(board, station_config):
    """The socket address of the NTP server, looked up without blocking, or None."""
    import socket

    try:
        ip = await resolver.address(board, station_config.get("ntp", "pool.ntp.org"))
        return socket.getaddrinfo(ip, NTP_PORT)[0][-1]  # numeric: no lookup
    except OSError:
        return None


async def ntp_time(board, address):
    """Unix time from the NTP server at `address`, or None; never blocks the loop."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # pyright: ignore[reportAttributeAccessIssue]
    try:
        sock.setblocking(False)
        query = bytearray(48)
        query[0] = 0x1B  # version 3, client mode
        sock.sendto(query, address)
        for _ in range(NTP_WAIT_MS // NTP_POLL_MS):
            await board.sleep_ms(NTP_POLL_MS)
            try:
                answer = sock.recv(48)
            except OSError:  # nothing yet
                continue
            if len(answer) == 48 and answer[0] & 0x07 == 4:  # server mode
                seconds = struct.unpack("!I", answer[40:44])[0]
                if seconds:
                    return seconds - NTP_TO_UNIX
        return None
    except OSError:
        return None
    finally:
        sock.close()


async def run(board, station_config, on_up):
    """Keep the network up; call `on_up()` once, the first time it is up (clock set if NTP
    answered: a station without NTP still charges and OCPP still connects)."""
    global synced_ms
    retry_ms = RETRY_FIRST_MS
    while True:
        if not await up(board, station_config):
            await board.sleep_ms(retry_ms)
            retry_ms = min(retry_ms * 2, RETRY_MAX_MS)
            continue
        retry_ms = RETRY_FIRST_MS
        now = board.ticks_ms()
        if not board.simulated and (
            synced_ms is None or board.ticks_diff(now, synced_ms) > NTP_RESYNC_MS
        ):
            address = await ntp_address(board, station_config)
            seconds = await ntp_time(board, address) if address else None
            if seconds is not None:
                board.set_time(seconds)
                synced_ms = now
        if on_up is not None:
            on_up()
            on_up = None
        await board.sleep_ms(CHECK_MS)


def start(app, on_up=None):
    """Start the network task of the station app (the app's event loop must be running)."""
    return asyncio.create_task(run(app.board, app.station_config, on_up))
