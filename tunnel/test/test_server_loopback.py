"""
The tunnel server over real loopback sockets: a L{TunnelSite} on
127.0.0.1, a tunnel client built on our own multiplexer that dials local
services on 127.0.0.1, and public clients (treq, or raw TCP).
"""

from __future__ import annotations

import hashlib
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from tunnel.core.control import ControlMessage, TransportProtocol
from tunnel.server import TunnelServer
from tunnel.test.streams import EchoStream
from tunnel.test.serversupport import (
    HalfClosingClient,
    OneShotFactory,
    PatternBody,
    TunnelClient,
    dialLocal,
    settle,
)
from tunnel.test.support import MiB, Recorder, pattern, until, untilSteady

IDENTIFIER = b"loopback-identifier"

#: The Host port that makes the test client dial the raw sink. that make the test client dial the raw services.
SINK_PORT = 1


class HashingRequest(Request):
    """A request of the local app that hashes its body as it arrives."""

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        self.digest = hashlib.sha256()
        self.size = 0

    def handleContentChunk(self, data: bytes) -> None:
        if not self.size:
            self.channel.site.events.append("the local app got the first bytes")
        self.digest.update(data)
        self.size += len(data)


@implementer(IPushProducer)
class BigResponse:
    """Writes a large response as fast as back-pressure allows."""

    def __init__(self, request: Request, size: int) -> None:
        self.request = request
        self.size = size
        self.produced = 0
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.produced < self.size:
            chunk = pattern(min(256 * 1024, self.size - self.produced), offset=self.produced)
            self.produced += len(chunk)
            self.request.write(chunk)
        if self.produced >= self.size and self.request.producer is self:
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self) -> None:
        self.paused = True


class LocalApp(Resource):
    """
    The local web app behind the tunnel.

    @ivar steps: fired by the test, one per chunk of C{/events} received.
    @ivar big: the producer of the last C{/big} response.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[defer.Deferred[None]] = []
        self.big: BigResponse | None = None

    def render(self, request: HashingRequest) -> object:
        if request.path == b"/upload":
            return b"%s %d" % (request.digest.hexdigest().encode(), request.size)
        if request.path == b"/events":
            self.events(request)
            return NOT_DONE_YET
        if request.path == b"/big":
            request.setHeader(b"content-length", b"%d" % (64 * MiB,))
            self.big = BigResponse(request, 64 * MiB)
            request.registerProducer(self.big, True)
            self.big.resumeProducing()
            return NOT_DONE_YET
        return b"hello from the app, " + request.getHeader(b"x-forwarded-for")

    @defer.inlineCallbacks
    def events(self, request: Request):
        request.write(b"chunk 0\n")
        for number, step in enumerate(self.steps, 1):
            yield step
            request.write(b"chunk %d\n" % (number,))
        request.finish()


@implementer(IHalfCloseableProtocol)
class UpgradeEcho(Protocol):
    """A local service that switches protocols, then echoes."""

    head = b""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" not in self.head:
            self.head += data
            if b"\r\n\r\n" in self.head:
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                    b"Connection: Upgrade\r\n\r\n"
                )
                data = self.head.partition(b"\r\n\r\n")[2]
            else:
                return
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass


class Sink(Protocol):
    """
    A raw local HTTP service that stops reading after the request head until
    told to go on, then counts the body and answers with its size.
    """

    def __init__(self) -> None:
        self.buffered = b""
        self.size: int | None = None
        self.received = 0
        self.headRead: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.size is None:
            self.buffered += data
            head, found, rest = self.buffered.partition(b"\r\n\r\n")
            if not found:
                return
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    self.size = int(line.split(b":")[1])
            self.transport.pauseProducing()
            self.headRead.callback(None)
            data = rest
        self.received += len(data)
        if self.received >= self.size:
            body = b"%d" % (self.received,)
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (len(body), body)
            )
            self.transport.loseConnection()


def listen(factory: Factory) -> defer.Deferred[Any]:
    """Listen on a free port of 127.0.0.1."""
    return TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)


class LoopbackTests(TestCase):
    """A tunnel server, a tunnel client and local services, all on loopback."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self):
        self.server = TunnelServer()
        self.server.addHost("app.example", IDENTIFIER)
        # The operator exposes the sink's port: forwarded with that port.
        self.server.addHost(f"app.example:{SINK_PORT}", IDENTIFIER)
        self.site = self.server.site()
        self.publicPort = yield self.listen(self.site)
        self.app = LocalApp()
        local = Site(self.app)
        local.requestFactory = HashingRequest
        local.events = self.events = []
        self.webPort = (yield self.listen(local)).getHost().port
        self.upgradePort = (yield self.listen(Factory.forProtocol(UpgradeEcho))).getHost().port
        self.echoPort = (yield self.listen(Factory.forProtocol(EchoStream))).getHost().port
        self.sink = Sink()
        self.sinkPort = (yield self.listen(OneShotFactory(self.sink))).getHost().port
        self.client = yield TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.publicPort.getHost().port
        ).connect(
            OneShotFactory(TunnelClient(IDENTIFIER, dialLocal(reactor, self.portFor), reactor))
        )
        self.addCleanup(settle)
        self.addCleanup(self.client.transport.loseConnection)
        yield self.client.handshaken
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.addCleanup(self.pool.closeCachedConnections)

    def listen(self, factory: Factory) -> defer.Deferred[Any]:
        listening = listen(factory)
        listening.addCallback(lambda port: self.addCleanup(port.stopListening) or port)
        return listening

    def portFor(self, message: ControlMessage) -> int:
        if message.transportProtocol == TransportProtocol.TCP:
            return self.echoPort
        if message.transportProtocol == TransportProtocol.WEBSOCKET:
            return self.upgradePort
        if message.localPort == SINK_PORT:
            return self.sinkPort
        return self.webPort

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.publicPort.getHost().port}{path}"

    def request(self, method: str, path: str, host: str = "app.example", **kwargs: Any):
        return treq.request(
            method, self.url(path), headers={"Host": host}, pool=self.pool, **kwargs
        )

    @defer.inlineCallbacks
    def test_getReachesTheLocalApp(self):
        """A GET for the host is answered by the local app, seen from 127.0.0.1."""
        response = yield self.request("GET", "/")
        body = yield response.content()
        self.assertEqual((response.code, body), (200, b"hello from the app, 127.0.0.1"))

    @defer.inlineCallbacks
    def test_uploadIsStreamed(self):
        """
        A 20 MiB upload reaches the local app intact, and the local app sees
        its first bytes before the public client has sent them all.
        """
        size = 20 * MiB
        response = yield self.request(
            "POST", "/upload", data=PatternBody(size, self.events)
        )
        body = yield response.content()
        expected = hashlib.sha256(pattern(size)).hexdigest().encode()
        self.assertEqual(body, b"%s %d" % (expected, size))
        self.assertEqual(
            self.events,
            ["the local app got the first bytes", "the public client sent everything"],
        )

    @defer.inlineCallbacks
    def test_streamedResponseArrivesChunkByChunk(self):
        """
        Each chunk of a streamed response reaches the public client before
        the local app produces the next: the app writes a chunk only once
        the public client has received the one before.
        """
        self.app.steps = [defer.Deferred() for _ in range(3)]
        response = yield self.request("GET", "/events")
        received = []

        def collect(data: bytes) -> None:
            received.append(data)
            lines = b"".join(received).count(b"\n")
            for step in self.app.steps[:lines]:
                if not step.called:
                    step.callback(None)

        yield treq.collect(response, collect)
        self.assertEqual(b"".join(received), b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n")

    @defer.inlineCallbacks
    def test_manyRequestsOnOnePublicConnection(self):
        """Several requests in a row reuse one public connection."""
        built = []
        original = self.site.buildProtocol
        self.site.buildProtocol = lambda addr: built.append(addr) or original(addr)
        for _ in range(5):
            response = yield self.request("GET", "/")
            self.assertEqual((yield response.content()), b"hello from the app, 127.0.0.1")
        self.assertEqual(len(built), 1)

    @defer.inlineCallbacks
    def test_upgradeIsRelayedThenPipedRaw(self):
        """
        An upgrade request gets the local service's 101 byte for byte, and
        then bytes are echoed raw through the tunnel.
        """
        public = Recorder()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.publicPort.getHost().port).connect(
            OneShotFactory(public)
        )
        public.transport.write(
            b"GET /chat HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n"
        )
        switched = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
        )
        yield until(lambda: len(public.received) >= len(switched))
        self.assertEqual(public.received, switched)
        public.transport.write(b"ping")
        yield until(lambda: len(public.received) >= len(switched) + 4)
        self.assertEqual(public.received, switched + b"ping")
        public.transport.loseConnection()

    @defer.inlineCallbacks
    def test_tcpTunnelEchoes(self):
        """
        A connection to a bound TCP listener is piped to the local service:
        bytes echo back, and a half-close comes back as the end.
        """
        port = yield self.server.bindTCP(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), IDENTIFIER
        )
        self.addCleanup(self.server.unbindTCP, port)
        public = HalfClosingClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            OneShotFactory(public)
        )
        payload = pattern(3 * MiB)
        public.transport.write(payload)
        public.transport.loseWriteConnection()
        yield public.done
        self.assertEqual(public.received, payload)
        self.assertEqual(
            self.client.messages[-1],
            ControlMessage(1, TransportProtocol.TCP, port.getHost().port),
        )

    @defer.inlineCallbacks
    def test_slowLocalAppPausesTheUpload(self):
        """
        While the local service reads nothing, the public client is paused
        after sending a bounded amount; the upload completes once the local
        service reads again.
        """
        size = 64 * MiB
        body = PatternBody(size, self.events)
        responded = self.request(
            "POST", "/", host=f"app.example:{SINK_PORT}", data=body
        )
        yield self.sink.headRead
        sent = yield untilSteady(lambda: body.sent)
        self.assertLess(sent, 16 * MiB)
        self.assertGreater(body.pauses, 0)
        self.sink.transport.resumeProducing()
        response = yield responded
        self.assertEqual((yield response.content()), b"%d" % (size,))

    @defer.inlineCallbacks
    def test_slowPublicClientPausesTheLocalApp(self):
        """
        While the public client reads nothing, the local app is paused
        after producing a bounded amount; all of it arrives once the public
        client reads again.
        """
        public = Recorder()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.publicPort.getHost().port).connect(
            OneShotFactory(public)
        )
        public.transport.pauseProducing()
        public.transport.write(b"GET /big HTTP/1.1\r\nHost: app.example\r\n\r\n")
        produced = yield untilSteady(lambda: self.app.big.produced)
        self.assertLess(produced, 16 * MiB)
        public.transport.resumeProducing()
        yield until(lambda: len(public.received.partition(b"\r\n\r\n")[2]) >= 64 * MiB)
        head, _, body = public.received.partition(b"\r\n\r\n")
        self.assertEqual(len(body), 64 * MiB)
        public.transport.loseConnection()
