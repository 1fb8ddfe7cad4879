"""Entry point: `micropython main.py DATA_DIR` on the unix port, data dir "/" on the board."""

import os
import sys

try:  # the firmware in a ROMFS partition (mounted at /rom): its bytecode runs from flash
    os.stat("/rom/app.mpy")
    sys.path.insert(0, "/rom")  # ahead of any copy on the filesystem
except OSError:
    pass

from board import load  # noqa: E402

data_dir = sys.argv[1] if len(sys.argv) > 1 else "/"
try:
    board = load(data_dir)  # first of all: the contactor outputs go low
except (OSError, ValueError) as error:
    print("evse: cannot start:", error)
    sys.exit(2)

import app  # noqa: E402 (after the contactors are safe)

app.run(data_dir, board)
