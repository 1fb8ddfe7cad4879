"""IEC 61851-1 control pilot maths, sans I/O.

Integer units only, so the control loop can call these without allocating on MicroPython:
currents in tenths of an ampere ("a10"), PWM duty in tenths of a percent ("permille"),
pilot voltages in millivolts.
"""

STATES = ("A", "B", "C", "D", "E", "F")
A, B, C, D, E, F = STATES

DUTY_OFF = 1000  # constant +12 V: state x1, no current offered
DUTY_F = 0  # constant -12 V: EVSE not available
DUTY_DIGITAL = 50  # 5 %: digital communication required
MIN_A10 = 60
MAX_A10 = 800

# Boundaries between neighbouring states on the high plateau, A/B down to E/F (mV).
THRESHOLDS_MV = (10500, 7500, 4500, 1500, -1500)
HYSTERESIS_MV = 300
# With PWM running the negative plateau sits at -12 V; above this the EV's diode is missing.
DIODE_MV = -10500
# Readings beyond this magnitude cannot come from a working pilot circuit.
RANGE_MV = 13500


def duty_for_limit(a10):
    """PWM duty (permille) advertising at most `a10`; below 6 A nothing is offered (x1)."""
    if a10 < MIN_A10:
        return DUTY_OFF
    if a10 > MAX_A10:
        a10 = MAX_A10
    if a10 <= 510:
        return a10 * 10 // 6  # duty = A / 0.6
    return a10 * 2 // 5 + 640  # duty = A / 2.5 + 64


def limit_for_duty(permille):
    """Current (a10) an EV reads from a duty (permille); 0 where no AC charging is allowed
    (x1, state F, digital communication and the undefined bands)."""
    if 80 <= permille < 100:
        return MIN_A10
    if 100 <= permille <= 850:
        return (permille * 6 + 5) // 10  # A = duty * 0.6, rounded
    if 850 < permille <= 960:
        return ((permille - 640) * 25 + 5) // 10  # A = (duty - 64) * 2.5
    if 960 < permille <= 970:
        return MAX_A10
    return 0


def classify(high_mv, previous=A, thresholds=THRESHOLDS_MV, hysteresis_mv=HYSTERESIS_MV):
    """State A..F from the high plateau. A boundary moves `hysteresis_mv` away from the
    `previous` state, so a reading must cross it clearly before the state changes."""
    if high_mv > RANGE_MV or high_mv < -RANGE_MV:
        return F
    level = 0
    before = STATES.index(previous)
    for k in range(len(thresholds)):
        if before <= k:
            boundary = thresholds[k] - hysteresis_mv
        else:
            boundary = thresholds[k] + hysteresis_mv
        if high_mv < boundary:
            level += 1
    return STATES[level]


def diode_ok(low_mv, threshold_mv=DIODE_MV):
    """True if the negative plateau proves the EV's diode (only meaningful with PWM on)."""
    return -RANGE_MV <= low_mv <= threshold_mv


# Proximity resistor bands (ohms, upper bound) and the cable capacity they code (a10).
CABLE_BANDS = ((50, 0), (160, 630), (470, 320), (1000, 200), (2700, 130))


def cable_capacity(ohms):
    """Cable current capacity (a10) from the proximity resistor; 0 = no cable or invalid."""
    if ohms < 0:
        return 0
    for upper, a10 in CABLE_BANDS:
        if ohms < upper:
            return a10
    return 0
