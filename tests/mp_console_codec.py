"""protocol/console.py cases for either interpreter: pytest calls `run` on CPython and feeds
the same cases, one JSON line each, to this script under `micropython`; results must match."""

import json
import sys

from protocol import console as proto


def _plain(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def run(case):
    if "command" in case:
        try:
            request_id, name, args = proto.parse_command(case["command"])
        except proto.ConsoleError as e:
            return ["err", e.code, e.request_id]
        return ["ok", request_id, name, [_plain(a) for a in args]]
    if "words" in case:
        line = proto.join(case["words"])
        return [line, proto.split(line)]
    reader = proto.LineReader(case["max"])
    out = []
    for chunk in case["chunks"]:
        for line in reader.feed(bytes.fromhex(chunk)):
            out.append(line.code if isinstance(line, proto.ConsoleError) else line)
    return out


if __name__ == "__main__":
    for text in sys.stdin:
        print(json.dumps(run(json.loads(text))))
