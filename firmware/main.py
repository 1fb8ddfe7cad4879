"""Entry point: `micropython main.py DATA_DIR` on the unix port, data dir "/" on the board."""

import sys

from board import load

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/"
try:
    board = load(data_dir)  # first of all: the contactor outputs go low
except (OSError, ValueError) as error:
    print("evse: cannot start:", error)
    sys.exit(2)

import app  # noqa: E402 (after the contactors are safe)

app.run(data_dir, board)
