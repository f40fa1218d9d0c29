"""
Tests for L{tunnel.server.site}: how L{StreamedBody} holds, passes on and
pauses the public connection (end to end, bodies are tested in
C{test_server_forwarding} and C{test_server_loopback}); and the limits of
a L{TunnelSite}'s public connections, in memory.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python import log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.resource import Resource

from tunnel.server.site import CONTINUE, StreamedBody, TunnelSite
from tunnel.yamux import SessionConfig
from tunnel.test.serversupport import PUBLIC_PEER, Harness
from tunnel.test.support import Recorder


class FakeChannel:
    """
    Records what the body writes to the public connection, and how often it
    restarts the connection's idle timer.
    """

    def __init__(self) -> None:
        self.written = b""
        self.timerRestarts = 0

    def write(self, data: bytes) -> None:
        self.written += data

    def resetTimeout(self) -> None:
        self.timerRestarts += 1


class FakeLogFile:
    """Records what is written to twisted.web's default access log."""

    def __init__(self, written: list[str]) -> None:
        self.written = written

    def write(self, line: str) -> None:
        self.written.append(line)

    def flush(self) -> None:
        pass


class FakeRequest:
    """What L{StreamedBody} uses of its request."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.channel = FakeChannel()
        self.clientproto = b"HTTP/1.1"


class Consumer:
    """Collects what the body writes."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class StreamedBodyTests(SynchronousTestCase):
    """L{StreamedBody} passes the body on as it arrives, with back-pressure."""

    def setUp(self) -> None:
        self.request = FakeRequest()
        self.body = StreamedBody(self.request, None, expectContinue=False)
        self.consumer = Consumer()

    def test_publicConnectionIsPausedUntilTheBodyIsAskedFor(self) -> None:
        """
        Until a consumer asks for the body, the public connection is paused
        and what arrives is held; then it is passed on and reading resumes.
        """
        self.assertEqual(self.request.transport.producerState, "paused")
        self.body.dataReceived(b"early")
        self.body.startProducing(self.consumer)
        self.assertEqual(self.consumer.data, b"early")
        self.assertEqual(self.request.transport.producerState, "producing")
        self.body.dataReceived(b" later")
        self.assertEqual(self.consumer.data, b"early later")
        self.assertIs(self.body.length, UNKNOWN_LENGTH)

    def test_consumerPausesThePublicConnection(self) -> None:
        """Pausing the body pauses the public connection; resuming resumes it."""
        self.body.startProducing(self.consumer)
        self.body.pauseProducing()
        self.assertEqual(self.request.transport.producerState, "paused")
        self.body.resumeProducing()
        self.assertEqual(self.request.transport.producerState, "producing")

    def test_bodyIsHeldBackUntilAskedForAndWhilePaused(self) -> None:
        """
        The body is held back by the tunnel until its consumer asks for it
        and while the consumer pauses it, not while it flows, nor once it is
        complete; each time it flows again the idle timer starts over.
        """
        self.assertTrue(self.body.heldBack)
        self.body.startProducing(self.consumer)
        self.assertFalse(self.body.heldBack)
        self.assertEqual(self.request.channel.timerRestarts, 1)
        self.body.pauseProducing()
        self.assertTrue(self.body.heldBack)
        self.body.resumeProducing()
        self.assertFalse(self.body.heldBack)
        self.assertEqual(self.request.channel.timerRestarts, 2)
        self.body.pauseProducing()
        self.body.allDataReceived()
        self.assertFalse(self.body.heldBack)

    def test_completeBodyNoLongerPausesThePublicConnection(self) -> None:
        """
        Once the body is complete, a pause (from the consumer's last write)
        leaves the public connection alone: it is read for the next request.
        """
        done = self.body.startProducing(self.consumer)
        self.body.allDataReceived()
        self.successResultOf(done)
        self.body.pauseProducing()
        self.assertEqual(self.request.transport.producerState, "producing")

    def test_continueIsSentWhenTheBodyIsAskedFor(self) -> None:
        """A client waiting for C{100 Continue} is told to go on at start."""
        body = StreamedBody(self.request, 5, expectContinue=True)
        self.assertEqual(self.request.channel.written, b"")
        body.startProducing(self.consumer)
        self.assertEqual(self.request.channel.written, CONTINUE)

    def test_lostConnectionFailsTheBody(self) -> None:
        """If the public connection is lost, the body fails."""
        done = self.body.startProducing(self.consumer)
        self.body.connectionLost(Failure(ConnectionError("gone")))
        self.failureResultOf(done, ConnectionError)

    def test_stoppedBodyDropsTheRest(self) -> None:
        """After stopProducing nothing more is written and nothing fires."""
        done = self.body.startProducing(self.consumer)
        self.body.stopProducing()
        self.body.dataReceived(b"dropped")
        self.body.allDataReceived()
        self.assertEqual(self.consumer.data, b"")
        self.assertNoResult(done)


def requestHead(size: int, headers: int = 0) -> bytes:
    """
    A GET request head for C{app.example} whose lines (without their line
    ends, as twisted.web counts them) take C{size} bytes, made of filler
    headers of at most 8000 bytes each, or of C{headers} short ones.
    """
    lines = [b"GET / HTTP/1.1", b"Host: app.example"]
    for i in range(headers):
        lines.append(b"X-Header-%d: %d" % (i, i))
    remaining = size - sum(len(line) for line in lines) if size else 0
    number = 0
    while remaining > 0:
        name = b"X-Filler-%d: " % (number,)
        take = min(8000, remaining)
        if remaining - take and remaining - take < 32:
            take -= 32
        lines.append(name + b"f" * (take - len(name)))
        remaining -= take
        number += 1
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    assert not size or sum(len(line) for line in lines) == size
    return head


class RefusalAssertions(SynchronousTestCase):
    """Checks the short refusals of a L{TunnelSite}."""

    def assertRefused(self, public: Recorder, status: bytes, message: bytes) -> None:
        """C{public} got C{status} with C{message} as its text, and was closed."""
        head, _, body = bytes(public.received).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 " + status + b" "), head)
        self.assertIn(b"\r\nContent-Type: text/plain; charset=utf-8\r\n", head)
        self.assertIn(b"\r\nConnection: close", head)
        self.assertEqual(body, message + b"\n")
        self.assertIsNotNone(public.lost)


class PublicConnectionLimitTests(RefusalAssertions):
    """
    L{TunnelSite}'s connections (L{TunnelChannel}) bound what a public
    client may make the server hold: the size of a request head, its number
    of headers, the time it takes to arrive, and idle connections.
    """

    def setUp(self) -> None:
        self.harness = Harness()
        # Routed, its client not connected: a complete head gets a 502.
        self.harness.server.addHost("app.example", b"identifier")

    def send(self, data: bytes, public: Recorder | None = None) -> Recorder:
        """Send C{data} on C{public}, or on a new public connection."""
        if public is None:
            public = Recorder()
            self.harness.connect(public)
        public.transport.write(data)
        self.harness.flush()
        return public

    def assertServed(self, public: Recorder, count: int = 1) -> None:
        """The requests got through to the routing: a 502 each, and the connection is open."""
        self.assertEqual(bytes(public.received).count(b"HTTP/1.1 502 Bad Gateway\r\n"), count)
        self.assertIsNone(public.lost)

    def test_headOfTheLimitIsServed(self) -> None:
        """
        A request head of 64 KiB is served (twisted.web alone would refuse
        anything past 16 KiB).
        """
        self.assertServed(self.send(requestHead(65536)))

    def test_headLargerThanTheLimitGets431(self) -> None:
        """A request head past 64 KiB gets a 431 and the connection is closed."""
        self.assertRefused(
            self.send(requestHead(65537)), b"431", b"the request head is larger than 65536 bytes"
        )

    def test_oneHugeHeaderLineGets431(self) -> None:
        """
        One header line longer than the whole head may be gets a 431, ended
        by its line end or not (twisted.web alone would close the connection
        without a word).
        """
        line = b"X-Huge: " + b"h" * 70000
        for data in (b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n", b"GET / HTTP/1.1\r\n" + line):
            self.assertRefused(
                self.send(data), b"431", b"the request head is larger than 65536 bytes"
            )

    def test_hugeRequestLineGets414(self) -> None:
        """A request line longer than the whole head may be gets a 414."""
        self.assertRefused(
            self.send(b"GET /" + b"u" * 70000 + b" HTTP/1.1\r\n\r\n"),
            b"414",
            b"the request line is longer than 65536 bytes",
        )

    def test_tooManyHeadersGet431(self) -> None:
        """500 header lines are served; 501 get a 431."""
        self.assertServed(self.send(requestHead(0, headers=499)))
        self.assertRefused(
            self.send(requestHead(0, headers=500)), b"431", b"the request has more than 500 headers"
        )

    def test_overlongContentLengthGets400(self) -> None:
        """
        A Content-Length of 19 digits is read; of 20 digits, or of thousands
        (too many for Python's C{int}), it is a clear 400, not an exception.
        """
        def head(value: bytes) -> bytes:
            return b"GET / HTTP/1.1\r\nHost: app.example\r\nContent-Length: %s\r\n\r\n" % (value,)

        self.assertServed(self.send(head(b"0" * 19)))
        for digits in (20, 5000):
            self.assertRefused(
                self.send(head(b"1" * digits)),
                b"400",
                b"the request's Content-Length is longer than 19 digits",
            )
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_headLimitsAreConfigurable(self) -> None:
        """The site takes its own limits of head size and header count."""
        self.harness = Harness(siteLimits={"maxHeaderBytes": 1024, "maxHeaders": 10})
        self.harness.server.addHost("app.example", b"identifier")
        self.assertServed(self.send(requestHead(1024)))
        self.assertRefused(
            self.send(requestHead(1025)), b"431", b"the request head is larger than 1024 bytes"
        )
        self.assertServed(self.send(requestHead(0, headers=9)))
        self.assertRefused(
            self.send(requestHead(0, headers=10)), b"431", b"the request has more than 10 headers"
        )

    def test_tricklingHeadIsCutOffAfterTheHeaderTimeout(self) -> None:
        """
        A client trickling its request head, a byte every few seconds, gets
        a 408 and is disconnected 30 s after its first byte (twisted.web's
        idle timeout alone starts over with every byte).
        """
        head = requestHead(0)
        public = self.send(head[:1])
        for i in range(1, 30):
            self.harness.advance(1)
            self.send(head[i : i + 1], public)
        self.harness.advance(0.5)
        self.assertEqual(public.received, b"")
        self.assertIsNone(public.lost)
        self.harness.advance(0.5)
        self.assertRefused(public, b"408", b"the request head took longer than 30 s")

    def test_tlsHandshakeOnAPlainPortIsAnsweredAtOnce(self) -> None:
        """
        A TLS ClientHello on a plain port gets a 400 that says so at once,
        not after the header timeout.
        """
        public = self.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        self.assertRefused(
            public, b"400", b"this port speaks plain HTTP, not TLS: connect without TLS"
        )

    def test_headerTimeoutStartsWithEachRequestHead(self) -> None:
        """
        The header timeout counts from the first byte of each request head,
        not from the connection's start.
        """
        head = requestHead(0)
        public = self.send(head)
        self.harness.advance(50)
        self.send(head[:10], public)
        self.harness.advance(29)
        self.send(head[10:], public)
        self.assertServed(public, 2)
        self.harness.advance(29.9)
        self.assertIsNone(public.lost)

    def test_headerTimeoutIsConfigurable(self) -> None:
        """The site takes its own header timeout."""
        self.harness = Harness(siteLimits={"headerTimeout": 5})
        public = self.send(b"GET / HTTP/1.1\r\n")
        self.harness.advance(4.9)
        self.assertIsNone(public.lost)
        self.harness.advance(0.1)
        self.assertRefused(public, b"408", b"the request head took longer than 5 s")

    def test_idleConnectionIsClosedAfterTheIdleTimeout(self) -> None:
        """
        A keep-alive connection idle for 60 s after its last response is
        closed, as is one that never sends anything.
        """
        public = self.send(requestHead(0))
        silent = self.send(b"")
        self.harness.advance(59.9)
        self.assertServed(public)
        self.assertIsNone(silent.lost)
        self.harness.advance(0.1)
        self.assertIsNotNone(public.lost)
        self.assertIsNotNone(silent.lost)

    def test_idleTimeoutIsConfigurable(self) -> None:
        """The site takes its own idle timeout."""
        self.harness = Harness(siteLimits={"idleTimeout": 5})
        public = self.send(b"")
        self.harness.advance(4.9)
        self.assertIsNone(public.lost)
        self.harness.advance(0.1)
        self.assertIsNotNone(public.lost)


class AccessLogTests(SynchronousTestCase):
    """
    A L{TunnelSite} logs a line per request only to the access log file it
    is given.
    """

    def request(self, harness: Harness) -> None:
        harness.site.doStart()
        self.addCleanup(harness.site.doStop)
        harness.server.addHost("app.example", b"identifier")
        public = Recorder()
        harness.connect(public)
        public.transport.write(b"GET /logged HTTP/1.1\r\nHost: app.example\r\n\r\n")
        harness.flush()
        self.assertIn(b"502 Bad Gateway", bytes(public.received))

    def test_noAccessLogByDefault(self) -> None:
        """Without a log file, a request is logged nowhere."""
        written: list[str] = []
        self.patch(log, "logfile", FakeLogFile(written))
        self.request(Harness())
        self.assertEqual(written, [])

    def test_accessLogFile(self) -> None:
        """With a log file, each request gets a line in the combined log format."""
        path = self.mktemp()
        harness = Harness({"logPath": path})
        self.request(harness)
        harness.site._logFile.flush()
        with open(path) as f:
            [line] = f.read().splitlines()
        self.assertIn('"GET /logged HTTP/1.1" 502 ', line)


#: What a connection beyond a L{TunnelSite}'s cap in all is told.
SERVER_FULL = b"the server has as many connections open as it may"
#: What a connection beyond its source's cap is told.
SOURCE_FULL = b"your address has as many connections open as it may"


def tcpAddress(host: str) -> IAddress:
    """A public client's TCP address at C{host}, IPv4 or IPv6."""
    kind = IPv6Address if ":" in host else IPv4Address
    return kind("TCP", host, 50000)


class ConnectionCapTests(RefusalAssertions):
    """
    A L{TunnelSite} keeps at most C{maxConnections} connections open in all
    and C{maxConnectionsPerSource} per source address (an IPv6 /64); one
    beyond either cap gets a C{503} at once and is closed. Here the caps
    are 3 in all and 2 per source.
    """

    def setUp(self) -> None:
        self.harness = Harness(siteLimits={"maxConnections": 3, "maxConnectionsPerSource": 2})
        self.connections = self.harness.site.connections
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def open(self, host: str = PUBLIC_PEER.host) -> Recorder:
        """Open a public connection from C{host}, and pump."""
        public = Recorder()
        self.harness.connect(public, peer=tcpAddress(host))
        self.harness.flush()
        return public

    def assertOpen(self, *publics: Recorder) -> None:
        """Each of C{publics} is open, and was told nothing."""
        for public in publics:
            self.assertEqual(bytes(public.received), b"")
            self.assertIsNone(public.lost)

    def refusalEvents(self) -> list[dict[str, Any]]:
        """The log events of refused connections."""
        return [
            event
            for event in self.logged
            if event.get("log_format", "").startswith("Refused a connection")
        ]

    def test_connectionBeyondTheCapInAllIsRefused(self) -> None:
        """
        Three connections from different addresses stay open; a fourth gets
        a 503 saying the server is full, and is closed. It takes no place.
        """
        admitted = [self.open(f"198.51.100.{i}") for i in range(3)]
        self.assertRefused(self.open("198.51.100.9"), b"503", SERVER_FULL)
        self.assertOpen(*admitted)
        self.assertEqual(self.connections.total, 3)
        self.assertEqual(self.connections.openFrom(tcpAddress("198.51.100.9")), 0)

    def test_connectionBeyondItsSourcesCapIsRefused(self) -> None:
        """
        A third connection from one IPv4 address gets a 503 saying its
        address is full, and is closed; another address still gets in.
        """
        admitted = [self.open("198.51.100.1"), self.open("198.51.100.1")]
        self.assertRefused(self.open("198.51.100.1"), b"503", SOURCE_FULL)
        admitted.append(self.open("198.51.100.2"))
        self.assertOpen(*admitted)

    def test_ipv6AddressesOfOneNetworkShareTheirSourcesCap(self) -> None:
        """
        IPv6 addresses in one /64 count as one source; an address in
        another /64 is another source.
        """
        admitted = [self.open("2001:db8:1:2::1"), self.open("2001:db8:1:2:ffff:ffff:ffff:ffff")]
        self.assertRefused(self.open("2001:db8:1:2::abcd"), b"503", SOURCE_FULL)
        admitted.append(self.open("2001:db8:1:3::1"))
        self.assertOpen(*admitted)

    def test_lostConnectionFreesItsPlace(self) -> None:
        """
        Once a connection is lost, its place in all and in its source is
        free again.
        """
        first, second = self.open(), self.open()
        self.assertRefused(self.open(), b"503", SOURCE_FULL)
        first.transport.loseConnection()
        self.harness.flush()
        self.assertEqual((self.connections.total, self.connections.openFrom(PUBLIC_PEER)), (1, 1))
        self.assertOpen(second, self.open())

    def test_tunnelSessionCountsForItsSourceOnly(self) -> None:
        """
        A connection taken over by a tunnel session no longer takes a place
        in all (the public keeps all 3), but still one of its source's; once
        the session is gone, it counts nowhere.
        """
        self.harness.server.addHost("app.example", b"identifier")
        client = self.harness.tunnelClient(b"identifier", lambda message: None)
        self.successResultOf(client.handshaken)
        self.assertEqual((self.connections.total, self.connections.sessions), (0, 1))
        sameSource = self.open()
        self.assertRefused(self.open(), b"503", SOURCE_FULL)
        others = [self.open(f"198.51.100.{i}") for i in range(2)]
        self.assertRefused(self.open("198.51.100.9"), b"503", SERVER_FULL)
        self.assertOpen(sameSource, *others)
        self.assertIsNone(client.lost)
        client.transport.loseConnection()
        self.harness.flush()
        self.assertEqual((self.connections.total, self.connections.sessions), (3, 0))
        self.assertEqual(self.connections.openFrom(PUBLIC_PEER), 1)

    def test_refusalsAreLoggedSparsely(self) -> None:
        """
        Refused connections are logged at the 1st and 10th refusal (then
        the 100th...), with the peer, the reason and the count so far: a
        flood of connections cannot flood the log.
        """
        for i in range(3):
            self.open(f"198.51.100.{i}")
        for _ in range(11):
            self.open("198.51.100.9")
        self.assertEqual(self.connections.refused, 11)
        self.assertEqual(
            [(e["peer"], e["reason"], e["count"]) for e in self.refusalEvents()],
            [(tcpAddress("198.51.100.9"), SERVER_FULL.decode(), count) for count in (1, 10)],
        )


class AbortRecordingTransport(StringTransport):
    """A L{StringTransport} that tells an abort from a close."""

    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class WriteTimeoutTests(SynchronousTestCase):
    """
    A L{TunnelSite}'s connection whose send buffer stays full (its
    transport paused its producer) for C{writeTimeout} seconds is aborted.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def stalled(self, **limits: Any) -> AbortRecordingTransport:
        """
        A connection to a site with C{limits} (and no idle timeout, whose
        timer would get in the way), whose transport has just paused its
        producer.
        """
        site = TunnelSite(Resource(), reactor=self.clock, idleTimeout=None, **limits)
        transport = AbortRecordingTransport(peerAddress=PUBLIC_PEER)
        site.buildProtocol(PUBLIC_PEER).makeConnection(transport)
        self.assertTrue(transport.streaming)
        transport.producer.pauseProducing()
        return transport

    def timeoutEvents(self) -> list[dict[str, Any]]:
        """The log events of connections cut for reading nothing."""
        return [e for e in self.logged if "read nothing" in e.get("log_format", "")]

    def test_stalledConnectionIsAborted(self) -> None:
        """
        A connection stalled for the write timeout is aborted (not closed,
        which would wait for the buffer to drain), with a log line naming
        its peer and the timeout.
        """
        transport = self.stalled(writeTimeout=5)
        self.clock.advance(4.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertEqual(
            [(e["peer"], e["timeout"]) for e in self.timeoutEvents()], [(PUBLIC_PEER, 5)]
        )

    def test_defaultWriteTimeoutIsAMinute(self) -> None:
        """By default a connection may stay stalled for 60 s."""
        transport = self.stalled()
        self.clock.advance(59.9)
        self.assertFalse(transport.aborted)
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)

    def test_connectionThatDrainsInTimeIsKept(self) -> None:
        """
        A connection whose buffer drains (the transport resumes its
        producer) before the timeout is kept, however long it then lasts;
        a later stall gets a whole timeout again.
        """
        transport = self.stalled(writeTimeout=5)
        self.clock.advance(4.9)
        transport.producer.resumeProducing()
        self.clock.advance(100)
        transport.producer.pauseProducing()
        self.clock.advance(4.9)
        self.assertFalse(transport.aborted)
        self.assertEqual(self.timeoutEvents(), [])
        self.clock.advance(0.1)
        self.assertTrue(transport.aborted)

    def test_noWriteTimeout(self) -> None:
        """Without a write timeout a stalled connection is never cut."""
        transport = self.stalled(writeTimeout=None)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(86400)
        self.assertFalse(transport.aborted)

    def test_tunnelSessionKeepsItsOwnStallTimeout(self) -> None:
        """
        A connection taken over by a tunnel session is no longer cut by the
        write timeout: the session's own write stall timeout
        (C{--write-stall-timeout}) governs it, longer here.
        """
        harness = Harness(
            siteLimits={"writeTimeout": 5}, yamuxConfig=SessionConfig(writeStallTimeout=20)
        )
        harness.server.addHost("app.example", b"identifier")
        client = harness.tunnelClient(b"identifier", lambda message: None)
        self.successResultOf(client.handshaken)
        harness.pumps[-1].serverIO.producer.pauseProducing()
        harness.advance(19.9)
        self.assertIsNone(client.lost)
        self.assertEqual(self.timeoutEvents(), [])
        harness.advance(0.1)
        self.assertIsNotNone(client.lost)


class WriteRecordingTransport(StringTransport):
    """A transport that records each write it is given."""

    def __init__(self) -> None:
        super().__init__(peerAddress=PUBLIC_PEER)
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))


class ResponseWriteTests(SynchronousTestCase):
    """
    A L{TunnelSite} writes a response head together with the first bytes of
    its body: one write, where twisted.web would make two.
    """

    def respond(self, method: bytes) -> list[bytes]:
        """The writes of the answer to a request for a host with no client."""
        harness = Harness()
        harness.server.addHost("app.example", b"identifier")
        transport = WriteRecordingTransport()
        connection = harness.site.buildProtocol(PUBLIC_PEER)
        connection.makeConnection(transport)
        connection.dataReceived(b"%s / HTTP/1.1\r\nHost: app.example\r\n\r\n" % (method,))
        return transport.writes

    def test_headGoesWithTheBody(self) -> None:
        """The head and the body of a response go out in one write."""
        [write] = self.respond(b"GET")
        head, separator, body = write.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 502 "))
        self.assertIn(b"Content-Length: %d" % (len(body),), head)
        self.assertGreater(len(body), 0)

    def test_headWithoutBodyGoesAlone(self) -> None:
        """A response with no body (to C{HEAD}) still gets its head written."""
        [write] = self.respond(b"HEAD")
        self.assertTrue(write.startswith(b"HTTP/1.1 502 "))
        self.assertTrue(write.endswith(b"\r\n\r\n"))
