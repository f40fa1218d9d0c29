"""
Property tests for L{tunnel.yamux.session.Session}: how bytes are split
never matters, no input makes it raise or grow without bound, and two
sessions deliver every stream's bytes intact without breaking the window.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tunnel.test.support import parseFrames, pattern
from tunnel.yamux import (
    HEADER_SIZE,
    INITIAL_WINDOW,
    Flag,
    FrameType,
    Session,
    SessionConfig,
    encodeFrame,
)
from tunnel.yamux.events import (
    DataReceived,
    SessionTerminated,
    StreamClosed,
    StreamEnded,
    StreamOpened,
    StreamReset,
)

DATA = FrameType.DATA
WINDOW_UPDATE = FrameType.WINDOW_UPDATE
PING = FrameType.PING
GO_AWAY = FrameType.GO_AWAY
SYN = Flag.SYN
ACK = Flag.ACK
FIN = Flag.FIN
RST = Flag.RST

SETTINGS = settings(max_examples=200, deadline=None)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut C{data} at the given offsets (taken modulo its length + 1)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    previous = 0
    for point in points + [len(data)]:
        pieces.append(data[previous:point])
        previous = point
    return pieces


def canonical(events: list[object]) -> list[object]:
    """
    Merge adjacent L{DataReceived} events of one stream: how the bytes were
    split changes how data events are cut, and nothing else.
    """
    merged: list[object] = []
    for event in events:
        if (
            isinstance(event, DataReceived)
            and merged
            and isinstance(merged[-1], DataReceived)
            and merged[-1].streamID == event.streamID
        ):
            merged[-1] = DataReceived(event.streamID, merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def assertParses(testCase: SynchronousTestCase, data: bytes) -> None:
    """What a session sends is whole, well-formed frames of known types."""
    for frame in parseFrames(data):
        testCase.assertIn(frame.frameType, set(FrameType))


@st.composite
def validInput(draw: st.DrawFn) -> bytes:
    """
    The bytes a well-behaved client could send a server: streams opened,
    data within each stream's window, window updates, pings, FINs, RSTs, a
    normal Go Away, and frames for streams that are gone.
    """
    frames: list[bytes] = []
    nextID = 1
    # streamID -> [receive window left at the server, FIN sent]
    live: dict[int, list] = {}
    gone: list[int] = []
    for _ in range(draw(st.integers(0, 25))):
        choice = draw(
            st.sampled_from(
                ["open", "openData", "data", "data", "data", "update", "ping",
                 "pingAck", "fin", "finData", "rst", "goAway", "gone"]
            )
        )
        if choice in ("open", "openData"):
            streamID = nextID
            nextID += 2
            if choice == "open":
                delta = draw(st.sampled_from([0, 0, 1, 100000]))
                frames.append(encodeFrame(WINDOW_UPDATE, SYN, streamID, delta))
                live[streamID] = [INITIAL_WINDOW, False]
            else:
                size = draw(st.integers(0, 300))
                frames.append(encodeFrame(DATA, SYN, streamID, size, pattern(size, offset=streamID)))
                live[streamID] = [INITIAL_WINDOW - size, False]
        elif choice in ("data", "update", "fin", "finData", "rst") and live:
            streamID = draw(st.sampled_from(sorted(live)))
            window, finished = live[streamID]
            if choice == "update":
                frames.append(
                    encodeFrame(WINDOW_UPDATE, 0, streamID, draw(st.integers(0, 70000)))
                )
            elif choice == "rst":
                frames.append(encodeFrame(WINDOW_UPDATE, RST, streamID, 0))
                del live[streamID]
                gone.append(streamID)
            elif finished:
                continue
            elif choice == "fin":
                frames.append(encodeFrame(WINDOW_UPDATE, FIN, streamID, 0))
                live[streamID][1] = True
            else:
                size = draw(st.integers(0, min(window, 5000)))
                if size == 0 and choice == "data":
                    continue
                flags = FIN if choice == "finData" else 0
                frames.append(
                    encodeFrame(DATA, flags, streamID, size, pattern(size, offset=window))
                )
                live[streamID] = [window - size, choice == "finData"]
        elif choice == "ping":
            frames.append(encodeFrame(PING, SYN, 0, draw(st.integers(0, 2**32 - 1))))
        elif choice == "pingAck":
            frames.append(encodeFrame(PING, ACK, 0, draw(st.integers(0, 2**32 - 1))))
        elif choice == "goAway":
            frames.append(encodeFrame(GO_AWAY, 0, 0, 0))
        elif choice == "gone" and gone:
            streamID = draw(st.sampled_from(gone))
            if draw(st.booleans()):
                size = draw(st.integers(0, 3000))
                frames.append(encodeFrame(DATA, 0, streamID, size, pattern(size)))
            else:
                frames.append(encodeFrame(WINDOW_UPDATE, 0, streamID, 5))
    return b"".join(frames)


cuts = st.lists(st.integers(0, 10**6), max_size=30)


class SplittingTests(SynchronousTestCase):
    """
    How the bytes of a valid session are split into L{Session.receiveData}
    calls does not change what happens.
    """

    @SETTINGS
    @given(validInput(), cuts)
    def test_anySplitGivesTheSameEvents(self, data: bytes, cutPoints: list[int]) -> None:
        """
        Any split of valid input yields the same events (data merged per
        stream) and the same output as feeding it at once.
        """
        whole = Session(isClient=False)
        wholeEvents = whole.receiveData(data)
        pieces = Session(isClient=False)
        pieceEvents: list[object] = []
        for piece in split(data, cutPoints):
            pieceEvents.extend(pieces.receiveData(piece))
        self.assertIsNone(whole.terminated, wholeEvents)
        self.assertEqual(canonical(pieceEvents), canonical(wholeEvents))
        self.assertEqual(pieces.dataToSend(), whole.dataToSend())
        self.assertEqual(pieces.streamIDs, whole.streamIDs)
        self.assertEqual(pieces._header, bytearray())

    @SETTINGS
    @given(validInput())
    def test_byteByByteGivesTheSameEvents(self, data: bytes) -> None:
        """Feeding one byte at a time is just one more split."""
        whole = Session(isClient=False)
        wholeEvents = whole.receiveData(data)
        pieces = Session(isClient=False)
        pieceEvents: list[object] = []
        for i in range(len(data)):
            pieceEvents.extend(pieces.receiveData(data[i : i + 1]))
        self.assertEqual(canonical(pieceEvents), canonical(wholeEvents))
        self.assertEqual(pieces.dataToSend(), whole.dataToSend())


class RobustnessTests(SynchronousTestCase):
    """
    No input makes L{Session.receiveData} raise, and the session either
    runs on or ends exactly once.
    """

    def feed(self, session: Session, chunks: list[bytes]) -> list[object]:
        events: list[object] = []
        ended = False
        for chunk in chunks:
            new = session.receiveData(chunk)
            if ended:
                self.assertEqual(new, [])
            events.extend(new)
            ended = session.terminated is not None
        terminations = [e for e in events if isinstance(e, SessionTerminated)]
        if session.terminated is None:
            self.assertEqual(terminations, [])
        else:
            self.assertEqual(terminations, [session.terminated])
            self.assertIs(events[-1], session.terminated)
            self.assertEqual(session.receiveData(encodeFrame(PING, SYN, 0, 1)), [])
        return events

    @SETTINGS
    @given(st.binary(max_size=400), cuts, st.booleans())
    def test_arbitraryBytesNeverRaise(
        self, data: bytes, cutPoints: list[int], isClient: bool
    ) -> None:
        """Random bytes either leave the session running or end it once."""
        session = Session(isClient=isClient)
        self.feed(session, split(data, cutPoints))
        assertParses(self, session.dataToSend())

    @SETTINGS
    @given(validInput(), st.binary(max_size=200), cuts)
    def test_validPrefixThenGarbage(
        self, prefix: bytes, garbage: bytes, cutPoints: list[int]
    ) -> None:
        """
        Garbage after a valid conversation, with streams open, either leaves
        the session running or ends it once.
        """
        session = Session(isClient=False)
        self.feed(session, split(prefix + garbage, cutPoints))
        assertParses(self, session.dataToSend())

    @SETTINGS
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 3),
                st.sampled_from([0, SYN, ACK, FIN, RST, SYN | FIN, ACK | RST]),
                st.integers(0, 6),
                st.integers(0, 2**32 - 1),
            ),
            max_size=20,
        ),
        cuts,
    )
    def test_wellFormedHeadersWithRandomFields(
        self, headers: list[tuple[int, int, int, int]], cutPoints: list[int]
    ) -> None:
        """
        Headers of valid types with random flags, small stream IDs and any
        length field are handled without raising; Data frames carry a
        payload of at most a few bytes, so that huge lengths stay pending.
        """
        session = Session(isClient=False)
        data = b"".join(
            encodeFrame(frameType, flags, streamID, length)
            + (b"p" * min(length, 3) if frameType == DATA else b"")
            for frameType, flags, streamID, length in headers
        )
        self.feed(session, split(data, cutPoints))
        assertParses(self, session.dataToSend())


class BoundedMemoryTests(SynchronousTestCase):
    """
    Whatever arrives, the session holds no more than a header's worth of
    partial input and no stream holds more than its window.
    """

    def assertBounded(self, session: Session) -> None:
        self.assertLess(len(session._header), HEADER_SIZE)
        window = session.config.maxStreamWindow
        for streamID in session.streamIDs:
            stream = session._streams[streamID]
            self.assertGreaterEqual(stream.recvWindow, 0)
            self.assertLessEqual(stream.recvWindow, window)
            unconsumed = window - stream.recvWindow - stream.recvConsumed
            self.assertGreaterEqual(unconsumed, 0)
            self.assertLessEqual(unconsumed, window)
            self.assertEqual(stream.sendBuffered, 0)
            self.assertEqual(len(stream.sendBuffer), 0)

    @SETTINGS
    @given(st.one_of(validInput(), st.binary(max_size=400)), st.binary(max_size=100), cuts)
    def test_partialInputIsBounded(
        self, prefix: bytes, garbage: bytes, cutPoints: list[int]
    ) -> None:
        """
        After any input, split anyhow, the header buffer is shorter than a
        header and every stream's unconsumed data fits its window.
        """
        session = Session(isClient=False)
        for piece in split(prefix + garbage, cutPoints):
            session.receiveData(piece)
            self.assertBounded(session)


class Peer:
    """
    One side of a conversation between two sessions: what it wrote, what
    it received, and what it has not acknowledged yet.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.written: dict[int, bytearray] = {}
        self.received: dict[int, bytearray] = {}
        self.unacknowledged: dict[int, int] = {}
        self.closed: set[int] = set()
        self.ended: set[int] = set()
        self.inFlight = bytearray()

    def writable(self) -> list[int]:
        """Streams this side may still write to."""
        return sorted(
            s for s in self.session.streamIDs if s not in self.closed
        )

    def handle(self, events: list[object], testCase: SynchronousTestCase) -> None:
        for event in events:
            testCase.assertNotIsInstance(event, SessionTerminated)
            testCase.assertNotIsInstance(event, StreamReset)
            if isinstance(event, StreamOpened):
                self.session.acceptStream(event.streamID)
                self.written.setdefault(event.streamID, bytearray())
            elif isinstance(event, DataReceived):
                self.received.setdefault(event.streamID, bytearray()).extend(event.data)
                self.unacknowledged[event.streamID] = (
                    self.unacknowledged.get(event.streamID, 0) + len(event.data)
                )
            elif isinstance(event, StreamEnded):
                self.ended.add(event.streamID)
            elif isinstance(event, StreamClosed):
                testCase.assertIn(event.streamID, self.ended)
                testCase.assertIn(event.streamID, self.closed)


class ExchangeTests(SynchronousTestCase):
    """
    Two sessions exchanging data through random chunkings, with random
    acknowledgement timing.
    """

    def deliver(
        self, sender: Peer, receiver: Peer, cutPoints: list[int], everything: bool
    ) -> int:
        """
        Move what C{sender} sent to C{receiver}, cut at C{cutPoints}, all of
        it or all but the last piece.

        @return: how many bytes were delivered.
        """
        sender.inFlight.extend(sender.session.dataToSend())
        data = bytes(sender.inFlight)
        pieces = split(data, cutPoints)
        if not everything:
            # Leave the last piece in flight for a later delivery.
            pieces = pieces[:-1]
        delivered = 0
        for piece in pieces:
            receiver.handle(receiver.session.receiveData(piece), self)
            delivered += len(piece)
        del sender.inFlight[:delivered]
        return delivered

    @settings(max_examples=100, deadline=None)
    @given(st.data())
    def test_everyStreamArrivesIntactWithinTheWindow(self, data: st.DataObject) -> None:
        """
        Whatever the writes, chunkings and acknowledgement timing, each
        stream's bytes arrive whole and in order, and neither side ever
        sends past the window (the receiver would end the session).
        """
        client = Peer(Session(isClient=True))
        server = Peer(Session(isClient=False))
        peers = {"client": client, "server": server}
        other = {"client": server, "server": client}
        steps = data.draw(st.integers(1, 40), label="steps")
        for _ in range(steps):
            side = data.draw(st.sampled_from(["client", "server"]), label="side")
            peer = peers[side]
            action = data.draw(
                st.sampled_from(
                    ["open", "write", "write", "bigWrite", "close", "deliver",
                     "deliver", "ack", "ack"]
                ),
                label="action",
            )
            if action == "open":
                streamID = peer.session.openStream()
                peer.written[streamID] = bytearray()
            elif action in ("write", "bigWrite", "close"):
                streams = peer.writable()
                if not streams:
                    continue
                streamID = data.draw(st.sampled_from(streams), label="stream")
                if action == "close":
                    peer.session.closeStream(streamID)
                    peer.closed.add(streamID)
                    continue
                limit = 3 * INITIAL_WINDOW if action == "bigWrite" else 2000
                size = data.draw(st.integers(1, limit), label="size")
                chunk = pattern(size, offset=len(peer.written[streamID]) + streamID)
                peer.session.sendData(streamID, chunk)
                peer.written[streamID].extend(chunk)
                self.assertGreaterEqual(peer.session.sendWindow(streamID), 0)
            elif action == "deliver":
                self.deliver(
                    peer,
                    other[side],
                    data.draw(cuts, label="cuts"),
                    data.draw(st.booleans(), label="everything"),
                )
            elif action == "ack":
                pending = sorted(s for s, n in peer.unacknowledged.items() if n)
                if not pending:
                    continue
                streamID = data.draw(st.sampled_from(pending), label="stream")
                size = data.draw(
                    st.integers(1, peer.unacknowledged[streamID]), label="ackSize"
                )
                peer.unacknowledged[streamID] -= size
                peer.session.acknowledgeReceivedData(streamID, size)

        # Let everything through: acknowledge all, deliver all, until quiet.
        for _ in range(100):
            for peer in (client, server):
                for streamID, size in peer.unacknowledged.items():
                    if size:
                        peer.session.acknowledgeReceivedData(streamID, size)
                        peer.unacknowledged[streamID] = 0
            moved = self.deliver(client, server, [], True)
            moved += self.deliver(server, client, [], True)
            if not moved:
                break
        else:
            self.fail("the sessions did not settle")

        self.assertIsNone(client.session.terminated)
        self.assertIsNone(server.session.terminated)
        for sender, receiver in ((client, server), (server, client)):
            for streamID, written in sender.written.items():
                self.assertEqual(
                    bytes(receiver.received.get(streamID, b"")),
                    bytes(written),
                    f"stream {streamID}",
                )
                if sender.session.hasStream(streamID):
                    self.assertEqual(sender.session.bufferedAmount(streamID), 0)
            for streamID in sender.closed:
                self.assertIn(streamID, receiver.ended)
            for streamID in sender.closed & receiver.closed:
                self.assertFalse(sender.session.hasStream(streamID))
                self.assertFalse(receiver.session.hasStream(streamID))


class LargerWindowExchangeTests(SynchronousTestCase):
    """
    The same exchange with a larger window on one side.
    """

    @settings(max_examples=30, deadline=None)
    @given(st.integers(1, 4 * INITIAL_WINDOW), st.integers(INITIAL_WINDOW, 3 * INITIAL_WINDOW))
    def test_largerWindowIsHonoured(self, size: int, window: int) -> None:
        """
        A receiver with a larger window lets the sender send that much
        before it must wait, and never more.
        """
        client = Session(isClient=True)
        server = Session(SessionConfig(maxStreamWindow=window), isClient=False)
        streamID = client.openStream()
        events = server.receiveData(client.dataToSend())
        self.assertEqual(events, [StreamOpened(streamID)])
        server.acceptStream(streamID)
        client.receiveData(server.dataToSend())
        payload = pattern(size)
        client.sendData(streamID, payload)
        self.assertEqual(client.bufferedAmount(streamID), max(0, size - window))
        received = bytearray()
        while True:
            outgoing = client.dataToSend()
            if not outgoing:
                break
            for event in server.receiveData(outgoing):
                assert isinstance(event, DataReceived), event
                received.extend(event.data)
                server.acknowledgeReceivedData(streamID, len(event.data))
            client.receiveData(server.dataToSend())
        self.assertIsNone(server.terminated)
        self.assertEqual(bytes(received), payload)
