"""
Interoperability of our server with the Go tunnel client (the
C{tunnelpeer} test peer, built on HashiCorp's yamux) in front of the Go
origin, all over loopback.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SkipTest, TestCase

from tunnel.server import ClientConnected, ClientDisconnected, TunnelServer
from tunnel.test.gopeer import buildGoPeer, goAvailable, spawnGoPeer
from tunnel.test.streams import EchoStream
from tunnel.test.serversupport import (
    HalfClosingClient,
    OneShotFactory,
    PatternBody,
    settle,
)
from tunnel.test.support import MiB, Recorder, pattern, until

IDENTIFIER = "interop-identifier"
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class GoClientTests(TestCase):
    """The Go tunnel client connects to our server and serves the Go origin."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        reason = goAvailable()
        if reason is not None:
            raise SkipTest(reason)
        tunnelpeer, origin = buildGoPeer("tunnelpeer"), buildGoPeer("origin")
        self.addCleanup(settle)
        originProcess = self.spawn(origin, "-listen", "127.0.0.1:0")
        originHost, originPort = yield originProcess.listening
        echo = yield self.listen(Factory.forProtocol(EchoStream))

        self.server = TunnelServer()
        self.server.addHost("app.example", IDENTIFIER)
        self.publicPort = yield self.listen(self.server.site())
        self.tcpPort = yield self.server.bindTCP(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), IDENTIFIER
        )
        self.addCleanup(self.server.unbindTCP, self.tcpPort)
        self.events: list[Any] = []
        connected: defer.Deferred[None] = defer.Deferred()

        def observe(event: Any) -> None:
            self.events.append(event)
            if isinstance(event, ClientConnected) and not connected.called:
                connected.callback(None)

        self.server.addObserver(observe)
        self.client = self.spawn(
            tunnelpeer,
            "client",
            "-server", f"127.0.0.1:{self.publicPort.getHost().port}",
            "-identifier", IDENTIFIER,
            "-local", f"{originHost}:{originPort}",
            "-map", f"{self.tcpPort.getHost().port}=127.0.0.1:{echo.getHost().port}",
        )
        yield connected

    def spawn(self, binary: str, *args: str) -> Any:
        peer = spawnGoPeer(reactor, binary, list(args))
        self.addCleanup(peer.kill)
        return peer

    def listen(self, factory: Factory) -> defer.Deferred[Any]:
        listening = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        listening.addCallback(lambda port: self.addCleanup(port.stopListening) or port)
        return listening

    def request(self, method: str, path: str, **kwargs: Any):
        return treq.request(
            method,
            f"http://127.0.0.1:{self.publicPort.getHost().port}{path}",
            headers={"Host": "app.example"},
            persistent=False,
            **kwargs,
        )

    @defer.inlineCallbacks
    def connectPublic(self, port: int):
        public = Recorder()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(OneShotFactory(public))
        return public

    @defer.inlineCallbacks
    def test_getReachesTheOrigin(self):
        """
        A GET through the Go client reaches the origin with the Host kept
        and the X-Forwarded-* headers added.
        """
        response = yield self.request("GET", "/")
        body = yield response.content()
        self.assertEqual((response.code, body), (200, b"hello from origin\n"))
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("x-seen-host"), ["app.example"])
        self.assertEqual(headers.getRawHeaders("x-seen-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(headers.getRawHeaders("x-seen-forwarded-proto"), ["http"])
        self.assertEqual(headers.getRawHeaders("x-seen-forwarded-host"), ["app.example"])

    @defer.inlineCallbacks
    def test_uploadOfTwentyMebibytes(self):
        """A 20 MiB upload reaches the origin intact."""
        size = 20 * MiB
        response = yield self.request("POST", "/sha256", data=PatternBody(size, []))
        body = yield response.content()
        expected = hashlib.sha256(pattern(size)).hexdigest()
        self.assertEqual(body, f"{expected} {size}\n".encode())

    @defer.inlineCallbacks
    def test_fullDuplexEcho(self):
        """
        The origin's echo, which answers while it reads, streams 8 MiB back
        while they are still being sent.
        """
        public = HalfClosingClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.publicPort.getHost().port).connect(
            OneShotFactory(public)
        )
        payload = pattern(8 * MiB)
        public.transport.write(
            b"PUT /echo HTTP/1.1\r\nHost: app.example\r\nContent-Length: %d\r\n\r\n"
            % (len(payload),)
        )
        public.transport.write(payload)
        yield public.done
        head, _, body = bytes(public.received).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertEqual(body, payload)

    # Relaying the answer only once the body is all sent deadlocks here.
    test_fullDuplexEcho.timeout = 20  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_streamedResponse(self):
        """A chunked response streamed by the origin arrives whole."""
        response = yield self.request("GET", "/stream?n=5&interval_ms=20")
        body = yield response.content()
        self.assertEqual(body, b"".join(b"chunk %d\n" % i for i in range(5)))

    @defer.inlineCallbacks
    def test_webSocketEcho(self):
        """
        A WebSocket handshake gets the origin's 101, and a masked frame is
        echoed back through the tunnel.
        """
        public = yield self.connectPublic(self.publicPort.getHost().port)
        key = base64.b64encode(os.urandom(16))
        public.transport.write(
            b"GET /ws HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
        )
        yield until(lambda: b"\r\n\r\n" in public.received)
        head = bytes(public.received)
        accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID).digest())
        self.assertTrue(head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"))
        self.assertIn(b"Sec-WebSocket-Accept: " + accept + b"\r\n", head)
        mask, message = os.urandom(4), b"hello over the tunnel"
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(message))
        public.transport.write(bytes([0x81, 0x80 | len(message)]) + mask + masked)
        yield until(lambda: len(public.received) >= len(head) + 2 + len(message))
        self.assertEqual(bytes(public.received[len(head):]), bytes([0x81, len(message)]) + message)
        public.transport.loseConnection()

    @defer.inlineCallbacks
    def test_tcpTunnel(self):
        """A connection to a bound listener is piped to the Go client's local service."""
        public = HalfClosingClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.tcpPort.getHost().port).connect(
            OneShotFactory(public)
        )
        payload = pattern(MiB)
        public.transport.write(payload)
        public.transport.loseWriteConnection()
        yield public.done
        self.assertEqual(bytes(public.received), payload)

    @defer.inlineCallbacks
    def test_clientLeavingIsSeen(self):
        """When the Go client stops, the server sees it disconnect."""
        yield self.client.kill()
        yield until(lambda: isinstance(self.events[-1], ClientDisconnected))
        self.assertEqual(self.server.clients(), [])
