"""Stand-in for the ESP32's `network` module under the unix port: a Wi-Fi interface whose
association completes after a few polls and can be dropped by the test."""

STA_IF = 0
POLLS_TO_CONNECT = 3


class WLAN:
    last = None

    def __init__(self, interface):
        self.interface = interface
        self.is_active = False
        self.connected = False
        self.polls = 0
        self.connects = []
        WLAN.last = self

    def active(self, on=None):
        if on is not None:
            self.is_active = on
        return self.is_active

    def connect(self, ssid, password=None):
        assert self.is_active
        self.connects.append(ssid)
        self.polls = POLLS_TO_CONNECT

    def disconnect(self):
        self.connected = False
        self.polls = 0

    def isconnected(self):
        if not self.connected and self.polls:
            self.polls -= 1
            self.connected = self.polls == 0
        return self.connected

    def drop(self):
        self.connected = False


def hostname(name=None):
    return "evse"
