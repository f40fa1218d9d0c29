"""
Interoperability of the multiplexer with HashiCorp's yamux: a small Go
program built on the reference library plays each role against ours over
loopback TCP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SkipTest, TestCase

from tunnel.mux import (
    SessionEndedError,
    StreamRefusedError,
    StreamResetError,
    YamuxFactory,
    YamuxProtocol,
)
from tunnel.test.gopeer import buildGoPeer, goAvailable, spawnGoPeer
from tunnel.test.streams import BulkStream, EchoStream, digest
from tunnel.test.support import MiB, goPattern, sleep
from tunnel.yamux import SessionConfig, SessionGoingAwayError



class ResetOnData(Protocol):
    """Resets its stream as soon as data arrives."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.abortConnection()


class GoPeerTestCase(TestCase):
    """Builds the Go yamux peer once and runs it against our sessions."""

    timeout = 120

    def setUp(self) -> None:
        reason = goAvailable()
        if reason is not None:
            raise SkipTest(reason)
        self.binary = buildGoPeer("yamuxpeer")

    def spawn(self, *args: str) -> Any:
        peer = spawnGoPeer(reactor, self.binary, list(args))
        self.addCleanup(peer.kill)
        return peer

    @defer.inlineCallbacks
    def serveOurs(self, streamFactory: Factory, config: SessionConfig | None = None):
        """
        Listen with our server side; fire with (port, a Deferred of the session).
        """
        sessions: list[defer.Deferred[YamuxProtocol]] = [defer.Deferred()]

        class Sessions(YamuxFactory):
            def buildProtocol(self, addr: Any) -> YamuxProtocol:
                protocol = super().buildProtocol(addr)
                sessions[0].callback(protocol)
                return protocol

        port: IListeningPort = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1"
        ).listen(Sessions(isClient=False, streamFactory=streamFactory, config=config))
        self.addCleanup(port.stopListening)
        return port, sessions[0]

    @defer.inlineCallbacks
    def connectOurs(self, peer: Any, config: SessionConfig | None = None, streamFactory=None):
        """Connect our client side to a listening Go peer."""
        host, port = yield peer.listening
        session: YamuxProtocol = yield TCP4ClientEndpoint(reactor, host, port).connect(
            YamuxFactory(isClient=True, streamFactory=streamFactory, config=config)
        )
        self.addCleanup(session.transport.loseConnection)
        return session

    def assertPeerOK(self, result: dict[str, Any]) -> None:
        self.assertTrue(result["ok"], result)


class GoClientOurServerTests(GoPeerTestCase):
    """The Go library as the client, our session as the server."""

    @defer.inlineCallbacks
    def bulkAgainstEcho(self, streams: int, size: int, *extra: str, config=None):
        port, _ = yield self.serveOurs(Factory.forProtocol(EchoStream), config)
        peer = self.spawn(
            "-role", "client", "-connect", f"127.0.0.1:{port.getHost().port}",
            "-scenario", "bulk", "-streams", str(streams), "-bytes", str(size), *extra,
        )
        result = yield peer.result
        self.assertPeerOK(result)
        self.assertEqual(result["mismatches"], 0)
        self.assertEqual(result["bytes"], streams * size)

    def test_largeTransfer(self):
        """One stream moves 32 MiB each way through our echo, intact."""
        return self.bulkAgainstEcho(1, 32 * MiB)

    def test_manyStreams(self):
        """300 concurrent streams (beyond Go's SYN backlog) of 256 KiB each."""
        return self.bulkAgainstEcho(300, 256 * 1024, "-chunk", "7777")

    def test_largerWindowBothSides(self):
        """A 1 MiB window announced on both sides is honoured."""
        return self.bulkAgainstEcho(
            4, 8 * MiB, "-window", str(MiB), config=SessionConfig(maxStreamWindow=MiB)
        )

    @defer.inlineCallbacks
    def test_goPingsUs(self):
        """The Go library's pings are answered."""
        port, _ = yield self.serveOurs(Factory.forProtocol(EchoStream))
        peer = self.spawn(
            "-role", "client", "-connect", f"127.0.0.1:{port.getHost().port}",
            "-scenario", "ping", "-pings", "5",
        )
        result = yield peer.result
        self.assertPeerOK(result)
        self.assertEqual(len(result["rtts_ms"]), 5)

    @defer.inlineCallbacks
    def test_ourResetReachesGo(self):
        """A stream we reset fails on the Go side with a connection reset."""
        port, _ = yield self.serveOurs(Factory.forProtocol(ResetOnData))
        peer = self.spawn(
            "-role", "client", "-connect", f"127.0.0.1:{port.getHost().port}",
            "-scenario", "expect-rst",
        )
        self.assertPeerOK((yield peer.result))

    @defer.inlineCallbacks
    def test_ourGoAwayStopsNewGoStreams(self):
        """
        After our Go Away the Go library refuses to open streams, while the
        stream it had open completed.
        """
        port, sessions = yield self.serveOurs(Factory.forProtocol(EchoStream))
        peer = self.spawn(
            "-role", "client", "-connect", f"127.0.0.1:{port.getHost().port}",
            "-scenario", "expect-goaway",
        )
        session = yield sessions
        yield sleep(0.2)
        session.goAway()
        result = yield peer.result
        self.assertPeerOK(result)
        self.assertGreaterEqual(result["attempts"], 1)


class OurClientGoServerTests(GoPeerTestCase):
    """Our session as the client, the Go library as the server."""

    @defer.inlineCallbacks
    def bulkAgainstGoEcho(self, streams: int, size: int, *extra: str, config=None):
        peer = self.spawn("-role", "server", "-listen", "127.0.0.1:0", "-scenario", "echo", *extra)
        session = yield self.connectOurs(peer, config)
        protocols, expected = [], []
        for seed in range(streams):
            payload = goPattern(size, seed)
            expected.append(digest(payload))
            protocol = BulkStream(payload)
            protocols.append(protocol)
            session.openStream(protocol)
        results = yield defer.gatherResults([p.done for p in protocols])
        self.assertEqual(results, expected)
        session.transport.loseConnection()
        result = yield peer.result
        self.assertPeerOK(result)
        self.assertEqual(result["streams"], streams)

    def test_largeTransfer(self):
        """One stream moves 32 MiB each way through the Go echo, intact."""
        return self.bulkAgainstGoEcho(1, 32 * MiB)

    def test_manyStreams(self):
        """300 concurrent streams of 256 KiB each."""
        return self.bulkAgainstGoEcho(300, 256 * 1024)

    def test_largerWindowBothSides(self):
        """A 1 MiB window announced on both sides is honoured."""
        return self.bulkAgainstGoEcho(
            4, 8 * MiB, "-window", str(MiB), config=SessionConfig(maxStreamWindow=MiB)
        )

    @defer.inlineCallbacks
    def test_wePingGo(self):
        """Our ping is answered by the Go library and measures a round trip."""
        peer = self.spawn("-role", "server", "-listen", "127.0.0.1:0", "-scenario", "echo")
        session = yield self.connectOurs(peer)
        rtt = yield session.ping()
        self.assertGreater(rtt, 0)
        self.assertLess(rtt, 5)

    @defer.inlineCallbacks
    def test_goKeepAliveAnswered(self):
        """The Go library's keep-alive pings are answered; the session lives on."""
        peer = self.spawn(
            "-role", "server", "-listen", "127.0.0.1:0", "-scenario", "echo",
            "-keepalive", "-keepalive-interval", "50ms",
        )
        session = yield self.connectOurs(peer)
        yield sleep(0.5)
        protocol = BulkStream(b"still alive")
        session.openStream(protocol)
        self.assertEqual((yield protocol.done), digest(b"still alive"))

    @defer.inlineCallbacks
    def test_goBacklogRefusesWithReset(self):
        """
        The Go library refuses a stream beyond its accept backlog with RST,
        which fails our open with L{StreamRefusedError}.
        """
        peer = self.spawn(
            "-role", "server", "-listen", "127.0.0.1:0", "-scenario", "backlog", "-backlog", "2"
        )
        session = yield self.connectOurs(peer)
        opened = [session.openStream(Protocol()) for _ in range(3)]
        yield self.assertFailure(opened[2], StreamRefusedError)
        session.transport.loseConnection()
        for unanswered in opened[:2]:
            yield self.assertFailure(unanswered, SessionEndedError)
        result = yield peer.result
        self.assertPeerOK(result)
        self.assertEqual(result["pending"], 2)

    @defer.inlineCallbacks
    def test_goGoAwayStopsOurNewStreams(self):
        """
        After the Go library's Go Away our opens fail with
        L{SessionGoingAwayError}, and C{goAwayReceived} is called.
        """
        peer = self.spawn("-role", "server", "-listen", "127.0.0.1:0", "-scenario", "send-goaway")
        goAway: defer.Deferred[int] = defer.Deferred()

        class Watching(YamuxFactory):
            def buildProtocol(self, addr: Any) -> YamuxProtocol:
                protocol = super().buildProtocol(addr)
                protocol.goAwayReceived = goAway.callback  # type: ignore[method-assign]
                return protocol

        host, port = yield peer.listening
        session = yield TCP4ClientEndpoint(reactor, host, port).connect(Watching(isClient=True))
        self.addCleanup(session.transport.loseConnection)
        # Our first frame lets the Go server speak; its Go Away follows.
        yield session.ping()
        code = yield goAway
        self.assertEqual(code, 0)
        yield self.assertFailure(session.openStream(Protocol()), SessionGoingAwayError)
        session.transport.loseConnection()
        self.assertPeerOK((yield peer.result))

    @defer.inlineCallbacks
    def test_goSessionEndEndsOurStreams(self):
        """When the Go side goes away, our open streams end with an error."""
        peer = self.spawn("-role", "server", "-listen", "127.0.0.1:0", "-scenario", "echo")
        session = yield self.connectOurs(peer)
        protocol = BulkStream(b"")
        protocol.connectionMade = lambda: None  # keep the stream open
        yield session.openStream(protocol)
        yield peer.kill()
        yield protocol.done
        self.assertTrue(protocol.reason.check(SessionEndedError, StreamResetError))
