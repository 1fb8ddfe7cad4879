# The bench console's line protocol, shared by the station (firmware/console.py) and the
# bench (host/bench/). Sans-I/O; runs on MicroPython and CPython. See README "Bench console".
#
# One line per message, words separated by spaces; a word holding spaces, quotes, backslashes
# or control characters is written "double quoted" with \" \\ \n \r \t escapes.
#   bench -> station:  [#id] command word...        e.g. "#7 ev 1 state C", "tag 1 04A1B2C3"
#   station -> bench:  evt <ms> <kind> word...      e.g. "evt 1200 pilot 1 C"
#                      ok [#id] word...             e.g. "ok #7", "ok 31250"
#                      err [#id] <code> "<text>"    e.g. err #7 bad-args "ev needs ..."
# Any other line from the station (boot noise, tracebacks) is not protocol; readers keep it
# as a log line.

MAX_LINE = 200  # bytes; longer input is dropped up to the next newline with an error

# Error codes a station answers with.
UNKNOWN_COMMAND = "unknown-command"
BAD_ARGS = "bad-args"
LINE_TOO_LONG = "line-too-long"
NOT_TEXT = "not-text"
UNSUPPORTED = "unsupported"
FAILED = "failed"

EV_STATES = "ABCD"
METER_FAULTS = ("ok", "silent", "garbage", "crc", "exception")

# name: (argument kinds, usage). Kinds: c connector (int >= 1), w word, n number, b on|off,
# s EV state letter, m meter fault, k config key, l amps or "clear", and a literal sub-command
# written "=name". "*" ends the list and takes the remaining words (at least one).
COMMANDS = {
    "help": ((), "help"),
    "info": ((), "info"),
    "status": ((), "status"),
    "time": ((), "time"),
    "report": (("n",), "report <ms>  (meter report period, 0 = off)"),
    "tag": (("c", "w"), "tag <connector> <idTag>"),
    "stop": (("c",), "stop <connector>"),
    "limit": (("c", "l"), "limit <connector> <amps>|clear"),
    "available": (("c", "b"), "available <connector> on|off"),
    "clear": (("c",), "clear <connector>  (latched faults whose cause is gone)"),
    "selftest": (("=rcd", "c"), "selftest rcd <connector>"),
    "config": (("w", "*"), "config get <key> | config set <key> <value> | config list"),
    "ev": (("c", "w", "w"), "ev <connector> state A|B|C|D | diode|vent on|off | power <W>"),
    "rcd": (("c", "n"), "rcd <connector> <leak mA>"),
    "temp": (("n",), "temp <celsius>"),
    "weld": (("c", "b"), "weld <connector> on|off"),
    "meter": (("c", "m"), "meter <connector> ok|silent|garbage|crc|exception"),
}


class ConsoleError(Exception):
    """A line that is not a valid command: `code` is one of the error codes above."""

    def __init__(self, code, text, request_id=None):
        super().__init__(code, text)
        self.code = code
        self.text = text
        self.request_id = request_id


# ---- words -------------------------------------------------------------------------------

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def quote(word):
    """The word as written on a line: bare when it can be, else double quoted."""
    word = str(word)
    if word and not _needs_quotes(word):
        return word
    out = ['"']
    for ch in word:
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append("?")  # other control characters never reach a terminal
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _needs_quotes(word):
    for ch in word:
        if ch == " " or ch == '"' or ch == "\\" or ord(ch) < 33 or ord(ch) == 127:
            return True
    return False


def split(line):
    """Words of a line (the inverse of join). Raises ValueError on an unterminated quote."""
    words = []
    i = 0
    n = len(line)
    while i < n:
        ch = line[i]
        if ch == " " or ch == "\t":
            i += 1
        elif ch == '"':
            i += 1
            out = []
            while True:
                if i >= n:
                    raise ValueError("unterminated quote")
                ch = line[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < n:
                    out.append(_ESCAPES.get(line[i + 1], line[i + 1]))
                    i += 2
                else:
                    out.append(ch)
                    i += 1
            words.append("".join(out))
        else:
            start = i
            while i < n and line[i] != " " and line[i] != "\t":
                i += 1
            words.append(line[start:i])
    return words


def join(words):
    return " ".join([quote(w) for w in words])


# ---- bench -> station ----------------------------------------------------------------------


def format_command(name, args=(), request_id=None):
    words = [name] + [str(a) for a in args]
    if request_id is not None:
        words.insert(0, "#" + str(request_id))
    return join(words)


def parse_command(line):
    """(request_id or None, name, args) with args converted to their kinds.

    Raises ConsoleError (carrying the request id when one was read) for anything else."""
    try:
        words = split(line)
    except ValueError as e:
        raise ConsoleError(BAD_ARGS, str(e))
    request_id = None
    if words and words[0].startswith("#"):
        request_id = words.pop(0)[1:]
    if not words:
        raise ConsoleError(UNKNOWN_COMMAND, "empty command", request_id)
    name = words[0]
    spec = COMMANDS.get(name)
    if spec is None:
        raise ConsoleError(UNKNOWN_COMMAND, name + " (try: help)", request_id)
    kinds, usage = spec
    try:
        args = _convert(kinds, words[1:])
        if name == "config":
            _check_config(args)
        elif name == "ev":
            args[2] = _ev_value(args[1], args[2])
    except ValueError:
        raise ConsoleError(BAD_ARGS, "usage: " + usage, request_id)
    return request_id, name, args


def _convert(kinds, words):
    if "*" in kinds:
        if len(words) < len(kinds):
            raise ValueError()
    elif len(words) != len(kinds):
        raise ValueError()
    args = []
    for i in range(len(words)):
        kind = kinds[min(i, len(kinds) - 1)]
        word = words[i]
        if kind == "*":
            args.append(word)
        elif kind == "c":
            value = int(word)
            if value < 1:
                raise ValueError()
            args.append(value)
        elif kind == "n":
            args.append(_number(word))
        elif kind == "b":
            args.append(_onoff(word))
        elif kind == "l":
            args.append(None if word == "clear" else _number(word))
        elif kind == "m":
            if word not in METER_FAULTS:
                raise ValueError()
            args.append(word)
        elif kind[0] == "=":
            if word != kind[1:]:
                raise ValueError()
            args.append(word)
        else:
            args.append(word)
    return args


def _number(word):
    value = float(word)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError()
    return value


def _onoff(word):
    if word == "on":
        return True
    if word == "off":
        return False
    raise ValueError()


def _check_config(args):
    op = args[0]
    if not ((op == "list" and len(args) == 1) or (op == "get" and len(args) == 2)):
        if not (op == "set" and len(args) == 3):
            raise ValueError()


def _ev_value(what, word):
    if what == "state":
        if len(word) != 1 or word not in EV_STATES:
            raise ValueError()
        return word
    if what == "diode" or what == "vent":
        return _onoff(word)
    if what == "power":
        value = _number(word)
        if value < 0:
            raise ValueError()
        return value
    raise ValueError()


# ---- station -> bench ----------------------------------------------------------------------


def format_event(ms, kind, fields=()):
    return join(["evt", str(ms), kind] + [str(f) for f in fields])


def format_ok(request_id=None, fields=()):
    words = ["ok"] if request_id is None else ["ok", "#" + str(request_id)]
    return join(words + [str(f) for f in fields])


def format_err(request_id, code, text):
    words = ["err"] if request_id is None else ["err", "#" + str(request_id)]
    return join(words + [code, text])


def parse_reply(line):
    """A station line as a tuple:
    ("evt", ms, kind, fields) | ("ok", request_id, fields) | ("err", request_id, code, text)
    | ("log", line) for anything that is not protocol."""
    try:
        words = split(line)
    except ValueError:
        return ("log", line)
    if not words:
        return ("log", line)
    head = words[0]
    if head == "evt" and len(words) >= 3:
        try:
            return ("evt", int(words[1]), words[2], words[3:])
        except ValueError:
            return ("log", line)
    if head == "ok" or head == "err":
        request_id = None
        rest = words[1:]
        if rest and rest[0].startswith("#"):
            request_id = rest.pop(0)[1:]
        if head == "ok":
            return ("ok", request_id, rest)
        if len(rest) == 2:
            return ("err", request_id, rest[0], rest[1])
    return ("log", line)


def fields(words):
    """key=value words as a dict (words without "=" are left out)."""
    out = {}
    for word in words:
        i = word.find("=")
        if i > 0:
            out[word[:i]] = word[i + 1 :]
    return out


# ---- bytes -> lines ------------------------------------------------------------------------


class LineReader:
    """Splits a byte stream into lines: bounded length, CR/LF tolerant, garbage reported.

    feed() returns a list of str lines or ConsoleError for lines that were too long or not
    UTF-8; the caller answers those with an error line and goes on."""

    def __init__(self, max_line=MAX_LINE):
        self._buf = bytearray()
        self._max = max_line
        self._overflow = False

    def feed(self, data):
        out = []
        for b in data:
            if b == 10 or b == 13:
                if self._overflow:
                    out.append(ConsoleError(LINE_TOO_LONG, "max %d bytes" % self._max))
                elif self._buf:
                    try:
                        out.append(bytes(self._buf).decode())
                    except UnicodeError:
                        out.append(ConsoleError(NOT_TEXT, "line is not UTF-8"))
                self._buf = bytearray()
                self._overflow = False
            elif self._overflow:
                pass
            elif len(self._buf) >= self._max:
                self._overflow = True
            else:
                self._buf.append(b)
        return out
