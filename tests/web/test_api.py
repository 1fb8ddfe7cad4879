"""REST API over real HTTP against a running central system with stations on real WebSockets."""

import datetime
import functools
import hashlib
import json
import re
import threading
import urllib.request
from typing import Any

import pytest
import websockets.sync.client
from ocpp.v16 import call

from host.cs import storage
from host.web import api, auth
from tests.web.conftest import PASSWORD, LiveCS, lost_transaction, wait_until
from tests.web.station import now

SAMPLE_PATH_VALUES = {"station": "NOSUCH", "id": "1", "tag": "TAG"}


def concrete(path: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: SAMPLE_PATH_VALUES[m.group(1)], path)


def online(live: LiveCS, station_id: str) -> bool:
    response = live.request("GET", f"/api/stations/{station_id}")
    return response.status == 200 and response.json()["online"]


def test_every_route_needs_a_token_or_session(live: LiveCS) -> None:
    for route in api.ROUTES:
        if route.role is None:
            continue
        for headers in ({}, {"Authorization": "Bearer evse_not-a-token"}):
            response = live.request(route.method, concrete(route.path), role=None, headers=headers)
            assert response.status == 401, route
            assert response.json()["error"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_operator_routes_refuse_the_read_only_role(live: LiveCS) -> None:
    operator_routes = [r for r in api.ROUTES if r.role == "operator"]
    assert len(operator_routes) >= 4
    for route in operator_routes:
        response = live.request(route.method, concrete(route.path), {}, role="read-only")
        assert response.status == 403, route
        assert "operator" in response.json()["error"]


def test_openapi_describes_every_route(live: LiveCS) -> None:
    document = live.request("GET", "/api/openapi.json", role="read-only").json()
    assert document["openapi"].startswith("3.")
    for route in api.ROUTES:
        operation = document["paths"][route.path][route.method.lower()]
        assert operation["summary"]
        names = {p["name"] for p in operation["parameters"]}
        assert {p.name for p in route.params} <= names
        assert set(re.findall(r"{(\w+)}", route.path)) <= names
    send = document["paths"]["/api/stations/{station}/commands"]["post"]
    assert "RemoteStartTransaction" in str(send["requestBody"])


def test_login_session_cookie_csrf_and_logout(live: LiveCS) -> None:
    bad = live.request("POST", "/api/login", {"name": "op", "password": "wrong"}, role=None)
    assert bad.status == 401
    assert (
        live.request("POST", "/api/login", {"name": "op"}, role=None).json()["field"] == "password"
    )
    good = live.request("POST", "/api/login", {"name": "op", "password": PASSWORD}, role=None)
    assert good.status == 200 and good.json() == {"name": "op", "role": "operator"}
    cookie_header = good.headers["Set-Cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=Strict" in cookie_header
    assert "Secure" not in cookie_header  # plain HTTP: a Secure cookie would not come back
    # Behind a proxy that ends TLS and says so, the browser is on HTTPS: the cookie is Secure.
    proxied = live.request(
        "POST",
        "/api/login",
        {"name": "op", "password": PASSWORD},
        role=None,
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "Secure" in proxied.headers["Set-Cookie"]
    cookie = {"Cookie": cookie_header.split(";")[0]}
    assert live.request("GET", "/api/me", role=None, headers=cookie).json()["name"] == "op"
    # A cookie-authenticated change must be JSON: a cross-site form cannot send that.
    form = {"Cookie": cookie["Cookie"], "Content-Type": "application/x-www-form-urlencoded"}
    refused = live.request("PUT", "/api/id-tags/CSRF", raw=b"x=1", role=None, headers=form)
    assert refused.status == 400 and refused.json()["field"] == "Content-Type"
    assert live.request("POST", "/api/logout", {}, role=None, headers=cookie).status == 200
    assert live.request("GET", "/api/me", role=None, headers=cookie).status == 401
    # An API token also logs in to the dashboard, but only as its own user.
    token = live.tokens["read-only"]
    by_token = live.request("POST", "/api/login", {"name": "viewer", "password": token}, role=None)
    assert by_token.json()["role"] == "read-only"
    other = live.request("POST", "/api/login", {"name": "op", "password": token}, role=None)
    assert other.status == 401
    # A password that begins as tokens do is still a password (it was taken for a token only)
    live.db(auth.add_user, "evse-fan", "read-only", "evse_forever")
    fan = live.request(
        "POST", "/api/login", {"name": "evse-fan", "password": "evse_forever"}, role=None
    )
    assert fan.status == 200 and fan.json()["name"] == "evse-fan"
    # Nor can a cross-site form log the browser in as another user: a text/plain body can
    # spell JSON, {"name": "viewer", "password": "...="} from <input name='{"name": ...'>.
    plain = {"Content-Type": "text/plain"}
    body = json.dumps({"name": "viewer", "password": token}).encode()
    forged = live.request("POST", "/api/login", raw=body, role=None, headers=plain)
    assert forged.status == 400 and "Set-Cookie" not in forged.headers


def test_a_wrong_user_name_costs_as_long_as_a_wrong_password(
    live: LiveCS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login with an unknown name (or of a user with a token only) was refused at once, one
    with a wrong password after an 80 ms scrypt: the time told which user names exist."""
    checks = []
    scrypt = hashlib.scrypt

    def counted(*args: Any, **kwargs: Any) -> bytes:
        checks.append(args)
        return scrypt(*args, **kwargs)

    monkeypatch.setattr(auth.hashlib, "scrypt", counted)
    live.db(auth.add_user, "tokens-only", "read-only")
    for name in ("op", "nobody", "tokens-only"):
        checks.clear()
        body = {"name": name, "password": "a wrong password"}
        assert live.request("POST", "/api/login", body, role=None).status == 401
        assert len(checks) == 1, name


def test_revoking_tokens_ends_the_sessions_they_opened(live: LiveCS) -> None:
    """A token also logs in to the dashboard: its session outlived the token's revocation
    (`evse cs user revoke`) by up to 12 hours."""
    live.db(auth.add_user, "leaked", "operator")
    token = live.db(auth.new_token, "leaked")
    login = live.request("POST", "/api/login", {"name": "leaked", "password": token}, role=None)
    cookie = {"Cookie": login.headers["Set-Cookie"].split(";")[0]}
    assert live.request("GET", "/api/me", role=None, headers=cookie).status == 200
    assert live.db(auth.revoke_tokens, "leaked") == 1
    assert live.request("GET", "/api/me", role=None, headers=cookie).status == 401
    refused = live.request("DELETE", "/api/id-tags/NONE", {}, role=None, headers=cookie)
    assert refused.status == 401


def test_a_new_password_ends_the_sessions_of_the_old_one(live: LiveCS) -> None:
    """`evse cs user add NAME --password-stdin` for a user whose password leaked: whoever had
    logged in with it stayed logged in for up to 12 hours."""
    live.db(auth.add_user, "changes", "operator", "the old password")
    old = live.request(
        "POST", "/api/login", {"name": "changes", "password": "the old password"}, role=None
    )
    cookie = {"Cookie": old.headers["Set-Cookie"].split(";")[0]}
    live.db(auth.add_user, "changes", "operator")  # a new role or none: sessions go on
    assert live.request("GET", "/api/me", role=None, headers=cookie).status == 200
    live.db(auth.add_user, "changes", "operator", "the new password")
    assert live.request("GET", "/api/me", role=None, headers=cookie).status == 401
    new = live.request(
        "POST", "/api/login", {"name": "changes", "password": "the new password"}, role=None
    )
    assert new.status == 200


def test_password_guesses_are_throttled_per_name_and_tokens_are_not(live: LiveCS) -> None:
    """Logins were refused at full speed, about 100 guesses a second on two cores."""
    live.db(auth.add_user, "guessed", "operator", "the real password")
    token = live.db(auth.new_token, "guessed")
    login = {"name": "guessed", "password": "a guess"}
    for _ in range(auth.LoginThrottle.FREE_FAILURES):
        assert live.request("POST", "/api/login", login, role=None).status == 401
    for password in ("another guess", "the real password"):  # not even tried meanwhile
        refused = live.request("POST", "/api/login", dict(login, password=password), role=None)
        assert refused.status == 429
        assert re.search(r"the next try in \d+ s", refused.json()["error"])
    assert live.request("POST", "/api/login", dict(login, password=token), role=None).status == 200
    nobody = {"name": "nobody-at-all", "password": "a guess"}  # unknown names alike
    for _ in range(auth.LoginThrottle.FREE_FAILURES):
        assert live.request("POST", "/api/login", nobody, role=None).status == 401
    assert live.request("POST", "/api/login", nobody, role=None).status == 429


def test_a_login_throttle_pauses_forgets_and_stays_bounded() -> None:
    now = [1000.0]
    throttle = auth.LoginThrottle(lambda: now[0])
    for _ in range(throttle.FREE_FAILURES):
        assert throttle.wait_s("op") == 0
        throttle.failed("op")
    assert throttle.wait_s("op") == throttle.PAUSE_S
    now[0] += 4
    assert throttle.wait_s("op") == throttle.PAUSE_S - 4
    now[0] += throttle.PAUSE_S
    assert throttle.wait_s("op") == 0  # one more try...
    throttle.failed("op")
    assert throttle.wait_s("op") == throttle.PAUSE_S  # ...then a pause again
    now[0] += throttle.FORGET_S
    assert throttle.wait_s("op") == 0
    throttle.failed("op")  # forgotten: counted from 1 again
    assert throttle.wait_s("op") == 0
    throttle.succeeded("op")
    for n in range(throttle.NAMES_KEPT + 1):  # the least recently failed names go first
        throttle.failed(f"name{n}")
    assert len(throttle._failed) == throttle.NAMES_KEPT and "name0" not in throttle._failed


def test_stations_connectors_and_live_status(live: LiveCS) -> None:
    with live.station("API-ST1") as station:
        wait_until(lambda: online(live, "API-ST1"), what="station online")
        detail = live.request("GET", "/api/stations/API-ST1").json()
        assert detail["vendor"] == "H8" and detail["registration"] == "Accepted"
        assert [c["connector_id"] for c in detail["connectors"]] == [0, 1, 2]
        assert "auth_hash" not in detail and "pending_auth_hash" not in detail
        assert (detail["auth_key_pending"], detail["pending_security_profile"]) == (False, None)
        live.run(station.status(2, "Faulted", "GroundFailure"))
        connectors = live.request("GET", "/api/stations/API-ST1/connectors").json()
        assert connectors[2]["status"] == "Faulted" and connectors[2]["faulted"]
        problems = live.request("GET", "/api/stations?problems=true&q=API-ST1").json()
        assert [s["id"] for s in problems["items"]] == ["API-ST1"]
        assert live.request("GET", "/api/summary").json()["faulted_connectors"] >= 1
        listing = live.request("GET", "/api/stations?online=true&q=API-ST", role="read-only")
        assert "API-ST1" in [s["id"] for s in listing.json()["items"]]
        live.run(station.status(2, "Available"))
    wait_until(lambda: not online(live, "API-ST1"), what="station offline")
    offline = live.request("GET", "/api/stations?online=false&q=API-ST1").json()
    assert offline["items"][0]["id"] == "API-ST1" and offline["total"] == 1
    assert live.request("GET", "/api/stations?problems=1&q=API-ST1").json()["total"] == 1


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/stations?limit=0", "limit"),
        ("/api/stations?limit=abc", "limit"),
        ("/api/stations?offset=-1", "offset"),
        ("/api/stations?online=maybe", "online"),
        ("/api/stations?colour=red", "colour"),
        ("/api/messages?since=yesterday", "since"),
        ("/api/messages?until=0999-01-01", "until"),  # out of range: 400, not 500
        ("/api/messages?direction=sideways", "direction"),
        ("/api/commands?state=lost", "state"),
        ("/api/transactions/abc", "id"),
        ("/api/commands/1x", "id"),
        ("/api/transactions/%C2%B2", "id"),  # a digit to str.isdigit, not to int(): was a 500
        ("/api/commands/%C2%B2", "id"),
        ("/api/id-tags/" + "X" * 21, "tag"),
    ],
)
def test_bad_query_input_names_the_field(live: LiveCS, path: str, field: str) -> None:
    response = live.request("GET", path, role="read-only")
    assert response.status == 400
    assert response.json()["field"] == field and field in response.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/stations/NOSUCH",
        "/api/stations/NOSUCH/connectors",
        "/api/stations/NOSUCH/commands",
        "/api/transactions/987654",
        "/api/transactions/987654/meter-values",
        "/api/commands/987654",
        "/api/id-tags/NOSUCH",
    ],
)
def test_unknown_items_are_404(live: LiveCS, path: str) -> None:
    response = live.request("GET", path, role="read-only")
    assert response.status == 404 and response.json()["error"].startswith("no ")


def test_an_operator_closes_a_transaction_its_station_will_not(live: LiveCS) -> None:
    tx_id = lost_transaction(live, "API-GONE")
    closed = live.request("POST", f"/api/transactions/{tx_id}/close")
    assert closed.status == 200 and closed.json()["stop_reason"] == "ClosedByOperator"
    active = live.request("GET", "/api/transactions?active=true&station=API-GONE")
    assert active.json()["items"] == []
    again = live.request("POST", f"/api/transactions/{tx_id}/close")
    assert again.status == 409 and "has ended already" in again.json()["error"]
    assert live.request("POST", f"/api/transactions/{tx_id + 1000}/close").status == 404


def test_remote_start_answers_with_the_transaction_id_then_stop(live: LiveCS) -> None:
    live.request("PUT", "/api/id-tags/RFID1", {"max_active": 2})
    with live.station("API-ST2") as station:
        response = live.request(
            "POST",
            "/api/stations/API-ST2/commands",
            {"action": "RemoteStartTransaction", "payload": {"connectorId": 1, "idTag": "RFID1"},
             "wait_s": 20},
        )  # fmt: skip
        command = response.json()
        assert response.status == 200 and command["state"] == "answered"
        assert command["response"] == {"status": "Accepted"}
        tx_id = command["transaction_id"]
        assert isinstance(tx_id, int)
        assert station.received[0] == (
            "RemoteStartTransaction",
            {"idTag": "RFID1", "connector_id": 1},
        )

        def samples() -> int:
            return len(live.request("GET", f"/api/transactions/{tx_id}").json()["series"])

        wait_until(lambda: samples() >= 3, what="three meter samples")
        tx = live.request("GET", f"/api/transactions/{tx_id}", role="read-only").json()
        assert tx["station"] == "API-ST2" and tx["stop_time"] is None
        point = tx["series"][-1]
        assert point["power_w"] == 7400 and point["energy_wh"] > 0
        values = live.request("GET", f"/api/transactions/{tx_id}/meter-values?limit=2").json()
        assert len(values["items"]) == 2 and values["next_offset"] == 2
        active = live.request("GET", "/api/transactions?station=API-ST2&active=true").json()
        assert [t["id"] for t in active["items"]] == [tx_id]

        stop = live.request(
            "POST",
            "/api/stations/API-ST2/commands",
            {"action": "RemoteStopTransaction", "payload": {"transactionId": tx_id}, "wait_s": 20},
        ).json()
        assert stop["state"] == "answered" and stop["response"] == {"status": "Accepted"}
        wait_until(
            lambda: live.request("GET", f"/api/transactions/{tx_id}").json()["stop_time"],
            what="transaction stopped",
        )
    done = live.request("GET", "/api/transactions?station=API-ST2&active=false").json()
    assert done["items"][0]["id"] == tx_id and done["items"][0]["stop_reason"] == "Remote"
    assert done["items"][0]["energy_wh"] > 0
    for spelling in ("RFID1", "rfid1"):  # id tags are case-insensitive
        by_tag = live.request("GET", f"/api/transactions?id_tag={spelling}").json()
        assert tx_id in [t["id"] for t in by_tag["items"]]


OPERATIONS = [
    ("Reset", {"type": "Soft"}, {"status": "Accepted"}),
    ("UnlockConnector", {"connectorId": 1}, {"status": "Unlocked"}),
    ("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}, {"status": "Accepted"}),
    ("ChangeConfiguration", {"key": "HeartbeatInterval", "value": "60"}, {"status": "Accepted"}),
    (
        "GetConfiguration",
        {"key": ["HeartbeatInterval"]},
        {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]},
    ),
    (
        "SetChargingProfile",
        {
            "connectorId": 1,
            "csChargingProfiles": {
                "chargingProfileId": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": {
                    "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
                },
            },
        },
        {"status": "Accepted"},
    ),
    ("UpdateFirmware", {"location": "http://127.0.0.1/fw.bin", "retrieveDate": now()}, {}),
]


def test_operations_show_state_and_the_station_answer(live: LiveCS) -> None:
    ids = []
    with live.station("API-ST3") as station:
        for action, payload, answer in OPERATIONS:
            body = {"action": action, "payload": payload, "wait_s": 20}
            response = live.request("POST", "/api/stations/API-ST3/commands", body)
            command = response.json()
            assert response.status == 200, command
            assert (command["state"], command["response"]) == ("answered", answer), action
            assert command["payload"] == payload and command["sent_at"] and command["answered_at"]
            ids.append(command["id"])
        assert [action for action, _ in station.received] == [a for a, _, _ in OPERATIONS]
        # The station does not implement this one: its CALLERROR is the answer.
        body = {"action": "ClearCache", "wait_s": 20}
        failed = live.request("POST", "/api/stations/API-ST3/commands", body).json()
        assert failed["state"] == "failed" and "NotImplemented" in failed["error"]
    one = live.request("GET", f"/api/commands/{ids[0]}", role="read-only").json()
    assert one["action"] == "Reset" and one["response"] == {"status": "Accepted"}
    listing = live.request("GET", "/api/stations/API-ST3/commands?limit=3").json()
    assert len(listing["items"]) == 3 and listing["next_offset"] == 3
    assert listing["items"][0]["action"] == "ClearCache"  # newest first
    answered = live.request("GET", "/api/commands?station=API-ST3&state=answered").json()
    assert len(answered["items"]) == len(OPERATIONS)
    operations = live.request("GET", "/api/operations", role="read-only").json()
    assert {"Reset", "UpdateFirmware", "SetChargingProfile"} <= {o["action"] for o in operations}
    unlock = next(o for o in operations if o["action"] == "UnlockConnector")
    assert unlock["schema"]["properties"]["connectorId"]["minimum"] == 1  # as it is checked


def test_command_for_an_offline_station_waits_in_the_queue(live: LiveCS) -> None:
    unknown = live.request("POST", "/api/stations/API-ST4/commands", {"action": "Reset"})
    assert unknown.status == 404 and "API-ST4" in unknown.json()["error"]
    with live.station("API-ST4"):
        pass  # known now, offline again
    wait_until(lambda: not online(live, "API-ST4"), what="offline")
    body = {"action": "Reset", "payload": {"type": "Hard"}, "wait_s": 0.3}
    response = live.request("POST", "/api/stations/API-ST4/commands", body)
    assert response.status == 202 and response.json()["state"] == "queued"
    # a Reset acts on the session at hand: it waits 5 minutes by default, not an hour
    created, expires = (
        datetime.datetime.fromisoformat(response.json()[name]) for name in ("created", "expires")
    )
    assert abs((expires - created).total_seconds() - 300) < 1
    command_id = response.json()["id"]
    with live.station("API-ST4"):
        wait_until(
            lambda: (
                live.request("GET", f"/api/commands/{command_id}").json()["state"] == "answered"
            ),
            what="queued command delivered",
        )


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({"action": "Explode"}, "action", 400),
        ({}, "action", 400),
        ({"action": "Reset", "payload": {"type": "Medium"}}, "payload", 400),
        ({"action": "Reset", "payload": {}}, "payload", 400),
        ({"action": "Reset", "payload": {"type": "Soft"}, "ttl_s": -1}, "ttl_s", 400),
        ({"action": "Reset", "payload": {"type": "Soft"}, "wait_s": 1000}, "wait_s", 400),
        ({"action": "Reset", "colour": "red"}, "colour", 400),
        ({"action": "UnlockConnector", "payload": {"connectorId": 0}}, "payload", 400),
    ],
)
def test_bad_commands_name_the_field(live: LiveCS, body: dict, field: str, status: int) -> None:
    with live.station("API-ST5"):
        pass
    response = live.request("POST", "/api/stations/API-ST5/commands", body)
    assert response.status == status
    error = response.json()
    assert error["field"] == field
    if body.get("payload") == {"type": "Medium"}:
        assert "type" in error["error"]  # the OCPP field inside the payload
    if body.get("payload") == {}:
        assert "type" in error["error"]
    if body.get("action") == "UnlockConnector":  # a rule of the specification, not the schema's
        assert "connectorId must be at least 1" in error["error"]


def test_command_body_must_be_json_and_station_known(live: LiveCS) -> None:
    not_json = live.request(
        "POST",
        "/api/stations/X/commands",
        raw=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status == 400 and not_json.json()["field"] == "body"
    unknown = live.request("POST", "/api/stations/NOSUCH/commands", {"action": "Reset"})
    assert unknown.status == 404 and "NOSUCH" in unknown.json()["error"]


def test_id_tags_add_change_list_delete(live: LiveCS) -> None:
    for i in range(7):
        assert live.request("PUT", f"/api/id-tags/PAGE{i}", {"max_active": 1}).status == 200
    first = live.request("GET", "/api/id-tags?q=PAGE&limit=3", role="read-only").json()
    assert [t["id_tag"] for t in first["items"]] == ["PAGE0", "PAGE1", "PAGE2"]
    assert (first["total"], first["next_offset"]) == (7, 3)
    last = live.request("GET", "/api/id-tags?q=PAGE&limit=3&offset=6").json()
    assert [t["id_tag"] for t in last["items"]] == ["PAGE6"] and last["next_offset"] is None
    body = {"parent": "PAGE0", "expiry": "2030-01-01T01:00:00+01:00", "blocked": True}
    changed = live.request("PUT", "/api/id-tags/page1", dict(body, max_active=2)).json()
    # the same tag whatever the case; its expiry as a time in the stored form
    assert changed == {
        **body,
        "id_tag": "PAGE1",
        "expiry": "2030-01-01T00:00:00.000Z",
        "max_active": 2,
    }
    assert live.request("GET", "/api/id-tags/PAGE1").json()["blocked"] is True
    # a JSON integer written 3.0 is one (the schema's integer), stored as one
    assert live.request("PUT", "/api/id-tags/PAGE3", {"max_active": 3.0}).json()["max_active"] == 3
    assert type(live.request("GET", "/api/id-tags/PAGE3").json()["max_active"]) is int
    assert live.request("DELETE", "/api/id-tags/PAGE1").json() == {"deleted": "PAGE1"}
    assert live.request("GET", "/api/id-tags/PAGE1").status == 404
    assert live.request("DELETE", "/api/id-tags/PAGE1").status == 404
    for bad, field in (
        ({"expiry": "soon"}, "expiry"),
        ({"max_active": 0}, "max_active"),
        # past the column's 32 bits (PostgreSQL's INTEGER); 1e20 was kept as 1e+20
        *(({"max_active": n}, "max_active") for n in (2**31, 10**20)),
        ({"blocked": "yes"}, "blocked"),
        ({"parent": "P" * 21}, "parent"),
    ):
        response = live.request("PUT", "/api/id-tags/PAGE2", bad)
        assert response.status == 400 and response.json()["field"] == field, bad
        assert field in response.json()["error"]


def test_message_log_filters(live: LiveCS) -> None:
    with live.station("API-ST6") as station:
        live.run(station.call(call.Heartbeat()))
    log = live.request("GET", "/api/messages?station=API-ST6&limit=500", role="read-only").json()
    assert log["items"] and {m["station"] for m in log["items"]} == {"API-ST6"}
    assert log["items"][0]["id"] > log["items"][-1]["id"]  # newest first
    calls = live.request("GET", "/api/messages?station=API-ST6&action=BootNotification").json()
    assert [m["action"] for m in calls["items"]] == ["BootNotification"]
    assert calls["items"][0]["kind"] == "CALL" and calls["items"][0]["direction"] == "in"
    out = live.request("GET", "/api/messages?station=API-ST6&direction=out").json()
    assert out["items"] and {m["kind"] for m in out["items"]} == {"CALLRESULT"}
    found = live.request("GET", "/api/messages?station=API-ST6&contains=Heartbeat").json()
    assert len(found["items"]) == 1
    later = live.request("GET", "/api/messages?station=API-ST6&since=2999-01-01T00:00:00Z").json()
    assert later["items"] == []
    page = live.request("GET", "/api/messages?station=API-ST6&limit=2").json()
    assert len(page["items"]) == 2 and page["next_offset"] == 2


def test_station_approval(live: LiveCS) -> None:
    with live.station("API-ST7"):
        pass
    pending = live.request("PATCH", "/api/stations/API-ST7", {"approval": "pending"}).json()
    assert pending["approval"] == "pending"
    bad = live.request("PATCH", "/api/stations/API-ST7", {"approval": "maybe"})
    assert bad.status == 400 and bad.json()["field"] == "approval"
    assert live.request("PATCH", "/api/stations/NOSUCH", {"approval": "accepted"}).status == 404
    # accepted while it waits (its BootNotification answered Pending): asked to boot again
    live.db(functools.partial(storage.set_station, registration="Pending"), "API-ST7")
    live.request("PATCH", "/api/stations/API-ST7", {"approval": "accepted"})
    (trigger,) = live.db(storage.queued_commands, "API-ST7")
    assert (trigger["action"], json.loads(trigger["payload"])) == (
        "TriggerMessage",
        {"requestedMessage": "BootNotification"},
    )


def test_live_events_are_pushed(live: LiveCS) -> None:
    request = urllib.request.Request(
        live.base + "/api/events", headers={"Authorization": f"Bearer {live.tokens['read-only']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert stream.readline().startswith(b"retry:")
        seen: list[dict] = []
        with live.station("API-ST8") as station:
            live.run(station.status(1, "Charging"))
            while not any(e["type"] == "status" and e["status"] == "Charging" for e in seen):
                line = stream.readline()
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    if event["station"] == "API-ST8":
                        seen.append(event)
    assert seen[0] == {"type": "online", "station": "API-ST8", "online": True}
    assert {"type": "boot", "station": "API-ST8", "registration": "Accepted"} in seen


def test_live_events_end_with_the_session_or_token(
    live: LiveCS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event stream ran on after its token was revoked, its user removed or its session
    logged out, showing every station's events to someone no longer let in."""
    monkeypatch.setattr(api, "EVENTS_CHECK_S", 0.2)
    live.db(auth.add_user, "watcher", "read-only", PASSWORD)
    token = live.db(auth.new_token, "watcher")
    login = live.request("POST", "/api/login", {"name": "watcher", "password": PASSWORD}, role=None)
    cookie = login.headers["Set-Cookie"].split(";")[0]
    for headers, end in (
        (
            {"Cookie": cookie},
            lambda: live.request("POST", "/api/logout", {}, role=None, headers={"Cookie": cookie}),
        ),
        ({"Authorization": f"Bearer {token}"}, lambda: live.db(auth.revoke_tokens, "watcher")),
    ):
        request = urllib.request.Request(live.base + "/api/events", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as stream:
            assert stream.readline().startswith(b"retry:")
            end()
            with live.station("API-WATCHED"):
                stream.read()  # to the end of the stream, not a timeout


def test_prometheus_metrics(live: LiveCS) -> None:
    with live.station("API-ST9") as station:
        # Schema-invalid: the central system answers with a CALLERROR.
        live.run(station._connection.send('[2,"bad-1","Heartbeat",{"extra":1}]'))
        wait_until(
            lambda: 'code="FormationViolation"' in live.request("GET", "/metrics").body.decode(),
            what="CALLERROR counted",
        )
        text = live.request("GET", "/metrics", role="read-only").body.decode()
    assert re.search(r"^evse_cs_connected_stations [1-9]", text, re.M)
    assert re.search(r'^evse_cs_messages_total\{direction="in",action="BootNotification",'
                     r'result="ok"\} [1-9]', text, re.M)  # fmt: skip
    assert re.search(r'^evse_cs_messages_total\{direction="in",action="Heartbeat",'
                     r'result="FormationViolation"\} [1-9]', text, re.M)  # fmt: skip
    assert re.search(r'^evse_cs_callerrors_total\{direction="out",'
                     r'code="FormationViolation"\} [1-9]', text, re.M)  # fmt: skip
    assert re.search(r'^evse_cs_handler_latency_seconds_bucket\{action="StatusNotification",'
                     r'le="\+Inf"\} [1-9]', text, re.M)  # fmt: skip
    assert re.search(r"^evse_cs_handler_latency_seconds_count", text, re.M)
    for gauge in ("commands_queued", "calls_awaiting_answer", "storage_queue"):
        assert re.search(rf"^evse_cs_{gauge} \d+$", text, re.M)
    assert live.request("GET", "/metrics", role=None).status == 401


def test_dashboard_files_hold_no_data(live: LiveCS) -> None:
    page = live.request("GET", "/", role=None)
    assert page.status == 200 and b"<main" in page.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    script = live.request("GET", "/static/app.js", role=None)
    assert script.status == 200 and b"EventSource" in script.body
    assert live.request("GET", "/static/../api.py", role=None).status in (403, 404)


@pytest.mark.parametrize(
    "answer",
    [
        '[3, "%s", ["Accepted"]]',  # a CALLRESULT's payload is an object
        '[4, "%s", "GenericError", "no", ["details"]]',  # so are a CALLERROR's details
    ],
)
def test_a_remote_start_answered_with_no_object_is_shown_failed(live: LiveCS, answer: str) -> None:
    """The API looked for the answer's status to wait for the transaction: with a list
    stored as the answer, it failed with a 500 instead of showing the failed command."""

    done = threading.Event()

    def station() -> None:
        url = f"ws://127.0.0.1:{live.ocpp_port}/ocpp/API-RAW1"
        with websockets.sync.client.connect(url, subprotocols=["ocpp1.6"]) as ws:
            ws.send(
                '[2, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]'
            )
            assert json.loads(ws.recv(10))[2]["status"] == "Accepted"
            _, uid, action, _ = json.loads(ws.recv(10))
            assert action == "RemoteStartTransaction"
            ws.send(answer % uid)
            done.wait(10)  # connected until the test has its answer

    thread = threading.Thread(target=station, daemon=True)
    thread.start()
    wait_until(lambda: online(live, "API-RAW1"), what="online")
    body = {"action": "RemoteStartTransaction", "payload": {"idTag": "RFID1"}, "wait_s": 5}
    response = live.request("POST", "/api/stations/API-RAW1/commands", body)
    done.set()
    thread.join(10)
    assert response.status == 200, response.body
    command = response.json()
    assert command["state"] == "failed" and command["error"]
    assert command.get("transaction_id") is None
