"""
What a tunnel server holds for a client that does not read: bounded by the
session's buffer cap whatever window the client grants, and the session
dropped once the client read nothing for too long. Driven in memory against
a scripted hostile client, whose connection pauses the server as a TCP
connection would.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.internet.interfaces import IProtocol
from twisted.web.resource import Resource

from tunnel.mux import YamuxProtocol
from tunnel.core.control import (
    CONTROL_PATH,
    FEATURES_HEADER,
    HANDSHAKE_REQUEST,
    IDENTIFIER_HEADER,
    SERVER_STREAMS,
)
from tunnel.server import TunnelServer
from tunnel.server.site import StreamedBody, StreamingRequest, TunnelChannel, TunnelSite
from tunnel.test.streams import TCPLikeTransport
from tunnel.test.support import MiB
from tunnel.yamux import INITIAL_WINDOW, Flag, FrameType, SessionConfig, encodeFrame

IDENTIFIER = b"memory-identifier"
CHUNK = 64 * 1024
#: What the hostile client grants each stream: the largest window there is.
HUGE_WINDOW_DELTA = 0xFFFFFFFF - INITIAL_WINDOW
SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8080)


def publicAddress(number: int) -> IPv4Address:
    return IPv4Address("TCP", f"203.0.113.{number % 250 + 1}", 40000 + number)


class HostileClientTestCase(SynchronousTestCase):
    """
    A tunnel server with one client, holding a valid identifier, that does
    its handshake, acknowledges every stream the server opens and grants it
    a 4 GiB window, and reads nothing unless the test says so. (It would
    answer keep-alive pings blindly: the server sends none here.)
    """

    config = SessionConfig(enableKeepAlive=False)

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = TunnelServer(reactor=self.clock, yamuxConfig=self.config)
        self.server.addHost("app.example", IDENTIFIER)
        self.site = self.server.site()
        self.tunnel = TCPLikeTransport(hostAddress=SERVER_ADDRESS, peerAddress=publicAddress(0))
        channel = self.site.buildProtocol(publicAddress(0))
        channel.makeConnection(self.tunnel)
        channel.dataReceived(
            b"CONNECT %s HTTP/1.1\r\nHost: tunnel\r\n%s: %s\r\n%s: %s\r\n\r\n"
            % (CONTROL_PATH, IDENTIFIER_HEADER, IDENTIFIER, FEATURES_HEADER, SERVER_STREAMS)
        )
        self.assertTrue(self.tunnel.value().startswith(b"HTTP/1.1 200 "), self.tunnel.value())
        # The connection's protocol, once taken over from twisted.web.
        self.mux: YamuxProtocol = getattr(channel, "wrappedProtocol", None) or self.tunnel.protocol
        self.send(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, HUGE_WINDOW_DELTA)
            + encodeFrame(FrameType.DATA, 0, 1, len(HANDSHAKE_REQUEST), HANDSHAKE_REQUEST)
        )
        self.assertTrue(self.server._registry.session(IDENTIFIER).ready)
        self.tunnel.drain()
        self.nextStream = 2
        self.publics: list[StringTransport] = []
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def send(self, frames: bytes) -> None:
        """The client sends frames, blindly."""
        self.mux.dataReceived(frames)

    def queued(self) -> int:
        """The bytes for the client held in the server: unread, or held back."""
        return self.tunnel.held + self.mux.session.bufferedTotal

    def publicRequest(self, data: bytes) -> tuple[IProtocol, StringTransport]:
        """
        A public connection sends C{data}; the client acknowledges the
        stream the server opens for it and grants it 4 GiB of window.
        """
        address = publicAddress(len(self.publics) + 1)
        transport = StringTransport(hostAddress=SERVER_ADDRESS, peerAddress=address)
        channel = self.site.buildProtocol(address)
        channel.makeConnection(transport)
        self.publics.append(transport)
        channel.dataReceived(data)
        if self.mux.session.hasStream(self.nextStream):
            self.send(
                encodeFrame(
                    FrameType.WINDOW_UPDATE, Flag.ACK, self.nextStream, HUGE_WINDOW_DELTA
                )
            )
            self.nextStream += 2
        return channel, transport

    def upload(self, size: int, first: bytes = b"") -> tuple[IProtocol, StringTransport]:
        """A public upload of C{size} bytes starts, C{first} of them with its head."""
        return self.publicRequest(
            b"POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: %d\r\n\r\n%s"
            % (size, first)
        )

    def push(self, channel: IProtocol, transport: StringTransport, size: int) -> int:
        """
        The public client sends up to C{size} bytes of body, as fast as its
        connection is read: until the server pauses it.

        @return: how many bytes the server read.
        """
        pushed = 0
        while pushed < size and transport.producerState == "producing":
            channel.dataReceived(b"u" * CHUNK)
            pushed += CHUNK
        return pushed

    def fillTheConnection(self) -> None:
        """A first upload fills the client's connection: the server is paused."""
        channel, transport = self.upload(100 * MiB)
        self.push(channel, transport, 100 * MiB)
        self.assertTrue(self.tunnel.producerPaused)
        self.assertEqual(transport.producerState, "paused")


class UploadTests(HostileClientTestCase):
    """
    A public upload towards a client that grants a 4 GiB window and does
    not read is paused; what the server holds stays bounded.
    """

    def test_uploadWhileTheClientDoesNotReadIsPausedAndBounded(self) -> None:
        """
        An upload that starts while the client's connection is paused (its
        first bytes with its head) is paused and stays paused, whatever the
        window: of the 100 MiB it pushes, the server reads one chunk, and
        the bytes queued for the client stay within the connection's buffer
        and two chunks, far under the session's cap.
        """
        self.fillTheConnection()
        before = self.queued()
        channel, transport = self.upload(100 * MiB, b"f" * CHUNK)
        self.assertEqual(transport.producerState, "paused")
        pushed = self.push(channel, transport, 100 * MiB - CHUNK)
        self.assertEqual(pushed, 0)
        self.assertEqual(transport.producerState, "paused")
        self.assertLessEqual(self.queued(), before + CHUNK + 1024)
        self.assertLessEqual(self.queued(), self.tunnel.bufferSize + 3 * CHUNK)
        self.assertLess(self.queued(), self.config.maxSessionBuffer)

    def test_uploadToASlowReaderFlowsWithBoundedMemory(self) -> None:
        """
        100 MiB pushed to a client that reads only when the server's buffer
        is full all arrive; the public connection is paused whenever the
        client does not read, and resumed once it read what was queued; at
        no time does the server hold more than its connection's buffer and
        two chunks.
        """
        self.fillTheConnection()
        channel, transport = self.upload(100 * MiB, b"f" * CHUNK)
        pushed, read, peak, pauses = CHUNK, 0, 0, 0
        while pushed < 100 * MiB:
            pushed += self.push(channel, transport, 100 * MiB - pushed)
            peak = max(peak, self.queued())
            if transport.producerState == "paused":
                pauses += 1
                read += len(self.tunnel.drain())
                peak = max(peak, self.queued())
        read += len(self.tunnel.drain())
        self.assertEqual(pushed, 100 * MiB)
        self.assertGreater(read, 100 * MiB)
        self.assertGreater(pauses, 100)
        self.assertLessEqual(peak, self.tunnel.bufferSize + 3 * CHUNK)


class StallTests(HostileClientTestCase):
    """A client that reads nothing for too long loses its session, with a reason."""

    # Shorter than the response timeout of the requests it holds.
    config = SessionConfig(enableKeepAlive=False, writeStallTimeout=30.0)

    def test_clientThatDoesNotReadLosesItsSession(self) -> None:
        """
        Once its connection stayed paused for C{writeStallTimeout} seconds,
        the client's connection is aborted, with a log line that says why.
        """
        self.fillTheConnection()
        self.clock.advance(self.config.writeStallTimeout - 1)
        self.assertFalse(self.tunnel.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.tunnel.disconnecting)
        [line] = [line for line in self.logged if "did not read" in line]
        self.assertIn("did not read for 30.0 s with", line)
        self.assertIn("bytes queued; closing its session", line)

    def test_clientThatReadsKeepsItsSession(self) -> None:
        """Reading what was queued before the timeout starts it over."""
        self.fillTheConnection()
        self.clock.advance(self.config.writeStallTimeout - 1)
        self.tunnel.drain()
        self.clock.advance(self.config.writeStallTimeout - 1)
        self.assertFalse(self.tunnel.disconnecting)


class RequestFloodTests(HostileClientTestCase):
    """
    Requests keep coming for a client that does not read: once the session
    holds its cap, they get a 503, and the server holds no more.
    """

    config = SessionConfig(enableKeepAlive=False, maxSessionBuffer=256 * 1024)

    def test_requestsBeyondTheCapGet503(self) -> None:
        """
        Each request's head is held for the client until the cap; the
        requests beyond get a 503, and what the server holds stays within
        its cap, one head and the connection's buffer.
        """
        self.fillTheConnection()
        padding = b"p" * 4000
        for _ in range(300):
            self.publicRequest(
                b"GET / HTTP/1.1\r\nHost: app.example\r\nX-Padding: %s\r\n\r\n" % (padding,)
            )
        cap = self.config.maxSessionBuffer
        self.assertLessEqual(self.queued(), cap + 5000 + self.tunnel.bufferSize + 2 * CHUNK)
        refused = [t for t in self.publics if t.value().startswith(b"HTTP/1.1 503 ")]
        self.assertGreater(len(refused), 200)
        self.assertTrue(any("does not read" in line for line in self.logged))


class BodyPausedBeforeItStartsTests(SynchronousTestCase):
    """
    A L{StreamedBody} its consumer paused before it started producing keeps
    the public connection paused until the consumer resumes it.
    """

    def test_bodyPausedBeforeStartingStaysPaused(self) -> None:
        """
        The body paused before its consumer asked for it writes what it
        held and leaves the public connection paused; resuming it reads the
        connection again.
        """
        channel = TunnelChannel()
        channel.site = TunnelSite(Resource(), reactor=Clock())
        channel.callLater = Clock().callLater
        transport = StringTransport()
        channel.makeConnection(transport)
        request = StreamingRequest(channel)
        request.clientproto = b"HTTP/1.1"
        body = StreamedBody(request, 10, False)
        body.dataReceived(b"12345")
        self.assertEqual(transport.producerState, "paused")
        body.pauseProducing()
        written: list[bytes] = []

        class Consumer:
            def write(self, data: bytes) -> None:
                written.append(data)

        body.startProducing(Consumer())
        self.assertEqual(written, [b"12345"])
        self.assertEqual(transport.producerState, "paused")
        self.assertTrue(body.heldBack)
        body.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
