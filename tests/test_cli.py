import subprocess
import sys

import pytest

from host.cli import build_parser, main


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    subparsers = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in subparsers:
        assert name in out


def test_every_subcommand_has_help():
    for name in build_parser()._subparsers._group_actions[0].choices:  # type: ignore[union-attr]
        result = subprocess.run(
            [sys.executable, "-m", "host", name, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "usage: evse" in result.stdout


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
