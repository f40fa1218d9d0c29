"""
Our client against the Go tunnel server (C{tunnel/test/go/tunnelpeer},
built on HashiCorp's yamux) and the Go origin, over loopback TCP.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import treq
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import HTTPConnectionPool
from zope.interface import implementer

from tunnel.core.access import AccessRule, parseNetworks
from tunnel.client import (
    ClientState,
    LocalRoutes,
    TunnelClientService,
    TunnelEndpoint,
    TunnelSettings,
    parseServerAddress,
)
from tunnel.test.gopeer import GoPeerProcess, buildGoPeer, goAvailable, spawnGoPeer
from tunnel.test.support import MiB, goPatternDigest

IDENTIFIER = "interop-identifier-5678"
HOST = "demo.localhost"


def waitForState(
    service: TunnelClientService, name: str, detail: str = ""
) -> defer.Deferred[ClientState]:
    """
    Fire with the service's state once it is C{name}, with C{detail} in its
    detail.
    """

    def matches(state: ClientState) -> bool:
        return state.name == name and detail in state.detail

    if matches(service.state):
        return defer.succeed(service.state)
    reached: defer.Deferred[ClientState] = defer.Deferred()

    def observe(state: ClientState) -> None:
        if matches(state):
            service.removeStateObserver(observe)
            reached.callback(state)

    service.addStateObserver(observe)
    return reached


@implementer(IHalfCloseableProtocol)
class HalfClosingSender(Protocol):
    """Sends a payload, half-closes, and collects everything sent back."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.received: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(b"".join(self.received))


class WebSocketProbe(Protocol):
    """
    Opens a WebSocket on the origin's C{/ws} through the tunnel, sends one
    masked text message and collects the echo.

    @ivar done: fires with (the response head, the echoed frame).
    """

    message = b"hello over the tunnel"

    def __init__(self) -> None:
        self.received = b""
        self.head = b""
        self.done: defer.Deferred[tuple[bytes, bytes]] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self.head and b"\r\n\r\n" in self.received:
            self.head, _, self.received = self.received.partition(b"\r\n\r\n")
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(self.message))
            self.transport.write(bytes([0x81, 0x80 | len(self.message)]) + mask + masked)
        if self.head and len(self.received) >= 2 + len(self.message):
            self.transport.loseConnection()
            self.done.callback((self.head, self.received))


class GoServerTests(TestCase):
    """
    A Go tunnel server routing C{demo.localhost} and a raw TCP listener to
    our client, which forwards to a Go origin and its TCP echo.
    """

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        reason = goAvailable()
        if reason is not None:
            raise SkipTest(reason)
        self.tunnelpeer = buildGoPeer("tunnelpeer")
        origin = self.spawn(
            buildGoPeer("origin"), "-listen", "127.0.0.1:0", "-tcp-echo", "127.0.0.1:0"
        )
        _, self.originPort = yield origin.listening
        echoLine = yield origin.waitForLine(b"TCPECHO ")
        self.echoPort = int(echoLine.rpartition(b":")[2])
        self.server = yield self.startServer("127.0.0.1:0")
        _, self.serverPort = yield self.server.listening
        tcpLine = yield self.server.waitForLine(b"TCP 0 ")
        self.tcpPort = int(tcpLine.rpartition(b":")[2])
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def spawn(self, binary: str, *args: str) -> GoPeerProcess:
        peer = spawnGoPeer(reactor, binary, list(args))
        self.addCleanup(peer.kill)
        return peer

    def startServer(self, listen: str) -> GoPeerProcess:
        """Run the Go tunnel server."""
        return self.spawn(
            self.tunnelpeer,
            "server",
            "-listen",
            listen,
            "-host",
            f"{HOST}={IDENTIFIER}",
            "-tcp",
            f"127.0.0.1:0={IDENTIFIER}",
        )

    def client(
        self,
        identifier: str = IDENTIFIER,
        dynamicPorts: list[str] = [],
        access: AccessRule | None = None,
    ) -> TunnelClientService:
        """
        Our client, forwarding requests without a port to the origin and the
        TCP listener's connections to the echo, and dialling C{dynamicPorts}
        on 127.0.0.1; started, stopped on cleanup.
        """
        server = parseServerAddress(f"127.0.0.1:{self.serverPort}")
        routes = LocalRoutes.fromStrings(
            [f"0=127.0.0.1:{self.originPort}", f"{self.tcpPort}=127.0.0.1:{self.echoPort}"],
            dynamicPorts,
        )
        service = TunnelClientService(
            TunnelEndpoint(
                server.endpoint(reactor),
                TunnelSettings(identifier, routes=routes, host=server.host, access=access),
                reactor,
            ),
            retryPolicy=backoffPolicy(initialDelay=0.1, factor=2.0, jitter=lambda: 0),
        )
        service.startService()
        self.addCleanup(service.stopService)
        return service

    @defer.inlineCallbacks
    def connectedClient(self, dynamicPorts: list[str] = []) -> Any:
        service = self.client(dynamicPorts=dynamicPorts)
        yield waitForState(service, "connected")
        return service

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.serverPort}{path}"

    def get(self, path: str, host: str = HOST) -> defer.Deferred[Any]:
        return treq.get(self.url(path), headers={"Host": host}, pool=self.pool)

    @defer.inlineCallbacks
    def test_accessRulesAreNotLeftUnenforced(self) -> Any:
        """
        Our client that asks for access rules does not serve the Go server,
        which ignores them: the host would be open to everyone. It says so,
        and the host never reaches the origin.
        """
        service = self.client(access=AccessRule(allow=parseNetworks("10.0.0.0/8")))
        state = yield waitForState(service, "waiting", "does not take the access rules")
        self.assertIn("--allow", state.detail)
        response = yield self.get("/")
        self.assertNotEqual(response.code, 200)
        yield response.content()

    @defer.inlineCallbacks
    def test_get(self) -> Any:
        """A GET through the tunnel reaches the origin with its Host."""
        yield self.connectedClient()
        response = yield self.get("/")
        body = yield response.content()
        self.assertEqual((response.code, body), (200, b"hello from origin\n"))
        self.assertEqual(response.headers.getRawHeaders("X-Seen-Host"), [HOST])

    @defer.inlineCallbacks
    def test_concurrentRequestsGetTheirOwnAnswers(self) -> Any:
        """
        Fifty requests in flight at once through the Go server's pipelined
        pairing each get the answer to their own request, not a neighbour's.
        """
        yield self.connectedClient()
        sizes = [1000 + i for i in range(50)]

        @defer.inlineCallbacks
        def fetch(size: int) -> Any:
            response = yield self.get(f"/bytes?n={size}")
            body = yield response.content()
            return hashlib.sha256(body).hexdigest()

        digests = yield defer.gatherResults([fetch(size) for size in sizes])
        self.assertEqual(digests, [goPatternDigest(size) for size in sizes])

    @defer.inlineCallbacks
    def test_download(self) -> Any:
        """A 50 MiB response arrives whole."""
        yield self.connectedClient()
        size = 50 * MiB
        response = yield self.get(f"/bytes?n={size}")
        digest = hashlib.sha256()
        received = [0]

        def collect(data: bytes) -> None:
            digest.update(data)
            received[0] += len(data)

        yield treq.collect(response, collect)
        self.assertEqual(received[0], size)
        self.assertEqual(digest.hexdigest(), goPatternDigest(size))

    @defer.inlineCallbacks
    def test_upload(self) -> Any:
        """A 20 MiB request body reaches the origin whole."""
        yield self.connectedClient()
        payload = os.urandom(20 * MiB)
        response = yield treq.post(
            self.url("/sha256"), data=payload, headers={"Host": HOST}, pool=self.pool
        )
        body = yield response.content()
        self.assertEqual(
            body, b"%s %d\n" % (hashlib.sha256(payload).hexdigest().encode(), len(payload))
        )

    @defer.inlineCallbacks
    def test_streamedResponse(self) -> Any:
        """
        A response the origin writes bit by bit arrives bit by bit: the first
        chunk long before the last is written.
        """
        yield self.connectedClient()
        response = yield self.get("/stream?n=5&interval_ms=200")
        arrivals: list[tuple[float, bytes]] = []
        yield treq.collect(response, lambda data: arrivals.append((time.monotonic(), data)))
        self.assertEqual(
            b"".join(data for _, data in arrivals),
            b"".join(b"chunk %d\n" % i for i in range(5)),
        )
        self.assertEqual(arrivals[0][1], b"chunk 0\n")
        self.assertGreater(arrivals[-1][0] - arrivals[0][0], 0.6)

    @defer.inlineCallbacks
    def test_webSocket(self) -> Any:
        """
        A WebSocket upgrade reaches the origin, and frames then flow both
        ways through the tunnel.
        """
        yield self.connectedClient()
        probe = WebSocketProbe()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.serverPort).connect(
            Factory.forProtocol(lambda: probe)
        )
        head, frame = yield probe.done
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head)
        self.assertIn(b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head)
        self.assertEqual(frame, bytes([0x81, len(probe.message)]) + probe.message)

    @defer.inlineCallbacks
    def test_unavailableWhenLocalServerDown(self) -> Any:
        """
        A request for a port where nothing listens is answered C{503} by our
        client, through the Go server.
        """
        port = yield reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        closedPort = port.getHost().port
        yield port.stopListening()
        yield self.connectedClient(dynamicPorts=[str(closedPort)])
        response = yield self.get("/", host=f"{HOST}:{closedPort}")
        body = yield response.content()
        self.assertEqual(response.code, 503)
        self.assertEqual(body, b"tunnel: no local server at 127.0.0.1:%d\n" % closedPort)

    @defer.inlineCallbacks
    def test_unexposedPortIsRefused(self) -> Any:
        """
        A request whose Host names a port the client does not expose gets
        our client's C{502}, through the Go server, and the client dials
        nothing: the service listening there is never reached.
        """
        reached: list[Protocol] = []
        factory = Factory.forProtocol(Protocol)
        factory.buildProtocol = lambda addr: reached.append(Protocol()) or reached[-1]
        port = yield reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        listening = port.getHost().port
        yield self.connectedClient()
        response = yield self.get("/", host=f"{HOST}:{listening}")
        body = yield response.content()
        self.assertEqual(response.code, 502)
        self.assertEqual(body, b"tunnel: this client does not expose local port %d\n" % listening)
        self.assertEqual(reached, [])

    @defer.inlineCallbacks
    def test_tcpEcho(self) -> Any:
        """
        A connection to the Go server's TCP listener is piped raw to the
        local echo service, half-close included.
        """
        yield self.connectedClient()
        payload = os.urandom(MiB)
        sender = HalfClosingSender(payload)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.tcpPort).connect(
            Factory.forProtocol(lambda: sender)
        )
        echoed = yield sender.done
        self.assertEqual(len(echoed), len(payload))
        self.assertEqual(echoed, payload)

    @defer.inlineCallbacks
    def test_refusedIdentifier(self) -> Any:
        """
        An identifier the server does not know is refused with C{403}: the
        client logs it as an error, without giving the identifier away, and
        retries with growing delays.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        wrong = "wrong-identifier-0000"
        service = self.client(wrong)
        waits: list[ClientState] = []
        for _ in range(3):
            waits.append((yield waitForState(service, "waiting")))
            yield waitForState(service, "connecting")
        self.assertEqual(
            [state.detail for state in waits],
            [
                f"the server refused identifier wron…; trying again in {delay} s"
                for delay in ("0.2", "0.4", "0.8")
            ],
        )
        errors = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 3)
        self.assertIn("403 Forbidden: unknown identifier", errors[0])
        self.assertIn("wron…", errors[0])
        for event in events:
            self.assertNotIn(wrong, formatEvent(event))

    @defer.inlineCallbacks
    def test_reconnectAfterServerRestart(self) -> Any:
        """
        When the server goes away the client tries again, backing off while
        nothing listens, and is back once a server listens on the same port
        again.
        """
        service = yield self.connectedClient()
        lost = waitForState(service, "disconnected")
        yield self.server.kill()
        yield lost
        refused = yield waitForState(service, "waiting", "Connection refused")
        self.assertIn("connecting failed", refused.detail)
        self.server = yield self.startServer(f"127.0.0.1:{self.serverPort}")
        yield self.server.listening
        yield waitForState(service, "connected")
        response = yield self.get("/")
        body = yield response.content()
        self.assertEqual(body, b"hello from origin\n")
