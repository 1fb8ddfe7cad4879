"""`evse cs user ...`: operators of the dashboard and REST API.

evse cs user add NAME --role operator [--password-stdin]   prints a new API token
evse cs user token NAME                                    prints another token
evse cs user revoke NAME                                   invalidates all its tokens
evse cs user list [--json] | evse cs user remove NAME
"""

import argparse
import json
import sys
from typing import Any

from host.cli import UserError

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")


def add_parsers(commands: Any, db_options: argparse.ArgumentParser) -> None:
    """Add `user` to the `evse cs` subcommands (called from host/cs/cli.py)."""
    parser = commands.add_parser("user", help="dashboard and REST API users, tokens")
    actions = parser.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    add = actions.add_parser(
        "add", parents=[db_options], help="add or change a user; prints a new API token"
    )
    add.add_argument("name")
    add.add_argument("--role", choices=("read-only", "operator"), required=True)
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read a dashboard password from standard input (else log in with the token)",
    )
    add.set_defaults(func=user_command)

    for action, text in (
        ("token", "print a new API token for a user"),
        ("revoke", "invalidate all API tokens of a user"),
        ("remove", "delete a user, its tokens and sessions"),
    ):
        sub = actions.add_parser(action, parents=[db_options], help=text)
        sub.add_argument("name")
        sub.set_defaults(func=user_command)

    listing = actions.add_parser("list", parents=[db_options], help="list users")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=user_command)


def user_command(args: argparse.Namespace) -> int:
    from host.cs.cli import open_database, print_table
    from host.web import auth, schema

    name = getattr(args, "name", None)
    if name is not None and not (1 <= len(name) <= 100 and set(name) <= NAME_CHARS):
        raise UserError(f"user name {name!r}: use 1 to 100 letters, digits or . _ @ -")
    password = None
    if getattr(args, "password_stdin", False):
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            raise UserError("password: at least 8 characters")
    db = open_database(args, create=args.user_command == "add")  # the others need users
    try:
        schema.migrate(db)
        if args.user_command == "list":
            rows = auth.list_users(db)
            if args.json:
                print(json.dumps(rows, indent=1))
            else:
                print_table(rows)
            return 0
        if args.user_command == "add":
            auth.add_user(db, name, args.role, password)
        elif auth.get_user(db, name) is None:
            raise UserError(f"no user {name!r} (see `evse cs user list`)")
        if args.user_command in ("add", "token"):
            token = auth.new_token(db, name)
            db.commit()
            print(token)
            hint = "send it as 'Authorization: Bearer <token>' or log in with it"
            print(f"(API token for {name}: {hint})", file=sys.stderr)
        elif args.user_command == "revoke":
            revoked = auth.revoke_tokens(db, name)
            print(f"revoked {revoked} token(s) of {name}, and ended its dashboard sessions")
        else:
            auth.remove_user(db, name)
            print(f"removed {name}")
        db.commit()
    finally:
        db.close()
    return 0
