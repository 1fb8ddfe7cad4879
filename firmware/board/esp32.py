"""ESP32 board: pins, PWM, ADCs, RS-485 UART, watchdog and guard timer from board.json.

The contactor outputs are driven low first, before anything else is set up, so a reset
(watchdog, crash, power-on) always starts with the contactors open.
"""

import time

import asyncio
from machine import ADC, PWM, RTC, UART, WDT, Pin, Timer, reset
from protocol import pilot

_PILOT_SAMPLES = 40  # ADC reads per pilot sample: covers about two 1 kHz PWM periods
_EPOCH_2000 = 946684800


def _adc(number):
    return ADC(Pin(number), atten=ADC.ATTN_11DB)


def _mv(adc):
    return adc.read_uv() // 1000


class Esp32Connector:
    """Pilot PWM (1 kHz) and its ADC, contactor relay and feedback, proximity, RCD."""

    def __init__(self, spec, contactor):
        self._contactor = contactor
        self._pwm = PWM(Pin(spec["pilot_pwm"]), freq=1000, duty_u16=65535)
        self._pilot = _adc(spec["pilot_adc"])
        # Pilot divider: pilot mV = (ADC mV - offset) * gain.
        self._offset_mv = int(spec.get("pilot_offset_mv", 1650))
        self._gain_milli = int(float(spec.get("pilot_gain", 8.0)) * 1000)
        feedback = spec.get("contactor_feedback")
        self.has_feedback = feedback is not None
        self._feedback = Pin(feedback, Pin.IN) if feedback is not None else None
        self._closed_level = int(spec.get("contactor_feedback_active", 1))
        proximity = spec.get("proximity_adc")
        self.has_proximity = proximity is not None
        self._proximity = _adc(proximity) if proximity is not None else None
        self._pullup_ohms = int(spec.get("proximity_pullup_ohms", 1000))
        self._ref_mv = int(spec.get("proximity_ref_mv", 3300))
        trip = spec.get("rcd_trip")
        self.has_rcd = trip is not None
        self._trip = Pin(trip, Pin.IN) if trip is not None else None
        self._trip_level = int(spec.get("rcd_trip_active", 1))
        test = spec.get("rcd_test")
        self._test = Pin(test, Pin.OUT, value=0) if test is not None else None
        self.high_mv = 12000
        self.low_mv = 12000

    def set_pwm(self, permille):
        self._pwm.duty_u16(permille * 65535 // 1000)

    def sample_pilot(self):
        """High and low plateau: the extremes of a burst of ADC reads across the PWM."""
        adc = self._pilot
        high = low = adc.read_uv()
        for _ in range(_PILOT_SAMPLES - 1):
            value = adc.read_uv()
            if value > high:
                high = value
            elif value < low:
                low = value
        self.high_mv = (high // 1000 - self._offset_mv) * self._gain_milli // 1000
        self.low_mv = (low // 1000 - self._offset_mv) * self._gain_milli // 1000

    def set_contactor(self, on):
        self._contactor.value(1 if on else 0)

    def contactor_feedback(self):
        if self._feedback is None:
            return self._contactor.value() == 1
        return self._feedback.value() == self._closed_level

    def proximity_ohms(self):
        """The cable's proximity resistor against a pull-up; -1 when open."""
        if self._proximity is None:
            return -1
        mv = _mv(self._proximity)
        if mv >= self._ref_mv - 50:
            return -1
        return self._pullup_ohms * mv // (self._ref_mv - mv)

    def set_rcd_test(self, on):
        if self._test is not None:
            self._test.value(1 if on else 0)

    def rcd_tripped(self):
        return self._trip is not None and self._trip.value() == self._trip_level


class Rs485Uart:
    """The meter UART; drives the RS-485 transceiver's driver-enable pin around each write."""

    def __init__(self, spec):
        self._uart = UART(
            spec.get("uart", 2),
            baudrate=spec.get("baud", 9600),
            tx=spec.get("tx", 17),
            rx=spec.get("rx", 16),
            timeout=0,
        )
        de = spec.get("de")
        self._de = Pin(de, Pin.OUT, value=0) if de is not None else None

    def write(self, buf):
        if self._de is not None:
            self._de.value(1)
        written = self._uart.write(buf)
        self._uart.flush()  # wait until the last bit left, then release the bus
        if self._de is not None:
            self._de.value(0)
        return written

    def read(self):
        return self._uart.read() if self._uart.any() else None

    def flush_input(self):
        while self._uart.any():
            self._uart.read()


class ConsoleUart:
    """The bench console's UART (board.json "console"): never blocks the caller."""

    def __init__(self, spec):
        self._uart = UART(spec.get("uart", 1), spec.get("baud", 115200), timeout=0, txbuf=1024)
        if "tx" in spec:
            self._uart.init(tx=spec["tx"], rx=spec["rx"])

    def read(self):
        return self._uart.read()

    def write(self, data):
        self._uart.write(data)
        return True


class Board:
    simulated = False

    def __init__(self, data_dir, config):
        specs = config.get("connectors") or []
        # First of all: every contactor output low.
        contactors = [Pin(spec["contactor"], Pin.OUT, value=0) for spec in specs]
        self.data_dir = data_dir
        self.config = config
        self.connectors = [Esp32Connector(s, c) for s, c in zip(specs, contactors)]
        meter = config.get("meter")
        self.meter_uart = Rs485Uart(meter) if meter else None
        console = config.get("console")
        self.console_port = ConsoleUart(console) if console else None
        temperature = config.get("temperature_adc")
        self._temperature = _adc(temperature) if temperature is not None else None
        self._temp_offset_mv = int(config.get("temperature_offset_mv", 500))  # TMP36 defaults
        self._temp_mv_per_c = int(config.get("temperature_mv_per_c", 10))
        self._epoch = _EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0
        self._wdt = None
        self._timer = None

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, ticks, delta):
        return time.ticks_add(ticks, delta)

    def time(self):
        return time.time() + self._epoch

    def set_time(self, unix_seconds):
        """Set the RTC (OCPP follows the central system's clock when there is no NTP)."""
        tm = time.gmtime(int(unix_seconds) - self._epoch)
        RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))

    async def sleep_ms(self, ms):
        await asyncio.sleep_ms(ms)

    # The app's real-time clock (control period, supervision): on the board, board time.
    real_ms = ticks_ms
    real_sleep_ms = sleep_ms

    def dns_server(self):
        """(address, port) of the DNS server the network got (DHCP or static), or None."""
        import network  # pyright: ignore[reportMissingImports]

        server = network.ipconfig("dns")
        return (server, 53) if server and server != "0.0.0.0" else None

    def temperature_c(self):
        if self._temperature is None:
            return 25
        return (_mv(self._temperature) - self._temp_offset_mv) // self._temp_mv_per_c

    def wdt_start(self, timeout_ms):
        self._wdt = WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def start_guard(self, period_ms, callback):
        """Call `callback(ticks_ms)` from a hardware timer, whatever the tasks are doing."""
        self._timer = Timer(0)
        self._timer.init(
            mode=Timer.PERIODIC, period=period_ms, callback=lambda _: callback(time.ticks_ms())
        )

    def reset(self):
        for connector in self.connectors:
            connector.set_contactor(False)
        reset()
