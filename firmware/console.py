# Bench console: the station's serial port speaks the line protocol of protocol/console.py.
#
# Port: `board.console_port`, with non-blocking read() -> bytes | None and write(data) -> bool:
# a UART on the ESP32 (board.json "console"), a pseudo-terminal in the sim (board/pty.py).
# Never blocks the control loop: reads only what is waiting, drops output nobody can take, and
# bounds line length and the outbox.
import asyncio

from protocol import console as proto

OUTBOX_MAX = 64  # queued lines; beyond this, events are dropped and counted
POLL_MS = 5  # board time between port polls: in a fast sim, a command acts as soon in board time


def start(app):
    """Serve the console on the board's console port (the app starts it only when there is one)."""
    console = Console(app, app.board.console_port)
    asyncio.create_task(console.run())
    return console


def _is_reply(line):
    head = line.split(" ", 1)[0]
    return head == "evt" or head == "ok" or head == "err"


def _onoff(value):
    return "on" if value else "off"


def _fmt(x):
    return "%.1f" % x if x is not None else "-"


class Console:
    def __init__(self, app, port):
        self.app = app
        self.board = app.board
        self.station = app.station
        self.port = port
        self.reader = proto.LineReader()
        self.outbox = []
        self.dropped = 0
        self.report_ms = 1000
        self._ms = 0  # board ms since start, unbounded (ticks wrap)
        self._last_tick = self.board.ticks_ms()
        self._next_report = 0
        # Chain, don't replace: the OCPP charge point may already listen to the station.
        self._previous = self.station.listener
        self.station.listener = self.on_event
        self.event("hello", ("evse-console", 1, "connectors=%d" % len(self.station.connectors)))

    # -- station -> bench

    def now_ms(self):
        now = self.board.ticks_ms()
        self._ms += self.board.ticks_diff(now, self._last_tick)
        self._last_tick = now
        return self._ms

    def send(self, line):
        if len(self.outbox) >= OUTBOX_MAX:
            self.dropped += 1
        else:
            self.outbox.append(line)

    def event(self, kind, words):
        self.send(proto.format_event(self.now_ms(), kind, words))

    def on_event(self, kind, connector_id, value):
        """Station listener: pilot, contactor, fault, fault_cleared, limit; other kinds (from
        OCPP: 'ocpp', 'log') are shown as they come."""
        if self._previous:
            self._previous(kind, connector_id, value)
        if kind == "pilot" or kind == "limit":
            c = self._connector(connector_id)
            self.event(kind, (connector_id, value if kind == "pilot" else _fmt(value)))
            if c is not None:
                self.event("duty", (connector_id, _fmt(c.duty)))
        elif kind == "contactor":
            self.event(kind, (connector_id, "closed" if value else "open"))
        elif kind == "fault" or kind == "fault_cleared":
            state = "latched" if value.latched else "transient"
            self.event(kind, (connector_id, value.code, state, value.message))
        else:
            self.event(kind, (connector_id, value))

    def report(self):
        for c in self.station.connectors:
            r = c.reading
            if r is None:  # no meter on this connector
                continue
            words = ["%d" % c.id, "wh=" + _fmt(r.energy_wh), "w=" + _fmt(r.power_w)]
            words.append("a=" + ",".join([_fmt(a) for a in r.current_a]))
            if r.error:
                words.append("error=" + r.error)
            self.event("meter", words)

    def flush(self):
        if self.outbox:  # one write for all: each system call can cost the loop a slice
            self.outbox.append("")
            if not self.port.write("\n".join(self.outbox).encode()):
                self.outbox.pop()
                return
            self.outbox.clear()
        if self.dropped:
            line = proto.format_event(self._ms, "dropped", (self.dropped,))
            if self.port.write((line + "\n").encode()):
                self.dropped = 0

    # -- bench -> station

    def poll(self):
        data = self.port.read()
        if data:
            for line in self.reader.feed(data):
                if isinstance(line, proto.ConsoleError):
                    self.send(proto.format_err(None, line.code, line.text))
                elif not _is_reply(line):  # never answer an echo of our own output
                    self.send(self.handle(line))

    def handle(self, line):
        try:
            request_id, name, args = proto.parse_command(line)
        except proto.ConsoleError as e:
            return proto.format_err(e.request_id, e.code, e.text)
        try:
            words = getattr(self, "_cmd_" + name)(*args)
        except proto.ConsoleError as e:
            return proto.format_err(request_id, e.code, e.text)
        except Exception as e:  # a command must never take the console down
            return proto.format_err(request_id, proto.FAILED, repr(e))
        return proto.format_ok(request_id, words or ())

    def _connector(self, n):
        connectors = self.station.connectors
        return connectors[n - 1] if 0 < n <= len(connectors) else None

    def _need(self, n):
        c = self._connector(n)
        if c is None:
            raise proto.ConsoleError(proto.BAD_ARGS, "no connector %d" % n)
        return c

    def _sim(self, what):
        """The board's control surface (sim board or an EV-simulator fixture)."""
        if not hasattr(self.board, what):
            raise proto.ConsoleError(proto.UNSUPPORTED, "board has no " + what + " control")
        return self.board

    def _cmd_help(self):
        return sorted(proto.COMMANDS)

    def _cmd_info(self):
        cfg = self.app.config
        return (
            "board=%s" % cfg.get("board"),
            "connectors=%d" % len(self.station.connectors),
            "phases=%s" % cfg.get("phases", 3),
            "max_current_a=%s" % cfg.get("max_current_a"),
            "ocpp=%s" % _onoff(self._charge_point() is not None),
        )

    def _cmd_status(self):
        for c in self.station.connectors:
            faults = ",".join([f.code for f in c.faults()]) or "-"
            words = (c.id, "pilot=" + c.pilot_state, "duty=" + _fmt(c.duty))
            words += ("contactor=" + ("closed" if c.contactor_closed else "open"),)
            words += ("limit=" + _fmt(c.limit_a), "available=" + _onoff(c.available))
            self.event("state", words + ("faults=" + faults,))
        faults = ",".join([f.code for f in self.station.faults()]) or "-"
        self.event("state", (0, "temp=" + _fmt(self.board.temperature_c()), "faults=" + faults))

    def _cmd_time(self):
        return (self.now_ms(),)

    def _cmd_report(self, ms):
        self.report_ms = int(ms)
        self._next_report = self._ms

    def _charge_point(self):
        """The OCPP charge point (firmware/ocpp/core.ChargePoint), when the app runs one."""
        return getattr(self.app, "chargepoint", None)

    def _cmd_tag(self, n, id_tag):
        c = self._need(n)
        cp = self._charge_point()
        if cp is None:  # no OCPP: the tag is a local start
            c.permit(True)
            return ("local",)
        cp.authorize(cp.sessions[n], id_tag)

    def _cmd_stop(self, n):
        c = self._need(n)
        cp = self._charge_point()
        if cp is None:
            c.permit(False)
        else:
            cp.stop(cp.sessions[n], "Local")

    def _cmd_limit(self, n, amps):
        self._need(n).external_limit_a = amps

    def _cmd_available(self, n, on):
        self._need(n).available = on

    def _cmd_clear(self, n):
        self._need(n)
        self.station.clear(n)

    def _cmd_selftest(self, _what, n):
        self._need(n)
        selftest = getattr(self.station, "selftest", None)
        if selftest is None:
            raise proto.ConsoleError(proto.UNSUPPORTED, "station has no RCD self-test")
        selftest(n)

    def _cmd_config(self, op, *rest):
        cp = self._charge_point()
        ocpp = cp.config if cp is not None else None
        if op == "set":
            if ocpp is None:
                raise proto.ConsoleError(proto.UNSUPPORTED, "no OCPP configuration")
            return (ocpp.change(rest[0], rest[1]),)
        if ocpp is not None:
            names = [rest[0]] if rest else []
            payload = ocpp.report(names)
            if payload.get("unknownKey"):
                raise proto.ConsoleError(proto.BAD_ARGS, "unknown key " + rest[0])
            return ["%s=%s" % (k["key"], k.get("value", "")) for k in payload["configurationKey"]]
        cfg = self.app.config
        if not rest:
            return sorted(cfg)
        if rest[0] not in cfg:
            raise proto.ConsoleError(proto.BAD_ARGS, "unknown key " + rest[0])
        return ("%s=%s" % (rest[0], cfg[rest[0]]),)

    def _cmd_ev(self, n, what, value):
        self._need(n)
        ev = self._sim("ev").ev(n)
        if what == "state":
            ev.set_state(value)
        elif what == "diode":
            ev.set_diode_fault(value)
        elif what == "vent":
            ev.set_ventilation(value)
        else:
            ev.set_power(value)

    def _cmd_rcd(self, n, milliamps):
        self._need(n)
        self._sim("set_rcd_leak").set_rcd_leak(n, milliamps)

    def _cmd_temp(self, celsius):
        self._sim("set_temperature").set_temperature(celsius)

    def _cmd_weld(self, n, on):
        self._need(n)
        self._sim("set_weld").set_weld(n, on)

    def _cmd_meter(self, n, fault):
        self._need(n)
        self._sim("meter_fault").meter_fault(n, None if fault == "ok" else fault)

    # -- task

    async def run(self):
        while True:
            try:
                self.poll()
                now = self.now_ms()
                if self.report_ms and now >= self._next_report:
                    self._next_report = now + self.report_ms
                    self.report()
                self.flush()
            except Exception as e:  # the console must never take the station down
                self.send(proto.format_event(self._ms, "log", (0, "console: " + repr(e))))
            await self.board.sleep_ms(POLL_MS)
