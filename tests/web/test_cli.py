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
    revoked = evse(capsys, "cs", "user", "revoke", "alice", *data)[1]
    assert "revoked 2 token(s) of alice, and ended its dashboard sessions" in revoked
    assert evse(capsys, "cs", "user", "remove", "bob", *data)[0] == 0
    db = storage.Db(storage.database_url(str(tmp_path), None))
    try:
        assert auth.user_by_token(db, token) is None
        assert auth.get_user(db, "bob") is None
    finally:
        db.close()


def test_user_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch) -> None:
    data = ["--data", str(tmp_path)]
    assert evse(capsys, "cs", "user", "add", "alice", "--role", "operator", *data)[0] == 0
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


@pytest.mark.parametrize("tls", [False, True])
def test_serve_runs_the_dashboard_beside_the_ocpp_server(tmp_path, tls) -> None:
    """With TLS set up, the dashboard is https:// too (its passwords and cookies with it)."""
    import re
    import ssl
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.pki import Pki

    data = ["--data", str(tmp_path)]
    options, context, scheme = [], None, "http"
    if tls:
        ca = Pki(tmp_path, "evse-test-ca")
        cert, key = ca.issue("127.0.0.1", ips=["127.0.0.1"])[0]
        options = ["--tls-cert", str(cert), "--tls-key", str(key)]
        context, scheme = ssl.create_default_context(cafile=ca.pem[0]), "https"
    token = subprocess.run(
        [sys.executable, "-m", "host", "cs", "user", "add", "ops", "--role", "read-only", *data],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ports = ["--ocpp-port", "0", "--http-port", "0", "--web-port", "0"]
    server = subprocess.Popen(
        [sys.executable, "-m", "host", "cs", "serve", *data, *ports, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        address = None
        for _ in range(3):
            line = server.stdout.readline()
            found = re.search(rf"dashboard and REST API: ({scheme}://\S+/)", line)
            address = found.group(1) if found else address
        assert address, "serve did not print the dashboard address"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(address + "api/summary", timeout=10, context=context)
        assert refused.value.code == 401
        request = urllib.request.Request(
            address + "api/summary", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            assert json.loads(response.read())["stations"] == 0
        login = urllib.request.Request(
            address + "api/login",
            json.dumps({"name": "ops", "password": token}).encode(),
            {"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(login, timeout=10, context=context) as response:
            assert ("Secure" in response.headers["Set-Cookie"]) == tls
    finally:
        server.terminate()
        server.wait(10)
