"""firmware/ocpp/link.py and rpc.py under micropython against a real `websockets` server on
127.0.0.1: ws and wss (test CA, server and client certificates made here), security profiles
1-3, pings both ways, fragmented messages, CALLs crossing, reconnects, size limit, errors."""

import asyncio
import base64
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from host import mpy
from tests.dns_responder import Responder
from tests.pki import Pki

DRIVER = Path(__file__).with_name("mp_link.py")
STEP_TIMEOUT = 15  # seconds; every wait is bounded


# -- certificates ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    ca = Pki(directory, "test-ca")
    other = Pki(directory, "other-ca")
    return {
        "ca": ca,
        "server": ca.issue("localhost", dns=["localhost"], ips=["127.0.0.1"]),
        "client": ca.issue("CP1", client=True),
        "rogue": other.issue("localhost", dns=["localhost"], ips=["127.0.0.1"]),
        "wrong_name": ca.issue("elsewhere", dns=["elsewhere.example"]),
    }


def server_tls(leaf, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2  # as OCPP 1.6 asks
    ctx.load_cert_chain(*map(str, leaf[0]))
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca.pem[0]))
    return ctx


# -- the two ends ------------------------------------------------------------------------------


class Client:
    """The micropython process running tests/mp_link.py."""

    def __init__(self, config):
        self.config = config

    async def __aenter__(self):
        self.process = await asyncio.create_subprocess_exec(
            *mpy.command(DRIVER),
            env=mpy.environ(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.process.stdin.write(json.dumps(self.config).encode() + b"\n")
        return self

    async def line(self):
        """The next JSON line the driver prints."""
        raw = await asyncio.wait_for(self.process.stdout.readline(), STEP_TIMEOUT)
        if not raw:
            err = await self.process.stderr.read()
            raise AssertionError("driver ended: " + err.decode()[-2000:])
        return json.loads(raw)

    async def finish(self):
        code = await asyncio.wait_for(self.process.wait(), STEP_TIMEOUT)
        err = (await self.process.stderr.read()).decode()
        assert code == 0, err[-2000:]
        assert not err, err[-2000:]

    async def __aexit__(self, *exc):
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class Server:
    """A websockets server speaking ocpp1.6; `handler(ws)` runs per connection and
    `connections` queues each accepted connection's request."""

    def __init__(self, handler, tls=None, auth=None, max_size=2**20):
        self.handler = handler
        self.tls = tls
        self.auth = auth
        self.max_size = max_size
        self.requests = asyncio.Queue()
        self.results = asyncio.Queue()  # what handlers report

    def _check_auth(self, connection, request):
        if self.auth is not None and request.headers.get("Authorization") != self.auth:
            return connection.respond(401, "bad credentials\n")
        return None

    async def _handle(self, ws):
        await self.requests.put(ws.request)
        assert ws.subprotocol == "ocpp1.6"
        try:
            await self.results.put(await self.handler(ws))
        except ConnectionClosed as closed:
            await self.results.put(("closed", closed.rcvd.code if closed.rcvd else None))

    async def __aenter__(self):
        self.server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            subprotocols=["ocpp1.6"],
            process_request=self._check_auth,
            ssl=self.tls,
            ping_interval=None,
            max_size=self.max_size,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, host="127.0.0.1"):
        return f"{'wss' if self.tls else 'ws'}://{host}:{self.port}/ocpp"

    async def result(self):
        return await asyncio.wait_for(self.results.get(), STEP_TIMEOUT)

    async def __aexit__(self, *exc):
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), STEP_TIMEOUT)


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT))


async def answer_calls(ws, count=1):
    """Answer `count` CALLs with an echo of their payload; returns the actions."""
    actions = []
    for _ in range(count):
        kind, uid, action, payload = await recv_json(ws)
        assert kind == 2 and len(uid) <= 36
        actions.append(action)
        await ws.send(json.dumps([3, uid, {"echo": payload}]))
    return actions


async def hold(ws):
    """Keep the connection until the client closes it; returns its close code."""
    try:
        await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except ConnectionClosed as closed:
        return ("closed", closed.rcvd.code if closed.rcvd else None)
    raise AssertionError("unexpected message")


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


# -- scenarios ---------------------------------------------------------------------------------


def test_ws_call_and_clean_close():
    async def handler(ws):
        actions = await answer_calls(ws)
        return actions, await hold(ws)

    async def scenario():
        async with Server(handler) as server:
            steps = [["connect", 1], ["call", "Heartbeat", {"n": 1}, 5], ["close"]]
            async with Client({"url": server.url(), "steps": steps}) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                assert await client.line() == {"step": "call", "result": {"echo": {"n": 1}}}
                assert await client.line() == {"step": "close", "ok": True}
                request = await asyncio.wait_for(server.requests.get(), 1)
                assert request.path == "/ocpp/CP1"
                assert "Authorization" not in request.headers
                assert await server.result() == (["Heartbeat"], ("closed", 1000))
                await client.finish()

    run(scenario())


@pytest.mark.parametrize("key, accepted", [("s3cret-key", True), ("wrong", False)])
def test_profile_1_sends_basic_auth(key, accepted):
    async def scenario():
        auth = "Basic " + base64.b64encode(b"CP1:s3cret-key").decode()
        async with Server(answer_calls, auth=auth) as server:
            steps = [["connect", 1], ["call", "Heartbeat", {}, 5]]
            config = {"url": server.url(), "profile": 1, "auth_key": key, "steps": steps}
            async with Client(config) as client:
                first = await client.line()
                if accepted:
                    assert first == {"step": "connect", "ok": True}
                    assert await client.line() == {"step": "call", "result": {"echo": {}}}
                else:
                    assert first["error"] == {"type": "HandshakeError", "code": None, "status": 401}
                    assert (await client.line())["error"]["type"] == "Offline"
                await client.finish()

    run(scenario())


def tls_config(pki, server, **extra):
    ca_der = pki["ca"].der[0]
    return {"url": server.url("localhost"), "ca": str(ca_der), **extra}


@pytest.mark.parametrize("profile", [2, 3])
def test_wss_profiles_2_and_3(pki, profile):
    auth = "Basic " + base64.b64encode(b"CP1:k").decode() if profile == 2 else None
    client_ca = pki["ca"] if profile == 3 else None

    async def scenario():
        tls = server_tls(pki["server"], client_ca)
        async with Server(answer_calls, tls=tls, auth=auth) as server:
            steps = [["connect", 1], ["call", "Heartbeat", {}, 10]]
            config = tls_config(pki, server, profile=profile, steps=steps)
            if profile == 2:
                config["auth_key"] = "k"
            else:
                config["cert"], config["key"] = map(str, pki["client"][1])
            async with Client(config) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                assert await client.line() == {"step": "call", "result": {"echo": {}}}
                await client.finish()
            if profile == 3:
                request = await asyncio.wait_for(server.requests.get(), 1)
                assert "Authorization" not in request.headers

    run(scenario())


@pytest.mark.parametrize("case", ["untrusted server", "wrong server name", "no client certificate"])
def test_wss_refuses_what_it_cannot_verify(pki, case):
    leaf = {"untrusted server": "rogue", "wrong server name": "wrong_name"}.get(case, "server")
    client_ca = pki["ca"] if case == "no client certificate" else None

    async def scenario():
        async with Server(answer_calls, tls=server_tls(pki[leaf], client_ca)) as server:
            config = tls_config(pki, server, steps=[["connect", 1]])
            async with Client(config) as client:
                result = await client.line()
                assert result["step"] == "connect" and "error" in result, result
                await client.finish()
            assert server.requests.empty()

    run(scenario())


def test_pings_both_ways_and_fragmented_messages():
    async def handler(ws):
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, STEP_TIMEOUT)  # the client answered our ping
        # a CALL sent in four fragments, answered as one message
        text = json.dumps([2, "frag-1", "Echo", {"text": "x" * 300}])
        await ws.send([text[:1], text[1:150], text[150:400], text[400:]])
        reply = await recv_json(ws)
        # the client's own pings (interval 1 s) reach us: wait for one
        pings = asyncio.Queue()
        receive = ws.protocol.recv_frame

        def spy(frame):
            if frame.opcode.name == "PING":
                pings.put_nowait(frame)
            receive(frame)

        ws.protocol.recv_frame = spy
        await asyncio.wait_for(pings.get(), STEP_TIMEOUT)
        await ws.close()
        return reply

    async def scenario():
        async with Server(handler) as server:
            steps = [["connect", 1], ["wait_down", STEP_TIMEOUT * 1000]]
            async with Client({"url": server.url(), "ping_interval_s": 1, "steps": steps}) as cl:
                assert await cl.line() == {"step": "connect", "ok": True}
                assert await server.result() == [3, "frag-1", {"text": "x" * 300}]
                assert await cl.line() == {"step": "wait_down", "ok": True}
                await cl.finish()

    run(scenario())


def test_server_call_answered_while_our_call_waits():
    async def handler(ws):
        _, uid, action, _ = await recv_json(ws)
        answers = {}
        calls = [
            ["c1", "Echo", {"a": 1}],
            ["c2", "Unknown", {}],
            ["c3", "Refuse", {}],
            ["c4", "Crash", {}],
        ]
        for call_uid, call_action, payload in calls:
            await ws.send(json.dumps([2, call_uid, call_action, payload]))
            answer = await recv_json(ws)
            answers[answer[1]] = answer
        await ws.send("not json")
        answers["bad"] = await recv_json(ws)
        await ws.send(json.dumps([3, "not-our-id", {}]))  # ignored
        await ws.send(json.dumps([3, uid, {"done": action}]))
        return answers

    async def scenario():
        async with Server(handler) as server:
            steps = [["connect", 1], ["call", "Heartbeat", {}, 10]]
            async with Client({"url": server.url(), "steps": steps}) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                answers = await server.result()
                assert answers["c1"] == [3, "c1", {"a": 1}]
                assert answers["c2"][:3] == [4, "c2", "NotImplemented"]
                assert answers["c3"][:4] == [4, "c3", "NotSupported", "refused"]
                assert answers["c4"][:3] == [4, "c4", "InternalError"]
                assert answers["bad"][:3] == [4, "-1", "FormationViolation"]
                assert await client.line() == {"step": "call", "result": {"done": "Heartbeat"}}
                await client.finish()

    run(scenario())


def test_call_errors_and_time_out():
    async def handler(ws):
        _, uid, _, _ = await recv_json(ws)
        await ws.send(json.dumps([4, uid, "NotSupported", "no", {}]))
        _, uid, _, _ = await recv_json(ws)
        await ws.send(json.dumps([3, uid, "not an object"]))
        await recv_json(ws)  # never answered: the client times out
        return await hold(ws)

    async def scenario():
        async with Server(handler) as server:
            steps = [
                ["connect", 1],
                ["call", "A", {}, 5],
                ["call", "B", {}, 5],
                ["call", "C", {}, 0.3],
                ["close"],
            ]
            async with Client({"url": server.url(), "steps": steps}) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                first, second, third = [(await client.line())["error"] for _ in range(3)]
                assert first == {"type": "CallError", "code": "NotSupported", "status": None}
                assert second == {
                    "type": "CallError",
                    "code": "TypeConstraintViolation",
                    "status": None,
                }
                assert third["type"] == "CallTimeout"
                assert await client.line() == {"step": "close", "ok": True}
                assert await server.result() == ("closed", 1000)
                await client.finish()

    run(scenario())


def test_reconnect_after_the_server_drops_the_connection():
    connections = []

    async def handler(ws):
        connections.append(ws)
        if len(connections) == 1:
            await recv_json(ws)  # the client's CALL, then the connection just vanishes
            ws.transport.abort()
            return "dropped"
        return await answer_calls(ws)

    async def scenario():
        async with Server(handler) as server:
            steps = [
                ["connect", 1],
                ["call", "Lost", {}, 10],
                ["wait_down", 5000],
                ["connect", 5],
                ["call", "Again", {}, 10],
            ]
            async with Client({"url": server.url(), "steps": steps}) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                assert (await client.line())["error"]["type"] == "Offline"
                assert await client.line() == {"step": "wait_down", "ok": True}
                assert await client.line() == {"step": "connect", "ok": True}
                assert await client.line() == {"step": "call", "result": {"echo": {}}}
                await client.finish()
            assert len(connections) == 2

    run(scenario())


def test_connect_replaces_a_live_connection():
    connections = []

    async def handler(ws):
        connections.append(ws)
        if len(connections) == 1:
            await recv_json(ws)  # never answered: the client times out and reconnects
            return await hold(ws)
        return await answer_calls(ws)

    async def scenario():
        async with Server(handler) as server:
            steps = [["connect", 1], ["call", "X", {}, 0.3], ["connect", 1], ["call", "Y", {}, 5]]
            async with Client({"url": server.url(), "steps": steps}) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                assert (await client.line())["error"]["type"] == "CallTimeout"
                assert await client.line() == {"step": "connect", "ok": True}
                assert await client.line() == {"step": "call", "result": {"echo": {}}}
                results = [await server.result(), await server.result()]
                assert sorted(results, key=repr) == [("closed", 1001), ["Y"]]
                await client.finish()

    run(scenario())


def test_silent_connection_is_dropped_after_two_ping_intervals():
    connections = []

    async def handler(ws):
        connections.append(ws)
        if len(connections) == 1:
            ws.transport.pause_reading()  # pings go unanswered from now on
            return await hold(ws)
        return await answer_calls(ws)

    async def scenario():
        async with Server(handler) as server:
            steps = [
                ["connect", 1],
                ["wait_down", STEP_TIMEOUT * 1000],
                ["connect", 5],
                ["call", "Again", {}, 10],
            ]
            config = {"url": server.url(), "ping_interval_s": 1, "steps": steps}
            async with Client(config) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                assert await client.line() == {"step": "wait_down", "ok": True}
                assert await client.line() == {"step": "connect", "ok": True}
                assert await client.line() == {"step": "call", "result": {"echo": {}}}
                await client.finish()
            assert len(connections) == 2

    run(scenario())


def test_connect_retries_with_back_off_until_the_server_is_up():
    async def scenario():
        async with Server(answer_calls) as server:
            port = server.port
        # nothing listens on `port` now; the client retries while we bring a server back
        steps = [["connect", 30], ["call", "Hello", {}, 5]]
        url = f"ws://127.0.0.1:{port}/ocpp"
        async with Client({"url": url, "steps": steps}) as client:
            retry = await client.line()
            assert retry["retry"]["type"] == "OSError"
            server = await serve(
                answer_calls, "127.0.0.1", port, subprotocols=["ocpp1.6"], ping_interval=None
            )
            try:
                line = await client.line()
                while "retry" in line:
                    line = await client.line()
                assert line == {"step": "connect", "ok": True}
                assert await client.line() == {"step": "call", "result": {"echo": {}}}
                await client.finish()
            finally:
                server.close()

    run(scenario())


def test_wss_to_a_name_resolved_by_the_dns_server_checks_the_certificate_against_it(pki):
    # The certificate names cs.example only: the link connects to the address it looked up
    # and verifies the name (SNI), and sends it as the Host.
    leaf = pki["ca"].issue("cs.example", dns=["cs.example"])

    async def scenario():
        with Responder({"cs.example": "127.0.0.1"}) as dns:
            async with Server(answer_calls, tls=server_tls(leaf)) as server:
                steps = [["connect", 1], ["call", "Heartbeat", {}, 5]]
                config = {
                    "url": server.url("cs.example"),
                    "ca": str(pki["ca"].der[0]),
                    "dns": ["127.0.0.1", dns.port],
                    "steps": steps,
                }
                async with Client(config) as client:
                    assert await client.line() == {"step": "connect", "ok": True}
                    assert await client.line() == {"step": "call", "result": {"echo": {}}}
                    request = await asyncio.wait_for(server.requests.get(), 1)
                    assert request.headers["Host"] == f"cs.example:{server.port}"
                    await client.finish()
        assert [name for _, name in dns.queries] == ["cs.example"]

    run(scenario())


def test_a_silent_or_refusing_dns_server_is_a_connect_failure_retried_with_back_off():
    async def scenario():
        with Responder({}, silent=True) as dns:
            async with Server(answer_calls) as server:
                url = server.url("cs.example")
                steps = [["connect", 2], ["gap"], ["connect", 30], ["gap"]]
                config = {"url": url, "dns": ["127.0.0.1", dns.port], "steps": steps}
                async with Client(config) as client:
                    for step in ("retry", "error"):  # each attempt timed out, none crashed
                        line = await client.line()
                        assert line[step] == {"type": "OSError", "code": None, "status": None}
                    gap = await client.line()
                    assert gap["ms"] < 200  # the event loop never stalled meanwhile
                    assert len(dns.queries) >= 2  # one at least per attempt
                    dns.silent = False  # it answers: NXDOMAIN, then the address
                    line = await client.line()
                    assert line["retry"]["type"] == "OSError"
                    dns.hosts["cs.example"] = "127.0.0.1"
                    while "retry" in line:
                        line = await client.line()
                    assert line == {"step": "connect", "ok": True}
                    assert (await client.line())["ms"] < 200
                    await client.finish()

    run(scenario())


def test_handshake_times_out_when_the_server_stays_silent():
    accepted = asyncio.Event()

    async def silent(reader, writer):
        accepted.set()
        await reader.read()  # until the client gives up and closes
        writer.close()

    async def scenario():
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            config = {"url": f"ws://127.0.0.1:{port}/ocpp", "steps": [["connect", 1]]}
            async with Client(config) as client:
                result = await client.line()
                assert accepted.is_set()
                assert result["error"]["type"] == "OSError"
                await client.finish()
        finally:
            server.close()

    run(scenario())


def test_oversized_message_closes_with_1009():
    async def handler(ws):
        await ws.send(json.dumps([2, "big", "Echo", {"x": "y" * 5000}]))
        return await hold(ws)

    async def scenario():
        async with Server(handler) as server:
            config = {
                "url": server.url(),
                "max_size": 4096,
                "steps": [["connect", 1], ["wait_down", STEP_TIMEOUT * 1000]],
            }
            async with Client(config) as client:
                assert await client.line() == {"step": "connect", "ok": True}
                assert await server.result() == ("closed", 1009)
                assert await client.line() == {"step": "wait_down", "ok": True}
                await client.finish()

    run(scenario())


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    script = (
        "from ocpp.link import backoff_ms\n"
        "print([backoff_ms(a, r, 1000, 60000) for a in (0, 1, 2, 3, 10, 40) for r in (0, 65535)])"
    )
    done = subprocess.run(
        [*mpy.command("-c"), script], env=mpy.environ(), capture_output=True, text=True, timeout=20
    )
    delays = json.loads(done.stdout)
    assert delays == [500, 999, 1000, 1999, 2000, 3999, 4000, 7999, 30000, 59999, 30000, 59999]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
