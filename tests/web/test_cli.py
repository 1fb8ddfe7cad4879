"""`evse cs user`: users and tokens in the central system's database."""

import io
import json

import pytest

from host import cli
from host.cs import storage
from host.web import auth


def evse(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_user_add_token_revoke_remove(tmp_path, capsys, monkeypatch) -> None:
    data = ["--data", str(tmp_path)]
    code, token, err = evse(capsys, "cs", "user", "add", "alice", "--role", "operator", *data)
    token = token.strip()
    assert code == 0 and token.startswith("evse_") and "Bearer" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("a long password\n"))
    assert evse(capsys, "cs", "user", "add", "bob", "--role", "read-only", "--password-stdin",
                *data)[0] == 0  # fmt: skip
    second = evse(capsys, "cs", "user", "token", "alice", *data)[1].strip()
    db = storage.Db(storage.database_url(str(tmp_path), None))
    try:
        assert auth.user_by_token(db, token) == {"name": "alice", "role": "operator"}
        assert auth.user_by_token(db, second)["name"] == "alice"
        assert auth.password_matches(auth.get_user(db, "bob")["password"], "a long password")
    finally:
        db.close()
    code, out, _ = evse(capsys, "cs", "user", "list", "--json", *data)
    users = {u["name"]: u for u in json.loads(out)}
    assert users["alice"]["tokens"] == 2 and users["alice"]["role"] == "operator"
    assert users["bob"]["has_password"] is True and users["bob"]["role"] == "read-only"
    assert "revoked 2 token(s)" in evse(capsys, "cs", "user", "revoke", "alice", *data)[1]
    assert evse(capsys, "cs", "user", "remove", "bob", *data)[0] == 0
    db = storage.Db(storage.database_url(str(tmp_path), None))
    try:
        assert auth.user_by_token(db, token) is None
        assert auth.get_user(db, "bob") is None
    finally:
        db.close()


def test_user_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch) -> None:
    data = ["--data", str(tmp_path)]
    code, _, err = evse(capsys, "cs", "user", "token", "nobody", *data)
    assert code == 2 and "no user 'nobody'" in err
    code, _, err = evse(capsys, "cs", "user", "add", "bad name", "--role", "operator", *data)
    assert code == 2 and "user name" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = evse(
        capsys, "cs", "user", "add", "carol", "--role", "operator", "--password-stdin", *data
    )
    assert code == 2 and "at least 8 characters" in err
    with pytest.raises(SystemExit):
        cli.main(["cs", "user", "add", "carol", "--role", "admin", *data])
