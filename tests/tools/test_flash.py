import os
import pty
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest
import serial

from host.cli import main

MOCK = str(Path(sys.executable).with_name("esp32-mock-bootloader"))
IMAGE_CHIP_IDS = {"esp32": 0, "esp32s3": 9, "esp32c3": 5}


def firmware_image(chip: str, size: int = 64_000) -> bytes:
    """An image with a valid ESP-IDF header for `chip` and a pseudo-random body."""
    header = bytes([0xE9, 3, 2, 0x20, 0, 0x10, 0, 0, 0xEE, 0, 0, 0])
    header += IMAGE_CHIP_IDS[chip].to_bytes(2, "little") + bytes(10)
    body = bytes((i * 7919 >> 3) & 0xFF for i in range(size - len(header)))
    return header + body


@pytest.fixture
def mock_board(tmp_path, request):
    """A mock ESP ROM bootloader on a pseudo-terminal; yields (port, chip)."""
    chip = getattr(request, "param", "esp32")
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [MOCK, "run", "--pty", "--port-file", str(port_file), "--chip", chip],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, ESP32_MOCK_BOOTLOADER_STATE_DIR=str(tmp_path / "state")),
    )
    deadline = time.monotonic() + 30
    while not (port_file.exists() and port_file.read_text().strip()):
        assert process.poll() is None and time.monotonic() < deadline, "mock did not start"
        time.sleep(0.05)
    yield port_file.read_text().strip(), chip
    process.kill()
    process.wait(timeout=10)


def read_back(port: str, offset: int, size: int) -> bytes:
    """Read the mock's flash through the ROM loader (request/answer per 64 bytes: the mock's
    streamed stub read gives up when the host is slow). The mock starts a new session 3 s after
    the flash ended, whatever is going on then: a read cut by that reset is repeated once."""
    from esptool.cmds import detect_chip, read_flash
    from esptool.util import FatalError

    for attempt in range(2):
        esp = detect_chip(port)
        try:
            data = read_flash(esp, offset, size)
            assert data is not None
            return data
        except FatalError:
            if attempt:
                raise
        finally:
            esp._port.close()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("mock_board", "offset"), [("esp32", 0x1000), ("esp32c3", 0)], indirect=["mock_board"]
)
def test_flash_writes_the_image_at_the_bootloader_offset(mock_board, offset, tmp_path, capsys):
    port, chip = mock_board
    image = tmp_path / "micropython.bin"
    image.write_bytes(firmware_image(chip))
    assert main(["flash", "--port", port, "--image", str(image)]) == 0
    assert "verified" in capsys.readouterr().out
    assert read_back(port, offset, image.stat().st_size) == image.read_bytes()


@pytest.mark.parametrize("mock_board", ["esp32c3"], indirect=True)
def test_flash_refuses_an_image_for_another_chip(mock_board, tmp_path, capsys):
    port, _ = mock_board
    image = tmp_path / "esp32.bin"
    image.write_bytes(firmware_image("esp32"))
    assert main(["flash", "--port", port, "--image", str(image)]) == 2
    assert "wrong chip" in capsys.readouterr().err
    assert read_back(port, 0, 64) == b"\xff" * 64  # nothing erased or written


def test_flash_refuses_a_file_that_is_no_image(tmp_path, capsys):
    image = tmp_path / "notes.bin"
    image.write_bytes(b"hello" * 100)
    assert main(["flash", "--port", "/dev/null", "--image", str(image)]) == 2
    assert "not an ESP32 firmware image" in capsys.readouterr().err


def test_flash_names_a_missing_port(tmp_path, capsys):
    image = tmp_path / "micropython.bin"
    image.write_bytes(firmware_image("esp32"))
    assert main(["flash", "--port", str(tmp_path / "ttyUSB9"), "--image", str(image)]) == 2
    assert "no port" in capsys.readouterr().err


def test_flash_names_a_port_in_use(mock_board, tmp_path, capsys):
    port, chip = mock_board
    image = tmp_path / "micropython.bin"
    image.write_bytes(firmware_image(chip))
    with serial.Serial(port, exclusive=True):
        assert main(["flash", "--port", port, "--image", str(image)]) == 2
    assert "in use" in capsys.readouterr().err


def test_flash_says_when_no_bootloader_answers(tmp_path, capsys):
    silent, silent_tty = pty.openpty()  # a serial line with nothing behind it
    tty.setraw(silent_tty)
    image = tmp_path / "micropython.bin"
    image.write_bytes(firmware_image("esp32"))
    try:
        assert main(["flash", "--port", os.ttyname(silent_tty), "--image", str(image)]) == 2
    finally:
        os.close(silent)
        os.close(silent_tty)
    assert "no ESP bootloader answers" in capsys.readouterr().err
