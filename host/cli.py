"""The `evse` command.

Each subcommand lives in its own module, which provides `add_parser(subparsers)` and sets
`func` on its parser. Modules import heavy dependencies inside their command functions so
that `evse --help` stays fast.
"""

import argparse
import importlib
import sys

COMMANDS: tuple[str, ...] = (
    "host.bench.cli",
    "host.cs.cli",
    "host.tools.build",
    "host.tools.deploy",
    "host.tools.flash",
    "host.tools.provision",
    "host.tools.console",
    "host.sim",
    "host.demo",
    "host.run",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evse",
        description="Tools for evse charging stations: simulator, central system, bench, boards.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except UserError as error:
        print(f"evse {args.command}: {error}", file=sys.stderr)
        return 2


class UserError(Exception):
    """Bad input from the user: printed as one clear line, without a traceback."""
