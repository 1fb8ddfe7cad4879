"""Modbus codec cases that run on either interpreter: pytest calls `run` on CPython and feeds
the same cases, one JSON line each, to this script under `micropython`."""

import json
import sys

from protocol import modbus


def run(case):
    """One case (a dict) -> a JSON-able result, identical on both interpreters."""
    op = case["op"]
    if op == "crc":
        return modbus.crc16(bytes.fromhex(case["data"]))
    if op == "request":
        frame = modbus.read_request(
            case["address"], case["function"], case["register"], case["count"]
        )
        return [frame.hex(), list(modbus.parse_request(frame) or ())]
    if op == "parse_request":
        return list(modbus.parse_request(bytes.fromhex(case["data"])) or ())
    if op == "find":  # statuses after each prefix length in `cuts`, then for the whole buffer
        data = bytes.fromhex(case["data"])
        statuses = []
        for end in case["cuts"] + [len(data)]:
            statuses.append(
                modbus.find_response(data, end, case["address"], case["function"], case["count"])
            )
        return statuses
    if op == "encode":  # encode then decode again
        buf = bytearray(8)
        modbus.encode(buf, 0, case["kind"], case["value"], case["swapped"])
        return [buf.hex(), modbus.decode(buf, 0, case["kind"], case["swapped"])]
    if op == "decode":
        return modbus.decode(bytes.fromhex(case["data"]), 0, case["kind"], case["swapped"])
    raise ValueError(op)


def main():
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))))


if __name__ == "__main__":
    main()
