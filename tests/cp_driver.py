"""Runs a micropython driver script that answers one JSON line per JSON request line."""

import json
import subprocess
from pathlib import Path

from host import mpy

TESTS = Path(__file__).resolve().parent


class Driver:
    def __init__(self, script: str, *args: str, heapsize: int | None = None):
        self.proc = subprocess.Popen(
            mpy.command(TESTS / script, *args, heapsize=heapsize),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=mpy.environ(),
        )

    def ask(self, **request):
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"driver died (exit {self.proc.wait(5)})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)
