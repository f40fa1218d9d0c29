"""
Tests for L{tunnel.server.resource.TunnelResource} through a
L{TunnelServer}'s site, in memory: the control path, routing and the
errors of public requests.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.resource import Resource
from twisted.web.server import Site

from tunnel.mux import SessionEndedError
from tunnel.protocol import (
    CONNECTED_RESPONSE,
    HANDSHAKE_REQUEST,
    ControlMessage,
    TransportProtocol,
)
from tunnel.server import ClientConnected, ClientDisconnected, HostStatus
from tunnel.test.serversupport import PUBLIC_PEER, Harness, tlsOptions

IDENTIFIER = b"secret-identifier-1"


class Hello(Resource):
    """Answers every request with its own name."""

    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name

    def render(self, request: object) -> bytes:
        return self.name


class RawClient(Protocol):
    """Records what it receives."""

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class ResourceTestCase(SynchronousTestCase):
    """A harness with one host routed to one identifier."""

    def setUp(self) -> None:
        self.harness = Harness()
        self.server = self.harness.server
        self.server.addHost("app.example", IDENTIFIER)
        self.local = Site(Hello(b"hello from the app"), reactor=self.harness.clock)

    def connectClient(self, identifier: bytes = IDENTIFIER, name: bytes | None = None):
        local = self.local if name is None else Site(Hello(name), reactor=self.harness.clock)
        return self.harness.tunnelClient(identifier, lambda m: local.buildProtocol(None))

    def get(self, host: bytes, path: bytes = b"/"):
        client = self.harness.httpClient()
        response = self.successResultOf(
            self.harness.request(client, b"GET", path, {b"host": [host]})
        )
        body = readBody(response)
        self.harness.flush()
        return response, self.successResultOf(body)

    def raw(self, data: bytes) -> RawClient:
        client = RawClient()
        self.harness.connect(client)
        client.transport.write(data)
        self.harness.flush()
        return client


class ControlPathTests(ResourceTestCase):
    """
    C{/_controlPath/}: CONNECT with a known identifier turns the connection
    into a tunnel session; anything else gets an HTTP error.
    """

    def test_knownIdentifierGetsExactlyTheConnectedAnswer(self) -> None:
        """
        A CONNECT with a known identifier is answered with exactly the bytes
        the Go server sends, and nothing follows until the client speaks.
        """
        client = self.raw(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n\r\n"
        )
        self.harness.advance(5)
        self.assertEqual(client.received, CONNECTED_RESPONSE)

    def test_clientCompletesTheHandshakeAndIsListed(self) -> None:
        """
        After the handshake the client is connected: listed by C{clients}
        with a redacted identifier, its host shown as connected.
        """
        client = self.connectClient()
        self.assertEqual(client.answer, CONNECTED_RESPONSE)
        self.assertTrue(client.handshaken.called)
        [info] = self.server.clients()
        self.assertEqual(info.identifier, "secr…")
        self.assertEqual(info.hosts, ("app.example",))
        self.assertEqual(info.peer, PUBLIC_PEER)
        self.assertEqual(self.server.hosts(), [HostStatus("app.example", True)])

    def test_unknownIdentifierIsForbidden(self) -> None:
        """An unknown identifier gets a 403 with a short text reason."""
        client = self.raw(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: secret-identifier-2\r\n\r\n"
        )
        self.assertTrue(client.received.startswith(b"HTTP/1.1 403 Forbidden\r\n"))
        self.assertIn(b"Content-Type: text/plain; charset=utf-8\r\n", client.received)
        self.assertTrue(client.received.endswith(b"\r\n\r\nunknown identifier\n"))
        self.assertEqual(self.server.clients(), [])

    def test_missingIdentifierIsForbidden(self) -> None:
        """A CONNECT without an identifier gets a 403."""
        client = self.raw(b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 403 "))

    def test_otherMethodsAreNotAllowed(self) -> None:
        """Any other method on the control path gets a 405 naming CONNECT."""
        client = self.raw(
            b"GET /_controlPath/ HTTP/1.1\r\nHost: app.example\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n\r\n"
        )
        self.assertTrue(client.received.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"))
        self.assertIn(b"\r\nAllow: CONNECT\r\n", client.received)
        self.assertTrue(client.received.endswith(b"the control path takes CONNECT only\n"))

    def test_secondSessionReplacesTheFirst(self) -> None:
        """
        A second session for a connected identifier replaces the first: the
        old one is sent Go Away, observers see it disconnect then the new
        one connect, and requests reach the new one.
        """
        events: list[object] = []
        self.server.addObserver(events.append)
        old = self.connectClient(name=b"old")
        new = self.connectClient(name=b"new")
        self.assertEqual(old.goAwayCodes, [0])
        self.assertEqual(new.goAwayCodes, [])
        self.assertEqual(
            [type(e) for e in events],
            [ClientConnected, ClientDisconnected, ClientConnected],
        )
        self.assertTrue(events[1].reason.check(SessionEndedError))
        response, body = self.get(b"app.example")
        self.assertEqual(body, b"new")
        self.assertEqual(len(self.server.clients()), 1)

    def test_replacedSessionClosesOnceIdle(self) -> None:
        """The replaced session's connection closes once it has no stream."""
        old = self.connectClient(name=b"old")
        self.connectClient(name=b"new")
        self.harness.flush()
        self.assertIsNotNone(old.lost)

    def test_deletingTheLastHostClosesTheSession(self) -> None:
        """
        Deleting the last host of an identifier disconnects its client and
        forgets the identifier.
        """
        events: list[object] = []
        self.server.addObserver(events.append)
        client = self.connectClient()
        self.server.deleteHost("app.example")
        self.harness.flush()
        self.assertIsNotNone(client.lost)
        self.assertEqual([type(e) for e in events], [ClientConnected, ClientDisconnected])
        self.assertEqual(self.server.clients(), [])
        again = self.raw(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n\r\n"
        )
        self.assertTrue(again.received.startswith(b"HTTP/1.1 403 "))

    def test_handshakeForARemovedIdentifierIsTurnedAway(self) -> None:
        """
        A client whose identifier is removed before it completes the
        handshake is disconnected when it does, and never listed.
        """
        client = self.harness.tunnelClient(
            IDENTIFIER, lambda m: None, handshake=b""
        )
        self.server.deleteHost("app.example")
        client.control.transport.write(HANDSHAKE_REQUEST)
        self.harness.flush()
        self.assertIsNotNone(client.lost)
        self.assertEqual(self.server.clients(), [])

    def test_closingTheServerDisconnectsEveryClient(self) -> None:
        """Closing the server closes every client's session and tells observers."""
        events: list[object] = []
        self.server.addObserver(events.append)
        client = self.connectClient()
        closed = self.server.close()
        self.harness.flush()
        self.successResultOf(closed)
        self.assertIsNotNone(client.lost)
        self.assertEqual(self.server.clients(), [])
        self.assertIn("the server is stopping", events[-1].reason.getErrorMessage())

    def test_clientLeavingIsReportedWithItsReason(self) -> None:
        """When a client's connection drops, observers are told, with why."""
        events: list[object] = []
        self.server.addObserver(events.append)
        client = self.connectClient()
        client.transport.loseConnection()
        self.harness.flush()
        [connected, disconnected] = events
        self.assertIsInstance(disconnected, ClientDisconnected)
        self.assertEqual(disconnected.client, connected.client)
        self.assertIsNotNone(disconnected.reason)
        self.assertEqual(self.server.hosts(), [HostStatus("app.example", False)])


class RoutingTests(ResourceTestCase):
    """
    Public requests are routed by Host: C{host:port} first, then the host
    alone, case-insensitively; errors have short text bodies naming the
    host.
    """

    def test_requestReachesTheClientOfItsHost(self) -> None:
        """A request for a connected host gets the local app's answer."""
        client = self.connectClient()
        response, body = self.get(b"App.Example")
        self.assertEqual((response.code, body), (200, b"hello from the app"))
        self.assertEqual(
            client.messages, [ControlMessage(1, TransportProtocol.HTTP, 0)]
        )

    def test_hostWithPortIsMatchedBeforeTheHostAlone(self) -> None:
        """
        C{host:port} routes are tried before C{host}, whatever the case; the
        Host header's port is sent as the local port.
        """
        self.server.addHost("APP.example:8443", b"secret-identifier-2")
        plain = self.connectClient(name=b"plain")
        ported = self.connectClient(b"secret-identifier-2", name=b"ported")
        self.assertEqual(self.get(b"app.example:8443")[1], b"ported")
        self.assertEqual(self.get(b"app.EXAMPLE:9000")[1], b"plain")
        self.assertEqual(self.get(b"app.example")[1], b"plain")
        self.assertEqual([m.localPort for m in ported.messages], [8443])
        self.assertEqual([m.localPort for m in plain.messages], [9000, 0])

    def test_unknownHostIsNotFound(self) -> None:
        """An unknown host gets a 404 naming it."""
        response, body = self.get(b"nowhere.example:81")
        self.assertEqual(response.code, 404)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"]
        )
        self.assertEqual(body, b"no tunnel for host nowhere.example:81\n")

    def test_hostWithoutClientIsBadGateway(self) -> None:
        """A known host whose client is not connected gets a 502 naming it."""
        response, body = self.get(b"app.example")
        self.assertEqual(response.code, 502)
        self.assertEqual(body, b"the tunnel client for host app.example is not connected\n")

    def test_clientThatOpensNoStreamTimesOut(self) -> None:
        """
        When the client does not open a stream in time, the request gets a
        504 naming the host.
        """
        self.harness.tunnelClient(IDENTIFIER, lambda m: None)
        client = self.harness.httpClient()
        d = self.harness.request(client, b"GET", b"/", {b"host": [b"app.example"]})
        self.assertNoResult(d)
        self.harness.advance(10)
        response = self.successResultOf(d)
        body = readBody(response)
        self.harness.flush()
        self.assertEqual(response.code, 504)
        self.assertEqual(
            self.successResultOf(body),
            b"the tunnel client for host app.example did not open a stream in time\n",
        )


class TLSTests(ResourceTestCase):
    """The control path and public requests over real TLS, in memory."""

    def setUp(self) -> None:
        super().setUp()
        self.tls = tlsOptions()

    def test_sessionOverTLSServesRequestsAndCloses(self) -> None:
        """
        A client connected over TLS completes its handshake and serves a
        request arriving over TLS, which is forwarded as https; when its
        identifier is removed, its TLS connection is closed.
        """
        local = Site(ForwardedProto(), reactor=self.harness.clock)
        client = self.harness.tunnelClient(
            IDENTIFIER, lambda m: local.buildProtocol(None), tls=self.tls
        )
        self.assertTrue(client.handshaken.called)
        public = self.harness.httpClient(tls=self.tls)
        response = self.successResultOf(
            self.harness.request(public, b"GET", b"/", {b"host": [b"app.example"]})
        )
        body = readBody(response)
        self.harness.flush()
        self.assertEqual(self.successResultOf(body), b"https")
        self.server.deleteHost("app.example")
        self.harness.flush()
        self.assertIsNotNone(client.lost)


class ForwardedProto(Resource):
    """Answers with the X-Forwarded-Proto it got."""

    isLeaf = True

    def render(self, request: object) -> bytes:
        return request.getHeader(b"x-forwarded-proto")
