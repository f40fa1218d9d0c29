"""
Tests for L{tunnel.yamux.session.Session}, the sans-IO yamux state machine.

Flows use two sessions wired together (a client and a server, moving
L{Session.dataToSend} of one into L{Session.receiveData} of the other); odd
frames are built by hand with L{encodeFrame}. Output is parsed back into
C{(type, flags, streamID, length, payload)} tuples so that assertions are
exact.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.test.support import Frame, parseFrames
from tunnel.yamux import (
    INITIAL_WINDOW,
    Flag,
    FrameType,
    GoAwayCode,
    Session,
    SessionClosedError,
    SessionConfig,
    SessionGoingAwayError,
    StreamLimitError,
    UnknownStreamError,
    YamuxError,
    encodeFrame,
)
from tunnel.yamux.events import (
    DataReceived,
    GoAwayReceived,
    PingAcknowledged,
    SendBufferDrained,
    SessionTerminated,
    StreamAccepted,
    StreamClosed,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from tunnel.yamux.frames import MAX_UINT32

DATA = FrameType.DATA
WINDOW_UPDATE = FrameType.WINDOW_UPDATE
PING = FrameType.PING
GO_AWAY = FrameType.GO_AWAY
SYN = Flag.SYN
ACK = Flag.ACK
FIN = Flag.FIN
RST = Flag.RST

#: The exact bytes of a Go Away frame with code 1 (protocol error).
PROTOCOL_ERROR_GO_AWAY = b"\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"


def sent(session: Session) -> list[Frame]:
    """The frames a session queued since the last call, parsed."""
    return parseFrames(session.dataToSend())


class Pair:
    """
    A client session and a server session, wired together by hand.
    """

    def __init__(
        self,
        clientConfig: SessionConfig | None = None,
        serverConfig: SessionConfig | None = None,
    ) -> None:
        self.client = Session(clientConfig, isClient=True)
        self.server = Session(serverConfig, isClient=False)

    def toServer(self) -> list[object]:
        """Deliver what the client queued to the server; return its events."""
        return self.server.receiveData(self.client.dataToSend())

    def toClient(self) -> list[object]:
        """Deliver what the server queued to the client; return its events."""
        return self.client.receiveData(self.server.dataToSend())

    def establish(self) -> int:
        """Open a stream from the client and have the server accept it."""
        streamID = self.client.openStream()
        events = self.toServer()
        assert events == [StreamOpened(streamID)], events
        self.server.acceptStream(streamID)
        events = self.toClient()
        assert events == [StreamAccepted(streamID)], events
        return streamID


def exhaustSendWindow(pair: Pair, streamID: int) -> None:
    """
    Have the client fill the server's receive window of a stream, and the
    server take the bytes without acknowledging them.
    """
    pair.client.sendData(streamID, b"\x00" * pair.client.sendWindow(streamID))
    events = pair.toServer()
    assert sum(len(e.data) for e in events) == INITIAL_WINDOW  # type: ignore[attr-defined]
    assert pair.client.sendWindow(streamID) == 0


class OpeningTests(SynchronousTestCase):
    """
    Opening, accepting and acknowledging streams.
    """

    def test_openSendsSynWindowUpdateWithZeroDelta(self) -> None:
        """
        Opening a stream with the default window queues exactly a Window
        Update carrying SYN with delta 0.
        """
        session = Session()
        self.assertEqual(session.openStream(), 1)
        self.assertEqual(
            session.dataToSend(), b"\x00\x01\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00"
        )
        self.assertEqual(session.sendWindow(1), INITIAL_WINDOW)
        self.assertEqual(session.receiveWindow(1), INITIAL_WINDOW)

    def test_openWithLargerWindowAnnouncesTheDifference(self) -> None:
        """
        With a C{maxStreamWindow} above 256 KiB, the SYN's delta is the
        difference and the stream's receive window is the larger value; the
        send window stays at the protocol's 256 KiB.
        """
        session = Session(SessionConfig(maxStreamWindow=1024 * 1024))
        streamID = session.openStream()
        self.assertEqual(
            sent(session), [(WINDOW_UPDATE, SYN, 1, 1024 * 1024 - INITIAL_WINDOW, b"")]
        )
        self.assertEqual(session.receiveWindow(streamID), 1024 * 1024)
        self.assertEqual(session.sendWindow(streamID), INITIAL_WINDOW)

    def test_clientStreamIDsAreOddFromOne(self) -> None:
        """The client opens streams 1, 3, 5, ..."""
        session = Session(isClient=True)
        self.assertEqual([session.openStream() for _ in range(4)], [1, 3, 5, 7])
        self.assertEqual(
            [f[2] for f in sent(session)], [1, 3, 5, 7]
        )

    def test_serverStreamIDsAreEvenFromTwo(self) -> None:
        """The server opens streams 2, 4, 6, ..."""
        session = Session(isClient=False)
        self.assertEqual([session.openStream() for _ in range(4)], [2, 4, 6, 8])
        self.assertEqual(
            sent(session),
            [(WINDOW_UPDATE, SYN, i, 0, b"") for i in (2, 4, 6, 8)],
        )

    def test_synYieldsStreamOpened(self) -> None:
        """
        A SYN from the peer yields L{StreamOpened}; nothing is answered
        until the stream is accepted.
        """
        pair = Pair()
        pair.client.openStream()
        self.assertEqual(pair.toServer(), [StreamOpened(1)])
        self.assertTrue(pair.server.hasStream(1))
        self.assertEqual(pair.server.streamIDs, [1])
        self.assertEqual(pair.server.dataToSend(), b"")

    def test_serverOpenedStreamReachesClient(self) -> None:
        """Streams the server opens arrive at the client with even IDs."""
        pair = Pair()
        self.assertEqual(pair.server.openStream(), 2)
        self.assertEqual(pair.toClient(), [StreamOpened(2)])
        pair.client.acceptStream(2)
        self.assertEqual(pair.toServer(), [StreamAccepted(2)])

    def test_acceptSendsAckWindowUpdate(self) -> None:
        """Accepting queues exactly a Window Update carrying ACK, delta 0."""
        pair = Pair()
        pair.client.openStream()
        pair.toServer()
        pair.server.acceptStream(1)
        self.assertEqual(
            pair.server.dataToSend(),
            b"\x00\x01\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00",
        )

    def test_acceptWithLargerWindowAnnouncesTheDifference(self) -> None:
        """
        A server with a larger window announces the difference in its ACK,
        and the client's send window grows by it.
        """
        pair = Pair(serverConfig=SessionConfig(maxStreamWindow=INITIAL_WINDOW + 1000))
        pair.client.openStream()
        pair.toServer()
        self.assertEqual(pair.server.receiveWindow(1), INITIAL_WINDOW + 1000)
        pair.server.acceptStream(1)
        ack = pair.server.dataToSend()
        self.assertEqual(ack, b"\x00\x01\x00\x02\x00\x00\x00\x01\x00\x00\x03\xe8")
        self.assertEqual(pair.client.receiveData(ack), [StreamAccepted(1)])
        self.assertEqual(pair.client.sendWindow(1), INITIAL_WINDOW + 1000)

    def test_synWithLargerWindowGrowsPeerSendWindow(self) -> None:
        """
        The delta carried by the opener's SYN is added to the acceptor's send
        window.
        """
        pair = Pair(clientConfig=SessionConfig(maxStreamWindow=INITIAL_WINDOW * 2))
        pair.client.openStream()
        pair.toServer()
        self.assertEqual(pair.server.sendWindow(1), INITIAL_WINDOW * 2)
        self.assertEqual(pair.server.receiveWindow(1), INITIAL_WINDOW)

    def test_ackYieldsStreamAccepted(self) -> None:
        """The peer's ACK yields L{StreamAccepted} once."""
        pair = Pair()
        pair.client.openStream()
        pair.toServer()
        pair.server.acceptStream(1)
        self.assertEqual(pair.toClient(), [StreamAccepted(1)])
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, ACK, 1, 0)), []
        )

    def test_dataBeforeAckIsAllowed(self) -> None:
        """
        The opener may send data right after its SYN; the peer sees the
        stream open and then the data.
        """
        pair = Pair()
        streamID = pair.client.openStream()
        pair.client.sendData(streamID, b"early")
        data = pair.client.dataToSend()
        self.assertEqual(
            parseFrames(data),
            [(WINDOW_UPDATE, SYN, 1, 0, b""), (DATA, 0, 1, 5, b"early")],
        )
        self.assertEqual(
            pair.server.receiveData(data),
            [StreamOpened(streamID), DataReceived(streamID, b"early")],
        )
        self.assertIsNone(pair.server.terminated)

    def test_synOnDataFrameOpensAndDelivers(self) -> None:
        """A SYN may ride on a Data frame: the stream opens, then the data."""
        session = Session(isClient=False)
        self.assertEqual(
            session.receiveData(encodeFrame(DATA, SYN, 1, 3, b"abc")),
            [StreamOpened(1), DataReceived(1, b"abc")],
        )
        self.assertEqual(session.receiveWindow(1), INITIAL_WINDOW - 3)

    def test_acceptTwiceRaises(self) -> None:
        """A stream can be accepted only once."""
        pair = Pair()
        streamID = pair.establish()
        self.assertRaises(YamuxError, pair.server.acceptStream, streamID)

    def test_acceptOwnStreamRaises(self) -> None:
        """A stream we opened cannot be accepted."""
        session = Session()
        streamID = session.openStream()
        self.assertRaises(YamuxError, session.acceptStream, streamID)

    def test_acceptUnknownStreamRaises(self) -> None:
        """Accepting a stream that does not exist raises."""
        self.assertRaises(UnknownStreamError, Session().acceptStream, 2)

    def test_awaitsAcceptanceWhileThePeersStreamWaits(self) -> None:
        """
        C{awaitsAcceptance} holds for a stream the peer opened until it is
        accepted or gone; never for our own streams or unknown ones, even
        when the same read that opened the stream reset it.
        """
        pair = Pair()
        streamID = pair.client.openStream()
        self.assertFalse(pair.client.awaitsAcceptance(streamID))
        pair.toServer()
        self.assertTrue(pair.server.awaitsAcceptance(streamID))
        pair.server.acceptStream(streamID)
        self.assertFalse(pair.server.awaitsAcceptance(streamID))
        server = Session(isClient=False)
        events = server.receiveData(
            encodeFrame(WINDOW_UPDATE, SYN, 1, 0) + encodeFrame(WINDOW_UPDATE, RST, 1, 0)
        )
        self.assertEqual(events, [StreamOpened(1), StreamReset(1)])
        self.assertFalse(server.awaitsAcceptance(1))
        self.assertFalse(server.awaitsAcceptance(3))

    def test_idReusedInOneReadIsRefused(self) -> None:
        """
        Within one read a stream ID names one stream: a SYN that reuses the
        ID of a stream gone earlier in the same read is refused with RST and
        keeps no state; in a later read the ID may be used again.
        """
        server = Session(isClient=False)
        syn = encodeFrame(WINDOW_UPDATE, SYN, 1, 0)
        events = server.receiveData(syn + encodeFrame(WINDOW_UPDATE, RST, 1, 0) + syn)
        self.assertEqual(events, [StreamOpened(1), StreamReset(1)])
        self.assertEqual(sent(server), [(WINDOW_UPDATE, RST, 1, 0, b"")])
        self.assertEqual(server.streamIDs, [])
        self.assertEqual(server.receiveData(syn), [StreamOpened(1)])


class SendingTests(SynchronousTestCase):
    """
    Writing to a stream within and beyond the peer's window.
    """

    def test_sendWithinWindowIsOneDataFrame(self) -> None:
        """Data that fits the window goes out at once as one Data frame."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.sendData(streamID, b"hello")
        self.assertEqual(
            pair.client.dataToSend(),
            b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x05hello",
        )
        self.assertEqual(pair.client.sendWindow(streamID), INITIAL_WINDOW - 5)
        self.assertEqual(pair.client.bufferedAmount(streamID), 0)

    def test_sendEmptyDataSendsNothing(self) -> None:
        """Writing no bytes queues no frame."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.sendData(streamID, b"")
        self.assertEqual(pair.client.dataToSend(), b"")

    def test_sendExactlyTheWindow(self) -> None:
        """Data exactly as large as the window goes out whole."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.sendData(streamID, b"a" * INITIAL_WINDOW)
        self.assertEqual(
            [f[:4] for f in sent(pair.client)], [(DATA, 0, 1, INITIAL_WINDOW)]
        )
        self.assertEqual(pair.client.bufferedAmount(streamID), 0)
        self.assertEqual(pair.client.sendWindow(streamID), 0)

    def test_sendBeyondWindowBuffersTheRest(self) -> None:
        """
        What exceeds the window is held back: the window's worth goes out,
        the rest is reported by L{Session.bufferedAmount}.
        """
        pair = Pair()
        streamID = pair.establish()
        pair.client.sendData(streamID, b"a" * (INITIAL_WINDOW - 10) + b"b" * 110)
        frames = sent(pair.client)
        self.assertEqual(len(frames), 1)
        self.assertEqual(frames[0][:4], (DATA, 0, 1, INITIAL_WINDOW))
        self.assertEqual(frames[0][4], b"a" * (INITIAL_WINDOW - 10) + b"b" * 10)
        self.assertEqual(pair.client.bufferedAmount(streamID), 100)
        self.assertEqual(pair.client.sendWindow(streamID), 0)

    def test_writesWithoutWindowAreBuffered(self) -> None:
        """With the window exhausted, writes queue nothing."""
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"abc")
        pair.client.sendData(streamID, b"de")
        self.assertEqual(pair.client.dataToSend(), b"")
        self.assertEqual(pair.client.bufferedAmount(streamID), 5)

    def test_windowUpdateSendsBufferedDataCoalesced(self) -> None:
        """
        A Window Update sends the buffered writes as one Data frame and,
        once everything is out, yields L{SendBufferDrained}.
        """
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        for piece in (b"abc", b"de", b"f"):
            pair.client.sendData(streamID, piece)
        events = pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 10))
        self.assertEqual(events, [SendBufferDrained(streamID)])
        self.assertEqual(sent(pair.client), [(DATA, 0, 1, 6, b"abcdef")])
        self.assertEqual(pair.client.bufferedAmount(streamID), 0)
        self.assertEqual(pair.client.sendWindow(streamID), 4)

    def test_partialWindowUpdateSendsPartOfTheBuffer(self) -> None:
        """
        A Window Update smaller than what is buffered sends that much, splits
        a write if needed, and yields no L{SendBufferDrained}.
        """
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"0123")
        pair.client.sendData(streamID, b"456789")
        events = pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 6))
        self.assertEqual(events, [])
        self.assertEqual(sent(pair.client), [(DATA, 0, 1, 6, b"012345")])
        self.assertEqual(pair.client.bufferedAmount(streamID), 4)
        self.assertEqual(pair.client.sendWindow(streamID), 0)
        events = pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 4))
        self.assertEqual(events, [SendBufferDrained(streamID)])
        self.assertEqual(sent(pair.client), [(DATA, 0, 1, 4, b"6789")])

    def test_writeWhileBufferedQueuesBehind(self) -> None:
        """
        A write made while data is buffered goes behind it, even once some
        window is granted.
        """
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"first")
        pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 2))
        self.assertEqual(sent(pair.client), [(DATA, 0, 1, 2, b"fi")])
        pair.client.sendData(streamID, b"second")
        self.assertEqual(pair.client.dataToSend(), b"")
        pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 100))
        self.assertEqual(sent(pair.client), [(DATA, 0, 1, 9, b"rstsecond")])

    def test_windowUpdateWithoutBufferGrowsWindowOnly(self) -> None:
        """
        A Window Update with nothing buffered grows the send window and
        yields nothing.
        """
        pair = Pair()
        streamID = pair.establish()
        events = pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 500))
        self.assertEqual(events, [])
        self.assertEqual(pair.client.sendWindow(streamID), INITIAL_WINDOW + 500)
        self.assertEqual(pair.client.dataToSend(), b"")

    def test_zeroWindowUpdateSendsNothing(self) -> None:
        """A Window Update with delta 0 does not flush the buffer."""
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"x")
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 0)), []
        )
        self.assertEqual(pair.client.dataToSend(), b"")
        self.assertEqual(pair.client.bufferedAmount(streamID), 1)

    def test_dataArrivesIntact(self) -> None:
        """What one side writes, the other receives, in order."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.sendData(streamID, b"ping")
        pair.server.sendData(streamID, b"pong")
        self.assertEqual(pair.toServer(), [DataReceived(streamID, b"ping")])
        self.assertEqual(pair.toClient(), [DataReceived(streamID, b"pong")])


class ClosingTests(SynchronousTestCase):
    """
    Half-closing streams with FIN.
    """

    def test_closeSendsFinWindowUpdate(self) -> None:
        """Closing queues exactly a Window Update carrying FIN, delta 0."""
        pair = Pair()
        streamID = pair.establish()
        self.assertEqual(pair.client.closeStream(streamID), [])
        self.assertEqual(
            pair.client.dataToSend(),
            b"\x00\x01\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00",
        )
        self.assertTrue(pair.client.hasStream(streamID))

    def test_closeTwiceSendsOneFin(self) -> None:
        """A second close does nothing."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.closeStream(streamID)
        pair.client.dataToSend()
        self.assertEqual(pair.client.closeStream(streamID), [])
        self.assertEqual(pair.client.dataToSend(), b"")

    def test_closeWithBufferedDataSendsFinAfterDrain(self) -> None:
        """
        Closing with data buffered holds the FIN back until the buffer
        drains; then the data and the FIN go out in that order.
        """
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"tail")
        self.assertEqual(pair.client.closeStream(streamID), [])
        self.assertEqual(pair.client.dataToSend(), b"")
        self.assertRaises(YamuxError, pair.client.sendData, streamID, b"more")
        events = pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 2))
        self.assertEqual(events, [])
        self.assertEqual(sent(pair.client), [(DATA, 0, 1, 2, b"ta")])
        events = pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 2))
        self.assertEqual(events, [SendBufferDrained(streamID)])
        self.assertEqual(
            sent(pair.client),
            [(DATA, 0, 1, 2, b"il"), (WINDOW_UPDATE, FIN, 1, 0, b"")],
        )

    def test_peerFinYieldsStreamEnded(self) -> None:
        """The peer's FIN yields L{StreamEnded}; the stream lives on."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.closeStream(streamID)
        self.assertEqual(pair.toServer(), [StreamEnded(streamID)])
        self.assertTrue(pair.server.hasStream(streamID))

    def test_halfClosedStreamStillCarriesTheOtherDirection(self) -> None:
        """After our FIN, the peer may still send, and we receive it."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.closeStream(streamID)
        pair.toServer()
        pair.server.sendData(streamID, b"reply")
        self.assertEqual(pair.toClient(), [DataReceived(streamID, b"reply")])

    def test_finOnDataFrameDeliversDataFirst(self) -> None:
        """A FIN riding on a Data frame ends the stream after its payload."""
        pair = Pair()
        streamID = pair.establish()
        events = pair.server.receiveData(encodeFrame(DATA, FIN, streamID, 3, b"end"))
        self.assertEqual(events, [DataReceived(streamID, b"end"), StreamEnded(streamID)])

    def test_finOnSplitDataFrameDeliversDataFirst(self) -> None:
        """
        When the payload of a Data frame carrying FIN arrives in pieces,
        L{StreamEnded} comes only after the last piece.
        """
        pair = Pair()
        streamID = pair.establish()
        frame = encodeFrame(DATA, FIN, streamID, 6, b"abcdef")
        events: list[object] = []
        for i in range(len(frame)):
            new = pair.server.receiveData(frame[i : i + 1])
            if i < len(frame) - 1:
                self.assertNotIn(StreamEnded(streamID), new)
            events.extend(new)
        self.assertEqual(
            events,
            [DataReceived(streamID, bytes([c])) for c in b"abcdef"]
            + [StreamEnded(streamID)],
        )

    def test_finOnDataFrameSplitAcrossHeaderAndPayload(self) -> None:
        """The payload of a FIN frame split in two chunks."""
        pair = Pair()
        streamID = pair.establish()
        frame = encodeFrame(DATA, FIN, streamID, 6, b"abcdef")
        self.assertEqual(pair.server.receiveData(frame[:14]), [DataReceived(1, b"ab")])
        self.assertEqual(
            pair.server.receiveData(frame[14:]),
            [DataReceived(1, b"cdef"), StreamEnded(1)],
        )

    def test_bothFinsCloseAndForgetTheStream(self) -> None:
        """
        Once both sides sent FIN, each yields L{StreamClosed} and forgets
        the stream.
        """
        pair = Pair()
        streamID = pair.establish()
        pair.client.closeStream(streamID)
        self.assertEqual(pair.toServer(), [StreamEnded(streamID)])
        self.assertEqual(pair.server.closeStream(streamID), [StreamClosed(streamID)])
        self.assertFalse(pair.server.hasStream(streamID))
        self.assertEqual(pair.server.streamIDs, [])
        self.assertEqual(pair.toClient(), [StreamEnded(streamID), StreamClosed(streamID)])
        self.assertFalse(pair.client.hasStream(streamID))
        self.assertRaises(UnknownStreamError, pair.client.closeStream, streamID)
        self.assertRaises(UnknownStreamError, pair.client.sendData, streamID, b"x")
        self.assertEqual(pair.client.describeStream(streamID), "stream 1 (gone)")

    def test_drainAfterPeerFinClosesTheStream(self) -> None:
        """
        A FIN held back by buffered data, sent once the peer grants window
        after its own FIN, closes the stream.
        """
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"xy")
        pair.client.closeStream(streamID)
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, FIN, streamID, 0)),
            [StreamEnded(streamID)],
        )
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 5)),
            [SendBufferDrained(streamID), StreamClosed(streamID)],
        )
        self.assertEqual(
            sent(pair.client),
            [(DATA, 0, 1, 2, b"xy"), (WINDOW_UPDATE, FIN, 1, 0, b"")],
        )
        self.assertFalse(pair.client.hasStream(streamID))

    def test_windowUpdateWithFinDrainsThenEnds(self) -> None:
        """
        A Window Update that grants window and carries the peer's FIN sends
        the buffered data and our pending FIN, then closes the stream.
        """
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"xy")
        pair.client.closeStream(streamID)
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, FIN, streamID, 5)),
            [SendBufferDrained(streamID), StreamEnded(streamID), StreamClosed(streamID)],
        )
        self.assertEqual(
            sent(pair.client),
            [(DATA, 0, 1, 2, b"xy"), (WINDOW_UPDATE, FIN, 1, 0, b"")],
        )

    def test_sendAfterCloseRaises(self) -> None:
        """Writing to a stream we half-closed raises L{YamuxError}."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.closeStream(streamID)
        self.assertRaises(YamuxError, pair.client.sendData, streamID, b"late")

    def test_dataAfterFinIsProtocolError(self) -> None:
        """Data from the peer after its FIN is a protocol error."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.closeStream(streamID)
        pair.toServer()
        events = pair.server.receiveData(encodeFrame(DATA, 0, streamID, 1, b"x"))
        self.assertProtocolError(pair.server, events)

    def test_secondFinIsProtocolError(self) -> None:
        """A second FIN from the peer is a protocol error."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.closeStream(streamID)
        pair.toServer()
        events = pair.server.receiveData(encodeFrame(WINDOW_UPDATE, FIN, streamID, 0))
        self.assertProtocolError(pair.server, events)

    def assertProtocolError(self, session: Session, events: list[object]) -> None:
        """The session sent Go Away code 1 and ended."""
        self.assertEqual(len(events), 1)
        event = events[0]
        assert isinstance(event, SessionTerminated)
        self.assertEqual(event.code, GoAwayCode.PROTOCOL_ERROR)
        self.assertFalse(event.byPeer)
        self.assertEqual(session.dataToSend(), PROTOCOL_ERROR_GO_AWAY)


class ResetTests(SynchronousTestCase):
    """
    Resetting streams with RST.
    """

    def test_resetSendsRstAndForgetsTheStream(self) -> None:
        """Resetting queues exactly a Window Update carrying RST."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.resetStream(streamID)
        self.assertEqual(
            pair.client.dataToSend(),
            b"\x00\x01\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00",
        )
        self.assertFalse(pair.client.hasStream(streamID))

    def test_resetUnknownStreamDoesNothing(self) -> None:
        """Resetting a stream that is gone queues nothing."""
        session = Session()
        session.resetStream(1)
        self.assertEqual(session.dataToSend(), b"")

    def test_peerRstYieldsStreamReset(self) -> None:
        """The peer's RST yields L{StreamReset} and the stream is gone."""
        pair = Pair()
        streamID = pair.establish()
        pair.server.resetStream(streamID)
        self.assertEqual(pair.toClient(), [StreamReset(streamID)])
        self.assertFalse(pair.client.hasStream(streamID))

    def test_peerRstDropsBufferedData(self) -> None:
        """
        Data buffered for a stream the peer resets is dropped: a later
        Window Update for it sends nothing.
        """
        pair = Pair()
        streamID = pair.establish()
        exhaustSendWindow(pair, streamID)
        pair.client.sendData(streamID, b"doomed")
        pair.client.closeStream(streamID)
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, RST, streamID, 0)),
            [StreamReset(streamID)],
        )
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, 100)), []
        )
        self.assertEqual(pair.client.dataToSend(), b"")

    def test_refusingAStreamByResetting(self) -> None:
        """
        Resetting a stream instead of accepting it refuses it: the opener
        sees L{StreamReset}.
        """
        pair = Pair()
        streamID = pair.client.openStream()
        pair.toServer()
        pair.server.resetStream(streamID)
        self.assertEqual(pair.toClient(), [StreamReset(streamID)])
        self.assertFalse(pair.client.hasStream(streamID))

    def test_rstOnDataFrameDeliversDataFirst(self) -> None:
        """An RST riding on a Data frame resets the stream after its payload."""
        pair = Pair()
        streamID = pair.establish()
        self.assertEqual(
            pair.server.receiveData(encodeFrame(DATA, RST, streamID, 2, b"ok")),
            [DataReceived(streamID, b"ok"), StreamReset(streamID)],
        )

    def test_resetDuringPayloadDiscardsTheRest(self) -> None:
        """
        Resetting a stream while a Data frame for it is half received drops
        the rest of the payload, and the next frame is parsed correctly.
        """
        pair = Pair()
        streamID = pair.establish()
        frame = encodeFrame(DATA, FIN, streamID, 6, b"abcdef")
        self.assertEqual(pair.server.receiveData(frame[:15]), [DataReceived(1, b"abc")])
        pair.server.resetStream(streamID)
        pair.server.dataToSend()
        events = pair.server.receiveData(frame[15:] + encodeFrame(PING, SYN, 0, 9))
        self.assertEqual(events, [])
        self.assertEqual(sent(pair.server), [(PING, ACK, 0, 9, b"")])


class ReceiveWindowTests(SynchronousTestCase):
    """
    Granting window back to the peer, and enforcing the window granted.
    """

    def receive(self, pair: Pair, streamID: int, size: int) -> None:
        pair.client.sendData(streamID, b"r" * size)
        events = pair.toServer()
        self.assertEqual(sum(len(e.data) for e in events), size)  # type: ignore[attr-defined]

    def test_acknowledgeBelowHalfTheWindowSendsNothing(self) -> None:
        """No Window Update goes out until half the window is consumed."""
        pair = Pair()
        streamID = pair.establish()
        self.receive(pair, streamID, 200000)
        pair.server.acknowledgeReceivedData(streamID, INITIAL_WINDOW // 2 - 1)
        self.assertEqual(pair.server.dataToSend(), b"")
        self.assertEqual(pair.server.receiveWindow(streamID), INITIAL_WINDOW - 200000)

    def test_acknowledgeHalfTheWindowSendsExactDelta(self) -> None:
        """
        Once half the window is consumed, a Window Update grants exactly
        what was consumed, and the receive window grows by it.
        """
        pair = Pair()
        streamID = pair.establish()
        self.receive(pair, streamID, 200000)
        pair.server.acknowledgeReceivedData(streamID, 100000)
        self.assertEqual(pair.server.dataToSend(), b"")
        pair.server.acknowledgeReceivedData(streamID, 31072)
        update = pair.server.dataToSend()
        self.assertEqual(update, b"\x00\x01\x00\x00\x00\x00\x00\x01\x00\x02\x00\x00")
        self.assertEqual(
            pair.server.receiveWindow(streamID), INITIAL_WINDOW - 200000 + 131072
        )
        self.assertEqual(pair.client.receiveData(update), [])
        self.assertEqual(
            pair.client.sendWindow(streamID), INITIAL_WINDOW - 200000 + 131072
        )

    def test_acknowledgeIsCappedAtWhatWasReceived(self) -> None:
        """Acknowledging more than was received grants only what was."""
        pair = Pair()
        streamID = pair.establish()
        self.receive(pair, streamID, 140000)
        pair.server.acknowledgeReceivedData(streamID, 10**9)
        self.assertEqual(sent(pair.server), [(WINDOW_UPDATE, 0, 1, 140000, b"")])
        self.assertEqual(pair.server.receiveWindow(streamID), INITIAL_WINDOW)
        pair.server.acknowledgeReceivedData(streamID, 10**9)
        self.assertEqual(pair.server.dataToSend(), b"")

    def test_acknowledgeWithLargerWindowUsesHalfOfIt(self) -> None:
        """With a larger window, the threshold is half of that window."""
        window = 4 * INITIAL_WINDOW
        pair = Pair(serverConfig=SessionConfig(maxStreamWindow=window))
        streamID = pair.establish()
        self.assertEqual(pair.client.sendWindow(streamID), window)
        self.receive(pair, streamID, window)
        pair.server.acknowledgeReceivedData(streamID, window // 2 - 1)
        self.assertEqual(pair.server.dataToSend(), b"")
        pair.server.acknowledgeReceivedData(streamID, 1)
        self.assertEqual(sent(pair.server), [(WINDOW_UPDATE, 0, 1, window // 2, b"")])

    def test_acknowledgeAfterPeerFinSendsNothing(self) -> None:
        """A stream the peer half-closed needs no more window."""
        pair = Pair()
        streamID = pair.establish()
        self.receive(pair, streamID, 200000)
        pair.client.closeStream(streamID)
        pair.toServer()
        pair.server.acknowledgeReceivedData(streamID, 200000)
        self.assertEqual(pair.server.dataToSend(), b"")

    def test_acknowledgeUnknownStreamDoesNothing(self) -> None:
        """Acknowledging data of a stream that is gone does nothing."""
        session = Session()
        session.acknowledgeReceivedData(5, 1000000)
        self.assertEqual(session.dataToSend(), b"")

    def test_exactlyTheWindowIsAccepted(self) -> None:
        """The peer may send exactly the window; one more byte is an error."""
        session = Session(isClient=False)
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0))
        events = session.receiveData(
            encodeFrame(DATA, 0, 1, INITIAL_WINDOW, b"w" * INITIAL_WINDOW)
        )
        self.assertEqual(events, [DataReceived(1, b"w" * INITIAL_WINDOW)])
        self.assertEqual(session.receiveWindow(1), 0)
        events = session.receiveData(encodeFrame(DATA, 0, 1, 1, b"!"))
        self.assertEqual(
            [(type(e), e.code, e.byPeer) for e in events],  # type: ignore[attr-defined]
            [(SessionTerminated, 1, False)],
        )

    def test_exceedingTheWindowIsProtocolError(self) -> None:
        """
        A Data frame larger than the remaining window ends the session with
        a Go Away carrying code 1, and later input is ignored.
        """
        session = Session(isClient=False)
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0))
        events = session.receiveData(
            encodeFrame(DATA, 0, 1, INITIAL_WINDOW + 1, b"w" * (INITIAL_WINDOW + 1))
        )
        self.assertEqual(len(events), 1)
        event = events[0]
        assert isinstance(event, SessionTerminated)
        self.assertEqual((event.code, event.byPeer), (GoAwayCode.PROTOCOL_ERROR, False))
        self.assertIn("window", event.reason)
        self.assertEqual(session.terminated, event)
        self.assertTrue(session.localGoAway)
        self.assertEqual(session.dataToSend(), PROTOCOL_ERROR_GO_AWAY)
        self.assertEqual(session.receiveData(encodeFrame(PING, SYN, 0, 1)), [])
        self.assertEqual(session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 3, 0)), [])
        self.assertEqual(session.dataToSend(), b"")


class ProtocolErrorTests(SynchronousTestCase):
    """
    Frames that break the protocol end the session with Go Away code 1.
    """

    def assertProtocolError(
        self, session: Session, data: bytes, reasonPart: str
    ) -> None:
        events = session.receiveData(data)
        self.assertEqual(len(events), 1, events)
        event = events[0]
        assert isinstance(event, SessionTerminated)
        self.assertEqual(event.code, GoAwayCode.PROTOCOL_ERROR)
        self.assertFalse(event.byPeer)
        self.assertIn(reasonPart, event.reason)
        self.assertEqual(session.dataToSend(), PROTOCOL_ERROR_GO_AWAY)
        self.assertEqual(session.receiveData(encodeFrame(PING, SYN, 0, 1)), [])
        self.assertEqual(session.dataToSend(), b"")

    def test_synForLiveStream(self) -> None:
        """A SYN for a stream that is live is a protocol error."""
        session = Session(isClient=False)
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0))
        self.assertProtocolError(
            session, encodeFrame(WINDOW_UPDATE, SYN, 1, 0), "duplicate SYN"
        )

    def test_synForAcceptedLiveStream(self) -> None:
        """A SYN for a stream already accepted is a protocol error too."""
        pair = Pair()
        streamID = pair.establish()
        self.assertProtocolError(
            pair.server, encodeFrame(DATA, SYN, streamID, 0), "duplicate SYN"
        )

    def test_synWithOwnParityAtServer(self) -> None:
        """The client may not open even stream IDs."""
        self.assertProtocolError(
            Session(isClient=False), encodeFrame(WINDOW_UPDATE, SYN, 2, 0), "stream 2"
        )

    def test_synWithOwnParityAtClient(self) -> None:
        """The server may not open odd stream IDs."""
        self.assertProtocolError(
            Session(isClient=True), encodeFrame(WINDOW_UPDATE, SYN, 3, 0), "stream 3"
        )

    def test_synForStreamZero(self) -> None:
        """Stream 0 is the session's and cannot be opened."""
        self.assertProtocolError(
            Session(isClient=True), encodeFrame(WINDOW_UPDATE, SYN, 0, 0), "session"
        )

    def test_invalidVersion(self) -> None:
        """A header with a version other than 0 is a protocol error."""
        self.assertProtocolError(
            Session(), b"\x01\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00", "version 1"
        )

    def test_invalidType(self) -> None:
        """A header with a type above 3 is a protocol error."""
        self.assertProtocolError(
            Session(), b"\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "type 4"
        )

    def test_invalidTypeAfterSplitHeader(self) -> None:
        """An invalid header is detected when it arrives in pieces too."""
        session = Session()
        header = b"\x00\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        for i in range(11):
            self.assertEqual(session.receiveData(header[i : i + 1]), [])
        self.assertProtocolError(session, header[11:], "type 255")

    def test_windowUpdateOverflow(self) -> None:
        """
        A Window Update that would take the send window past 2**32 - 1 is a
        protocol error; one that reaches it exactly is not.
        """
        pair = Pair()
        streamID = pair.establish()
        room = MAX_UINT32 - INITIAL_WINDOW
        self.assertEqual(
            pair.client.receiveData(encodeFrame(WINDOW_UPDATE, 0, streamID, room)), []
        )
        self.assertEqual(pair.client.sendWindow(streamID), MAX_UINT32)
        self.assertProtocolError(
            pair.client, encodeFrame(WINDOW_UPDATE, 0, streamID, 1), "overflows"
        )

    def test_framesAfterTheErrorInTheSameChunkAreIgnored(self) -> None:
        """Frames following the bad one in the same bytes are not processed."""
        session = Session()
        events = session.receiveData(
            b"\x00\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
            + encodeFrame(PING, SYN, 0, 5)
            + encodeFrame(WINDOW_UPDATE, SYN, 2, 0)
        )
        self.assertEqual([type(e) for e in events], [SessionTerminated])
        self.assertEqual(session.dataToSend(), PROTOCOL_ERROR_GO_AWAY)
        self.assertEqual(session.streamIDs, [])


class BacklogTests(SynchronousTestCase):
    """
    Refusing streams beyond the accept backlog, the inbound limit, or after
    our Go Away.
    """

    def test_synBeyondBacklogIsRefusedWithRst(self) -> None:
        """
        A SYN beyond C{acceptBacklog} unaccepted streams is answered with RST
        and yields no L{StreamOpened}.
        """
        session = Session(SessionConfig(acceptBacklog=2), isClient=False)
        self.assertEqual(
            session.receiveData(
                encodeFrame(WINDOW_UPDATE, SYN, 1, 0)
                + encodeFrame(WINDOW_UPDATE, SYN, 3, 0)
            ),
            [StreamOpened(1), StreamOpened(3)],
        )
        self.assertEqual(session.dataToSend(), b"")
        self.assertEqual(session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 5, 0)), [])
        self.assertEqual(
            session.dataToSend(), b"\x00\x01\x00\x08\x00\x00\x00\x05\x00\x00\x00\x00"
        )
        self.assertFalse(session.hasStream(5))
        self.assertIsNone(session.terminated)

    def test_acceptingFreesABacklogSlot(self) -> None:
        """After a stream is accepted, a new SYN is accepted too."""
        session = Session(SessionConfig(acceptBacklog=1), isClient=False)
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0))
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 3, 0))
        self.assertEqual(sent(session), [(WINDOW_UPDATE, RST, 3, 0, b"")])
        session.acceptStream(1)
        session.dataToSend()
        self.assertEqual(
            session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 5, 0)), [StreamOpened(5)]
        )
        self.assertEqual(session.dataToSend(), b"")

    def test_resettingFreesABacklogSlot(self) -> None:
        """Refusing an unaccepted stream frees its backlog slot."""
        session = Session(SessionConfig(acceptBacklog=1), isClient=False)
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0))
        session.resetStream(1)
        session.dataToSend()
        self.assertEqual(
            session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 3, 0)), [StreamOpened(3)]
        )

    def test_peerResetFreesABacklogSlot(self) -> None:
        """An unaccepted stream the peer resets frees its backlog slot."""
        session = Session(SessionConfig(acceptBacklog=1), isClient=False)
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0))
        self.assertEqual(
            session.receiveData(encodeFrame(WINDOW_UPDATE, RST, 1, 0)), [StreamReset(1)]
        )
        self.assertEqual(
            session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 3, 0)), [StreamOpened(3)]
        )

    def test_refusedDataSynPayloadIsDiscarded(self) -> None:
        """
        The payload of a refused SYN Data frame is skipped, and the next
        frame is parsed correctly.
        """
        session = Session(SessionConfig(acceptBacklog=1), isClient=False)
        session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0))
        events = session.receiveData(
            encodeFrame(DATA, SYN, 3, 4, b"\x00\x02\x00\x01")
            + encodeFrame(DATA, 0, 1, 2, b"ok")
        )
        self.assertEqual(events, [DataReceived(1, b"ok")])
        self.assertEqual(sent(session), [(WINDOW_UPDATE, RST, 3, 0, b"")])

    def test_maxInboundStreams(self) -> None:
        """
        A SYN beyond C{maxInboundStreams} open inbound streams is refused,
        even when they are all accepted; when one is gone, a new SYN is
        accepted.
        """
        pair = Pair(serverConfig=SessionConfig(maxInboundStreams=2))
        first = pair.establish()
        pair.establish()
        third = pair.client.openStream()
        self.assertEqual(pair.toServer(), [])
        self.assertEqual(sent(pair.server), [(WINDOW_UPDATE, RST, third, 0, b"")])
        pair.client.closeStream(first)
        pair.toServer()
        self.assertEqual(pair.server.closeStream(first), [StreamClosed(first)])
        fourth = pair.client.openStream()
        self.assertEqual(pair.toServer(), [StreamOpened(fourth)])

    def test_outboundStreamsDoNotCountAgainstInboundLimit(self) -> None:
        """Streams we open do not use up the peer's allowance."""
        session = Session(SessionConfig(maxInboundStreams=1), isClient=False)
        session.openStream()
        session.openStream()
        self.assertEqual(
            session.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 1, 0)), [StreamOpened(1)]
        )

    def test_synAfterGoAwayIsRefused(self) -> None:
        """After we sent Go Away, a new SYN is answered with RST."""
        pair = Pair()
        streamID = pair.establish()
        pair.server.goAway()
        self.assertEqual(
            pair.server.dataToSend(), b"\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
        )
        self.assertTrue(pair.server.localGoAway)
        self.assertEqual(
            pair.server.receiveData(encodeFrame(WINDOW_UPDATE, SYN, 3, 0)), []
        )
        self.assertEqual(sent(pair.server), [(WINDOW_UPDATE, RST, 3, 0, b"")])
        pair.client.sendData(streamID, b"still")
        self.assertEqual(pair.toServer(), [DataReceived(streamID, b"still")])

    def test_synFloodKeepsNoStateForRefusedStreams(self) -> None:
        """
        A flood of SYNs past the accept backlog costs one RST each and no
        state: the session holds the backlog's streams and nothing more.
        """
        session = Session(SessionConfig(acceptBacklog=4), isClient=False)
        flood = b"".join(
            encodeFrame(WINDOW_UPDATE, SYN, streamID, 0) for streamID in range(1, 20001, 2)
        )
        events = session.receiveData(flood)
        self.assertEqual(events, [StreamOpened(streamID) for streamID in (1, 3, 5, 7)])
        self.assertEqual(session.streamIDs, [1, 3, 5, 7])
        refusals = sent(session)
        self.assertEqual(len(refusals), 10000 - 4)
        self.assertEqual(
            {(kind, flags) for kind, flags, _, _, _ in refusals}, {(WINDOW_UPDATE, RST)}
        )
        self.assertEqual(session.repliesQueued, 10000 - 4)
        self.assertIsNone(session.terminated)


class UnknownStreamTests(SynchronousTestCase):
    """
    Data and Window Update frames for streams that do not exist are
    discarded, payload included, and parsing goes on.
    """

    def test_dataForUnknownStreamIsDiscarded(self) -> None:
        """The payload is skipped; the frame after it is processed."""
        session = Session()
        payload = encodeFrame(PING, SYN, 0, 77)
        events = session.receiveData(
            encodeFrame(DATA, 0, 5, len(payload), payload) + encodeFrame(PING, SYN, 0, 3)
        )
        self.assertEqual(events, [])
        self.assertEqual(sent(session), [(PING, ACK, 0, 3, b"")])
        self.assertIsNone(session.terminated)

    def test_splitDataForUnknownStreamIsDiscarded(self) -> None:
        """A discarded payload may arrive in any number of pieces."""
        pair = Pair()
        streamID = pair.establish()
        payload = encodeFrame(WINDOW_UPDATE, SYN, 1, 0) * 3
        data = encodeFrame(DATA, FIN, 9, len(payload), payload) + encodeFrame(
            DATA, 0, streamID, 3, b"yes"
        )
        events: list[object] = []
        for i in range(len(data)):
            events.extend(pair.server.receiveData(data[i : i + 1]))
        self.assertEqual(events, [DataReceived(streamID, bytes([c])) for c in b"yes"])
        self.assertEqual(pair.server.dataToSend(), b"")

    def test_largeDataForUnknownStreamIsDiscarded(self) -> None:
        """
        Data for an unknown stream is not checked against any window: it is
        skipped whatever its size.
        """
        session = Session()
        size = INITIAL_WINDOW * 2
        events = session.receiveData(
            encodeFrame(DATA, 0, 7, size, b"\x01" * size) + encodeFrame(PING, SYN, 0, 4)
        )
        self.assertEqual(events, [])
        self.assertEqual(sent(session), [(PING, ACK, 0, 4, b"")])

    def test_windowUpdateForUnknownStreamIsIgnored(self) -> None:
        """A Window Update, with or without flags, for no stream is ignored."""
        session = Session()
        for flags in (0, ACK, FIN, RST):
            self.assertEqual(
                session.receiveData(encodeFrame(WINDOW_UPDATE, flags, 11, 100)), []
            )
        self.assertEqual(session.dataToSend(), b"")
        self.assertIsNone(session.terminated)

    def test_dataForStreamWeResetIsDiscarded(self) -> None:
        """Data in flight for a stream we reset is dropped quietly."""
        pair = Pair()
        streamID = pair.establish()
        pair.client.sendData(streamID, b"in flight")
        pair.server.resetStream(streamID)
        self.assertEqual(pair.toServer(), [])
        self.assertEqual(pair.toClient(), [StreamReset(streamID)])
        self.assertIsNone(pair.server.terminated)
        self.assertIsNone(pair.client.terminated)


class PingTests(SynchronousTestCase):
    """
    Pings and their answers.
    """

    def test_pingSynIsAnsweredWithAckEchoingTheValue(self) -> None:
        """A ping request is answered with an ACK carrying the same value."""
        session = Session()
        self.assertEqual(
            session.receiveData(b"\x00\x02\x00\x01\x00\x00\x00\x00\xde\xad\xbe\xef"), []
        )
        self.assertEqual(
            session.dataToSend(), b"\x00\x02\x00\x02\x00\x00\x00\x00\xde\xad\xbe\xef"
        )

    def test_pingSendsSynWithFreshOpaqueValues(self) -> None:
        """Each ping carries its own opaque value, which it returns."""
        session = Session()
        self.assertEqual(session.ping(), 0)
        self.assertEqual(session.ping(), 1)
        self.assertEqual(
            session.dataToSend(),
            b"\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00"
            b"\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01",
        )

    def test_pingAnsweredYieldsPingAcknowledged(self) -> None:
        """The peer's answer yields L{PingAcknowledged}, once."""
        pair = Pair()
        first = pair.client.ping()
        second = pair.client.ping()
        self.assertEqual(pair.toServer(), [])
        answers = pair.server.dataToSend()
        self.assertEqual(
            pair.client.receiveData(answers),
            [PingAcknowledged(first), PingAcknowledged(second)],
        )
        self.assertEqual(pair.client.receiveData(answers), [])

    def test_unsolicitedPingAckIsIgnored(self) -> None:
        """A ping answer for a ping we did not send yields nothing."""
        session = Session()
        session.ping()
        session.dataToSend()
        self.assertEqual(session.receiveData(encodeFrame(PING, ACK, 0, 12345)), [])
        self.assertEqual(session.dataToSend(), b"")
        self.assertEqual(
            session.receiveData(encodeFrame(PING, ACK, 0, 0)), [PingAcknowledged(0)]
        )

    def test_repliesQueuedCountsTheAnswersThePeerAskedFor(self) -> None:
        """
        C{repliesQueued} counts the frames queued in answer to the peer's:
        ping acknowledgements and refusals of its streams, by the backlog or
        by the application; not our own pings, nor the reset of a stream we
        had accepted.
        """
        session = Session(SessionConfig(acceptBacklog=2), isClient=False)
        self.assertEqual(session.repliesQueued, 0)
        session.receiveData(encodeFrame(PING, SYN, 0, 1) + encodeFrame(PING, SYN, 0, 2))
        self.assertEqual(session.repliesQueued, 2)
        opaque = session.ping()
        session.receiveData(encodeFrame(PING, ACK, 0, opaque))
        self.assertEqual(session.repliesQueued, 2)
        session.receiveData(
            encodeFrame(WINDOW_UPDATE, SYN, 1, 0)
            + encodeFrame(WINDOW_UPDATE, SYN, 3, 0)
            + encodeFrame(WINDOW_UPDATE, SYN, 5, 0)
        )
        self.assertEqual(session.repliesQueued, 3)
        session.resetStream(1)
        self.assertEqual(session.repliesQueued, 4)
        session.acceptStream(3)
        session.resetStream(3)
        self.assertEqual(session.repliesQueued, 4)


class GoAwayTests(SynchronousTestCase):
    """
    Go Away, sent and received.
    """

    def test_normalGoAwayStopsNewStreamsOnly(self) -> None:
        """
        Go Away with code 0 yields L{GoAwayReceived}; opening a stream then
        raises L{SessionGoingAwayError}, while open streams go on.
        """
        pair = Pair()
        streamID = pair.establish()
        pair.server.goAway()
        self.assertEqual(pair.toClient(), [GoAwayReceived(GoAwayCode.NORMAL)])
        self.assertTrue(pair.client.remoteGoAway)
        self.assertIsNone(pair.client.terminated)
        self.assertRaises(SessionGoingAwayError, pair.client.openStream)
        self.assertEqual(pair.client.dataToSend(), b"")
        pair.client.sendData(streamID, b"after")
        self.assertEqual(pair.toServer(), [DataReceived(streamID, b"after")])
        pair.server.sendData(streamID, b"reply")
        self.assertEqual(pair.toClient(), [DataReceived(streamID, b"reply")])
        pair.client.closeStream(streamID)
        self.assertEqual(pair.toServer(), [StreamEnded(streamID)])

    def test_goAwayErrorCodesTerminate(self) -> None:
        """
        Go Away with code 1, 2 or an unknown code ends the session, by the
        peer.
        """
        for code, words in [
            (1, "protocol error"),
            (2, "internal error"),
            (7, "unknown code 7"),
        ]:
            session = Session()
            session.openStream()
            session.dataToSend()
            events = session.receiveData(
                encodeFrame(GO_AWAY, 0, 0, code) + encodeFrame(PING, SYN, 0, 1)
            )
            self.assertEqual(len(events), 2)
            self.assertEqual(events[0], GoAwayReceived(code))
            terminated = events[1]
            assert isinstance(terminated, SessionTerminated)
            self.assertEqual((terminated.code, terminated.byPeer), (code, True))
            self.assertIn(words, terminated.reason)
            self.assertEqual(session.terminated, terminated)
            self.assertEqual(session.dataToSend(), b"")
            self.assertRaises(SessionClosedError, session.openStream)
            self.assertEqual(session.receiveData(encodeFrame(PING, SYN, 0, 2)), [])

    def test_goAwayWithErrorCodeEndsOurSession(self) -> None:
        """Sending Go Away with an error code ends the session."""
        session = Session()
        streamID = session.openStream()
        session.dataToSend()
        session.goAway(GoAwayCode.INTERNAL_ERROR)
        self.assertEqual(
            session.dataToSend(), b"\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02"
        )
        terminated = session.terminated
        assert terminated is not None
        self.assertEqual((terminated.code, terminated.byPeer), (2, False))
        self.assertRaises(SessionClosedError, session.sendData, streamID, b"x")
        session.goAway()
        self.assertEqual(session.dataToSend(), b"")


class TerminationTests(SynchronousTestCase):
    """
    The API once the session has ended, stream ID exhaustion, and the loss
    of the connection.
    """

    def terminatedSession(self) -> tuple[Session, int, int]:
        """
        A server session with one accepted and one unaccepted stream, ended
        by a protocol error.
        """
        session = Session(isClient=False)
        session.receiveData(
            encodeFrame(WINDOW_UPDATE, SYN, 1, 0) + encodeFrame(WINDOW_UPDATE, SYN, 3, 0)
        )
        session.acceptStream(1)
        session.receiveData(encodeFrame(DATA, 0, 1, 1, b"x"))
        session.dataToSend()
        session.receiveData(b"\x00\x05" + b"\x00" * 10)
        self.assertEqual(session.dataToSend(), PROTOCOL_ERROR_GO_AWAY)
        return session, 1, 3

    def test_apiAfterTerminationRaises(self) -> None:
        """Opening, writing and pinging raise L{SessionClosedError}."""
        session, accepted, _ = self.terminatedSession()
        self.assertRaises(SessionClosedError, session.openStream)
        self.assertRaises(SessionClosedError, session.sendData, accepted, b"x")
        self.assertRaises(SessionClosedError, session.ping)
        self.assertEqual(session.dataToSend(), b"")

    def test_noFramesAfterTermination(self) -> None:
        """
        Once the session has ended, no API call queues a frame after its Go
        Away: resetting, acknowledging, Go Away and accepting do nothing,
        closing raises L{SessionClosedError}.
        """
        session, accepted, unaccepted = self.terminatedSession()
        session.resetStream(accepted)
        session.acknowledgeReceivedData(accepted, INITIAL_WINDOW)
        session.goAway()
        session.acceptStream(unaccepted)
        self.assertRaises(SessionClosedError, session.closeStream, accepted)
        self.assertEqual(session.dataToSend(), b"")

    def test_receiveAfterTerminationReturnsNothing(self) -> None:
        """Input after the end is ignored."""
        session, _, _ = self.terminatedSession()
        self.assertEqual(session.receiveData(encodeFrame(DATA, 0, 1, 1, b"y")), [])
        self.assertEqual(session.receiveData(encodeFrame(GO_AWAY, 0, 0, 0)), [])
        self.assertFalse(session.remoteGoAway)

    def test_clientStreamIDExhaustion(self) -> None:
        """
        The client's last stream ID is 2**32 - 1; opening after it raises
        L{StreamLimitError}.
        """
        session = Session(isClient=True)
        session._nextStreamID = MAX_UINT32 - 2
        self.assertEqual(session.openStream(), MAX_UINT32 - 2)
        self.assertEqual(session.openStream(), MAX_UINT32)
        self.assertEqual(
            session.dataToSend()[12:],
            b"\x00\x01\x00\x01\xff\xff\xff\xff\x00\x00\x00\x00",
        )
        self.assertRaises(StreamLimitError, session.openStream)
        self.assertEqual(session.dataToSend(), b"")
        self.assertEqual(session.streamIDs, [MAX_UINT32 - 2, MAX_UINT32])

    def test_serverStreamIDExhaustion(self) -> None:
        """The server's last stream ID is 2**32 - 2."""
        session = Session(isClient=False)
        session._nextStreamID = MAX_UINT32 - 1
        self.assertEqual(session.openStream(), MAX_UINT32 - 1)
        self.assertRaises(StreamLimitError, session.openStream)
        self.assertEqual(sent(session), [(WINDOW_UPDATE, SYN, MAX_UINT32 - 1, 0, b"")])

    def test_connectionLost(self) -> None:
        """
        Losing the connection ends the session by the peer with the reason
        given, drops what was queued, and makes the API raise.
        """
        session = Session()
        streamID = session.openStream()
        session.connectionLost("the cable was cut")
        self.assertEqual(
            session.terminated,
            SessionTerminated(GoAwayCode.NORMAL, "the cable was cut", True),
        )
        self.assertEqual(session.dataToSend(), b"")
        self.assertRaises(SessionClosedError, session.openStream)
        self.assertRaises(SessionClosedError, session.sendData, streamID, b"x")
        self.assertEqual(session.receiveData(encodeFrame(PING, SYN, 0, 1)), [])
        self.assertEqual(session.dataToSend(), b"")

    def test_connectionLostKeepsTheEarlierEnd(self) -> None:
        """Losing the connection after a protocol error keeps its reason."""
        session = Session()
        session.receiveData(b"\x07" + b"\x00" * 11)
        terminated = session.terminated
        session.connectionLost()
        self.assertIs(session.terminated, terminated)
        self.assertEqual(session.dataToSend(), b"")


class InspectionTests(SynchronousTestCase):
    """
    Queries about streams.
    """

    def test_queriesOnUnknownStreamRaise(self) -> None:
        """Window and buffer queries raise L{UnknownStreamError} for no stream."""
        session = Session()
        for query in (session.bufferedAmount, session.sendWindow, session.receiveWindow):
            self.assertRaises(UnknownStreamError, query, 1)
        self.assertFalse(session.hasStream(1))

    def test_describeStream(self) -> None:
        """A live stream is described with its windows and buffer."""
        session = Session()
        streamID = session.openStream()
        self.assertEqual(
            session.describeStream(streamID),
            "stream 1 (outbound, send window 262144, receive window 262144, "
            "0 bytes buffered)",
        )


class SessionConfigTests(SynchronousTestCase):
    """
    L{SessionConfig}'s defaults and validation.
    """

    def test_defaultsMatchTheReferenceLibrary(self) -> None:
        """The defaults are those of HashiCorp's yamux."""
        config = SessionConfig()
        self.assertEqual(config.acceptBacklog, 256)
        self.assertEqual(config.maxStreamWindow, INITIAL_WINDOW)
        self.assertTrue(config.enableKeepAlive)
        self.assertEqual(config.keepAliveInterval, 30.0)
        self.assertEqual(config.keepAliveTimeout, 10.0)
        self.assertEqual(config.streamOpenTimeout, 75.0)

    def test_maxStreamWindowBounds(self) -> None:
        """
        C{maxStreamWindow} must lie between 256 KiB and 2**32 - 1.
        """
        self.assertRaises(ValueError, SessionConfig, maxStreamWindow=INITIAL_WINDOW - 1)
        self.assertRaises(ValueError, SessionConfig, maxStreamWindow=0)
        self.assertRaises(ValueError, SessionConfig, maxStreamWindow=MAX_UINT32 + 1)
        self.assertEqual(
            SessionConfig(maxStreamWindow=INITIAL_WINDOW).maxStreamWindow, INITIAL_WINDOW
        )
        self.assertEqual(
            SessionConfig(maxStreamWindow=MAX_UINT32).maxStreamWindow, MAX_UINT32
        )

    def test_nonPositiveValuesRejected(self) -> None:
        """Counts and durations must be positive."""
        for name in (
            "acceptBacklog",
            "keepAliveInterval",
            "keepAliveTimeout",
            "streamOpenTimeout",
            "streamCloseTimeout",
            "maxInboundStreams",
            "maxUnsentReplies",
        ):
            for value in (0, -1):
                self.assertRaises(ValueError, SessionConfig, **{name: value})
            self.assertEqual(getattr(SessionConfig(**{name: 1}), name), 1)
