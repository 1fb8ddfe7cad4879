# ISO 8601 UTC timestamps for OCPP, computed from Unix seconds without time.gmtime
# (whose epoch differs between ports).


def format(t):
    days, rem = divmod(int(t), 86400)
    # Civil-from-days (proleptic Gregorian), valid for every date after 1970.
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (m <= 2)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, rem // 3600, rem // 60 % 60, rem % 60)


def parse(text):
    """Unix seconds of 'YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM|-HH:MM)'; ValueError if malformed."""
    if len(text) < 19 or text[4] != "-" or text[7] != "-" or text[10] != "T":
        raise ValueError(text)
    y, m, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hh, mm, ss = int(text[11:13]), int(text[14:16]), int(text[17:19])
    rest = text[19:]
    if rest[:1] == ".":
        i = 1
        while i < len(rest) and rest[i].isdigit():
            i += 1
        rest = rest[i:]
    offset = 0
    if rest in ("Z", ""):
        pass
    elif len(rest) == 6 and rest[0] in "+-" and rest[3] == ":":
        offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        raise ValueError(text)
    if not (1 <= m <= 12 and 1 <= d <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise ValueError(text)
    # Days-from-civil, the inverse of format().
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return (era * 146097 + doe - 719468) * 86400 + hh * 3600 + mm * 60 + ss - offset
