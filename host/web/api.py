"""REST API, dashboard files and metrics, on aiohttp in the central system's event loop.

Every route is declared once in `ROUTES` with its role, query parameters and body schema;
the router, the input checks and the OpenAPI description are all made from that table.
Authentication: `Authorization: Bearer <token>` or the dashboard's login-session cookie.
Requests authenticated by cookie that change something must be JSON, which a cross-site
form cannot send (with SameSite=Strict cookies, a second line against CSRF).
"""

import asyncio
import concurrent.futures
import contextlib
import math
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastjsonschema
import orjson
from aiohttp import web

from host.cs import commands, schemas, storage
from host.web import auth, metrics, openapi, queries, schema
from host.web.live import Live

if TYPE_CHECKING:
    from host.cs.server import CentralSystem

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
COOKIE = "evse_session"
MAX_WAIT_S = 120
EVENTS_CHECK_S = 15  # a keep-alive on a quiet event stream, and a check that it may go on
POLL_S = 0.05


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field


@dataclass(frozen=True)
class Param:
    """A query parameter: `kind` is int, str, bool, time (ISO 8601) or one of `choices`."""

    name: str
    kind: str = "str"
    description: str = ""
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> Any:
        if self.choices:
            if text not in self.choices:
                raise ApiError(
                    400, f"{self.name}: must be one of {', '.join(self.choices)}", self.name
                )
            return text
        if self.kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise ApiError(400, f"{self.name}: {text!r} is not an integer", self.name) from None
            if (self.minimum is not None and value < self.minimum) or (
                self.maximum is not None and value > self.maximum
            ):
                raise ApiError(
                    400, f"{self.name}: must be from {self.minimum} to {self.maximum}", self.name
                )
            return value
        if self.kind == "bool":
            if text not in ("true", "false", "1", "0"):
                raise ApiError(400, f"{self.name}: must be true or false", self.name)
            return text in ("true", "1")
        if self.kind == "time":
            return iso_time(text, self.name)
        if len(text) > 200:
            raise ApiError(400, f"{self.name}: longer than 200 characters", self.name)
        return text

    def schema(self) -> dict[str, Any]:
        if self.choices:
            return {"type": "string", "enum": list(self.choices)}
        if self.kind == "int":
            bounds = {"minimum": self.minimum, "maximum": self.maximum, "default": self.default}
            return {"type": "integer"} | {k: v for k, v in bounds.items() if v is not None}
        if self.kind == "bool":
            return {"type": "boolean"}
        if self.kind == "time":
            return {"type": "string", "format": "date-time"}
        return {"type": "string"}


def iso_time(text: str, name: str) -> str:
    """`text` as given, once storage can read it as a time."""
    try:
        storage.normalize_time(text)
    except ValueError as error:
        raise ApiError(400, f"{name}: {error}", name) from None
    return text


PAGE = (
    Param("limit", "int", "items per page", 50, 1, 500),
    Param("offset", "int", "items to skip", 0, 0, 10**9),
)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str  # name of the Api method
    summary: str
    role: str | None = "read-only"  # None: no authentication (login, dashboard files)
    params: tuple[Param, ...] = ()
    body: dict[str, Any] | None = None
    tag: str = "central system"


@dataclass
class Request:
    """What a handler gets: the aiohttp request, the user, checked query and body."""

    http: web.Request
    user: dict[str, Any] | None
    query: dict[str, Any]
    body: Any

    def path(self, name: str) -> str:
        return self.http.match_info[name]

    def path_int(self, name: str) -> int:
        text = self.http.match_info[name]
        # ASCII digits: isdigit() also takes "²", which int() refuses (a 500)
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise ApiError(400, f"{name}: {text!r} is not a positive integer", name)
        return int(text)


ID_TAG_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "parent": {"type": ["string", "null"], "maxLength": 20},
        "expiry": {"type": ["string", "null"], "description": "ISO 8601 time"},
        "blocked": {"type": "boolean"},
        "max_active": {"type": "integer", "minimum": 1, "maximum": storage.MAX_ACTIVE},
    },
}
COMMAND_BODY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["action"],
    "properties": {
        "action": {"type": "string", "enum": list(schemas.ALL_CS_ACTIONS)},
        "payload": {"type": "object", "description": "the OCPP 1.6 request payload"},
        "ttl_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": commands.MAX_TTL_S,
            "description": "expire if not delivered within this time (default 3600; 300 for"
            " RemoteStartTransaction, UnlockConnector and Reset)",
        },
        "wait_s": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_WAIT_S,
            "description": "wait up to this long for the answer (and, for RemoteStart"
            "Transaction, for the transaction id); default 0: answer at once",
        },
    },
}
LOGIN_BODY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "password"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "password": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "or a token",
        },
    },
}
STATION_BODY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["approval"],
    "properties": {"approval": {"type": "string", "enum": list(storage.APPROVALS)}},
}
STATION_FILTERS = (
    Param("q", description="part of the station id"),
    Param("online", "bool"),
    Param("problems", "bool", "only stations that are offline or have a faulted connector"),
)
MESSAGE_FILTERS = (
    Param("station"),
    Param("direction", choices=("in", "out")),
    Param("action", description="CALLs of this action"),
    Param("since", "time"),
    Param("until", "time"),
    Param("contains", description="text in the frame"),
)

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/login",
        "login",
        "Log in (sets the session cookie)",
        None,
        body=LOGIN_BODY,
        tag="auth",
    ),
    Route("POST", "/api/logout", "logout", "End the session", tag="auth"),
    Route("GET", "/api/me", "me", "The authenticated user and role", tag="auth"),
    Route("GET", "/api/openapi.json", "openapi", "This description", tag="auth"),
    Route("GET", "/api/summary", "summary", "Counts: stations online/offline, faults, activity"),
    Route("GET", "/api/events", "events", "Live events (text/event-stream)"),
    Route(
        "GET",
        "/api/stations",
        "stations",
        "Stations with their connectors",
        params=STATION_FILTERS + PAGE,
    ),
    Route("GET", "/api/stations/{station}", "station", "A station with its connectors"),
    Route(
        "PATCH",
        "/api/stations/{station}",
        "set_station",
        "Approve or reject a station",
        "operator",
        body=STATION_BODY,
    ),
    Route(
        "GET",
        "/api/stations/{station}/connectors",
        "connectors",
        "A station's connectors and their status",
    ),
    Route(
        "GET",
        "/api/stations/{station}/commands",
        "station_commands",
        "Commands sent to a station",
        params=(Param("state", choices=storage.COMMAND_STATES),) + PAGE,
    ),
    Route(
        "POST",
        "/api/stations/{station}/commands",
        "send",
        "Send an operation to a station",
        "operator",
        body=COMMAND_BODY,
    ),
    Route(
        "GET",
        "/api/commands",
        "commands",
        "Commands, newest first",
        params=(Param("station"), Param("state", choices=storage.COMMAND_STATES)) + PAGE,
    ),
    Route("GET", "/api/commands/{id}", "command", "A command: state and the station's answer"),
    Route(
        "GET",
        "/api/operations",
        "operations",
        "Operations the central system can send, with payload schemas",
    ),
    Route(
        "GET",
        "/api/transactions",
        "transactions",
        "Transactions, newest first",
        params=(Param("station"), Param("id_tag"), Param("active", "bool")) + PAGE,
    ),
    Route(
        "GET",
        "/api/transactions/{id}",
        "transaction",
        "A transaction with its power and energy over time",
    ),
    Route(
        "POST",
        "/api/transactions/{id}/close",
        "close_transaction",
        "End a transaction its station will not (stop reason ClosedByOperator): its id tag"
        " may then start others; a StopTransaction from the station later records the real end",
        "operator",
    ),
    Route(
        "GET",
        "/api/transactions/{id}/meter-values",
        "meter_values",
        "A transaction's sampled values",
        params=PAGE,
    ),
    Route(
        "GET",
        "/api/id-tags",
        "id_tags",
        "Id tags",
        params=(Param("q", description="part of the tag"),) + PAGE,
    ),
    Route("GET", "/api/id-tags/{tag}", "id_tag", "An id tag"),
    Route(
        "PUT",
        "/api/id-tags/{tag}",
        "put_id_tag",
        "Add or change an id tag",
        "operator",
        body=ID_TAG_BODY,
    ),
    Route("DELETE", "/api/id-tags/{tag}", "delete_id_tag", "Delete an id tag", "operator"),
    Route(
        "GET",
        "/api/messages",
        "messages",
        "The OCPP message log, newest first",
        params=MESSAGE_FILTERS + PAGE,
    ),
    Route("GET", "/metrics", "metrics", "Prometheus metrics (text format)", tag="metrics"),
)


class Reader:
    """Read queries on their own connections and threads. The central system's `Store` runs
    its batches one after the other in its database process, so a dashboard query there would
    delay every station's answers for its duration; here it overlaps with them (SQLite in WAL
    mode reads beside the writer) and never waits behind a write batch. Each read sees
    everything the Store has committed."""

    def __init__(self, url: str, threads: int = 2):
        self.url = url
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="web-db")
        self._local = threading.local()
        self._dbs: list[storage.Db] = []

    def _run(self, fn: Callable[..., Any], args: tuple) -> Any:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = storage.Db(self.url)
            self._dbs.append(db)
        try:
            result = fn(db, *args)
            db.rollback()  # end the read transaction (PostgreSQL opens one per query)
            return result
        except Exception:
            # The connection itself may have failed, for good (a PostgreSQL restart drops
            # them all): this thread's next read opens another.
            self._local.db = None
            self._dbs.remove(db)
            with contextlib.suppress(Exception):
                db.close()
            raise

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn, args)

    def close(self) -> None:
        self._pool.shutdown()
        for db in self._dbs:
            db.close()


class Api:
    """The route handlers: reads go to the `Reader`, writes to the central system's `Store`."""

    def __init__(self, cs: "CentralSystem", live: Live, reader: Reader):
        self.cs = cs
        self.store = cs.store
        self.read = reader.call
        self.live = live
        self.logins = auth.LoginThrottle()

    async def _one(self, fn: Callable[..., Any], *args: Any, what: str) -> Any:
        row = await self.read(fn, *args)
        if row is None:
            raise ApiError(404, f"no {what}")
        return row

    async def _station_exists(self, station: str) -> None:
        if not await self.read(queries.station_exists, station):
            raise ApiError(404, f"no station {station!r}", "station")

    # ---- auth ---------------------------------------------------------------------------

    async def login(self, r: Request) -> web.Response:
        _json_only(r.http)  # else a cross-site form logs the browser in as another user
        name, secret = r.body["name"], r.body["password"]
        user = await self.read(auth.get_user, name)
        # the same checks whether the user exists or not (auth.password_matches)
        ok = False
        if secret.startswith(auth.TOKEN_PREFIX):
            owner = await self.read(auth.user_by_token, secret)
            ok = owner is not None and owner["name"] == name
        if not ok:  # a password, which may begin as tokens do
            wait_s = self.logins.wait_s(name)
            if wait_s:
                raise ApiError(
                    429,
                    f"too many failed logins as {name!r}: the next try in {math.ceil(wait_s)} s"
                    " (an API token logs in at once)",
                )
            stored = user and user["password"]
            loop = asyncio.get_running_loop()
            ok = await loop.run_in_executor(None, auth.password_matches, stored, secret)
            if ok:
                self.logins.succeeded(name)
            else:
                self.logins.failed(name)
        if not ok or user is None:
            raise ApiError(401, "wrong user name or password")
        session = await self.store.call(auth.new_session, name)
        response = json_response({"name": name, "role": user["role"]})
        response.set_cookie(
            COOKIE,
            session,
            max_age=auth.SESSION_TTL_S,
            httponly=True,
            samesite="Strict",
            secure=_over_https(r.http),
            path="/",
        )
        return response

    async def logout(self, r: Request) -> web.Response:
        session = r.http.cookies.get(COOKIE)
        if session:
            await self.store.call(auth.end_session, session)
        response = json_response({"logged_out": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def me(self, r: Request) -> Any:
        return r.user

    async def openapi(self, r: Request) -> Any:
        return openapi.document(ROUTES, COOKIE)

    # ---- stations and live status -------------------------------------------------------

    async def summary(self, r: Request) -> Any:
        result = await self.read(queries.summary)
        result["connected"] = len(self.cs.sessions)
        return result

    async def stations(self, r: Request) -> Any:
        q = r.query
        return await self.read(
            queries.list_stations, q["q"], q["online"], bool(q["problems"]), q["limit"], q["offset"]
        )

    async def station(self, r: Request) -> Any:
        station = r.path("station")
        return await self._one(queries.get_station, station, what=f"station {station!r}")

    async def set_station(self, r: Request) -> Any:
        station = r.path("station")
        await self._station_exists(station)
        await self.store.call(storage.set_approval, station, r.body["approval"])
        return await self.read(queries.get_station, station)

    async def connectors(self, r: Request) -> Any:
        return (await self.station(r))["connectors"]

    async def events(self, r: Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        queue = self.live.subscribe()
        try:
            await response.prepare(r.http)
            await response.write(b"retry: 2000\n\n")
            checked = time.monotonic()
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), EVENTS_CHECK_S)
                except TimeoutError:
                    event = b": keep-alive\n\n"
                # The stream ends with the session or token that opened it (logged out,
                # expired, revoked, the user removed): else it ran on for as long as it stayed
                # open, showing every station's events to someone no longer let in.
                if time.monotonic() - checked >= EVENTS_CHECK_S:
                    try:
                        await _authenticate(self, r.http)
                    except ApiError:
                        break
                    checked = time.monotonic()
                if event is None:  # too slow to keep up: the client reconnects and reloads
                    break
                if isinstance(event, dict):
                    event = b"data: " + orjson.dumps(event) + b"\n\n"
                await response.write(event)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.live.unsubscribe(queue)
        return response

    # ---- commands -----------------------------------------------------------------------

    async def operations(self, r: Request) -> Any:
        return [
            {"action": action, "profile": profile, "schema": _load_schema(action)}
            for profile, actions in schemas.CS_ACTIONS.items()
            for action in actions
        ]

    async def commands(self, r: Request) -> Any:
        q = r.query
        return await self.read(
            queries.list_commands, q["station"], q["state"], q["limit"], q["offset"]
        )

    async def station_commands(self, r: Request) -> Any:
        station = r.path("station")
        await self._station_exists(station)
        q = r.query
        return await self.read(queries.list_commands, station, q["state"], q["limit"], q["offset"])

    async def command(self, r: Request) -> Any:
        command_id = r.path_int("id")
        return await self._one(queries.get_command, command_id, what=f"command {command_id}")

    async def send(self, r: Request) -> web.Response:
        station = r.path("station")
        await self._station_exists(station)
        action, payload = r.body["action"], r.body.get("payload", {})
        try:
            commands.validate(station, action, payload)
        except ValueError as error:
            raise ApiError(400, f"payload: {error}", "payload") from None
        wait_s = r.body.get("wait_s", 0)
        deadline = time.monotonic() + wait_s
        # Listen before queueing, so the StartTransaction of a remote start cannot slip by.
        events = self.live.subscribe() if action == "RemoteStartTransaction" and wait_s else None
        try:
            command_id = await self.store.call(
                storage.enqueue_command,
                station,
                action,
                payload,
                r.body.get("ttl_s", commands.default_ttl(action)),
            )
            session = self.cs.sessions.get(station)
            if session is not None:
                self.cs.commands.wake(session)
            command = await self.read(queries.get_command, command_id)
            while command["state"] in ("queued", "sent") and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
                command = await self.read(queries.get_command, command_id)
            # Only an answer that passed its schema is an object with a status: a failed
            # command's response is whatever the station sent (a list, say)
            answered = command["state"] == "answered"
            if events is not None and answered and command["response"]["status"] == "Accepted":
                command["transaction_id"] = await _started_transaction(
                    events, station, payload, deadline
                )
        finally:
            if events is not None:
                self.live.unsubscribe(events)
        final = command["state"] not in ("queued", "sent")
        return json_response(command, status=200 if final else 202)

    # ---- transactions and id tags -------------------------------------------------------

    async def transactions(self, r: Request) -> Any:
        q = r.query
        return await self.read(
            queries.list_transactions,
            q["station"],
            q["id_tag"],
            q["active"],
            q["limit"],
            q["offset"],
        )

    async def transaction(self, r: Request) -> Any:
        tx = r.path_int("id")
        return await self._one(queries.get_transaction, tx, what=f"transaction {tx}")

    async def close_transaction(self, r: Request) -> Any:
        tx = r.path_int("id")
        closed = await self.store.call(storage.close_transaction, tx)
        if closed is None:
            raise ApiError(404, f"no transaction {tx}")
        if not closed:
            raise ApiError(409, f"transaction {tx} has ended already")
        return await self._one(queries.get_transaction, tx, what=f"transaction {tx}")

    async def meter_values(self, r: Request) -> Any:
        tx = r.path_int("id")
        await self._one(queries.get_transaction, tx, what=f"transaction {tx}")
        return await self.read(queries.list_meter_values, tx, r.query["limit"], r.query["offset"])

    async def id_tags(self, r: Request) -> Any:
        q = r.query
        return await self.read(queries.list_id_tags, q["q"], q["limit"], q["offset"])

    def _tag(self, r: Request) -> str:
        tag = r.path("tag")
        if not 1 <= len(tag) <= 20:
            raise ApiError(400, "tag: must be 1 to 20 characters (OCPP IdToken)", "tag")
        return tag

    async def id_tag(self, r: Request) -> Any:
        tag = self._tag(r)
        return await self._one(queries.get_id_tag, tag, what=f"id tag {tag!r}")

    async def put_id_tag(self, r: Request) -> Any:
        tag, body = self._tag(r), r.body
        expiry = body.get("expiry")
        if expiry is not None:
            iso_time(expiry, "expiry")
        await self.store.call(
            storage.set_id_tag,
            tag,
            body.get("parent") or None,
            expiry,
            body.get("blocked", False),
            int(body.get("max_active", 1)),  # the schema's integer may be written 2.0
        )
        return await self.read(queries.get_id_tag, tag)

    async def delete_id_tag(self, r: Request) -> Any:
        tag = self._tag(r)
        if not await self.store.call(storage.delete_id_tag, tag):
            raise ApiError(404, f"no id tag {tag!r}")
        return {"deleted": tag}

    # ---- message log and metrics --------------------------------------------------------

    async def messages(self, r: Request) -> Any:
        q = r.query
        return await self.read(
            queries.list_messages,
            q["station"],
            q["direction"],
            q["action"],
            q["since"],
            q["until"],
            q["contains"],
            q["limit"],
            q["offset"],
        )

    async def metrics(self, r: Request) -> web.Response:
        counts = await self.read(queries.summary)
        text = metrics.prometheus(self.cs, self.live, counts)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _started_transaction(
    events: Any, station: str, payload: dict[str, Any], deadline: float
) -> int | None:
    """The id of the transaction a remote start began, or None if none began in time."""
    connector = payload.get("connectorId")
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            event = await asyncio.wait_for(events.get(), remaining)
        except TimeoutError:
            return None
        if event is None:
            return None
        if (
            event["type"] == "transaction"
            and event["event"] == "started"
            and event["station"] == station
            and event["id_tag"] == payload["idTag"]
            and connector in (None, event["connector"])
        ):
            return event["transaction"]
    return None


def _load_schema(action: str) -> dict[str, Any]:
    with open(os.path.join(schemas.SCHEMA_DIR, action + ".json"), encoding="utf-8") as f:
        schema = schemas.with_spec_rules(action, orjson.loads(f.read()))  # what is checked
    schema.pop("$schema", None)
    return schema


# ---- the application ----------------------------------------------------------------------


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(value), status=status, content_type="application/json")


def _error(status: int, message: str, field_name: str | None = None) -> web.Response:
    return json_response({"error": message, "field": field_name}, status)


def _body_error(error: fastjsonschema.JsonSchemaValueException) -> ApiError:
    """A 400 naming the offending field, also for missing and unexpected ones."""
    name = (error.name or "data").removeprefix("data").lstrip(".")
    value = error.value if isinstance(error.value, dict) else {}
    if error.rule == "required":
        missing = [p for p in error.rule_definition if p not in value]
        field = ".".join(filter(None, [name, missing[0]]))
        return ApiError(400, f"{field}: is required", field)
    if error.rule == "additionalProperties":
        known = (error.definition or {}).get("properties", {})
        extra = [p for p in value if p not in known]
        field = ".".join(filter(None, [name, extra[0]]))
        return ApiError(400, f"{field}: unknown field", field)
    message = error.message.removeprefix(error.name or "").strip()
    return ApiError(400, f"{name or 'body'}: {message}", name or "body")


def _endpoint(api: Api, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    method = getattr(api, route.handler)
    params = {p.name: p for p in route.params}
    check_body = fastjsonschema.compile(route.body) if route.body is not None else None

    async def endpoint(http: web.Request) -> web.StreamResponse:
        try:
            user = None
            if route.role is not None:
                user = await _authenticate(api, http)
                if route.role == "operator" and user["role"] != "operator":
                    raise ApiError(403, f"{route.method} {route.path} needs the operator role")
            query = {p.name: p.default for p in route.params}
            for name, text in http.query.items():
                if name not in params:
                    raise ApiError(400, f"{name}: unknown query parameter", name)
                query[name] = params[name].parse(text)
            body = None
            if check_body is not None:
                try:
                    body = orjson.loads(await http.read())
                except orjson.JSONDecodeError:
                    raise ApiError(400, "body: not valid JSON", "body") from None
                try:
                    check_body(body)
                except fastjsonschema.JsonSchemaValueException as error:
                    raise _body_error(error) from None
            result = await method(Request(http, user, query, body))
        except ApiError as error:
            response = _error(error.status, str(error), error.field)
            if error.status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="evse"'
            return response
        return result if isinstance(result, web.StreamResponse) else json_response(result)

    return endpoint


async def _authenticate(api: Api, http: web.Request) -> dict[str, Any]:
    header = http.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        user = await api.read(auth.user_by_token, header[7:].strip())
        if user is None:
            raise ApiError(401, "invalid token")
        return user
    session = http.cookies.get(COOKIE)
    if not session:
        raise ApiError(401, "log in or send Authorization: Bearer <token>")
    user = await api.read(auth.user_by_session, session)
    if user is None:
        raise ApiError(401, "session expired: log in again")
    if http.method not in ("GET", "HEAD"):
        _json_only(http)
    return user


def _json_only(http: web.Request) -> None:
    """Refuse a body that is not JSON: a cross-site form cannot send application/json (its
    text/plain can spell a JSON body), so what a cookie authenticates, and the login that
    sets one, take JSON only."""
    if http.content_type != "application/json":
        raise ApiError(400, "Content-Type: must be application/json", "Content-Type")


def _over_https(http: web.Request) -> bool:
    """Whether the browser reached us over HTTPS: directly, or through a proxy that ends TLS
    and says so (X-Forwarded-Proto). Anyone can send the header, but it only makes the
    sender's own cookie Secure."""
    forwarded = http.headers.get("X-Forwarded-Proto", "").split(",")[0]
    return http.secure or forwarded.strip().lower() == "https"


async def _index(http: web.Request) -> web.FileResponse:
    return web.FileResponse(os.path.join(STATIC_DIR, "index.html"))


async def _security_headers(http: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    if http.path.startswith("/api/") or http.path == "/metrics":
        response.headers["Cache-Control"] = "no-store"


def create_app(cs: "CentralSystem", live: Live, reader: Reader) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    api = Api(cs, live, reader)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _endpoint(api, route))
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR)
    app.on_response_prepare.append(_security_headers)
    return app


async def start(
    cs: "CentralSystem",
    db_url: str,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    """Serve the API and dashboard for `cs` (whose database is `db_url`) on host:port (0 picks
    a free port), over HTTPS with `ssl_context`: the bound port is `runner.addresses[0][1]`;
    `runner.cleanup()` stops."""
    reader = Reader(db_url)
    await reader.call(schema.migrate)
    live = Live()
    cs.listeners.append(live)
    app = create_app(cs, live, reader)

    async def close_reader(app: web.Application) -> None:
        cs.listeners.remove(live)
        reader.close()

    app.on_cleanup.append(close_reader)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, ssl_context=ssl_context)
    await site.start()
    return runner
