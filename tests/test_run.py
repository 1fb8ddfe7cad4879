"""`evse run` (what `make run` runs): central system, dashboard and a simulated station."""

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from tests.ports import free_port


def test_run_starts_the_stack_and_a_remote_start_charges_also_after_a_reset(tmp_path):
    ocpp, http, web = free_port(), free_port(), free_port()
    argv = [sys.executable, "-m", "host", "run", "--data", str(tmp_path)]
    argv += ["--ocpp-port", str(ocpp), "--http-port", str(http), "--web-port", str(web)]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: nothing it started outlives the test
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()

    def wait_for(predicate, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=deadline - time.monotonic())
            except queue.Empty:
                break
            if predicate(line):
                return line
        raise AssertionError("expected output did not appear")

    try:
        dashboard = wait_for(lambda line: line.startswith("Dashboard:"))
        assert f"http://127.0.0.1:{web}/" in dashboard
        password = dashboard.split("password ")[1].rstrip(")\n")
        assert (tmp_path / "cs" / "operator-password").read_text().strip() == password
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=10) as page:
            assert page.status == 200

        def send(action: str, payload: dict) -> None:
            """`evse cs send`, answered Accepted."""
            sent = subprocess.run(
                [sys.executable, "-m", "host", "cs", "send", "SIM-001", action]
                + [json.dumps(payload), "--data", str(tmp_path / "cs")],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert sent.returncode == 0, sent.stderr
            assert '"Accepted"' in sent.stdout

        def charges() -> None:
            send("RemoteStartTransaction", {"connectorId": 1, "idTag": "DEMO"})
            wait_for(lambda line: " closed " in line and " W " in line and "7400 W" in line)

        charges()
        # Reset: the station restarts, and the EV is still plugged in for the next charge
        send("Reset", {"type": "Soft"})
        wait_for(lambda line: "restarting" in line)
        charges()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            # Its own bound: the station gets 5.5 s to quit, the central system 10 s.
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            output = "".join(lines.queue)
            message = f"evse run did not stop on Ctrl-C; its last output:\n{output}"
            raise AssertionError(message) from None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert code == 0
    assert (tmp_path / "SIM-001" / "station.json").exists()
