# Driver for tests/test_cp_units.py, run under micropython: one JSON request per stdin line,
# one JSON answer per stdout line. argv[1]: the data directory.
import json
import sys

from ocpp import inbound, isotime
from ocpp.config import Config

from protocol.ocppj import RpcError

data_dir = sys.argv[1]
config = Config(data_dir, 2)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    r = json.loads(line)
    op = r["op"]
    if op == "check":
        try:
            inbound.check(r["action"], r["payload"])
            answer = None
        except RpcError as e:
            answer = e.code
    elif op == "change":
        answer = config.change(r["key"], r["value"])
    elif op == "report":
        answer = config.report(r["keys"])
    elif op == "reload":
        config = Config(data_dir, 2)
        answer = None
    elif op == "iso":
        answer = [isotime.format(t) for t in r["times"]]
    else:
        answer = [isotime.parse(t) for t in r["texts"]]
    print(json.dumps(answer))
