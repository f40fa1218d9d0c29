"""
Tests for L{tunnel.server.session.ClientSession}: the handshake, pairing
of streams with requests, limits and closing, driven in memory against our
own yamux client side.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.mux import SessionEndedError, StreamRefusedError, StreamResetError, YamuxProtocol
from tunnel.core.control import (
    HANDSHAKE_REQUEST,
    MAX_CONTROL_LINE,
    ControlMessage,
    ControlProtocolError,
    TransportProtocol,
)
from tunnel.server.metrics import ServerMetrics
from tunnel.server.session import (
    ClientSession,
    ISessionObserver,
    SessionSettings,
    StreamTimeout,
    TooManyPendingStreams,
)
from tunnel.test.support import HalfCloseRecorder, RecordingFactory

IDENTIFIER = b"0123456789abcdef-identifier"


@implementer(ISessionObserver)
class Observer:
    """Records the sessions that became ready and ended."""

    def __init__(self) -> None:
        self.ready: list[ClientSession] = []
        self.ended: list[tuple[ClientSession, Failure]] = []

    def sessionReady(self, session: ClientSession) -> None:
        self.ready.append(session)

    def sessionEnded(self, session: ClientSession, reason: Failure) -> None:
        self.ended.append((session, reason))


class SessionTestCase(SynchronousTestCase):
    """A session connected in memory to a yamux client."""

    settings = SessionSettings()
    serverStreams = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.observer = Observer()
        self.metrics = ServerMetrics()
        self.session = ClientSession(
            IDENTIFIER, self.settings, self.observer, self.clock, self.metrics, self.serverStreams
        )
        self.client = YamuxProtocol(isClient=True, clock=self.clock)
        self.goAways: list[int] = []
        self.client.goAwayReceived = self.goAways.append
        server = self.session.protocol
        self.pump = iosim.connect(
            server,
            iosim.makeFakeServer(server),
            self.client,
            iosim.makeFakeClient(self.client),
            greet=False,
            clock=self.clock,
        )
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def openControl(self, handshake: bytes = HANDSHAKE_REQUEST) -> HalfCloseRecorder:
        control = HalfCloseRecorder()
        # A session that ends at once may never acknowledge the stream.
        self.client.openStream(control).addErrback(lambda f: f.trap(SessionEndedError))
        control.transport.write(handshake)
        self.pump.flush()
        return control

    def ended(self) -> bool:
        return bool(self.observer.ended)


class HandshakeTests(SessionTestCase):
    """
    The first stream is the control stream; the handshake on it is read by
    accumulating and answered in one frame.
    """

    def test_handshakeSplitAcrossFramesIsAnsweredInOneFrame(self) -> None:
        """
        A handshake that arrives in two frames is accepted once complete,
        and the answer arrives in a single read.
        """
        control = HalfCloseRecorder()
        self.client.openStream(control)
        control.transport.write(HANDSHAKE_REQUEST[:5])
        self.pump.flush()
        self.assertEqual((control.chunks, self.observer.ready), ([], []))
        control.transport.write(HANDSHAKE_REQUEST[5:])
        self.pump.flush()
        self.assertEqual(control.chunks, [b"controlOk"])
        self.assertEqual(self.observer.ready, [self.session])
        self.assertTrue(self.session.ready)
        self.assertEqual(self.session.connectedSince, self.clock.seconds())

    def test_wrongHandshakeEndsTheSession(self) -> None:
        """
        A wrong handshake ends the session at the first wrong byte, with a
        log line, and the session is never ready.
        """
        self.openControl(b"controlHandshakX")
        self.assertEqual(self.observer.ready, [])
        [(session, reason)] = self.observer.ended
        self.assertTrue(reason.check(ControlProtocolError))
        self.assertTrue(any("broke the tunnel protocol" in line for line in self.logged))

    def test_wrongFirstBytesEndTheSessionAtOnce(self) -> None:
        """A handshake that goes wrong early is refused before 16 bytes."""
        self.openControl(b"GET / ")
        self.assertTrue(self.ended())

    def test_clientThatNeverHandshakesIsDropped(self) -> None:
        """
        A client that opens no control stream within the handshake timeout
        is dropped.
        """
        self.client.ping()
        self.pump.flush()
        self.clock.advance(9.9)
        self.pump.flush()
        self.assertFalse(self.ended())
        self.clock.advance(0.1)
        self.pump.flush()
        [(session, reason)] = self.observer.ended
        self.assertTrue(reason.check(StreamTimeout))

    def test_partialHandshakeIsDroppedAtTheTimeout(self) -> None:
        """
        A client that opens the control stream and starts the handshake but
        never finishes it is dropped once the handshake timeout is over.
        """
        self.openControl(HANDSHAKE_REQUEST[:10])
        self.clock.advance(9.9)
        self.pump.flush()
        self.assertFalse(self.ended())
        self.clock.advance(0.1)
        self.pump.flush()
        [(session, reason)] = self.observer.ended
        self.assertTrue(reason.check(StreamTimeout))
        self.assertEqual(self.observer.ready, [])

    def test_streamOpenedBeforeTheHandshakeIsRefused(self) -> None:
        """A second stream opened before the handshake completes is refused."""
        self.client.openStream(HalfCloseRecorder())
        opened = self.client.openStream(HalfCloseRecorder())
        self.pump.flush()
        self.failureResultOf(opened, StreamRefusedError)

    def test_closingTheControlStreamEndsTheSession(self) -> None:
        """The end of the control stream is the client going away."""
        control = self.openControl()
        control.transport.loseConnection()
        self.pump.flush()
        self.assertTrue(self.ended())
        self.assertTrue(self.pump.clientIO.disconnected)

    def test_malformedControlMessageEndsTheSession(self) -> None:
        """
        A malformed message from the client on the control stream ends the
        session with a clear log line.
        """
        control = self.openControl()
        control.transport.write(b"{not json}\n")
        self.pump.flush()
        [(session, reason)] = self.observer.ended
        self.assertTrue(reason.check(ControlProtocolError))
        self.assertTrue(
            any("broke the tunnel protocol" in line and "not JSON" in line for line in self.logged)
        )

    def test_endlessControlMessageEndsTheSession(self) -> None:
        """
        A client that sends a control message without end is dropped once
        the line is longer than 64 KiB: the server holds no more of it.
        """
        control = self.openControl()
        for _ in range(MAX_CONTROL_LINE // 4096):
            control.transport.write(b"x" * 4096)
            self.pump.flush()
        self.assertFalse(self.ended())
        control.transport.write(b"x")
        self.pump.flush()
        [(session, reason)] = self.observer.ended
        self.assertTrue(reason.check(ControlProtocolError))
        self.assertTrue(
            any("broke the tunnel protocol" in line and "longer than" in line for line in self.logged)
        )

    def test_wellFormedClientMessagesAreIgnored(self) -> None:
        """Well-formed messages from the client are read and ignored."""
        control = self.openControl()
        control.transport.write(ControlMessage().encode())
        self.pump.flush()
        self.assertFalse(self.ended())

    def test_identifierIsNeverLoggedInFull(self) -> None:
        """Whatever happens, logs show the identifier redacted only."""
        control = self.openControl()
        waiting = self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder())
        self.pump.flush()
        control.transport.write(b"bad\n")
        self.pump.flush()
        self.failureResultOf(waiting, SessionEndedError)
        self.assertTrue(self.logged)
        for line in self.logged:
            self.assertNotIn(IDENTIFIER.decode(), line)
            self.assertNotIn(IDENTIFIER[:5].decode(), line)


class PairingTests(SessionTestCase):
    """
    After the handshake each stream the client opens goes to the oldest
    request still owed one, timed-out and cancelled requests included.
    """

    settings = SessionSettings(streamTimeout=10.0, maxPendingStreams=3)

    def setUp(self) -> None:
        super().setUp()
        self.control = self.openControl()

    def messages(self) -> list[bytes]:
        return self.control.received[len(b"controlOk") :].splitlines()

    def test_requestSendsAControlMessage(self) -> None:
        """Each request sends one JSON control message, as Go encodes it."""
        self.session.requestStream(TransportProtocol.TCP, 2222, HalfCloseRecorder())
        self.pump.flush()
        self.assertEqual(
            self.messages(), [b'{"action":1,"transportProtocol":2,"localPort":2222}']
        )

    def test_streamsArePairedInRequestOrder(self) -> None:
        """Streams are attached to the requests in the order asked."""
        first, second = HalfCloseRecorder(), HalfCloseRecorder()
        d1 = self.session.requestStream(TransportProtocol.HTTP, 0, first)
        d2 = self.session.requestStream(TransportProtocol.HTTP, 0, second)
        self.client.openStream(HalfCloseRecorder()).addCallback(lambda p: p.transport.write(b"one"))
        self.client.openStream(HalfCloseRecorder()).addCallback(lambda p: p.transport.write(b"two"))
        self.pump.flush()
        self.assertIs(self.successResultOf(d1), first)
        self.assertIs(self.successResultOf(d2), second)
        self.assertEqual((first.received, second.received), (b"one", b"two"))

    def test_lateStreamOfATimedOutRequestIsClosedAndTheNextGetsItsOwn(self) -> None:
        """
        A request that timed out fails with L{StreamTimeout}; the stream
        that arrives for it later is closed, and the next request gets the
        stream after it.
        """
        timedOut = self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder())
        self.clock.advance(6)
        waiting = HalfCloseRecorder()
        stillWaiting = self.session.requestStream(TransportProtocol.HTTP, 0, waiting)
        self.clock.advance(4)
        self.failureResultOf(timedOut, StreamTimeout)
        self.assertNoResult(stillWaiting)
        late, next = HalfCloseRecorder(), HalfCloseRecorder()
        self.client.openStream(late)
        self.client.openStream(next)
        late.transport.write(b"for the timed-out request")
        self.pump.flush()
        self.assertTrue(late.readEnded)
        self.assertEqual(late.received, b"")
        self.assertIs(self.successResultOf(stillWaiting), waiting)
        next.transport.write(b"mine")
        self.pump.flush()
        self.assertEqual(waiting.received, b"mine")

    def test_streamOfACancelledRequestIsClosed(self) -> None:
        """
        A request given up by its caller consumes the next stream, which is
        closed.
        """
        cancelled = self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder())
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        waiting = HalfCloseRecorder()
        d = self.session.requestStream(TransportProtocol.HTTP, 0, waiting)
        late = HalfCloseRecorder()
        self.client.openStream(late)
        self.client.openStream(HalfCloseRecorder())
        self.pump.flush()
        self.assertTrue(late.readEnded)
        self.assertIs(self.successResultOf(d), waiting)

    def test_streamNobodyAskedForIsRefused(self) -> None:
        """A stream opened without a request is refused with RST."""
        opened = self.client.openStream(HalfCloseRecorder())
        self.pump.flush()
        self.failureResultOf(opened, StreamRefusedError)
        self.assertFalse(self.ended())

    def test_floodOfStreamsNobodyAskedForIsLoggedSparingly(self) -> None:
        """
        A client that opens a thousand streams nobody asked for has each
        refused, the session going on, but makes the server log four lines
        (at the 1st, 10th, 100th and 1000th), not a thousand.
        """
        opened = []
        for _ in range(10):
            opened += [self.client.openStream(HalfCloseRecorder()) for _ in range(100)]
            self.pump.flush()
        for d in opened:
            self.failureResultOf(d, StreamRefusedError)
        self.assertFalse(self.ended())
        refusals = [line for line in self.logged if "nobody asked for" in line]
        self.assertEqual(
            [line.rsplit("(", 1)[1] for line in refusals],
            [f"{count} such streams so far)" for count in (1, 10, 100, 1000)],
        )

    def test_requestsBeyondTheLimitFail(self) -> None:
        """
        A client may owe no more streams than the limit, timed-out ones
        included; asking for more fails with L{TooManyPendingStreams}.
        """
        for _ in range(3):
            self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder()).addErrback(
                lambda f: None
            )
        self.clock.advance(10)
        self.failureResultOf(
            self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder()),
            TooManyPendingStreams,
        )
        self.client.openStream(HalfCloseRecorder())
        self.pump.flush()
        self.assertNoResult(self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder()))

    def test_closingFailsWaitingRequestsAndSendsGoAway(self) -> None:
        """
        Closing the session fails the requests waiting for a stream, sends
        Go Away and closes the control stream; the connection closes once
        the open streams have finished.
        """
        busy = HalfCloseRecorder()
        self.session.requestStream(TransportProtocol.HTTP, 0, busy)
        self.client.openStream(HalfCloseRecorder())
        self.pump.flush()
        waiting = self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder())
        closed = self.session.close("testing")
        self.pump.flush()
        self.failureResultOf(waiting, SessionEndedError)
        self.assertEqual(self.goAways, [0])
        self.assertTrue(self.control.readEnded)
        self.assertNoResult(closed)
        self.failureResultOf(
            self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder()),
            SessionEndedError,
        )
        busy.transport.loseConnection()
        self.pump.flush()
        self.successResultOf(closed)
        [(session, reason)] = self.observer.ended
        self.assertTrue(reason.check(SessionEndedError))
        self.assertIn("testing", reason.getErrorMessage())

    def test_endOfTheConnectionFailsWaitingRequests(self) -> None:
        """Requests waiting for a stream fail when the connection is lost."""
        waiting = self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder())
        self.pump.clientIO.loseConnection()
        self.pump.flush()
        self.failureResultOf(waiting, SessionEndedError)
        self.assertFalse(self.session.ready)


class BurstTests(SessionTestCase):
    """Every stream a client may owe, opened at once."""

    def test_everyStreamOwedIsTakenFromOneRead(self) -> None:
        """
        As many streams as a client may owe (1000, more than yamux's
        accept backlog of 256), opened in a burst that arrives in one read,
        all go to their requests: none is refused.
        """
        self.openControl()
        owed = self.settings.maxPendingStreams
        requests = [
            self.session.requestStream(TransportProtocol.HTTP, 0, HalfCloseRecorder())
            for _ in range(owed)
        ]
        self.pump.flush()
        opened = [self.client.openStream(HalfCloseRecorder()) for _ in range(owed)]
        self.pump.flush()
        self.assertEqual([d.called for d in opened], [True] * owed)
        self.assertEqual(
            sum(isinstance(self.successResultOf(d), HalfCloseRecorder) for d in requests), owed
        )


class ServerStreamsTests(SessionTestCase):
    """
    With a client that accepted the server-streams extension, the server
    opens each stream itself, the control message its first line, and
    sends nothing on the control stream.
    """

    settings = SessionSettings(maxPendingStreams=2)
    serverStreams = True

    def setUp(self) -> None:
        super().setUp()
        self.opened = RecordingFactory(HalfCloseRecorder)
        self.client.streamFactory = self.opened
        self.control = self.openControl()

    def test_requestOpensAnnouncedStreamAtOnce(self) -> None:
        """
        A request is connected to a new server stream at once, and what it
        writes follows the control message on that stream.
        """
        protocol = HalfCloseRecorder()
        connected = self.session.requestStream(TransportProtocol.WEBSOCKET, 8080, protocol)
        self.assertIs(self.successResultOf(connected), protocol)
        protocol.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        self.pump.flush()
        [stream] = self.opened.built
        self.assertEqual(stream.transport.streamID % 2, 0)
        self.assertEqual(
            stream.received,
            b'{"action":1,"transportProtocol":3,"localPort":8080}\nGET / HTTP/1.1\r\n\r\n',
        )
        self.assertEqual(self.control.received, b"controlOk")
        stream.transport.write(b"answer")
        self.pump.flush()
        self.assertEqual(protocol.received, b"answer")

    def test_refusedStreamEndsTheRequestsConnection(self) -> None:
        """A stream the client refuses (resets) ends the protocol's connection."""
        self.client.streamFactory = None
        protocol = HalfCloseRecorder()
        self.successResultOf(self.session.requestStream(TransportProtocol.HTTP, 80, protocol))
        self.pump.flush()
        self.assertTrue(protocol.lost.check(StreamResetError))

    def test_streamsNotAcknowledgedAreLimited(self) -> None:
        """
        While the client has not acknowledged C{maxPendingStreams} streams,
        further requests fail with L{TooManyPendingStreams}; once it has,
        requests go on.
        """
        for _ in range(2):
            self.successResultOf(
                self.session.requestStream(TransportProtocol.HTTP, 80, HalfCloseRecorder())
            )
        self.failureResultOf(
            self.session.requestStream(TransportProtocol.HTTP, 80, HalfCloseRecorder()),
            TooManyPendingStreams,
        )
        self.pump.flush()
        self.successResultOf(self.session.requestStream(TransportProtocol.HTTP, 80, HalfCloseRecorder()))

    def test_requestAfterTheSessionEndedFails(self) -> None:
        """Once the session is closing, a request fails at once."""
        self.session.close("test")
        self.failureResultOf(
            self.session.requestStream(TransportProtocol.HTTP, 80, HalfCloseRecorder()),
            SessionEndedError,
        )
