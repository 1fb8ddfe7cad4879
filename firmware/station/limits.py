"""Thresholds and timings of the control core: board.json "limits", with defaults."""

from protocol import pilot


class Limits:
    def __init__(self, config):
        given = dict(config.get("limits") or {})

        def take(key, default):
            try:
                return int(given.pop(key, default))
            except (TypeError, ValueError):
                raise ValueError("board.json limits: bad value for " + key)

        thresholds = given.pop("pilot_thresholds_mv", pilot.THRESHOLDS_MV)
        try:
            self.pilot_thresholds_mv = tuple(int(v) for v in thresholds)
        except (TypeError, ValueError):
            self.pilot_thresholds_mv = ()
        if len(self.pilot_thresholds_mv) != 5:
            raise ValueError("board.json limits: pilot_thresholds_mv needs 5 numbers (A/B..E/F)")
        self.pilot_hysteresis_mv = take("pilot_hysteresis_mv", pilot.HYSTERESIS_MV)
        # A state that may lead to closing must persist this long; safer states count at once.
        self.pilot_debounce_ms = take("pilot_debounce_ms", 50)
        self.diode_mv = take("diode_mv", pilot.DIODE_MV)  # negative plateau above: no diode
        self.stop_timeout_ms = take("stop_timeout_ms", 3000)  # PWM withdrawn in C: open anyway
        self.weld_check_ms = take("weld_check_ms", 200)  # feedback must say open by then
        self.rcd_test_ms = take("rcd_test_ms", 300)  # self-test: trip, then release, each within
        self.rcd_retries = take("rcd_retries", 3)  # failed self-tests or trips before latching
        self.rcd_retry_ms = take("rcd_retry_ms", 2000)  # pause after a trip or failed self-test
        self.overcurrent_margin_a = take("overcurrent_margin_a", 2)
        self.overcurrent_ms = take("overcurrent_ms", 5000)
        self.derate_c = take("derate_c", 60)  # above this the limit falls linearly to 6 A ...
        self.overtemp_c = take("overtemp_c", 80)  # ... reached here, where the station stops
        self.temp_hysteresis_c = take("temp_hysteresis_c", 5)
        self.meter_silence_ms = take("meter_silence_ms", 5000)  # no good reading: safe state
        for key in given:
            raise ValueError("board.json limits: unknown key " + key)
        if self.overtemp_c <= self.derate_c:
            raise ValueError("board.json limits: overtemp_c must be above derate_c")
        try:
            self.max_a10 = int(float(config.get("max_current_a", 32)) * 10)
        except (TypeError, ValueError):
            self.max_a10 = 0
        if not pilot.MIN_A10 <= self.max_a10 <= pilot.MAX_A10:
            raise ValueError("board.json: max_current_a must be a number from 6 to 80")
        self.ventilation = bool(config.get("ventilation", False))  # charging allowed in D
        self.free_vend = bool(config.get("free_vend", False))  # permitted without authorization
