"""
Tests for L{tunnel.server.resource.TunnelResource} through a
L{TunnelServer}'s site, in memory: the control path, routing and the
errors of public requests.
"""

from __future__ import annotations

import base64
import hashlib

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.resource import Resource
from twisted.web.server import Site

from tunnel.core.access import AccessRule, parseCredentials, parseNetworks
from tunnel.mux import SessionEndedError
from tunnel.core.control import (
    CONNECTED_RESPONSE,
    CONNECTED_WITH_SERVER_STREAMS,
    HANDSHAKE_REQUEST,
    ControlMessage,
    TransportProtocol,
)
from tunnel.server import ClientConnected, ClientDisconnected, HostStatus
from tunnel.yamux import INITIAL_WINDOW, FrameType, GoAwayCode, encodeFrame
from tunnel.test.serversupport import PUBLIC_PEER, Harness, tlsOptions
from tunnel.test.support import Recorder

IDENTIFIER = b"secret-identifier-1"


class Hello(Resource):
    """Answers every request with its own name."""

    isLeaf = True

    def __init__(self, name: bytes) -> None:
        super().__init__()
        self.name = name

    def render(self, request: object) -> bytes:
        return self.name


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

    def raw(self, data: bytes, peer: IAddress = PUBLIC_PEER) -> Recorder:
        client = Recorder()
        self.harness.connect(client, peer=peer)
        client.transport.write(data)
        self.harness.flush()
        return client


class AccessTests(ResourceTestCase):
    """A host's operator-set networks are checked before anything is forwarded."""

    def test_sourceOutsideTheAllowedNetworksIsRefused(self) -> None:
        """
        A public request from outside the allowed networks gets a 403 that
        says why, whether or not the host's client is connected; one from
        inside reaches the client.
        """
        self.server.setAccess("app.example", AccessRule(parseNetworks("10.0.0.0/8")))
        response, body = self.get(b"app.example")
        self.assertEqual(response.code, 403)
        self.assertEqual(body, b"this host does not accept requests from your address\n")
        self.connectClient()
        response, body = self.get(b"app.example")
        self.assertEqual((response.code, body), (403, b"this host does not accept requests from your address\n"))
        self.server.setAccess("app.example", AccessRule(parseNetworks(f"{PUBLIC_PEER.host}/32")))
        response, body = self.get(b"app.example")
        self.assertEqual((response.code, body), (200, b"hello from the app"))
        self.server.setAccess("app.example", None)
        self.assertEqual(self.get(b"app.example")[1], b"hello from the app")


class EchoAuthorization(Resource):
    """Answers with the Authorization header it got, or C{none}."""

    isLeaf = True

    def render(self, request: object) -> bytes:
        return request.getHeader(b"authorization") or b"none"  # type: ignore[attr-defined]


class BasicAuthTests(ResourceTestCase):
    """A host's credentials are asked for before anything is forwarded."""

    def setUp(self) -> None:
        super().setUp()
        self.local = Site(EchoAuthorization(), reactor=self.harness.clock)
        self.server.setAccess(
            "app.example", AccessRule(credentials=parseCredentials("alice:s3cret", "users"))
        )
        self.connectClient()

    def getWith(self, authorization: bytes | None):
        headers = {b"host": [b"app.example"]}
        if authorization is not None:
            headers[b"authorization"] = [authorization]
        client = self.harness.httpClient()
        response = self.successResultOf(self.harness.request(client, b"GET", b"/", headers))
        body = readBody(response)
        self.harness.flush()
        return response, self.successResultOf(body)

    def test_missingOrWrongCredentialsGet401(self) -> None:
        """Without the right pair the answer is a 401 that asks for one, for this host."""
        for authorization in (None, b"Basic " + base64.b64encode(b"alice:wrong")):
            response, body = self.getWith(authorization)
            self.assertEqual((response.code, body),
                             (401, b"this host needs a user name and password\n"))
            self.assertEqual(response.headers.getRawHeaders(b"www-authenticate"),
                             [b'Basic realm="app.example"'])

    def test_rightCredentialsReachTheClientWithoutThem(self) -> None:
        """The right pair is let through, and the local service never sees it."""
        response, body = self.getWith(b"Basic " + base64.b64encode(b"alice:s3cret"))
        self.assertEqual((response.code, body), (200, b"none"))


class ClientAccessTests(ResourceTestCase):
    """
    Access rules a client asks for its hosts (the access extension), on top
    of the operator's.
    """

    def setUp(self) -> None:
        super().setUp()
        self.local = Site(EchoAuthorization(), reactor=self.harness.clock)

    def connectAsking(self, *lines: bytes, features: bytes = b"access"):
        headers = b"X-Tunnel-Features: " + features + b"\r\n" + b"".join(
            line + b"\r\n" for line in lines
        )
        return self.harness.tunnelClient(
            IDENTIFIER, lambda m: self.local.buildProtocol(None), extraHeaders=headers
        )

    def getWith(self, authorization: bytes | None = None):
        return BasicAuthTests.getWith(self, authorization)  # type: ignore[arg-type]

    def test_networksAskedForAreChecked(self) -> None:
        """
        A client that asks to admit only some networks gets the extension
        accepted; a request from elsewhere gets a 403, one from inside
        reaches it, and a denied address is refused whatever is allowed.
        """
        client = self.connectAsking(b"X-Tunnel-Allow: 10.0.0.0/8, 2001:db8::/32")
        self.assertIn(b"X-Tunnel-Features: access\n", client.answer)
        response, body = self.getWith()
        self.assertEqual((response.code, body),
                         (403, b"this host does not accept requests from your address\n"))
        client.transport.loseConnection()
        self.harness.flush()
        client = self.connectAsking(
            b"X-Tunnel-Allow: 203.0.113.0/24",
            b"X-Tunnel-Deny: 198.51.100.0/24",
        )
        response, body = self.getWith()
        self.assertEqual((response.code, body), (200, b"none"))
        client.transport.loseConnection()
        self.harness.flush()
        self.connectAsking(b"X-Tunnel-Allow: 0.0.0.0/0", b"X-Tunnel-Deny: 203.0.113.7")
        self.assertEqual(self.getWith()[0].code, 403)

    def test_operatorRulesStillHold(self) -> None:
        """A client's rules add to the operator's; they cannot loosen them."""
        self.server.setAccess("app.example", AccessRule(deny=parseNetworks(PUBLIC_PEER.host)))
        self.connectAsking(b"X-Tunnel-Allow: 0.0.0.0/0")
        self.assertEqual(self.getWith()[0].code, 403)

    def test_credentialsAskedForAreChecked(self) -> None:
        """
        A client asks for credentials by their digests; a request without
        them gets a 401, one with them reaches the client without them.
        """
        digest = hashlib.sha256(b"alice:s3cret").hexdigest().encode()
        self.connectAsking(b"X-Tunnel-Credentials: " + digest)
        response, body = self.getWith()
        self.assertEqual(response.code, 401)
        response, body = self.getWith(b"Basic " + base64.b64encode(b"alice:s3cret"))
        self.assertEqual((response.code, body), (200, b"none"))

    def test_rulesWithoutTheFeatureAreIgnored(self) -> None:
        """Without the extension offered, the headers mean nothing (as to a Go server)."""
        client = self.connectAsking(b"X-Tunnel-Allow: 10.0.0.0/8", features=b"addresses")
        self.assertNotIn(b"access", client.answer)
        self.assertEqual(self.getWith()[0].code, 200)

    def test_malformedRulesAreABadRequest(self) -> None:
        """Malformed networks or digests, or too many, get a 400 and no session."""
        for line in (
            b"X-Tunnel-Allow: 10.0.0.1/8",
            b"X-Tunnel-Allow: nowhere",
            b"X-Tunnel-Credentials: alice:s3cret",
            b"X-Tunnel-Deny: " + b", ".join(b"10.0.0.%d" % (i,) for i in range(65)),
        ):
            client = self.connectAsking(line)
            self.assertTrue(client.answer.startswith(b"HTTP/1.1 400 "), client.answer)
        self.assertEqual(self.server.clients(), [])


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

    def test_offeredServerStreamsAreAccepted(self) -> None:
        """
        A CONNECT that offers the server-streams extension (among others)
        gets the connected answer with one more line that accepts it.
        """
        client = self.raw(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n"
            b"X-Tunnel-Features: other, Server-Streams\r\n\r\n"
        )
        self.harness.advance(5)
        self.assertEqual(
            client.received,
            b"HTTP/1.1 200 Connected to Tunnel\nX-Tunnel-Features: server-streams\n\n",
        )
        self.assertEqual(client.received, CONNECTED_WITH_SERVER_STREAMS)

    def test_offeredAddressesAreSaid(self) -> None:
        """
        A CONNECT that offers the addresses extension gets, on its C{200},
        the URL of each of its identifier's hosts at the scheme and port it
        came through, and its TCP listeners at the name it called the server.
        """
        self.server.addHost("other.example:9000", IDENTIFIER)
        self.server.addHost("not-this-one.example", b"another-identifier")
        self.server._registry.bindListener(IDENTIFIER, 2222)
        client = Recorder()
        self.harness.connect(client, secure=True)
        client.transport.write(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: tunnel.example:8080\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n"
            b"X-Tunnel-Features: server-streams, addresses\r\n\r\n"
        )
        self.harness.flush()
        self.assertEqual(
            client.received,
            b"HTTP/1.1 200 Connected to Tunnel\n"
            b"X-Tunnel-Features: server-streams, addresses\n"
            b"X-Tunnel-Addresses: https://app.example:8080/, https://other.example:9000/, "
            b"tcp://tunnel.example:2222\n\n",
        )

    def connectOnly(self) -> Recorder:
        """A client whose CONNECT was answered, and which says nothing yet."""
        client = Recorder()
        self.harness.connect(client)
        client.transport.write(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n\r\n"
        )
        self.harness.flush()
        self.assertEqual(bytes(client.received), CONNECTED_RESPONSE)
        return client

    def test_silentClientIsDroppedAfterTheHandshakeTimeout(self) -> None:
        """
        A client whose CONNECT was accepted and which then sends nothing is
        disconnected once the handshake timeout (10 s) is over: the site's
        own timeouts no longer apply to its connection. It is never listed.
        """
        events: list[object] = []
        self.server.addObserver(events.append)
        client = self.connectOnly()
        self.harness.advance(9.9)
        self.assertIsNone(client.lost)
        self.harness.advance(0.1)
        self.assertIsNotNone(client.lost)
        self.assertEqual((self.server.clients(), events), ([], []))

    def test_garbageInsteadOfYamuxEndsTheSession(self) -> None:
        """
        A client whose CONNECT was accepted and which then sends something
        other than yamux (here, another HTTP request) gets Go Away with code
        1 and is disconnected at once, never listed.
        """
        client = self.connectOnly()
        client.transport.write(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.harness.flush()
        self.assertEqual(
            bytes(client.received)[len(CONNECTED_RESPONSE):],
            encodeFrame(FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR),
        )
        self.assertIsNotNone(client.lost)
        self.assertEqual(self.server.clients(), [])

    def test_controlRequestWithABodyIsRefused(self) -> None:
        """
        A CONNECT with a body gets a 400, even with a known identifier: what
        follows the request head must be yamux, not a body.
        """
        client = self.raw(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\nContent-Length: 4\r\n\r\nbody"
        )
        self.assertTrue(client.received.startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.assertTrue(client.received.endswith(b"a control request has no body\n"))
        self.assertEqual(self.server.clients(), [])

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

    def test_secondClientOfAnAnsweringSessionIsRefused(self) -> None:
        """
        A second client for an identifier whose session answers a ping is
        refused with a C{409} that says why: the two do not take the tunnel
        from each other. The first keeps it.
        """
        events: list[object] = []
        self.server.addObserver(events.append)
        old = self.connectClient(name=b"old")
        new = self.raw(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n\r\n"
        )
        self.assertTrue(new.received.startswith(b"HTTP/1.1 409 Conflict\r\n"), new.received)
        self.assertIn(
            b"another client with this identifier is connected (from 203.0.113.7, for 0 s) "
            b"and answering",
            new.received,
        )
        self.assertEqual(old.goAwayCodes, [])
        self.assertIsNone(old.lost)
        self.assertEqual([type(e) for e in events], [ClientConnected])
        response, body = self.get(b"app.example")
        self.assertEqual(body, b"old")

    def test_silentSessionIsReplaced(self) -> None:
        """
        A second client for an identifier whose session does not answer a
        ping within 5 s replaces it: the old one is sent Go Away, observers
        see it disconnect then the new one connect, and requests reach the
        new one.
        """
        events: list[object] = []
        self.server.addObserver(events.append)
        old = self.connectClient(name=b"old")
        # The old client's connection is gone quiet: nothing moves on it.
        oldPump = self.harness.pumps.pop()
        new = self.connectClient(name=b"new")
        self.assertEqual(new.answer, b"")
        self.harness.advance(4.9)
        self.assertEqual(new.answer, b"")
        self.harness.advance(0.1)
        self.harness.flush()
        self.assertEqual(
            [type(e) for e in events],
            [ClientConnected, ClientDisconnected, ClientConnected],
        )
        self.assertTrue(events[1].reason.check(SessionEndedError))
        response, body = self.get(b"app.example")
        self.assertEqual(body, b"new")
        self.assertEqual(len(self.server.clients()), 1)
        self.harness.pumps.append(oldPump)
        self.harness.flush()
        self.assertEqual(old.goAwayCodes, [0])
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
        port of a matched C{host:port} route is sent as the local port.
        """
        self.server.addHost("APP.example:8443", b"secret-identifier-2")
        plain = self.connectClient(name=b"plain")
        ported = self.connectClient(b"secret-identifier-2", name=b"ported")
        self.assertEqual(self.get(b"app.example:8443")[1], b"ported")
        self.assertEqual(self.get(b"app.EXAMPLE:9000")[1], b"plain")
        self.assertEqual(self.get(b"app.example")[1], b"plain")
        self.assertEqual([m.localPort for m in ported.messages], [8443])
        self.assertEqual([m.localPort for m in plain.messages], [0, 0])

    def test_portsThePublicChoosesAreNotForwarded(self) -> None:
        """
        A Host naming an arbitrary port (a memcached on the client's
        machine, say) is routed to its host, but forwarded with local port
        0, the client's default, for plain and upgrade requests alike: the
        public does not choose the local port.
        """
        client = self.connectClient()
        for port in (b"11211", b"22", b"1", b"65535", b"8081"):
            self.get(b"app.example:" + port)
        self.raw(
            b"GET /ws HTTP/1.1\r\nHost: app.example:11211\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        self.assertEqual([m.localPort for m in client.messages], [0] * 6)
        self.assertEqual(client.messages[-1].transportProtocol, TransportProtocol.WEBSOCKET)

    def test_portOfTheListenerIsForwarded(self) -> None:
        """
        A Host naming the port of the public listener that accepted the
        request (8080 here) is forwarded with that port, as the Go server
        does.
        """
        client = self.connectClient()
        self.assertEqual(self.get(b"app.example:8080")[1], b"hello from the app")
        self.assertEqual([m.localPort for m in client.messages], [8080])

    def test_absoluteFormPortsFollowTheSameRule(self) -> None:
        """
        The port of an absolute-form target's authority, which replaces the
        Host, is forwarded only under the same rule.
        """
        client = self.connectClient()
        self.raw(b"GET http://app.example:11211/x HTTP/1.1\r\nHost: app.example:8080\r\n\r\n")
        self.raw(b"GET http://app.example:8080/x HTTP/1.1\r\nHost: app.example:11211\r\n\r\n")
        self.assertEqual([m.localPort for m in client.messages], [0, 8080])

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


class RequestRecorder(Resource):
    """Records the target and hosts of each request it answers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bytes, bytes, bytes, bytes]] = []

    def render(self, request: object) -> bytes:
        headers = request.requestHeaders
        self.seen.append(
            (
                request.method,
                request.uri,
                b",".join(headers.getRawHeaders(b"host", [])),
                b",".join(headers.getRawHeaders(b"x-forwarded-host", [])),
            )
        )
        return b"recorded"


class TargetTests(ResourceTestCase):
    """
    Request targets: only C{/_controlPath/} exactly is the control path,
    anything that could be read as it is refused; absolute-form targets are
    forwarded in origin form, routed by their authority.
    """

    def setUp(self) -> None:
        super().setUp()
        self.server.addHost("other.example", b"secret-identifier-2")
        self.recorder = RequestRecorder()
        self.local = Site(self.recorder, reactor=self.harness.clock)
        self.client = self.connectClient()

    def assertRefused(self, data: bytes, message: bytes) -> None:
        client = self.raw(data)
        head, _, body = client.received.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), data)
        self.assertEqual(body, message + b"\n", data)

    def test_formsOfTheControlPathAreRefused(self) -> None:
        """
        Targets a local service could read as the control path, or a path
        under it, get a 400, CONNECT with a known identifier included: no
        session, nothing forwarded.
        """
        for target in (
            b"/%5FcontrolPath/",
            b"/%5fcontrolPath/",
            b"//_controlPath/",
            b"/_controlPath//",
            b"/_controlPath",
            b"/_controlPath/x",
            b"/_CONTROLPATH/",
            b"/./_controlPath/",
            b"/x/../_controlPath/",
            b"/%2e%2e/_controlPath/",
            b"/%2F_controlPath/",
            b"/\\_controlPath/",
            b"/_controlPath\\",
            b"/%255FcontrolPath/",
            b"/%25255FcontrolPath/",
            b"/_controlPath;a=b/",
            b"/_controlPath./",
            b"http://app.example/_controlPath/",
            b"HTTP://tunnel/_controlPath/?x",
        ):
            for method in (b"GET", b"CONNECT"):
                self.assertRefused(
                    method + b" " + target + b" HTTP/1.1\r\nHost: app.example\r\n"
                    b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n\r\n",
                    b"the request target could be read as the control path",
                )
        self.assertEqual((self.client.messages, self.recorder.seen), ([], []))
        self.assertEqual(len(self.server.clients()), 1)

    def test_neighboursOfTheControlPathAreForwarded(self) -> None:
        """Paths that merely resemble it are ordinary paths."""
        for target in (b"/_controlPathX/", b"/x/_controlPath/", b"/_control/Path/", b"/?/_controlPath/"):
            self.raw(b"GET " + target + b" HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.assertEqual(
            [uri for _, uri, _, _ in self.recorder.seen],
            [b"/_controlPathX/", b"/x/_controlPath/", b"/_control/Path/", b"/?/_controlPath/"],
        )

    def test_absoluteFormIsForwardedInOriginForm(self) -> None:
        """
        An absolute-form target reaches the local service in origin form,
        with the target's authority as Host and X-Forwarded-Host, whatever
        the Host header said.
        """
        self.raw(b"GET http://App.Example/x/y?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
        self.raw(b"GET https://app.example HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.raw(b"GET http://app.example?q HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.assertEqual(
            self.recorder.seen,
            [
                (b"GET", b"/x/y?q=1", b"App.Example", b"App.Example"),
                (b"GET", b"/", b"app.example", b"app.example"),
                (b"GET", b"/?q", b"app.example", b"app.example"),
            ],
        )

    def test_absoluteFormIsRoutedByItsAuthority(self) -> None:
        """
        An absolute-form target naming another host is routed to that
        host's client (none connected here: 502), not to the Host header's.
        """
        client = self.raw(b"GET http://other.example/x HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 502 "))
        self.assertIn(b"for host other.example is not connected", client.received)
        client = self.raw(b"GET http://nowhere.example/ HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 404 "))
        self.assertEqual((self.client.messages, self.recorder.seen), ([], []))

    def test_refusedTargets(self) -> None:
        """
        Targets the server does not take get a 400 saying why: other
        schemes, user information, no authority, a malformed one, fragments,
        and the authority form.
        """
        for target, message in (
            (b"ftp://app.example/x", b"the request target's scheme is not http or https"),
            (b"http://user@app.example/x", b"the request target has user information"),
            (b"http:///x", b"the request target has no authority"),
            (b"http://app.example/x#frag", b"the request target has a fragment"),
            (b"app.example:80", b"the request target is neither a path nor an absolute URI"),
            (b"_controlPath/", b"the request target is neither a path nor an absolute URI"),
        ):
            self.assertRefused(
                b"GET " + target + b" HTTP/1.1\r\nHost: app.example\r\n\r\n", message
            )
        self.assertRefused(
            b"GET http://app.example:99999/ HTTP/1.1\r\nHost: app.example\r\n\r\n",
            b"the request target's authority is malformed",
        )
        self.assertEqual(self.recorder.seen, [])

    def test_asteriskIsAnsweredByTheServer(self) -> None:
        """
        The asterisk form is twisted.web's to answer (C{OPTIONS *} with 200,
        anything else 405): it reaches no local service.
        """
        options = self.raw(b"OPTIONS * HTTP/1.1\r\nHost: app.example\r\n\r\n")
        other = self.raw(b"GET * HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.assertTrue(options.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(other.received.startswith(b"HTTP/1.1 405 "))
        self.assertEqual((self.client.messages, self.recorder.seen), ([], []))


class PublicHostTests(ResourceTestCase):
    """
    A public request must name exactly one well-formed host; else it gets a
    400 with a short text, which does not repeat the header.
    """

    def assertBadRequest(self, client: Recorder, message: bytes) -> None:
        head, _, body = client.received.partition(b"\r\n\r\n")
        self.assertRegex(head, rb"^HTTP/1\.[01] 400 Bad Request\r\n")
        self.assertIn(b"\r\nContent-Type: text/plain; charset=utf-8\r\n", head)
        self.assertEqual(body, message + b"\n")

    def test_missingHostIsBadRequest(self) -> None:
        """A request without a Host header gets a 400, in HTTP/1.1 as in 1.0."""
        for version in (b"HTTP/1.1", b"HTTP/1.0"):
            client = self.raw(b"GET / " + version + b"\r\n\r\n")
            self.assertBadRequest(client, b"the request has no Host header")

    def test_malformedHostIsBadRequest(self) -> None:
        """A Host header that is not a host and an optional port gets a 400."""
        for host in (
            b"app example",
            b"app.example:99999",
            b"app.example:80:80",
            b"app.example:8o",
            b"[::1",
            b":80",
            b"app.example/path",
            b"user@app.example",
            b"app\x01.example",
        ):
            client = self.raw(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
            self.assertBadRequest(client, b"the request's Host header is malformed")

    def test_twoHostHeadersAreBadRequest(self) -> None:
        """A request with two Host headers gets a 400, even if one is routed."""
        client = self.raw(
            b"GET / HTTP/1.1\r\nHost: app.example\r\nHost: other.example\r\n\r\n"
        )
        self.assertBadRequest(client, b"the request has more than one Host header")

    def test_wellFormedHostsAreRouted(self) -> None:
        """Names, IP addresses and ports, even an empty port, are routed."""
        for host, code in (
            (b"app.example", 502),
            (b"APP.example:8080", 502),
            (b"app.example:", 502),
            (b"xn--bcher-kva.example", 404),
            (b"127.0.0.1:8080", 404),
            (b"[2001:db8::1]:8080", 404),
        ):
            response, body = self.get(host)
            self.assertEqual(response.code, code, host)


class FailedConnectLimitTests(ResourceTestCase):
    """
    A source address whose CONNECTs fail (unknown identifier) ten times in
    a row gets 429s, whatever its identifier, and may try once more every
    6 s (ten per minute).
    """

    def connectFrom(self, identifier: bytes, peer: IAddress = PUBLIC_PEER) -> bytes:
        """Send a CONNECT from C{peer}; return the answer."""
        return self.raw(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + identifier + b"\r\n\r\n",
            peer,
        ).received

    def assertStatus(self, answer: bytes, status: bytes) -> None:
        self.assertTrue(answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:40])

    def test_tooManyFailuresGet429WhateverTheIdentifier(self) -> None:
        """
        After ten failed CONNECTs, even the right identifier gets a 429
        with a Retry-After and a short text, and no session; 6 s later one
        more attempt is let through.
        """
        for i in range(10):
            self.assertStatus(self.connectFrom(b"guess-%d" % (i,)), b"403")
        answer = self.connectFrom(IDENTIFIER)
        self.assertTrue(answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), answer[:40])
        self.assertIn(b"\r\nRetry-After: 6\r\n", answer)
        self.assertIn(b"\r\nContent-Type: text/plain; charset=utf-8\r\n", answer)
        self.assertTrue(answer.endswith(b"\r\n\r\ntoo many failed attempts; try again later\n"))
        self.harness.advance(5.9)
        self.assertStatus(self.connectFrom(IDENTIFIER), b"429")
        self.assertEqual(self.server.clients(), [])
        self.harness.advance(0.1)
        self.assertEqual(self.connectFrom(IDENTIFIER), CONNECTED_RESPONSE)
        self.assertStatus(self.connectFrom(b"guess"), b"403")
        self.assertStatus(self.connectFrom(b"guess"), b"429")

    def test_successfulConnectsDoNotCount(self) -> None:
        """Successful CONNECTs neither count as failures nor forgive them."""
        for _ in range(20):
            self.assertEqual(self.connectFrom(IDENTIFIER), CONNECTED_RESPONSE)
        for i in range(5):
            self.assertStatus(self.connectFrom(b"guess"), b"403")
            self.assertEqual(self.connectFrom(IDENTIFIER), CONNECTED_RESPONSE)
        for i in range(5):
            self.assertStatus(self.connectFrom(b"guess"), b"403")
        self.assertStatus(self.connectFrom(IDENTIFIER), b"429")

    def test_otherSourcesAreNotLimited(self) -> None:
        """
        Other addresses keep trying; an IPv6 /64 counts as one source.
        """
        peers = [
            IPv4Address("TCP", "203.0.113.8", 50000),
            IPv6Address("TCP", "2001:db8:0:1::1", 50000),
            IPv6Address("TCP", "2001:db8:0:1:ffff::2", 50001),
        ]
        for _ in range(10):
            self.connectFrom(b"guess")
            self.connectFrom(b"guess", peers[1])
        self.assertStatus(self.connectFrom(IDENTIFIER), b"429")
        self.assertStatus(self.connectFrom(IDENTIFIER, peers[2]), b"429")
        self.assertStatus(self.connectFrom(b"guess", peers[0]), b"403")
        self.assertEqual(self.connectFrom(IDENTIFIER, peers[0]), CONNECTED_RESPONSE)
        other = IPv6Address("TCP", "2001:db8:0:2::1", 50000)
        self.assertEqual(self.connectFrom(IDENTIFIER, other), CONNECTED_RESPONSE)

    def test_limitIsConfigurable(self) -> None:
        """The server takes its own number of failures and window."""
        self.harness = Harness(maxFailedConnects=2, failedConnectWindow=10)
        self.harness.server.addHost("app.example", IDENTIFIER)
        self.assertStatus(self.connectFrom(b"guess"), b"403")
        self.assertStatus(self.connectFrom(b"guess"), b"403")
        answer = self.connectFrom(IDENTIFIER)
        self.assertStatus(answer, b"429")
        self.assertIn(b"\r\nRetry-After: 5\r\n", answer)

    def test_limitCanBeTurnedOff(self) -> None:
        """Without a limit, failures never lead to a 429."""
        self.harness = Harness(maxFailedConnects=None)
        self.harness.server.addHost("app.example", IDENTIFIER)
        for _ in range(50):
            self.assertStatus(self.connectFrom(b"guess"), b"403")
        self.assertEqual(self.connectFrom(IDENTIFIER), CONNECTED_RESPONSE)


class IsolationTests(ResourceTestCase):
    """
    What one client or public connection does cannot harm the others.
    """

    def test_dataBeyondTheWindowEndsOnlyThatSession(self) -> None:
        """
        A client that sends more than its stream's window gets Go Away with
        code 1 and is disconnected; another client's tunnel goes on serving.
        """
        self.server.addHost("other.example", b"secret-identifier-2")
        good = self.connectClient(b"secret-identifier-2", name=b"the other app")
        bad = self.connectClient()
        size = INITIAL_WINDOW + 1
        bad.transport.write(encodeFrame(FrameType.DATA, 0, 1, size) + b"x" * size)
        self.harness.flush()
        self.assertEqual(bad.goAwayCodes, [GoAwayCode.PROTOCOL_ERROR])
        self.assertIsNotNone(bad.lost)
        self.assertIsNone(good.lost)
        self.assertEqual([info.hosts for info in self.server.clients()], [("other.example",)])
        self.assertEqual(self.get(b"other.example")[1], b"the other app")
        self.assertEqual(self.get(b"app.example")[0].code, 502)

    def test_tunnelConnectionOutlivesThePublicTimeouts(self) -> None:
        """
        A connection taken over for the control path is not subject to the
        site's idle and header timeouts: after an hour the tunnel still
        serves.
        """
        client = self.connectClient()
        for _ in range(120):
            self.harness.advance(30)
        self.assertIsNone(client.lost)
        self.assertEqual(len(self.server.clients()), 1)
        self.assertEqual(self.get(b"app.example")[1], b"hello from the app")

    def test_idlePublicConnectionsAreClosedAndTunnelsGoOn(self) -> None:
        """
        Many public connections that stay idle, before their first request
        or after one, are all closed by the site's idle timeout (60 s); the
        tunnel meanwhile goes on serving, and keeps serving after.
        """
        client = self.connectClient()
        silent = [Recorder() for _ in range(200)]
        served = [Recorder() for _ in range(50)]
        for public in silent + served:
            self.harness.connect(public)
        for public in served:
            public.transport.write(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.harness.flush()
        self.assertTrue(all(b"hello from the app" in p.received for p in served))
        self.harness.advance(30)
        self.assertEqual(self.get(b"app.example")[1], b"hello from the app")
        self.harness.advance(29.9)
        self.assertTrue(all(p.lost is None for p in silent + served))
        self.harness.advance(0.1)
        self.assertTrue(all(p.lost is not None for p in silent + served))
        self.assertIsNone(client.lost)
        self.assertEqual(len(self.server.clients()), 1)
        self.assertEqual(self.get(b"app.example")[1], b"hello from the app")


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
