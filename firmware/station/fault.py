"""Faults as structured status. Each possible fault is one preallocated object that the control
loop switches on and off, so raising a fault allocates nothing."""


class Fault:
    """`code` what, `connector` where (0 = station), `since` board.time() seconds (stamped by
    Station.service), `since_ms` board ticks, `latched` (stays until cleared), `message`."""

    def __init__(self, code, connector, message=""):
        self.code = code
        self.connector = connector
        self.message = message
        self.active = False
        self.latched = False
        self.since = 0
        self.since_ms = 0

    def __repr__(self):
        return "Fault(%s, %d, latched=%s, %s)" % (self.code, self.connector, self.latched, self.message)
