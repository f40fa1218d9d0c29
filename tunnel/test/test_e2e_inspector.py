"""
The client's inspector end to end, through its JSON API: a real console
server and client, a local service in this process, requests through the
tunnel on loopback, and what the inspector shows of them.
"""

from __future__ import annotations

import json
import sys

import attrs
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tunnel.client.inspector.web import MAX_EDIT_BYTES
from tunnel.test.twistdprocess import TwistdProcess, spawnPython, spawnTwistd

IDENTIFIER = "the-inspected-identifier-0123"
HOST = "app.localhost"


@attrs.define
class Received:
    """A request the local service received."""

    method: str
    path: str
    body: bytes


class LocalService(Resource):
    """A local service that keeps what it receives and answers JSON."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[Received] = []

    def render(self, request: Request) -> bytes:
        body = request.content.read()
        self.received.append(Received(request.method.decode(), request.uri.decode(), body))
        if request.path == b"/missing":
            request.setResponseCode(404)
        if request.path == b"/big":
            request.setHeader(b"content-type", b"application/octet-stream")
            return b"\x00\x01" * 64 * 1024
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"path": request.uri.decode(), "got": len(body)}).encode()


@attrs.define
class InspectedTunnel:
    """A running tunnel whose client has an inspector."""

    server: TwistdProcess
    client: TwistdProcess
    publicPort: int
    inspector: str
    local: LocalService

    def get(self, path: str, **kwargs: object) -> defer.Deferred:
        """A request to the tunnel's public side, for the client's host."""
        return treq.get(f"http://127.0.0.1:{self.publicPort}{path}", headers={"Host": HOST},
                        persistent=False, **kwargs)

    def post(self, path: str, data: bytes, contentType: str) -> defer.Deferred:
        return treq.post(f"http://127.0.0.1:{self.publicPort}{path}", data=data,
                         headers={"Host": HOST, "Content-Type": contentType}, persistent=False)

    @defer.inlineCallbacks
    def api(self, method: str, path: str, body: object = None, headers: dict | None = None):
        """Call the inspector's API; fire with the status and the decoded JSON."""
        data = None if body is None else json.dumps(body).encode()
        response = yield treq.request(
            method, self.inspector + path.lstrip("/"), data=data, persistent=False,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        content = yield treq.content(response)
        return response.code, json.loads(content)


class InspectedTunnelMixin:
    """Starts an inspected tunnel for a test."""

    @defer.inlineCallbacks
    def startTunnel(self, *clientArguments: str, twistd: bool = False):
        """
        Fire with an L{InspectedTunnel}, stopped when the test ends; its
        client is the console command, or the twistd plugin.
        """
        local = LocalService()
        localPort = reactor.listenTCP(0, Site(local), interface="127.0.0.1")
        self.addCleanup(localPort.stopListening)
        command = [sys.executable, "-m", "tunnel"]
        server = spawnPython(reactor, [*command, "server", "--listen", "tcp:0:interface=127.0.0.1",
                                       "--host", f"{HOST}={IDENTIFIER}"])
        self.addCleanup(server.stop)
        port = int((yield server.waitFor(r"TunnelSite starting on (\d+)")).group(1))
        arguments = [
            "--server", f"127.0.0.1:{port}", "--identifier", IDENTIFIER,
            "--local", str(localPort.getHost().port), "--inspect", "tcp:0:interface=127.0.0.1",
            *clientArguments,
        ]
        if twistd:
            client = spawnTwistd(reactor, "tunnel-client", arguments)
        else:
            client = spawnPython(reactor, [*command, "client", *arguments])
        self.addCleanup(client.stop)
        url = (yield client.waitFor(r"Inspecting requests at (http://127\.0\.0\.1:\d+/)")).group(1)
        yield client.waitFor(r"Forwarding  ?http://app\.localhost")
        return InspectedTunnel(server, client, port, url, local)


class RawAnswer(Protocol):
    """Collects what a server answers until it closes the connection."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.ended: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object = None) -> None:
        self.ended.callback(bytes(self.received))


class EventStream(Protocol):
    """Reads an event stream until it holds C{expected}."""

    def __init__(self, expected: bytes) -> None:
        self.received = bytearray()
        self.told: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._expected = expected

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._expected in self.received and not self.told.called:
            self.told.callback(None)

    def connectionLost(self, reason: object = None) -> None:
        self.ended.callback(None)

    def close(self) -> defer.Deferred[None]:
        """Close the stream; fire once it is closed."""
        self.transport.stopProducing()
        return self.ended


def metricValues(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a Prometheus exposition, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class InspectorAPITests(InspectedTunnelMixin, TestCase):
    """The inspector's JSON API, as a script would use it."""

    @defer.inlineCallbacks
    def test_requestsDetailAndReplay(self):
        """
        Requests through the tunnel are listed newest first with what they
        were; one's detail shows its heads and pretty-printed bodies; a
        replay, as it was or edited, reaches the local service again and is
        listed as a replay.
        """
        tunnel = yield self.startTunnel("--inspect-body-bytes", "1024")
        response = yield tunnel.get("/hello?x=1")
        yield treq.content(response)
        response = yield tunnel.post("/items", b'{"name":"lamp","n":2}', "application/json")
        yield treq.content(response)
        response = yield tunnel.get("/big")
        self.assertEqual(len((yield treq.content(response))), 128 * 1024)
        yield tunnel.client.waitFor(r"GET /big 200")

        code, listing = yield tunnel.api("GET", "/api/requests")
        self.assertEqual(code, 200)
        requests = listing["requests"]
        self.assertEqual(
            [(r["method"], r["target"], r["status"], r["host"], r["source"]) for r in requests],
            [("GET", "/big", 200, HOST, "127.0.0.1"), ("POST", "/items", 200, HOST, "127.0.0.1"),
             ("GET", "/hello?x=1", 200, HOST, "127.0.0.1")],
        )
        big, posted, _ = requests
        self.assertTrue(big["truncated"])
        self.assertGreater(big["bytesOut"], 128 * 1024)

        code, detail = yield tunnel.api("GET", f"/api/requests/{posted['id']}")
        self.assertEqual(code, 200)
        self.assertEqual(detail["request"]["body"]["kind"], "json")
        self.assertEqual(detail["request"]["body"]["text"], '{\n  "name": "lamp",\n  "n": 2\n}')
        self.assertIn(["Host", HOST], detail["request"]["headers"])
        self.assertEqual(json.loads(detail["response"]["body"]["text"]), {"path": "/items", "got": 21})
        code, bigDetail = yield tunnel.api("GET", f"/api/requests/{big['id']}")
        self.assertEqual((bigDetail["response"]["bodyKept"], bigDetail["response"]["truncated"]),
                         (1024, True))
        self.assertEqual(bigDetail["response"]["body"]["kind"], "binary")

        code, replayed = yield tunnel.api("POST", f"/api/requests/{posted['id']}/replay")
        self.assertEqual((code, replayed["replayOf"], replayed["status"]), (200, posted["id"], 200))
        code, edited = yield tunnel.api(
            "POST", f"/api/requests/{posted['id']}/replay",
            {"target": "/items?edited=1", "body": '{"name":"desk"}'},
        )
        self.assertEqual((code, edited["target"]), (200, "/items?edited=1"))
        self.assertEqual(
            [(r.method, r.path, r.body) for r in tunnel.local.received[-2:]],
            [("POST", "/items", b'{"name":"lamp","n":2}'), ("POST", "/items?edited=1", b'{"name":"desk"}')],
        )
        code, listing = yield tunnel.api("GET", "/api/requests")
        self.assertEqual([r["replayOf"] for r in listing["requests"][:2]], [posted["id"]] * 2)

        code, error = yield tunnel.api("POST", "/api/requests/999/replay")
        self.assertEqual(code, 404)
        code, error = yield tunnel.api("POST", f"/api/requests/{posted['id']}/replay", {"target": "/a b"})
        self.assertEqual(code, 409)
        self.assertIn("not well-formed", error["error"])

    @defer.inlineCallbacks
    def test_statusAndMetrics(self):
        """
        Under twistd, the status says the tunnel is up and where the public
        reaches it; the metrics, parsed as Prometheus reads them, count the
        requests.
        """
        tunnel = yield self.startTunnel("--log-requests", "yes", twistd=True)
        for path in ("/a", "/b"):
            response = yield tunnel.get(path)
            yield treq.content(response)
        yield tunnel.client.waitFor(r"GET /b 200")
        code, status = yield tunnel.api("GET", "/api/status")
        self.assertEqual((code, status["state"], status["connected"]), (200, "connected", True))
        self.assertEqual(status["forwards"][0]["public"], f"http://{HOST}:{tunnel.publicPort}/")
        self.assertEqual(status["hosts"], [HOST])
        self.assertGreater(status["since"], 0)
        response = yield treq.get(tunnel.inspector + "metrics", persistent=False)
        values = metricValues((yield treq.text_content(response)))
        self.assertEqual(values[("tunnel_client_requests_total", (("status_class", "2xx"),))], 2)
        self.assertEqual(values[("tunnel_client_connections_total", (("kind", "http"),))], 2)
        self.assertEqual(values[("tunnel_client_connected", ())], 1)
        self.assertEqual(values[("tunnel_client_request_duration_seconds_count", ())], 2)
        self.assertGreater(values[("tunnel_client_bytes_total", (("direction", "from_local"),))], 0)

    @defer.inlineCallbacks
    def test_pushedLive(self):
        """The event stream tells of a new request as it happens."""
        tunnel = yield self.startTunnel()
        response = yield treq.get(tunnel.inspector + "api/events", persistent=False,
                                  unbuffered=True)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/event-stream"])
        stream = EventStream(b'"target": "/live"')
        response.deliverBody(stream)
        self.addCleanup(stream.close)
        answer = yield tunnel.get("/live")
        yield treq.content(answer)
        yield stream.told.addTimeout(30, reactor)
        self.assertIn(b"event: status", stream.received)
        self.assertIn(b"event: exchanges", stream.received)

    @defer.inlineCallbacks
    def test_otherSitesAreRefused(self):
        """
        A request naming another host (DNS rebinding), a change from
        another origin, or a POST without a JSON body is refused; the
        local service sees no replay.
        """
        tunnel = yield self.startTunnel()
        response = yield tunnel.get("/once")
        yield treq.content(response)
        yield tunnel.client.waitFor(r"GET /once 200")
        code, error = yield tunnel.api("GET", "/api/requests", headers={"Host": "evil.example"})
        self.assertEqual(code, 403)
        self.assertIn("localhost", error["error"])
        code, _ = yield tunnel.api("POST", "/api/requests/1/replay",
                                   headers={"Origin": "http://evil.example"})
        self.assertEqual(code, 403)
        code, _ = yield tunnel.api("POST", "/api/requests/1/replay",
                                   headers={"Content-Type": "text/plain"})
        self.assertEqual(code, 415)
        self.assertEqual(len(tunnel.local.received), 1)

    @defer.inlineCallbacks
    def test_largeReplayBodyRefusedUnread(self):
        """
        A replay whose body announces more than the inspector reads is
        answered 413 at its head, none of the body sent.
        """
        tunnel = yield self.startTunnel()
        response = yield tunnel.get("/once")
        yield treq.content(response)
        yield tunnel.client.waitFor(r"GET /once 200")
        port = int(tunnel.inspector.rsplit(":", 1)[1].rstrip("/"))
        answer = RawAnswer()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), answer)
        answer.transport.write(
            b"POST /api/requests/1/replay HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (MAX_EDIT_BYTES + 1,)
        )
        data = yield answer.ended.addTimeout(30, reactor)
        self.assertTrue(data.startswith(b"HTTP/1.1 413 "), data[:80])
