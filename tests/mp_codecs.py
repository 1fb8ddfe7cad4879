"""Runs codec cases on whichever interpreter imports it: pytest calls `run` on CPython and
feeds the same cases, one JSON line each, to this script under `micropython`."""

import json
import sys

from protocol import dns, ocppj
from protocol import websocket as ws


def _event(opcode, value):
    if opcode == ws.OP_CLOSE:
        return [opcode, list(value)]
    if opcode == ws.OP_TEXT:
        return [opcode, value]
    return [opcode, bytes(value).hex()]


_INFINITE = (float("inf"), float("-inf"))


def _jsonable(value):
    """`value` with numbers JSON cannot write as text ("1e999" reads as inf, which
    MicroPython's json.dumps writes as `inf`, no JSON at all)."""
    if type(value) is float and (value != value or value in _INFINITE):
        return repr(value)
    if type(value) is list:
        return [_jsonable(item) for item in value]
    if type(value) is dict:
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def run(case):
    """One case (a dict) -> a JSON-able result, identical on both interpreters."""
    op = case["op"]
    if op == "read":  # feed server bytes in chunks; events, then the error code if any
        reader = ws.FrameReader(case["max_size"])
        data = bytes.fromhex(case["data"])
        events = []
        start = 0
        try:
            for end in case["cuts"] + [len(data)]:
                for opcode, value in reader.feed(data[start:end]):
                    events.append(_event(opcode, value))
                start = end
        except ws.WebSocketError as error:
            return [events, error.code]
        return [events, None]
    if op == "encode":
        mask = case["mask"]
        frame = ws.encode_frame(
            case["opcode"],
            bytes.fromhex(case["payload"]),
            None if mask is None else bytes.fromhex(mask),
            case["fin"],
        )
        return bytes(frame).hex()
    if op == "utf8":
        return ws._valid_utf8(bytes.fromhex(case["data"]))
    if op == "is_json":
        return ocppj.is_json(case["text"])
    if op == "decode":  # OCPP-J text -> message or [code, uid, message_type]
        try:
            return _jsonable(list(ocppj.decode(case["text"])))
        except ocppj.RpcError as error:
            return [error.code, error.uid, error.message_type]
    if op == "roundtrip":  # encode a message and decode it again
        message = case["message"]
        if message[0] == ocppj.CALL:
            text = ocppj.encode_call(message[1], message[2], message[3])
        elif message[0] == ocppj.CALLRESULT:
            text = ocppj.encode_result(message[1], message[2])
        else:
            text = ocppj.encode_error(message[1], message[2], message[3], message[4])
        return _jsonable(list(ocppj.decode(text)))
    if op == "dns_query":
        try:
            return bytes(dns.query(case["id"], case["name"])).hex()
        except ValueError:
            return "ValueError"
    if op == "dns_answer":  # [addresses, ttl] or "ValueError"
        try:
            return list(dns.answer(bytes.fromhex(case["data"]), case["id"], case["name"]))
        except ValueError:
            return "ValueError"
    raise ValueError(op)


def under_micropython(cases):
    """Results of `run` for each case, computed in one `micropython` process (CPython side)."""
    import subprocess

    from host import mpy

    lines = "".join(json.dumps(case, ensure_ascii=False) + "\n" for case in cases)
    done = subprocess.run(
        mpy.command(__file__),
        input=lines.encode(),
        env=mpy.environ(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    # split on newlines only: MicroPython leaves U+2028 and the like unescaped
    return [
        json.loads(line) for line in done.stdout.decode("utf-8", "surrogatepass").split("\n")[:-1]
    ]


def main():
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))))


if __name__ == "__main__":
    main()
