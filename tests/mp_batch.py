"""Run a micropython driver script over a batch of JSON cases (one line in, one line out)."""

import json
import subprocess

from host import mpy


def under_micropython(script, cases, heapsize=None, timeout=120):
    """The JSON result lines `script` prints for `cases`, fed one JSON line each."""
    lines = "".join(json.dumps(case) + "\n" for case in cases)
    done = subprocess.run(
        mpy.command(script, heapsize=heapsize),
        input=lines.encode(),
        env=mpy.environ(),
        capture_output=True,
        timeout=timeout,
    )
    # micropython prints uncaught tracebacks on stdout
    assert done.returncode == 0, (done.stdout + done.stderr).decode()[-2000:]
    return [json.loads(line) for line in done.stdout.decode().splitlines()]
