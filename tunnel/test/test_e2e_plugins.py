"""
End to end: C{twistd tunnel-server} and C{twistd tunnel-client} as real
processes on loopback, with the Go origin (C{tunnel/test/go/origin}) as the
local service behind the client.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any, Callable

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import HTTPConnectionPool, ResponseFailed

from tunnel.hostsfile import writeHostsFile
from tunnel.mux import YamuxProtocol
from tunnel.core.control import CONTROL_PATH, HANDSHAKE_REQUEST, IDENTIFIER_HEADER
from tunnel.test.gopeer import buildGoPeer, goAvailable, spawnGoPeer
from tunnel.test.support import MiB, goPatternDigest, until
from tunnel.test.twistdprocess import TwistdProcess, spawnTwistd

IDENTIFIER = "e2e-identifier-0123456789"
SILENT_IDENTIFIER = "silent-identifier-0123456789"


class Collector(Protocol):
    """Collects bytes; fires C{done} with them when the connection ends."""

    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.waiting: list[tuple[Callable[[bytes], bool], defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for waiter in list(self.waiting):
            if waiter[0](self.data):
                self.waiting.remove(waiter)
                waiter[1].callback(self.data)

    def until(self, condition: Callable[[bytes], bool]) -> defer.Deferred[bytes]:
        """Fire with the data once C{condition} holds for it (10 s at most)."""
        d: defer.Deferred[bytes] = defer.Deferred()
        self.waiting.append((condition, d))
        self.dataReceived(b"")
        return d.addTimeout(10, reactor)

    def atLeast(self, size: int) -> defer.Deferred[bytes]:
        """Fire with the data once there are C{size} bytes of it."""
        return self.until(lambda data: len(data) >= size)

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.data)


class SilentClient(Protocol):
    """
    A tunnel client that sets up its session and then never opens the
    streams the server asks for.
    """

    def __init__(self, identifier: str) -> None:
        self.identifier = identifier
        self.buffer = b""
        self.session: YamuxProtocol | None = None

    def connectionMade(self) -> None:
        self.transport.write(
            b"CONNECT %s HTTP/1.1\r\nHost: test\r\n%s: %s\r\n\r\n"
            % (CONTROL_PATH, IDENTIFIER_HEADER, self.identifier.encode())
        )

    def dataReceived(self, data: bytes) -> None:
        if self.session is not None:
            self.session.dataReceived(data)
            return
        self.buffer += data
        if b"\n\n" in self.buffer.replace(b"\r\n", b"\n"):
            self.session = YamuxProtocol(isClient=True)
            self.session.makeConnection(self.transport)
            control = Protocol()
            self.session.openStream(control)
            control.transport.write(HANDSHAKE_REQUEST)

    def connectionLost(self, reason: Any) -> None:
        if self.session is not None:
            self.session.connectionLost(reason)


class PluginsTestCase(TestCase):
    """
    The plugins as a user runs them: a server with a hosts file, a client
    with its identifier in the environment, mapping the public port to the
    origin and the TCP listener's port to the origin's TCP echo.

    @ivar serverArguments: more command-line options of the server.
    @ivar clientArguments: more command-line options of the client.
    @ivar extraHosts: more entries of the hosts file, host to identifier.
    """

    timeout = 120
    serverArguments: list[str] = []
    clientArguments: list[str] = []
    extraHosts: dict[str, str] = {}

    @defer.inlineCallbacks
    def setUp(self):
        reason = goAvailable()
        if reason is not None:
            raise SkipTest(reason)
        origin = spawnGoPeer(
            reactor, buildGoPeer("origin"), ["-listen", "127.0.0.1:0", "-tcp-echo", "127.0.0.1:0"]
        )
        self.addCleanup(origin.kill)
        host, port = yield origin.listening
        self.origin = f"{host}:{port}"
        echoLine = yield origin.waitForLine(b"TCPECHO ")
        self.tcpEcho = echoLine.split()[1].decode()
        self.hostsFile = self.mktemp()
        writeHostsFile(self.hostsFile, {"demo.localhost": IDENTIFIER,
                                        "silent.localhost": SILENT_IDENTIFIER,
                                        "nobody.localhost": "not-connected-identifier",
                                        **self.extraHosts})
        self.server = yield self.startServer("tcp:0:interface=127.0.0.1")
        match = yield self.server.waitFor(r"TunnelSite starting on (\d+)")
        self.port = int(match.group(1))
        match = yield self.server.waitFor(r"TCPTunnelFactory starting on (\d+)")
        self.tcpPort = int(match.group(1))
        self.client = yield self.startClient()
        self.pool = HTTPConnectionPool(reactor)
        self.addCleanup(self.pool.closeCachedConnections)

    def startServer(self, listen: str) -> defer.Deferred[TwistdProcess]:
        server = spawnTwistd(reactor, "tunnel-server", [
            "--listen", listen, "--hosts-file", self.hostsFile,
            "--tcp", f"tcp:0:interface=127.0.0.1={IDENTIFIER}", "--stream-timeout", "2",
            *self.serverArguments,
        ])
        self.addCleanup(server.kill)
        return server.waitFor(r"TunnelSite starting on").addCallback(lambda _: server)

    @defer.inlineCallbacks
    def startClient(self):
        client = spawnTwistd(
            reactor, "tunnel-client",
            ["--server", f"127.0.0.1:{self.port}",
             "--local", f"{self.port}={self.origin}",
             "--local", f"{self.tcpPort}={self.tcpEcho}",
             *self.clientArguments],
            {"TUNNEL_IDENTIFIER": IDENTIFIER},
        )
        self.addCleanup(client.kill)
        yield client.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")
        return client

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, host: str = "demo.localhost:%(port)d",
                pool: HTTPConnectionPool | None = None, **kw: Any):
        headers = {"Host": [host % {"port": self.port}]}
        return treq.request(method, self.url(path), headers=headers, pool=pool or self.pool, **kw)


class TunnelPluginsTests(PluginsTestCase):
    """What a user of the plugins sees of a tunnel."""

    @defer.inlineCallbacks
    def test_getCarriesForwardingHeaders(self):
        """
        A GET reaches the origin with the original Host and the
        X-Forwarded-* headers, and its answer comes back.
        """
        response = yield self.request("GET", "/")
        body = yield response.content()
        self.assertEqual((response.code, body), (200, b"hello from origin\n"))
        seen = response.headers.getRawHeaders
        self.assertEqual(seen(b"x-seen-host"), [f"demo.localhost:{self.port}".encode()])
        self.assertEqual(seen(b"x-seen-forwarded-for"), [b"127.0.0.1"])
        self.assertEqual(seen(b"x-seen-forwarded-proto"), [b"http"])
        self.assertEqual(seen(b"x-seen-forwarded-host"), [f"demo.localhost:{self.port}".encode()])

    @defer.inlineCallbacks
    def test_download50MiB(self):
        """A 50 MiB download arrives intact."""
        size = 50 * MiB
        response = yield self.request("GET", f"/bytes?n={size}")
        digest = hashlib.sha256()
        yield treq.collect(response, digest.update)
        self.assertEqual(response.code, 200)
        self.assertEqual(digest.hexdigest(), goPatternDigest(size))

    @defer.inlineCallbacks
    def test_upload20MiBEchoed(self):
        """
        A 20 MiB upload is echoed back intact while it is still being sent:
        the public client reads the echo as it writes, so nothing on the way
        has to hold the body.
        """
        body = os.urandom(20 * MiB)
        collector = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), collector)
        collector.transport.write(
            b"POST /echo HTTP/1.1\r\nHost: demo.localhost:%d\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (self.port, len(body))
        )
        collector.transport.write(body)
        response = yield collector.done
        head, _, echoed = response.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
        self.assertEqual(len(echoed), len(body))
        self.assertEqual(hashlib.sha256(echoed).digest(), hashlib.sha256(body).digest())

    @defer.inlineCallbacks
    def test_streamedResponseArrivesChunkByChunk(self):
        """
        A response the origin produces slowly reaches the public client
        chunk by chunk, as it is produced, not all at the end.
        """
        response = yield self.request("GET", "/stream?n=5&interval_ms=300")
        arrivals: list[tuple[float, bytes]] = []
        yield treq.collect(response, lambda data: arrivals.append((reactor.seconds(), data)))
        body = b"".join(data for _, data in arrivals)
        self.assertEqual(body, b"".join(b"chunk %d\n" % i for i in range(5)))
        firstChunk = next(t for t, data in arrivals if b"chunk 0" in data)
        lastChunk = next(t for t, data in arrivals if b"chunk 4" in data)
        self.assertGreater(lastChunk - firstChunk, 0.9)

    @defer.inlineCallbacks
    def test_200ConcurrentRequestsEachGetTheirOwnAnswer(self):
        """
        200 concurrent requests of different sizes each get their own answer:
        no stream is paired with another request.
        """
        pool = HTTPConnectionPool(reactor)
        pool.maxPersistentPerHost = 200
        self.addCleanup(pool.closeCachedConnections)

        @defer.inlineCallbacks
        def fetch(i: int):
            response = yield self.request("GET", f"/bytes?n={1000 + i}", pool=pool)
            body = yield response.content()
            return len(body)

        sizes = yield defer.gatherResults([fetch(i) for i in range(200)])
        self.assertEqual(sizes, [1000 + i for i in range(200)])

    @defer.inlineCallbacks
    def test_keepAliveServesManyRequestsOnOneConnection(self):
        """Five requests, one after the other, on one public connection."""
        collector = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), collector)
        request = b"GET / HTTP/1.1\r\nHost: demo.localhost:%d\r\n\r\n" % self.port
        for count in range(1, 6):
            collector.transport.write(request)
            yield collector.until(lambda data: data.count(b"hello from origin\n") == count)
        self.assertEqual(collector.data.count(b"HTTP/1.1 200 OK"), 5)
        collector.transport.loseConnection()

    @defer.inlineCallbacks
    def test_webSocketEcho(self):
        """A WebSocket upgrade is relayed, then frames are echoed both ways."""
        collector = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), collector)
        collector.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: demo.localhost:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % self.port
        )
        data = yield collector.atLeast(12)
        self.assertTrue(data.startswith(b"HTTP/1.1 101"), data)
        yield collector.atLeast(data.index(b"\r\n\r\n") + 4)
        collector.data = collector.data[collector.data.index(b"\r\n\r\n") + 4:]
        payload = os.urandom(100_000)
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        collector.transport.write(b"\x82\xff" + struct.pack(">Q", len(payload)) + mask + masked)
        frame = yield collector.atLeast(10 + len(payload))
        self.assertEqual(frame[:2], b"\x82\x7f")
        self.assertEqual(struct.unpack(">Q", frame[2:10])[0], len(payload))
        self.assertEqual(frame[10:10 + len(payload)], payload)
        collector.transport.loseConnection()

    @defer.inlineCallbacks
    def test_tcpTunnelEcho(self):
        """A TCP connection to the bound listener reaches the origin's echo."""
        collector = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.tcpPort), collector)
        payload = os.urandom(MiB)
        collector.transport.write(payload)
        collector.transport.loseWriteConnection()
        echoed = yield collector.done
        self.assertEqual(hashlib.sha256(echoed).digest(), hashlib.sha256(payload).digest())

    @defer.inlineCallbacks
    def assertErrorStatus(self, host: str, code: int, words: bytes):
        response = yield self.request("GET", "/", host=host)
        body = yield response.content()
        self.assertEqual(response.code, code, body)
        self.assertIn(words, body)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"]
        )

    def test_unknownHostIs404(self):
        """An unknown host gets a 404 naming it."""
        return self.assertErrorStatus("elsewhere.localhost", 404, b"elsewhere.localhost")

    def test_hostWithoutClientIs502(self):
        """A host whose client is not connected gets a 502 naming it."""
        return self.assertErrorStatus("nobody.localhost", 502, b"nobody.localhost")

    def test_localServerUnreachableIs503(self):
        """
        A Host port the server's operator did not expose is not forwarded:
        the client dials its default port, and where nothing listens there
        the public gets the client's 503.
        """
        return self.assertErrorStatus("demo.localhost:1", 503, b"127.0.0.1:80")

    @defer.inlineCallbacks
    def test_clientNeverOpeningStreamIs504(self):
        """A client that never opens the stream asked for makes the request a 504."""
        silent = SilentClient(SILENT_IDENTIFIER)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), silent)
        self.addCleanup(silent.transport.loseConnection)
        yield self.server.waitFor(r"Client sile… is connected")
        yield self.assertErrorStatus("silent.localhost", 504, b"silent.localhost")

    @defer.inlineCallbacks
    def test_sessionDeathMidResponseClosesPublicConnection(self):
        """
        When the client dies in the middle of a response, the public
        connection is closed at once, not left hanging.
        """
        response = yield self.request("GET", "/stream?n=100&interval_ms=100")
        received = []
        collecting = treq.collect(response, received.append)
        yield until(lambda: received, 60, "the first chunk of the response")
        started = reactor.seconds()
        yield self.client.kill()
        yield self.assertFailure(collecting, ResponseFailed)
        self.assertLess(reactor.seconds() - started, 3)

    @defer.inlineCallbacks
    def test_clientReconnectsAfterServerRestart(self):
        """After the server restarts on its port, the client reconnects by itself."""
        yield self.server.stop()
        yield self.client.waitFor(r"disconnected|waiting")
        upBefore = self.client.output.count("is up")
        self.server = yield self.startServer(f"tcp:{self.port}:interface=127.0.0.1")
        yield until(lambda: self.client.output.count("is up") > upBefore, 20, "the client reconnected")
        response = yield self.request("GET", "/")
        self.assertEqual((yield response.content()), b"hello from origin\n")

    @defer.inlineCallbacks
    def test_restartedClientReplacesItsOldSession(self):
        """
        A second client with the same identifier replaces the first one's
        session at once, even though the first never said goodbye.
        """
        self.client.signal("STOP")
        self.addCleanup(self.client.signal, "CONT")
        yield self.startClient()
        response = yield self.request("GET", "/")
        self.assertEqual((yield response.content()), b"hello from origin\n")
