"""
Tests for L{tunnel.mux}: the Twisted adapter of the yamux core, driven in
memory with L{twisted.test.iosim} and a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.mux import (
    PingTimeoutError,
    SessionEndedError,
    StreamAddress,
    StreamOpenTimeoutError,
    StreamRefusedError,
    StreamResetError,
    YamuxProtocol,
)
from tunnel.test.streams import EchoStream, TCPLikeTransport
from tunnel.test.support import HalfCloseRecorder, Recorder, RecordingFactory, parseFrames, pattern
from tunnel.yamux import (
    HEADER_SIZE,
    INITIAL_WINDOW,
    Flag,
    FrameType,
    GoAwayCode,
    SessionConfig,
    SessionGoingAwayError,
    encodeFrame,
)


class Echo(Protocol):
    """Echoes everything back."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class RefusingFactory(Factory):
    """Refuses every stream."""

    def buildProtocol(self, addr: Any) -> None:
        return None


@implementer(IPushProducer)
class PushProducer:
    """A push producer that records pause and resume calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        self.calls.append("resume")

    def stopProducing(self) -> None:
        self.calls.append("stop")


class SessionPair:
    """A client and a server L{YamuxProtocol} connected in memory."""

    def __init__(
        self,
        serverStreams: Factory | None = None,
        clientStreams: Factory | None = None,
        config: SessionConfig | None = None,
    ) -> None:
        self.clock = Clock()
        self.serverStreams = serverStreams if serverStreams is not None else RecordingFactory()
        self.server = YamuxProtocol(False, self.serverStreams, config, self.clock)
        self.client = YamuxProtocol(True, clientStreams, config, self.clock)
        self.clientIO: iosim.FakeTransport
        self.serverIO: iosim.FakeTransport
        _, _, self.pump = iosim.connectedServerAndClient(
            lambda: self.server, lambda: self.client, clock=self.clock
        )
        self.clientIO = self.client.transport
        self.serverIO = self.server.transport

    def flush(self) -> None:
        self.pump.flush()


def deferredResult(d: Any) -> list[Any]:
    results: list[Any] = []
    d.addBoth(results.append)
    return results


class OpenStreamTests(SynchronousTestCase):
    """
    L{YamuxProtocol.openStream} and the streams the peer opens.
    """

    def test_protocolConnectedAtOnceDeferredFiresOnAck(self) -> None:
        """
        The opened stream's protocol is connected before the peer answers, so
        it may write at once; the L{Deferred} fires with it on the ACK.
        """
        pair = SessionPair()
        protocol = Recorder()
        results = deferredResult(pair.client.openStream(protocol))
        self.assertTrue(protocol.made)
        protocol.transport.write(b"early")
        self.assertEqual(results, [])
        pair.flush()
        self.assertEqual(results, [protocol])
        self.assertEqual(pair.serverStreams.built[0].received, b"early")

    def test_factoryBuildsProtocolForStream(self) -> None:
        """
        A factory given to C{openStream} builds the protocol with the
        stream's address.
        """
        pair = SessionPair()
        factory = RecordingFactory()
        results = deferredResult(pair.client.openStream(factory))
        pair.flush()
        self.assertEqual(results, factory.built)
        self.assertEqual(factory.addresses[0].streamID, 1)

    def test_incomingStreamGetsFactoryProtocolAndAddresses(self) -> None:
        """
        A stream the peer opens is handed to a protocol from the stream
        factory, with addresses naming the session's ends and the stream.
        """
        pair = SessionPair()
        pair.client.openStream(Recorder())
        pair.client.openStream(Recorder())
        pair.flush()
        built = pair.serverStreams.built
        self.assertEqual(len(built), 2)
        self.assertEqual([b.transport.streamID for b in built], [1, 3])
        peer = built[1].transport.getPeer()
        self.assertIsInstance(peer, StreamAddress)
        self.assertEqual(peer.streamID, 3)
        self.assertEqual(peer.session, pair.serverIO.getPeer())
        self.assertEqual(built[1].transport.getHost().session, pair.serverIO.getHost())
        self.assertEqual(pair.serverStreams.addresses[0], StreamAddress(pair.serverIO.getPeer(), 1))

    def test_refusedStreamFailsOpenAndLosesConnection(self) -> None:
        """
        A factory that builds no protocol refuses the stream: the opener's
        L{Deferred} fails with L{StreamRefusedError} and its protocol loses
        the connection.
        """
        pair = SessionPair(serverStreams=RefusingFactory())
        protocol = Recorder()
        results = deferredResult(pair.client.openStream(protocol))
        pair.flush()
        self.assertIsInstance(results[0], Failure)
        results[0].trap(StreamRefusedError)
        protocol.lost.trap(StreamResetError)
        self.assertEqual(pair.client.streams, {})

    def test_openTimeoutResetsStream(self) -> None:
        """
        A stream the peer does not acknowledge within the open timeout is
        reset, its protocol loses the connection and the L{Deferred} fails.
        """
        clock = Clock()
        client = YamuxProtocol(True, None, SessionConfig(streamOpenTimeout=5), clock)
        transport = StringTransport()
        client.makeConnection(transport)
        protocol = Recorder()
        results = deferredResult(client.openStream(protocol))
        transport.clear()
        clock.advance(4.9)
        self.assertEqual(results, [])
        clock.advance(0.1)
        results[0].trap(StreamOpenTimeoutError)
        protocol.lost.trap(StreamOpenTimeoutError)
        self.assertEqual(
            parseFrames(transport.value()), [(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0, b"")]
        )

    def test_cancelOpenResetsStream(self) -> None:
        """Cancelling the open L{Deferred} resets the stream."""
        clock = Clock()
        client = YamuxProtocol(True, None, SessionConfig(enableKeepAlive=False), clock)
        transport = StringTransport()
        client.makeConnection(transport)
        protocol = Recorder()
        d = client.openStream(protocol)
        transport.clear()
        d.cancel()
        self.failureResultOf(d)
        protocol.lost.trap(ConnectionAborted)
        self.assertEqual(
            parseFrames(transport.value()), [(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0, b"")]
        )
        self.assertEqual(clock.getDelayedCalls(), [])

    def backloggedClient(self) -> tuple[YamuxProtocol, StringTransport, Clock]:
        """A client whose backlog admits two unacknowledged streams."""
        clock = Clock()
        config = SessionConfig(acceptBacklog=2, enableKeepAlive=False)
        client = YamuxProtocol(True, None, config, clock)
        transport = StringTransport()
        client.makeConnection(transport)
        return client, transport, clock

    def test_opensBeyondTheBacklogWaitForAnAcknowledgement(self) -> None:
        """
        Beyond C{acceptBacklog} unacknowledged streams, an open sends no SYN
        and connects no protocol until the peer acknowledges one; then it
        goes, and its L{Deferred} fires on its own acknowledgement.
        """
        client, transport, _ = self.backloggedClient()
        protocols = [Recorder() for _ in range(3)]
        results = [deferredResult(client.openStream(p)) for p in protocols]
        self.assertEqual([f[2] for f in parseFrames(transport.value())], [1, 3])
        self.assertFalse(protocols[2].made)
        self.assertEqual(client.unacknowledgedStreams, 2)
        transport.clear()
        client.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.ACK, 1, 0))
        self.assertEqual(results[0], [protocols[0]])
        self.assertTrue(protocols[2].made)
        self.assertEqual(
            parseFrames(transport.value()), [(FrameType.WINDOW_UPDATE, Flag.SYN, 5, 0, b"")]
        )
        self.assertEqual(results[2], [])
        client.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.ACK, 5, 0))
        self.assertEqual(results[2], [protocols[2]])

    def test_refusalsAndTimeoutsMakeRoomInTheBacklog(self) -> None:
        """A refused stream and one that timed out let waiting opens go."""
        client, transport, clock = self.backloggedClient()
        opened = [client.openStream(Recorder()) for _ in range(4)]
        client.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0))
        self.failureResultOf(opened[0], StreamRefusedError)
        clock.advance(client.config.streamOpenTimeout)
        for d in opened[1:3]:
            self.failureResultOf(d, StreamOpenTimeoutError)
        synned = [f[2] for f in parseFrames(transport.value()) if f[1] == Flag.SYN]
        self.assertEqual(synned, [1, 3, 5, 7])
        self.assertNoResult(opened[3])

    def test_cancelWaitingOpen(self) -> None:
        """
        Cancelling an open that waits for the backlog fails it and sends
        nothing for it, ever: the next one takes its place.
        """
        client, transport, _ = self.backloggedClient()
        opened = [client.openStream(Recorder()) for _ in range(4)]
        opened[2].cancel()
        self.failureResultOf(opened[2], CancelledError)
        transport.clear()
        client.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.ACK, 1, 0))
        self.assertEqual(
            parseFrames(transport.value()), [(FrameType.WINDOW_UPDATE, Flag.SYN, 5, 0, b"")]
        )
        client.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.ACK, 3, 0))
        self.assertEqual(client.unacknowledgedStreams, 1)

    def test_connectionLostFailsWaitingOpens(self) -> None:
        """Opens still waiting for the backlog fail when the session ends."""
        client, _, _ = self.backloggedClient()
        opened = [client.openStream(Recorder()) for _ in range(3)]
        client.connectionLost(Failure(ConnectionDone()))
        for d in opened:
            self.failureResultOf(d, SessionEndedError)

    def test_openAfterGoAwayFails(self) -> None:
        """
        After the peer's Go Away, opening fails; streams already open keep
        working, and L{YamuxProtocol.goAwayReceived} is called.
        """
        pair = SessionPair(serverStreams=RecordingFactory(Echo))
        codes: list[int] = []
        pair.client.goAwayReceived = codes.append  # type: ignore[method-assign]
        first = Recorder()
        pair.client.openStream(first)
        pair.flush()
        pair.server.goAway()
        pair.flush()
        self.assertEqual(codes, [GoAwayCode.NORMAL])
        self.failureResultOf(pair.client.openStream(Recorder()), SessionGoingAwayError)
        first.transport.write(b"still works")
        pair.flush()
        self.assertEqual(first.received, b"still works")

    def test_peerStreamsRefusedAfterOurGoAway(self) -> None:
        """Streams the peer opens after our Go Away are refused."""
        pair = SessionPair()
        pair.client.openStream(Recorder())
        pair.flush()
        pair.server.goAway()
        protocol = Recorder()
        results = deferredResult(pair.client.openStream(protocol))
        pair.flush()
        results[0].trap(StreamRefusedError)
        self.assertEqual(len(pair.serverStreams.built), 1)

    def serverHeard(self, streams: Factory) -> tuple[YamuxProtocol, StringTransport]:
        """A server session over a L{StringTransport}, its client already heard."""
        server = YamuxProtocol(False, streams, SessionConfig(enableKeepAlive=False), Clock())
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(encodeFrame(FrameType.PING, Flag.SYN, 0, 0))
        transport.clear()
        return server, transport

    def test_streamOpenedAndResetInOneReadIsStillDelivered(self) -> None:
        """
        A stream the peer opens and resets in the same read (its events are
        handled once the whole read is) gets its protocol all the same, as
        if the reset had come in a later read: a factory that pairs streams
        FIFO must see every stream the peer opened. The protocol gets the
        data sent before the reset, then the reset; nothing is sent for the
        stream, nothing is left behind, and the session goes on.
        """
        streams = RecordingFactory()
        server, transport = self.serverHeard(streams)
        server.dataReceived(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
            + encodeFrame(FrameType.DATA, 0, 1, 2, b"hi")
            + encodeFrame(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0)
        )
        [protocol] = streams.built
        self.assertEqual(protocol.received, b"hi")
        protocol.lost.trap(StreamResetError)
        protocol.transport.write(b"too late")
        self.assertEqual((server.session.streamIDs, server.streams), ([], {}))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(server._clock.getDelayedCalls(), [])
        server.dataReceived(encodeFrame(FrameType.PING, Flag.SYN, 0, 5))
        self.assertEqual(parseFrames(transport.value()), [(FrameType.PING, Flag.ACK, 0, 5, b"")])

    def test_streamIDReopenedInOneReadIsRefused(self) -> None:
        """
        A peer that resets a stream and opens another under the same ID in
        one read (the events of the two could not be told apart) has the
        second refused: the first stream's protocol is told of its reset,
        and nothing is left behind, no timer either.
        """
        streams = RecordingFactory()
        server, transport = self.serverHeard(streams)
        syn = encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0)
        server.dataReceived(syn)
        [protocol] = streams.built
        transport.clear()
        server.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0) + syn)
        protocol.lost.trap(StreamResetError)
        self.assertEqual(len(streams.built), 1)
        self.assertEqual((server.session.streamIDs, server.streams), ([], {}))
        self.assertEqual(
            parseFrames(transport.value()), [(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0, b"")]
        )
        self.assertEqual(server._clock.getDelayedCalls(), [])

    def test_streamClosedBeforeItWasAcknowledgedFiresTheOpen(self) -> None:
        """
        A stream we opened and half-closed, which the peer closes too
        without ever acknowledging it, is done: the open L{Deferred} fires
        with the protocol, which loses its connection.
        """
        clock = Clock()
        client = YamuxProtocol(True, None, SessionConfig(enableKeepAlive=False), clock)
        client.makeConnection(StringTransport())
        protocol = HalfCloseRecorder()
        results = deferredResult(client.openStream(protocol))
        protocol.transport.loseWriteConnection()
        client.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.FIN, 1, 0))
        self.assertEqual(results, [protocol])
        protocol.lost.trap(ConnectionDone)
        self.assertEqual(clock.getDelayedCalls(), [])


class TransferTests(SynchronousTestCase):
    """
    Moving bytes through streams: windows, half-close, close and reset.
    """

    def test_largeTransferBothWays(self) -> None:
        """
        Several windows' worth of data goes through an echo intact, and no
        frame is larger than the window.
        """
        pair = SessionPair(serverStreams=RecordingFactory(EchoStream))
        protocol = HalfCloseRecorder()
        pair.client.openStream(protocol)
        payload = pattern(1024 * 1024)
        protocol.transport.write(payload)
        protocol.transport.loseWriteConnection()
        pair.flush()
        self.assertEqual(protocol.received, payload)
        self.assertTrue(protocol.readEnded)
        protocol.lost.trap(ConnectionDone)
        self.assertEqual(pair.client.session.streamIDs, [])
        self.assertEqual(pair.server.session.streamIDs, [])

    def test_attachHandsTheStreamOver(self) -> None:
        """
        After C{attach}, the new protocol is connected to the stream and gets
        its bytes and its end; the old one gets nothing more.
        """
        pair = SessionPair()
        protocol = Recorder()
        pair.client.openStream(protocol)
        protocol.transport.write(b"first")
        pair.flush()
        server = pair.serverStreams.built[0]
        successor = Recorder()
        server.transport.attach(successor)
        self.assertTrue(successor.made)
        self.assertIs(successor.transport, server.transport)
        protocol.transport.write(b"second")
        protocol.transport.loseConnection()
        pair.flush()
        self.assertEqual((server.received, successor.received), (b"first", b"second"))
        self.assertIsNone(server.lost)
        successor.lost.trap(ConnectionDone)

    def test_writesBeyondWindowAreBufferedAndProducerPaused(self) -> None:
        """
        A streaming producer is paused once the peer's window is used up and
        resumed when the peer grants more.
        """
        pair = SessionPair()
        protocol = Recorder()
        pair.client.openStream(protocol)
        pair.flush()
        server = pair.serverStreams.built[0]
        server.transport.pauseProducing()
        producer = PushProducer()
        protocol.transport.registerProducer(producer, True)
        protocol.transport.write(b"x" * (INITIAL_WINDOW + 10))
        self.assertEqual(producer.calls, ["pause"])
        self.assertEqual(pair.client.session.bufferedAmount(1), 10)
        pair.flush()
        self.assertEqual(server.chunks, [])
        server.transport.resumeProducing()
        pair.flush()
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertEqual(len(server.received), INITIAL_WINDOW + 10)

    def test_pausedReaderStopsGrantingWindow(self) -> None:
        """
        While a stream's protocol has paused it, received data is held (at
        most one window of it) and no window is granted; resuming delivers it
        in order and grants window again.
        """
        pair = SessionPair()
        protocol = Recorder()
        pair.client.openStream(protocol)
        pair.flush()
        server = pair.serverStreams.built[0]
        server.transport.pauseProducing()
        protocol.transport.write(b"a" * INITIAL_WINDOW)
        protocol.transport.write(b"b" * INITIAL_WINDOW)
        pair.flush()
        self.assertEqual(server.chunks, [])
        self.assertEqual(sum(map(len, server.transport._received)), INITIAL_WINDOW)
        self.assertEqual(pair.client.session.sendWindow(1), 0)
        server.transport.resumeProducing()
        pair.flush()
        self.assertEqual(server.received, b"a" * INITIAL_WINDOW + b"b" * INITIAL_WINDOW)

    def test_pullProducerIsAskedForMore(self) -> None:
        """
        A pull producer is asked for more each time what it wrote was sent.
        """
        pair = SessionPair()
        protocol = Recorder()
        pair.client.openStream(protocol)
        pair.flush()
        chunks = [b"one", b"two", b"three"]

        class Pull:
            def resumeProducing(self) -> None:
                if chunks:
                    protocol.transport.write(chunks.pop(0))
                else:
                    protocol.transport.unregisterProducer()

            def stopProducing(self) -> None:
                pass

        protocol.transport.registerProducer(Pull(), False)
        pair.flush()
        self.assertEqual(pair.serverStreams.built[0].received, b"onetwothree")

    def test_sessionPauseAndResumePausesStreamProducers(self) -> None:
        """
        When the session's connection pauses it, every stream's streaming
        producer is paused; when it resumes, they resume.
        """
        pair = SessionPair()
        protocols = [Recorder(), Recorder()]
        producers = [PushProducer(), PushProducer()]
        for protocol, producer in zip(protocols, producers):
            pair.client.openStream(protocol)
            protocol.transport.registerProducer(producer, True)
        pair.client.pauseProducing()
        pair.client.resumeProducing()
        self.assertEqual([p.calls for p in producers], [["pause", "resume"]] * 2)

    def test_sessionRegistersAsProducerOfItsTransport(self) -> None:
        """The session registers itself as a streaming producer of its transport."""
        pair = SessionPair()
        self.assertIs(pair.clientIO.producer, pair.client)
        self.assertTrue(pair.clientIO.streamingProducer)

    def test_halfCloseKeepsTheOtherDirectionOpen(self) -> None:
        """
        After our half-close the peer can still send; the peer's protocol,
        if half-closeable, is told with C{readConnectionLost}.
        """
        pair = SessionPair(serverStreams=RecordingFactory(HalfCloseRecorder))
        protocol = HalfCloseRecorder()
        pair.client.openStream(protocol)
        protocol.transport.write(b"request")
        protocol.transport.loseWriteConnection()
        pair.flush()
        server = pair.serverStreams.built[0]
        self.assertTrue(server.readEnded)
        self.assertIsNone(server.lost)
        server.transport.write(b"response")
        server.transport.loseConnection()
        pair.flush()
        self.assertEqual(protocol.received, b"response")
        protocol.lost.trap(ConnectionDone)
        server.lost.trap(ConnectionDone)

    def test_dataHeldWhilePausedOutlivesThePeersClose(self) -> None:
        """
        When the peer's FIN completes the close of a stream we half-closed
        while its reader is paused, the data held back and the end are
        still delivered on resume, before the connection is lost.
        """
        pair = SessionPair(serverStreams=RecordingFactory(HalfCloseRecorder))
        protocol = HalfCloseRecorder()
        pair.client.openStream(protocol)
        protocol.transport.loseWriteConnection()
        pair.flush()
        server = pair.serverStreams.built[0]
        protocol.transport.pauseProducing()
        server.transport.write(b"tail" * 1000)
        server.transport.loseConnection()
        pair.flush()
        self.assertEqual((protocol.received, protocol.readEnded, protocol.lost), (b"", False, None))
        protocol.transport.resumeProducing()
        self.assertEqual(protocol.received, b"tail" * 1000)
        self.assertTrue(protocol.readEnded)
        protocol.lost.trap(ConnectionDone)

    def test_endHeldWhilePausedIsNotToldAfterTheConnectionIsLost(self) -> None:
        """
        A paused reader whose peer half-closed is not told of that end when
        it resumes after its connection was lost: C{readConnectionLost}
        never follows C{connectionLost}.
        """
        pair = SessionPair(serverStreams=RecordingFactory(HalfCloseRecorder))
        protocol = HalfCloseRecorder()
        pair.client.openStream(protocol)
        pair.flush()
        server = pair.serverStreams.built[0]
        protocol.transport.pauseProducing()
        server.transport.write(b"held")
        server.transport.loseWriteConnection()
        pair.flush()
        pair.client.connectionLost(Failure(ConnectionDone()))
        protocol.lost.trap(SessionEndedError)
        protocol.transport.resumeProducing()
        self.assertEqual((protocol.received, protocol.readEnded), (b"", False))

    def test_peerFinClosesProtocolThatIsNotHalfCloseable(self) -> None:
        """
        A protocol that does not support half-close loses its connection when
        the peer half-closes, after what it wrote is sent.
        """
        pair = SessionPair(serverStreams=RecordingFactory(Echo))
        protocol = HalfCloseRecorder()
        pair.client.openStream(protocol)
        protocol.transport.write(b"ping")
        protocol.transport.loseWriteConnection()
        pair.flush()
        self.assertEqual(protocol.received, b"ping")
        self.assertTrue(protocol.readEnded)
        protocol.lost.trap(ConnectionDone)

    def test_loseConnectionSendsBufferedDataFirst(self) -> None:
        """
        C{loseConnection} sends what is buffered, then FIN; the protocol
        loses its connection only then.
        """
        pair = SessionPair()
        protocol = Recorder()
        pair.client.openStream(protocol)
        pair.flush()
        server = pair.serverStreams.built[0]
        server.transport.pauseProducing()
        protocol.transport.write(b"z" * (INITIAL_WINDOW + 5))
        protocol.transport.loseConnection()
        pair.flush()
        self.assertIsNone(protocol.lost)
        server.transport.resumeProducing()
        pair.flush()
        protocol.lost.trap(ConnectionDone)
        self.assertEqual(len(server.received), INITIAL_WINDOW + 5)
        server.lost.trap(ConnectionDone)

    def test_writesAfterLoseConnectionAreIgnored(self) -> None:
        """Writing after C{loseConnection} sends nothing."""
        pair = SessionPair()
        protocol = Recorder()
        pair.client.openStream(protocol)
        protocol.transport.write(b"a")
        protocol.transport.loseConnection()
        protocol.transport.write(b"b")
        pair.flush()
        self.assertEqual(pair.serverStreams.built[0].received, b"a")

    def test_abortConnectionResetsStream(self) -> None:
        """
        C{abortConnection} resets the stream: our protocol gets
        L{ConnectionAborted}, the peer's L{StreamResetError}.
        """
        pair = SessionPair()
        protocol = Recorder()
        pair.client.openStream(protocol)
        pair.flush()
        protocol.transport.abortConnection()
        pair.flush()
        protocol.lost.trap(ConnectionAborted)
        pair.serverStreams.built[0].lost.trap(StreamResetError)
        self.assertEqual(pair.server.session.streamIDs, [])

    def test_protocolErrorInDataReceivedResetsOnlyThatStream(self) -> None:
        """
        A stream protocol raising in C{dataReceived} gets its stream reset;
        the session and other streams go on.
        """

        class Broken(Recorder):
            def dataReceived(self, data: bytes) -> None:
                raise ValueError("broken")

        factory = RecordingFactory(Broken)
        pair = SessionPair(serverStreams=factory)
        bad, good = Recorder(), Recorder()
        pair.client.openStream(bad)
        pair.flush()
        factory.protocolClass = Echo
        pair.client.openStream(good)
        bad.transport.write(b"boom")
        good.transport.write(b"fine")
        pair.flush()
        bad.lost.trap(StreamResetError)
        self.assertEqual(good.received, b"fine")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_lingeringStreamResetAfterCloseTimeout(self) -> None:
        """
        A stream we closed whose peer never sends FIN is reset after the
        close timeout, so the session does not hold it forever.
        """
        pair = SessionPair(
            serverStreams=RecordingFactory(HalfCloseRecorder),
            config=SessionConfig(streamCloseTimeout=30),
        )
        protocol = Recorder()
        pair.client.openStream(protocol)
        protocol.transport.loseConnection()
        pair.flush()
        protocol.lost.trap(ConnectionDone)
        self.assertEqual(pair.client.session.streamIDs, [1])
        self.assertTrue(pair.serverStreams.built[0].readEnded)
        pair.clock.advance(29)
        pair.flush()
        self.assertEqual(pair.client.session.streamIDs, [1])
        pair.clock.advance(1)
        pair.flush()
        self.assertEqual(pair.client.session.streamIDs, [])
        pair.serverStreams.built[0].lost.trap(StreamResetError)


class SessionLifeTests(SynchronousTestCase):
    """
    Pings, keep-alive, protocol errors and the end of a session.
    """

    def test_pingMeasuresRoundTrip(self) -> None:
        """C{ping} fires with the round-trip time measured on the clock."""
        clock = Clock()
        client = YamuxProtocol(True, None, None, clock)
        transport = StringTransport()
        client.makeConnection(transport)
        results = deferredResult(client.ping())
        [(kind, flags, streamID, opaque, _)] = parseFrames(transport.value())
        self.assertEqual((kind, flags, streamID), (FrameType.PING, Flag.SYN, 0))
        clock.advance(0.25)
        client.dataReceived(encodeFrame(FrameType.PING, Flag.ACK, 0, opaque))
        self.assertEqual(results, [0.25])

    def test_pingTimesOut(self) -> None:
        """An unanswered ping fails with L{PingTimeoutError}."""
        clock = Clock()
        client = YamuxProtocol(True, None, None, clock)
        client.makeConnection(StringTransport())
        results = deferredResult(client.ping(timeout=3))
        clock.advance(3)
        results[0].trap(PingTimeoutError)

    def test_keepAliveDropsDeadSession(self) -> None:
        """
        Every keep-alive interval a ping goes out; one not answered within
        the keep-alive timeout aborts the connection.
        """
        clock = Clock()
        config = SessionConfig(keepAliveInterval=30, keepAliveTimeout=10)
        client = YamuxProtocol(True, None, config, clock)
        transport = StringTransport()
        client.makeConnection(transport)
        clock.advance(30)
        [(kind, flags, _, opaque, _)] = parseFrames(transport.value())
        self.assertEqual((kind, flags), (FrameType.PING, Flag.SYN))
        client.dataReceived(encodeFrame(FrameType.PING, Flag.ACK, 0, opaque))
        transport.clear()
        clock.advance(30)
        self.assertEqual(len(parseFrames(transport.value())), 1)
        clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_keepAliveRoundTripIsTold(self) -> None:
        """Each answered keep-alive ping tells its round trip; other pings do not."""
        clock = Clock()
        client = YamuxProtocol(True, None, SessionConfig(keepAliveInterval=30), clock)
        roundTrips: list[float] = []
        client.keepAliveAnswered = roundTrips.append  # type: ignore[method-assign]
        transport = StringTransport()
        client.makeConnection(transport)
        client.ping(timeout=60)
        clock.advance(30)
        [(_, _, _, other, _), (_, _, _, keepAlive, _)] = parseFrames(transport.value())
        clock.advance(0.5)
        client.dataReceived(encodeFrame(FrameType.PING, Flag.ACK, 0, other))
        client.dataReceived(encodeFrame(FrameType.PING, Flag.ACK, 0, keepAlive))
        self.assertEqual(roundTrips, [0.5])

    def test_keepAliveCanBeDisabled(self) -> None:
        """With keep-alive disabled no ping is ever sent."""
        clock = Clock()
        client = YamuxProtocol(True, None, SessionConfig(enableKeepAlive=False), clock)
        transport = StringTransport()
        client.makeConnection(transport)
        clock.advance(3600)
        self.assertEqual(transport.value(), b"")

    def test_serverSaysNothingUntilClientSpeaks(self) -> None:
        """
        The server side sends nothing, not even a keep-alive ping, before the
        client's first frame: a client that read the HTTP answer through a
        buffer would lose it.
        """
        clock = Clock()
        server = YamuxProtocol(False, RecordingFactory(), None, clock)
        transport = StringTransport()
        server.makeConnection(transport)
        server.goAway()
        clock.advance(100)
        self.assertEqual(transport.value(), b"")
        server.dataReceived(encodeFrame(FrameType.PING, Flag.SYN, 0, 7))
        self.assertEqual(
            parseFrames(transport.value()),
            [(FrameType.GO_AWAY, 0, 0, 0, b""), (FrameType.PING, Flag.ACK, 0, 7, b"")],
        )

    def test_protocolErrorEndsSessionWithGoAway(self) -> None:
        """
        Garbage from the peer ends the session: a Go Away with code 1, the
        connection closed, one clear error line in the log, no exception.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        server = YamuxProtocol(False, RecordingFactory(), None, clock)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(
            parseFrames(transport.value()),
            [(FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR, b"")],
        )
        self.assertTrue(transport.disconnecting)
        errors = [e for e in events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("unsupported protocol version", errors[0]["reason"])

    def test_connectionLostEndsStreamsOpensAndPings(self) -> None:
        """
        When the connection goes, every stream loses its connection with
        L{SessionEndedError}, pending opens and pings fail, and
        C{whenClosed} fires.
        """
        clock = Clock()
        client = YamuxProtocol(True, None, None, clock)
        client.makeConnection(StringTransport())
        protocol = Recorder()
        opened = deferredResult(client.openStream(protocol))
        pinged = deferredResult(client.ping())
        closed = deferredResult(client.whenClosed())
        client.connectionLost(Failure(ConnectionDone()))
        protocol.lost.trap(SessionEndedError)
        opened[0].trap(SessionEndedError)
        pinged[0].trap(SessionEndedError)
        self.assertEqual(closed, [None])
        self.assertEqual(clock.getDelayedCalls(), [])
        self.failureResultOf(client.openStream(Recorder()), SessionEndedError)

    def test_shutdownWaitsForStreamsThenCloses(self) -> None:
        """
        C{shutdown} sends Go Away, lets open streams finish, then closes the
        connection.
        """
        pair = SessionPair(serverStreams=RecordingFactory(HalfCloseRecorder))
        protocol = HalfCloseRecorder()
        pair.client.openStream(protocol)
        pair.flush()
        done = deferredResult(pair.client.shutdown(timeout=60))
        pair.flush()
        self.assertTrue(pair.server.session.remoteGoAway)
        self.assertEqual(done, [])
        server = pair.serverStreams.built[0]
        server.transport.write(b"last words")
        server.transport.loseConnection()
        pair.flush()
        self.assertEqual(protocol.received, b"last words")
        self.assertTrue(protocol.readEnded)
        self.assertEqual(done, [])
        protocol.transport.loseConnection()
        pair.flush()
        self.assertEqual(done, [None])

    def test_closingUnregistersFromTransport(self) -> None:
        """
        The session unregisters itself as its transport's producer before
        closing it, on a graceful shutdown as on a protocol error: a
        transport with a producer registered is not closed (TLS waits for
        it to unregister).
        """
        for close in (
            lambda session: session.shutdown(),
            lambda session: session.dataReceived(b"GET / HTTP/1.1\r\n\r\n"),
        ):
            session = YamuxProtocol(True, None, None, Clock())
            transport = StringTransport()
            session.makeConnection(transport)
            self.assertIs(transport.producer, session)
            close(session)
            self.assertIsNone(transport.producer)
            self.assertTrue(transport.disconnecting)

    def test_shutdownClosesAfterTimeout(self) -> None:
        """C{shutdown} closes the connection after its timeout regardless."""
        pair = SessionPair()
        pair.client.openStream(Recorder())
        pair.flush()
        done = deferredResult(pair.client.shutdown(timeout=5))
        pair.flush()
        pair.clock.advance(5)
        pair.flush()
        self.assertEqual(done, [None])

    def test_shutdownDeadlineGoesWithTheConnection(self) -> None:
        """
        When the connection goes before C{shutdown}'s timeout, no timer is
        left to keep the session alive until then.
        """
        pair = SessionPair(config=SessionConfig(enableKeepAlive=False))
        pair.client.openStream(Recorder())
        pair.flush()
        done = deferredResult(pair.client.shutdown(timeout=60))
        pair.serverIO.loseConnection()
        pair.flush()
        self.assertEqual(done, [None])
        self.assertEqual(pair.clock.getDelayedCalls(), [])

    def endedByAProtocolError(self) -> tuple[YamuxProtocol, StringTransport, Clock]:
        """
        A client session that a protocol error ended, over a transport that
        does not close: it holds what it was told to write, as a TCP
        transport does while the peer does not read.
        """
        clock = Clock()
        client = YamuxProtocol(True, None, SessionConfig(), clock)
        transport = StringTransport()
        client.makeConnection(transport)
        client.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, 0, 1, 0) + b"garbage!" * 2)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        return client, transport, clock

    def test_pingWhileTheConnectionClosesFails(self) -> None:
        """
        Once the session has ended, while its connection closes, a ping
        fails with L{SessionEndedError} (it does not raise), and the
        keep-alive's ping raises nothing into the reactor.
        """
        client, transport, clock = self.endedByAProtocolError()
        self.failureResultOf(client.ping(), SessionEndedError)
        clock.advance(client.config.keepAliveInterval)

    def test_closingConnectionThatDoesNotCloseIsAborted(self) -> None:
        """
        A connection closed while the peer does not read (the transport
        cannot write what it holds, so does not close) is aborted after the
        keep-alive timeout, with a warning; one that closes is not.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        client, transport, clock = self.endedByAProtocolError()
        clock.advance(client.config.keepAliveTimeout - 0.1)
        self.assertFalse(transport.disconnected)
        clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        self.assertTrue(any("did not close within 10.0 s" in formatEvent(e) for e in events))
        client, transport, clock = self.endedByAProtocolError()
        client.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(transport.disconnected)


class AbuseTests(SynchronousTestCase):
    """
    A peer that floods the session with pings or streams, or breaks the
    flow-control rules, cannot make it hold memory without bound.
    """

    def setUp(self) -> None:
        self.errors: list[dict[str, Any]] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level") == LogLevel.error:
                self.errors.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def serverSession(
        self, streams: Factory | None = None, config: SessionConfig | None = None
    ) -> tuple[YamuxProtocol, StringTransport]:
        """A server session over a L{StringTransport}, its client already heard."""
        server = YamuxProtocol(
            False, streams if streams is not None else RecordingFactory(), config, Clock()
        )
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(encodeFrame(FrameType.PING, Flag.SYN, 0, 0))
        transport.clear()
        return server, transport

    def test_pingFloodIsAnsweredWhileTheTransportWrites(self) -> None:
        """
        Pings are answered, however many, while the transport takes what
        we write.
        """
        server, transport = self.serverSession()
        pings = b"".join(encodeFrame(FrameType.PING, Flag.SYN, 0, i) for i in range(5000))
        server.dataReceived(pings)
        answers = parseFrames(transport.value())
        self.assertEqual(len(answers), 5000)
        self.assertEqual(answers[-1], (FrameType.PING, Flag.ACK, 0, 4999, b""))
        self.assertFalse(transport.disconnecting)

    def test_pingFloodWhileThePeerDoesNotReadDropsTheSession(self) -> None:
        """
        While the transport is paused (the peer does not read what we
        write) the session answers up to C{maxUnsentReplies} (1000 by
        default) pings, however often it is told to pause; one more drops
        the connection, with one error line.
        """
        server, transport = self.serverSession()
        self.assertEqual(server.config.maxUnsentReplies, 1000)
        server.pauseProducing()
        ping = encodeFrame(FrameType.PING, Flag.SYN, 0, 1)
        server.dataReceived(ping * 600)
        server.pauseProducing()
        server.dataReceived(ping * 400)
        self.assertEqual(len(parseFrames(transport.value())), 1000)
        self.assertFalse(transport.disconnecting)
        server.dataReceived(ping)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.errors), 1)
        self.assertIn("without reading them", self.errors[0]["log_format"])
        server.dataReceived(ping * 10)
        self.assertEqual(len(self.errors), 1)

    def test_answersAreCountedAnewAtEachPause(self) -> None:
        """
        The count of unsent answers starts over when the transport resumes:
        a peer that reads now and then is never dropped.
        """
        server, transport = self.serverSession(config=SessionConfig(maxUnsentReplies=10))
        ping = encodeFrame(FrameType.PING, Flag.SYN, 0, 1)
        for _ in range(5):
            server.pauseProducing()
            server.dataReceived(ping * 10)
            server.resumeProducing()
            server.dataReceived(ping * 100)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(parseFrames(transport.value())), 550)

    def test_synFloodOfRefusedStreamsKeepsNoState(self) -> None:
        """
        Streams the stream factory refuses are reset and forgotten at once:
        a flood of them keeps no state, and the session goes on.
        """
        server, transport = self.serverSession(RefusingFactory())
        flood = b"".join(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, streamID, 0)
            for streamID in range(1, 20001, 2)
        )
        server.dataReceived(flood)
        refusals = parseFrames(transport.value())
        self.assertEqual(len(refusals), 10000)
        self.assertEqual(
            {(kind, flags) for kind, flags, _, _, _ in refusals},
            {(FrameType.WINDOW_UPDATE, Flag.RST)},
        )
        self.assertEqual(server.session.streamIDs, [])
        self.assertEqual(server.streams, {})
        self.assertFalse(transport.disconnecting)

    def test_synFloodWhileThePeerDoesNotReadDropsTheSession(self) -> None:
        """
        Refusals count as answers: past C{maxUnsentReplies} of them while
        the transport is paused, the session is dropped.
        """
        server, transport = self.serverSession(
            RefusingFactory(), SessionConfig(maxUnsentReplies=100)
        )
        server.pauseProducing()
        syns = [
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, streamID, 0)
            for streamID in range(1, 204, 2)
        ]
        server.dataReceived(b"".join(syns[:100]))
        self.assertFalse(transport.disconnecting)
        server.dataReceived(syns[100])
        self.assertTrue(transport.disconnecting)

    def test_windowUpdateOverflowEndsTheSession(self) -> None:
        """
        A Window Update taking a stream's send window past 2**32 - 1 ends the
        session: Go Away with code 1, the connection closed, and every
        stream's protocol told the session ended.
        """
        streams = RecordingFactory()
        server, transport = self.serverSession(streams)
        server.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0))
        [protocol] = streams.built
        transport.clear()
        server.dataReceived(encodeFrame(FrameType.WINDOW_UPDATE, 0, 1, 0xFFFFFFFF))
        self.assertEqual(
            parseFrames(transport.value()),
            [(FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR, b"")],
        )
        self.assertTrue(transport.disconnecting)
        self.assertIn("overflows", self.errors[0]["reason"])
        server.connectionLost(Failure(ConnectionDone()))
        protocol.lost.trap(SessionEndedError)



class _ClosingTransport(StringTransport):
    """Drops what is written after C{loseConnection}, as a TLS transport does."""

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            super().write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))


class GoAwayDeliveryTests(SynchronousTestCase):
    """The Go Away of a protocol error reaches the peer before the close."""

    def test_goAwayIsWrittenBeforeTheConnectionIsClosed(self) -> None:
        """
        On a transport that drops writes after C{loseConnection} (TLS), the
        Go Away with code 1 of a protocol error found while dispatching
        events is still written, after what the same bytes caused before.
        """
        server = YamuxProtocol(False, RecordingFactory(), None, Clock())
        transport = _ClosingTransport()
        server.makeConnection(transport)
        server.dataReceived(
            encodeFrame(FrameType.PING, Flag.SYN, 0, 7)
            + encodeFrame(FrameType.DATA, 0, 0, 0)[:1]
            + b"\x07" * 11
        )
        self.assertEqual(
            parseFrames(transport.value()),
            [
                (FrameType.PING, Flag.ACK, 0, 7, b""),
                (FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR, b""),
            ],
        )
        self.assertTrue(transport.disconnecting)


class PausedConnectionTests(SynchronousTestCase):
    """
    While the session's connection is paused (the peer does not read), what
    is written to its streams is held back in the session whatever window
    the peer granted, every such write pauses the stream's producer again,
    new streams are refused once the session holds its cap, and a peer that
    reads nothing for too long is dropped.
    """

    def connected(
        self, config: SessionConfig | None = None
    ) -> tuple[YamuxProtocol, TCPLikeTransport, Recorder, Clock]:
        """
        A server session over a transport that pauses it as TCP does, with
        a stream the peer opened granting itself the largest window.
        """
        clock = Clock()
        factory = RecordingFactory()
        server = YamuxProtocol(False, factory, config, clock)
        transport = TCPLikeTransport()
        server.makeConnection(transport)
        server.dataReceived(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0xFFFFFFFF - INITIAL_WINDOW)
        )
        transport.clear()
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return server, transport, factory.built[0], clock

    def test_writesWhilePausedAreHeldWhateverTheWindow(self) -> None:
        """
        Writes made while the connection is paused are not written to it,
        however large the window; each pauses the producer again; resuming
        writes them, in order, and resumes the producer.
        """
        server, transport, stream, clock = self.connected()
        producer = PushProducer()
        stream.transport.registerProducer(producer, True)
        server.pauseProducing()
        self.assertEqual(producer.calls, ["pause"])
        stream.transport.write(b"x" * 1000)
        stream.transport.write(b"y" * 1000)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(server.bufferedBytes, 2000)
        self.assertEqual(producer.calls, ["pause"] * 3)
        server.resumeProducing()
        sent = b"".join(payload for kind, _, _, _, payload in parseFrames(transport.value()))
        self.assertEqual(sent, b"x" * 1000 + b"y" * 1000)
        self.assertEqual(producer.calls[-1], "resume")
        self.assertEqual(server.bufferedBytes, 0)

    def test_finWaitsForTheHeldData(self) -> None:
        """
        A stream closed while its data is held back sends its FIN after the
        data, once the connection resumes; its protocol is told then.
        """
        server, transport, stream, clock = self.connected()
        server.pauseProducing()
        stream.transport.write(b"data")
        stream.transport.loseConnection()
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(stream.lost)
        server.resumeProducing()
        [data, fin] = parseFrames(transport.value())
        self.assertEqual((data[0], data[4]), (FrameType.DATA, b"data"))
        self.assertEqual((fin[0], fin[1]), (FrameType.WINDOW_UPDATE, Flag.FIN))
        stream.lost.trap(ConnectionDone)

    def test_bytesWrittenWhilePausedCount(self) -> None:
        """
        What the session wrote to its connection since it paused counts as
        held: the write that paused it and every frame after.
        """
        server, transport, stream, clock = self.connected()
        stream.transport.write(b"z" * (TCPLikeTransport.bufferSize + 1))
        self.assertTrue(transport.producerPaused)
        self.assertEqual(server.bufferedBytes, TCPLikeTransport.bufferSize + 1 + HEADER_SIZE)
        transport.drain()
        self.assertEqual(server.bufferedBytes, 0)

    def test_bufferIsFullAtTheCap(self) -> None:
        """
        The session says its buffer is full once it holds
        C{maxSessionBuffer} bytes for a peer that does not read, and no
        longer once the peer read them.
        """
        server, transport, stream, clock = self.connected(SessionConfig(maxSessionBuffer=1000))
        server.pauseProducing()
        stream.transport.write(b"x" * 999)
        self.assertFalse(server.bufferFull)
        stream.transport.write(b"x")
        self.assertTrue(server.bufferFull)
        server.resumeProducing()
        self.assertFalse(server.bufferFull)

    def test_peerThatDoesNotReadIsDropped(self) -> None:
        """
        A connection that stays paused for C{writeStallTimeout} seconds is
        aborted, with a log line saying why; one that resumes in time is not.
        """
        config = SessionConfig(writeStallTimeout=5.0, enableKeepAlive=False)
        server, transport, stream, clock = self.connected(config)
        server.pauseProducing()
        clock.advance(4)
        server.resumeProducing()
        server.pauseProducing()
        stream.transport.write(b"x" * 2000)
        clock.advance(4)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(
            any(
                "the peer did not read for 5.0 s with 2000 bytes queued; closing the session"
                in line
                for line in self.logged
            )
        )
