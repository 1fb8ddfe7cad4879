"""Payload validation on the central system's event loop: the compiled validators
(host/cs/schemas.py) against jsonschema's Draft4Validator, which the `ocpp` package runs,
on the load generator's messages (benchmarks/bench_cs_load.py). Prints microseconds per
payload, the best of several rounds (a shared machine's speed varies; both run in turns).

    python benchmarks/bench_schemas.py
"""

import decimal
import json
import os
import sys
import time

from jsonschema import Draft4Validator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_cs_load import sampled_values  # noqa: E402
from host.cs import schemas  # noqa: E402

T = "2026-11-27T10:00:00Z"
MIX = {  # as the load generator sends them
    "MeterValues": {
        "connectorId": 1,
        "transactionId": 5,
        "meterValue": [{"timestamp": T, "sampledValue": json.loads(sampled_values())}],
    },
    "StatusNotification": {
        "connectorId": 1,
        "errorCode": "NoError",
        "status": "Preparing",
        "timestamp": T,
    },
    "StartTransaction": {"connectorId": 1, "idTag": "TAG00001", "meterStart": 0, "timestamp": T},
    "StopTransaction": {"transactionId": 5, "meterStop": 1000, "timestamp": T},
    "Heartbeat": {},
}


def per_call_us(check, payload, rounds: int = 15, calls: int = 2000) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            check(payload)
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


def main() -> None:
    for action, payload in MIX.items():
        with open(os.path.join(schemas.SCHEMA_DIR, action + ".json"), encoding="utf-8") as f:
            reference = Draft4Validator(json.load(f, parse_float=decimal.Decimal))
        schemas.check(action, payload)
        assert reference.is_valid(payload)
        ours = per_call_us(lambda p, a=action: schemas.check(a, p), payload)
        theirs = per_call_us(reference.validate, payload, rounds=3, calls=200)
        print(f"{action:18} compiled {ours:6.2f} us   jsonschema {theirs:8.1f} us")


if __name__ == "__main__":
    main()
