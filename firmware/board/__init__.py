"""Hardware adapters. `load(data_dir)` builds the board that board.json names."""

import json


def path(data_dir, name):
    return data_dir.rstrip("/") + "/" + name


def read_config(data_dir):
    """board.json as a dict; a missing file means the simulated board with a meter."""
    try:
        with open(path(data_dir, "board.json")) as f:
            text = f.read()
    except OSError:
        return {"board": "sim", "meter": {"model": "SDM630"}}
    try:
        config = json.loads(text)
    except ValueError:
        raise ValueError("board.json is not valid JSON")
    if not isinstance(config, dict):
        raise ValueError("board.json must hold an object")
    return config


def load(data_dir):
    config = read_config(data_dir)
    name = config.get("board", "sim")
    if name == "esp32":
        from board import esp32

        return esp32.Board(data_dir, config)
    if name == "sim":
        import os

        from board import sim

        speed = os.getenv("EVSE_SIM_SPEED") or "1"  # host/sim.py sets both; see board/sim.py
        speed = sim.INFINITY if speed == "max" else float(speed)
        step_ms = int(os.getenv("EVSE_SIM_STEP_MS") or sim.STEP_MS)
        console_fd = os.getenv("EVSE_CONSOLE_FD")  # host/sim.py --console: a pty's master
        port = None
        if console_fd:
            from board.pty import PtyPort

            port = PtyPort(int(console_fd))
        return sim.Board(data_dir, speed=speed, config=config, step_ms=step_ms, console_port=port)
    raise ValueError("board.json: unknown board " + repr(name))
