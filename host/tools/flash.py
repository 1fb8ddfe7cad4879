"""`evse flash`: erase a board and write a MicroPython image with esptool, then verify it."""

import os
from pathlib import Path

from host.cli import UserError

IMAGE_MAGIC = 0xE9
# Chip id in the extended header of an ESP-IDF image (esptool's IMAGE_CHIP_ID).
IMAGE_CHIPS = {0: "ESP32", 9: "ESP32-S3", 5: "ESP32-C3"}
CHIPS = {"esp32": "ESP32", "esp32s3": "ESP32-S3", "esp32c3": "ESP32-C3"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "flash",
        help="erase a board and write a MicroPython image",
        description="Erase the whole flash of an ESP32, ESP32-S3 or ESP32-C3 board, write a "
        "MicroPython image (the merged .bin, bootloader included) at the chip's bootloader "
        "offset, verify it and reset the board.",
    )
    parser.add_argument("--port", required=True, help="serial port of the board")
    parser.add_argument("--image", required=True, type=Path, help="MicroPython firmware .bin")
    parser.add_argument("--baud", type=int, default=460800, help="baud rate for the transfer")
    parser.set_defaults(func=run)


def run(args) -> int:
    flash(args.port, args.image, args.baud)
    return 0


def image_chip(data: bytes, name: Path) -> str:
    """The chip an image was built for, from its header; refuses anything else."""
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise UserError(f"{name} is not an ESP32 firmware image (no 0x{IMAGE_MAGIC:X} header)")
    chip_id = int.from_bytes(data[12:14], "little")
    if chip_id not in IMAGE_CHIPS:
        raise UserError(f"{name} is for chip id {chip_id}, not one of {', '.join(CHIPS)}")
    return IMAGE_CHIPS[chip_id]


def flash(port: str, image: Path, baud: int = 460800) -> None:
    from esptool.cmds import (
        attach_flash,
        detect_chip,
        erase_flash,
        reset_chip,
        run_stub,
        verify_flash,
        write_flash,
    )
    from esptool.util import FatalError

    try:
        data = image.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {image}: {error.strerror}") from None
    wanted = image_chip(data, image)
    if not os.path.exists(port):
        raise UserError(f"no port {port}: is the board plugged in?")
    try:
        esp = detect_chip(port)
    except FatalError as error:
        raise UserError(f"{port}: {connect_problem(error)}") from None
    try:
        if esp.CHIP_NAME != wanted:
            raise UserError(f"wrong chip: {image} is for {wanted}, the board is {esp.CHIP_NAME}")
        esp = run_stub(esp)
        if baud != esp.ESP_ROM_BAUD:
            esp.change_baud(baud)
        attach_flash(esp)
        erase_flash(esp)
        write_flash(esp, [(esp.BOOTLOADER_FLASH_OFFSET, data)])
        try:
            verify_flash(esp, [(esp.BOOTLOADER_FLASH_OFFSET, data)])
        except FatalError as error:
            raise UserError(f"verify failed: the flash does not hold {image} ({error})") from None
        reset_chip(esp, "hard-reset")
    except FatalError as error:
        raise UserError(f"{port}: {error}") from None
    finally:
        esp._port.close()
    print(f"flashed {image} ({len(data)} bytes) to the {wanted} on {port}, verified, reset")


def connect_problem(error: Exception) -> str:
    text = str(error)
    if "busy" in text or "Resource temporarily unavailable" in text or "lock" in text.lower():
        return "the port is in use by another program (a console? close it first)"
    if "No serial data" in text or "Failed to connect" in text:
        return "no ESP bootloader answers: hold BOOT while pressing RESET, then retry"
    return text
