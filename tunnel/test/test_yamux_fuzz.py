"""
Fuzzing of the yamux core (L{tunnel.yamux.Session}) and of its Twisted
adapter (L{tunnel.mux.YamuxProtocol}), in either role.

A program is a sequence of steps whose every decision is read from a
string of bytes (L{BytesChoices}): hypothesis draws the bytes and shrinks
them when a program fails, and C{python -m tunnel.test.fuzz} runs these
tests for as long as asked (see L{tunnel.test.fuzz}). The steps are:

- frames from the peer (L{Peer}): mostly well-formed and aimed at the
  session's state (the streams it has open, lengths at its receive window
  and one past it, window updates that fill the 32-bit send window exactly
  and one past it, answers to its pings and SYNs), with every type and
  flag combination, stream IDs of either parity and 0, huge lengths, floods,
  mutated bytes and plain garbage, cut into arbitrary pieces;
- the calls an application makes: open, accept, write, close, reset,
  acknowledge, ping, Go Away, inspect; on the adapter also writes and
  closes on the streams' transports, paused readers and producers, a paused
  transport, time passing on a fake clock, and the connection going away.

After every step the harness checks that:

- no exception escaped but those the API documents, and those only when
  the state warrants them; the adapter logged no failure but those of
  protocols that raise on purpose;
- memory stays bounded: less than a header of partial input; per stream,
  the data received and not consumed (held by the application, or by a
  paused stream transport) at most the receive window; nothing held back in
  the core once the adapter wrote; answers to the peer at most one frame per
  frame it sent, and a peer that does not read dropped after
  C{maxUnsentReplies} of them; the peer's streams within the accept backlog
  and C{maxInboundStreams};
- the output is whole, well-formed frames, each stream's data exactly what
  was written, in order, with its FIN after it, and written minus sent is
  what the core says is buffered;
- events concern live streams only, in a legal order; an ended session
  stays ended: one L{SessionTerminated} at most, nothing processed or sent
  after it; once the connection is gone every stream protocol was told
  once, every L{Deferred} fired, and no timer is left on the clock.

Each test runs C{TUNNEL_FUZZ_EXAMPLES} programs (L{CI_EXAMPLES} by
default), a few seconds in all.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.mux import (
    PingTimeoutError,
    SessionEndedError,
    StreamOpenTimeoutError,
    StreamRefusedError,
    StreamTransport,
    YamuxProtocol,
)
from tunnel.test.support import Frame, parseFrames, pattern
from tunnel.yamux import (
    HEADER_SIZE,
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
from tunnel.yamux.frames import HEADER, MAX_UINT32

T = TypeVar("T")

DATA = int(FrameType.DATA)
WINDOW_UPDATE = int(FrameType.WINDOW_UPDATE)
PING = int(FrameType.PING)
GO_AWAY = int(FrameType.GO_AWAY)
SYN = int(Flag.SYN)
ACK = int(Flag.ACK)
FIN = int(Flag.FIN)
RST = int(Flag.RST)

#: Examples per test in a normal run of the suite.
CI_EXAMPLES = 300

#: The largest receive window the programs configure.
LARGEST_WINDOW = 2 * INITIAL_WINDOW + 3


class FuzzFailure(AssertionError):
    """A program found the session breaking one of its promises."""


def check(condition: object, message: str | Callable[[], str]) -> None:
    """
    Fail the program unless C{condition} holds.

    @param message: what went wrong, or a callable returning it (to avoid
        formatting it when all is well).
    """
    if not condition:
        raise FuzzFailure(message() if callable(message) else message)


# -- where decisions come from -----------------------------------------------


class Choices:
    """
    The source of a program's decisions. Subclasses provide L{integer},
    L{binary} and L{more}; the rest is built on them, so that smaller
    numbers always mean simpler programs (hypothesis shrinks towards them).
    """

    def integer(self, low: int, high: int) -> int:
        """An integer from C{low} to C{high}, both included."""
        raise NotImplementedError

    def binary(self, maxSize: int) -> bytes:
        """Up to C{maxSize} arbitrary bytes."""
        raise NotImplementedError

    def more(self) -> bool:
        """Whether the program takes another step."""
        raise NotImplementedError

    def chance(self, percent: int) -> bool:
        """True about C{percent} times in a hundred; false is simpler."""
        return self.integer(0, 99) >= 100 - percent

    def pick(self, options: Sequence[T]) -> T:
        """One of C{options}; the first is simplest."""
        return options[self.integer(0, len(options) - 1)]

    def weighted(self, options: Sequence[tuple[int, T]]) -> T:
        """One of the C{(weight, option)} pairs' options, by weight."""
        total = sum(weight for weight, _ in options)
        point = self.integer(0, total - 1)
        for weight, option in options:
            if point < weight:
                return option
            point -= weight
        raise AssertionError("unreachable")


class BytesChoices(Choices):
    """
    Decisions read from a string of bytes, as hypothesis draws them: the
    first bytes say how many steps the program
    takes (at most C{maxSteps}), then each integer takes as few bytes as its
    range needs. When the bytes run out, every decision is the simplest and
    the program ends, so that fewer or smaller bytes make a simpler program.
    """

    def __init__(self, data: bytes, maxSteps: int = 60) -> None:
        self._data = data
        self._position = 0
        self._steps = self.integer(1, maxSteps)

    def integer(self, low: int, high: int) -> int:
        """An integer from the next bytes (taken modulo the range)."""
        span = high - low
        if span <= 0:
            return low
        size = (span.bit_length() + 7) // 8
        chunk = self._data[self._position : self._position + size]
        self._position += size
        return low + int.from_bytes(chunk, "big") % (span + 1)

    def binary(self, maxSize: int) -> bytes:
        """Up to C{maxSize} of the next bytes."""
        size = self.integer(0, maxSize)
        chunk = self._data[self._position : self._position + size]
        self._position += size
        return chunk

    def more(self) -> bool:
        """Whether steps remain, and bytes."""
        self._steps -= 1
        return self._steps >= 0 and self._position < len(self._data)


# -- what the session sends --------------------------------------------------


def parseOutput(data: bytes) -> list[Frame]:
    """
    Parse what a session sent in one go: whole, well-formed frames only.

    @return: one L{Frame} per frame.
    @raise FuzzFailure: on a partial frame, a version other than 0, an
        unknown type or flag, or a session frame (Ping, Go Away) on a stream.
    """
    try:
        frames = parseFrames(data)
    except AssertionError as e:
        raise FuzzFailure(f"malformed output sent: {e}") from None
    for frameType, flags, streamID, length, payload in frames:
        check(frameType in (DATA, WINDOW_UPDATE, PING, GO_AWAY), f"frame of type {frameType} sent")
        check(flags & ~0xF == 0, f"unknown flags {flags:#x} sent")
        check(
            (streamID == 0) == (frameType in (PING, GO_AWAY)),
            f"frame of type {frameType} sent on stream {streamID}",
        )
        check(frameType != DATA or length > 0 or flags, "empty Data frame without flags sent")
    return frames


# -- the peer ----------------------------------------------------------------


class Peer:
    """
    The other end of a session: writes the frames it sends, aimed at the
    session's state as its public inspection API shows it, and reads what
    the session sends (the streams it opens, the pings it sends).

    Each frame breaks the rules with a probability that each program draws
    (its I{roughness}): a peer that never does keeps the session alive long
    enough to reach deep states; one that often does tries the session's
    defences.
    """

    def __init__(self, session: Session, choices: Choices) -> None:
        self.session = session
        self.choices = choices
        self.roughness = choices.pick([0, 3, 15, 50])
        self.nextID = 2 if session.isClient else 1
        self.finished: set[int] = set()
        self.gone: list[int] = []
        self.ourStreams: list[int] = []
        self.ourPings: list[int] = []
        self.focus: int | None = None
        # What the frames of the batch being written send and grant, by stream.
        self.batchData: dict[int, int] = {}
        self.batchDelta: dict[int, int] = {}

    # -- reading -----------------------------------------------------------

    def observe(self, frames: list[Frame]) -> None:
        """Note the streams the session opened, closed or reset, and its pings."""
        for frameType, flags, streamID, length, _ in frames:
            if frameType == PING and flags & SYN:
                self.ourPings = (self.ourPings + [length])[-16:]
            elif frameType in (DATA, WINDOW_UPDATE):
                if flags & SYN:
                    self.ourStreams = (self.ourStreams + [streamID])[-16:]
                if flags & RST:
                    self.gone = (self.gone + [streamID])[-16:]

    # -- values ------------------------------------------------------------

    def rough(self) -> bool:
        """Whether this frame, or this field, breaks the rules."""
        return self.roughness > 0 and self.choices.chance(self.roughness)

    def liveStream(self) -> int | None:
        """
        A stream the session has open, if any: often the one in focus (the
        last one the program or the peer acted on), so that a stream goes
        through many states.
        """
        session = self.session
        if self.focus is not None and session.hasStream(self.focus) and self.choices.chance(50):
            return self.focus
        live = session.streamIDs
        return self.choices.pick(sorted(live)) if live else None

    def anyStreamID(self) -> int:
        """Any stream ID: live, gone, the peer's next, 0, ours, extreme."""
        c = self.choices
        live = self.liveStream()
        options: list[tuple[int, Callable[[], int]]] = [
            (4, lambda: live if live is not None else self.nextID),
            (2, lambda: self.nextID),
            (1, lambda: c.pick(self.gone) if self.gone else 0),
            (1, lambda: c.pick(self.ourStreams) if self.ourStreams else 1),
            (1, lambda: 0),
            (1, lambda: self.nextID + 1),
            (1, lambda: c.pick([MAX_UINT32, MAX_UINT32 - 1, 2**31, 2**31 + 1])),
            (1, lambda: c.integer(0, MAX_UINT32)),
        ]
        return c.weighted(options)()

    def target(self) -> int | None:
        """The stream a frame is for: a live one, or any ID when rough."""
        if self.rough():
            return self.anyStreamID()
        return self.liveStream()

    def newID(self) -> int:
        """The peer's next stream ID."""
        streamID = self.nextID
        self.nextID = min(self.nextID + 2, MAX_UINT32)
        self.finished.discard(streamID)
        self.focus = streamID
        return streamID

    def flags(self, usual: int = 0) -> int:
        """Flags: C{usual}, maybe with ACK; when rough, any, even undefined bits."""
        c = self.choices
        if self.rough():
            return c.weighted([(3, lambda: usual | c.integer(0, 15)), (1, lambda: c.integer(0, 0xFFFF))])()
        return usual | (ACK if c.chance(10) else 0)

    def closingFlags(self, streamID: int) -> int:
        """FIN (once a stream) or RST, or any combination when rough."""
        c = self.choices
        if self.rough():
            return c.pick([FIN, RST, FIN | RST, FIN | ACK, SYN | FIN])
        if streamID in self.finished or c.chance(40):
            return RST
        self.finished.add(streamID)
        return FIN

    def receiveWindow(self, streamID: int) -> int:
        """
        The session's receive window of a stream (or a new stream's), less
        what the frames of this batch already send on it.
        """
        if self.session.hasStream(streamID):
            window = self.session.receiveWindow(streamID)
        else:
            window = self.session.config.maxStreamWindow
        return max(window - self.batchData.get(streamID, 0), 0)

    def sendWindow(self, streamID: int) -> int:
        """
        The session's send window of a stream (or a new stream's), with what
        the frames of this batch already grant.
        """
        if self.session.hasStream(streamID):
            window = self.session.sendWindow(streamID)
        else:
            window = INITIAL_WINDOW
        return min(window + self.batchDelta.get(streamID, 0), MAX_UINT32)

    def dataLength(self, streamID: int) -> int:
        """A Data length: small, up to the window; when rough, past it, or huge."""
        c = self.choices
        window = self.receiveWindow(streamID)
        if self.rough():
            return c.weighted(
                [(3, lambda: window + 1), (1, lambda: c.pick([MAX_UINT32, 2**31, LARGEST_WINDOW + 1]))]
            )()
        return c.weighted(
            [
                (8, lambda: min(c.integer(1, 64), window)),
                (2, lambda: window),
                (1, lambda: max(window - 1, 0)),
                (1, lambda: c.integer(0, min(window, 70000))),
            ]
        )()

    def windowDelta(self, streamID: int) -> int:
        """A window delta: small, or the exact room left in 32 bits; when rough, past it."""
        c = self.choices
        room = MAX_UINT32 - self.sendWindow(streamID)
        if self.rough():
            return c.weighted([(3, lambda: min(room + 1, MAX_UINT32)), (1, lambda: MAX_UINT32)])()
        buffered = self.session.bufferedAmount(streamID) if self.session.hasStream(streamID) else 0
        return c.weighted(
            [
                (6, lambda: min(c.integer(1, 70000), room)),
                (3, lambda: min(buffered + c.pick([0, 1, 1000]), room)),
                (2, lambda: 0),
                (2, lambda: room),
                (1, lambda: min(INITIAL_WINDOW, room)),
            ]
        )()

    def dataFrame(self, flags: int, streamID: int, length: int) -> bytes:
        """
        A Data frame; a length past what is sensible to send gets a short
        payload, so that the rest stays pending.
        """
        if length > LARGEST_WINDOW + 1:
            payload = pattern(self.choices.integer(0, 64), offset=streamID)
        else:
            payload = pattern(length, offset=streamID)
        self.batchData[streamID] = self.batchData.get(streamID, 0) + length
        return encodeFrame(DATA, flags, streamID, length, payload)

    def windowFrame(self, flags: int, streamID: int, delta: int) -> bytes:
        """A Window Update frame, its delta counted for the rest of the batch."""
        self.batchDelta[streamID] = self.batchDelta.get(streamID, 0) + delta
        return encodeFrame(WINDOW_UPDATE, flags, streamID, delta)

    # -- frames ------------------------------------------------------------

    def batch(self) -> bytes:
        """The bytes of one step: one or a few frames, maybe mutated."""
        c = self.choices
        self.batchData.clear()
        self.batchDelta.clear()
        frames = [self.frame() for _ in range(c.weighted([(6, 1), (3, 2), (1, 4)]))]
        if self.ourPings and c.chance(30):
            # The peer answers the session's latest ping (a keep-alive).
            frames.append(encodeFrame(PING, ACK, 0, self.ourPings[-1]))
        data = b"".join(frames)
        if self.rough():
            data = self.mutate(data)
        return data

    def frame(self) -> bytes:
        """One frame, or a flood of one kind, or garbage."""
        c = self.choices
        return c.weighted(
            [
                (4, self.data),
                (3, self.windowUpdate),
                (3, self.open),
                (2, self.answer),
                (2, self.closing),
                (2, self.ping),
                (1, self.goAway),
                (1, self.stale),
                (1, self.flood),
                (1, self.oddHeader),
            ]
        )()

    def data(self) -> bytes:
        """Data on a live stream, at most its window (unless rough)."""
        rough = self.rough()
        streamID = self.anyStreamID() if rough else self.liveStream()
        if streamID is None or (streamID in self.finished and not rough):
            return self.open()
        flags = self.flags()
        if flags & FIN:
            self.finished.add(streamID)
        return self.dataFrame(flags, streamID, self.dataLength(streamID))

    def windowUpdate(self) -> bytes:
        """A window update on a live stream, within 32 bits (unless rough)."""
        streamID = self.target()
        if streamID is None:
            return self.open()
        return self.windowFrame(self.flags() & ~FIN, streamID, self.windowDelta(streamID))

    def open(self) -> bytes:
        """The peer opens a stream with its next ID (or any, when rough)."""
        c = self.choices
        streamID = self.anyStreamID() if self.rough() else self.newID()
        flags = SYN | self.flags()
        if flags & FIN:
            self.finished.add(streamID)
        if c.chance(60):
            return self.windowFrame(flags, streamID, c.pick([0, 1, INITIAL_WINDOW]))
        length = c.weighted([(6, lambda: c.integer(0, 300)), (1, lambda: self.dataLength(streamID))])()
        return self.dataFrame(flags, streamID, length)

    def answer(self) -> bytes:
        """The peer accepts (ACK) or refuses (RST) a stream the session opened."""
        c = self.choices
        if not self.ourStreams:
            return self.ping()
        streamID = c.pick(self.ourStreams)
        if c.chance(25):
            return encodeFrame(WINDOW_UPDATE, RST, streamID, 0)
        if c.chance(25) and streamID not in self.finished:
            return self.dataFrame(ACK, streamID, min(c.integer(0, 100), self.receiveWindow(streamID)))
        delta = min(c.pick([0, 1, INITIAL_WINDOW]), MAX_UINT32 - self.sendWindow(streamID))
        return self.windowFrame(ACK, streamID, delta)

    def closing(self) -> bytes:
        """FIN or RST on a live stream, alone or with data."""
        c = self.choices
        streamID = self.target()
        if streamID is None:
            return self.open()
        if streamID in self.finished and not self.rough():
            return encodeFrame(WINDOW_UPDATE, RST, streamID, 0)
        flags = self.closingFlags(streamID)
        if c.chance(30):
            return self.dataFrame(flags, streamID, min(c.integer(0, 100), self.receiveWindow(streamID)))
        return encodeFrame(WINDOW_UPDATE, flags, streamID, 0)

    def ping(self) -> bytes:
        """A ping, or an answer to one of the session's pings (or to none)."""
        c = self.choices
        if self.ourPings and c.chance(50):
            return encodeFrame(PING, ACK, 0, c.pick(self.ourPings))
        if self.rough():
            flags = c.pick([0, SYN | ACK, SYN | FIN | RST, c.integer(0, 0xFFFF)])
            return encodeFrame(PING, flags, self.anyStreamID(), c.integer(0, MAX_UINT32))
        return encodeFrame(PING, c.pick([SYN, ACK]), 0, c.pick([0, 1, MAX_UINT32, c.integer(0, MAX_UINT32)]))

    def goAway(self) -> bytes:
        """A normal Go Away; when rough, any code, flags and stream."""
        c = self.choices
        if self.rough():
            code = c.pick([1, 2, c.integer(3, MAX_UINT32)])
            return encodeFrame(GO_AWAY, self.flags(), c.pick([0, 1, MAX_UINT32]), code)
        return encodeFrame(GO_AWAY, 0, 0, 0)

    def stale(self) -> bytes:
        """A frame for a stream that is gone, or never was."""
        c = self.choices
        if self.rough():
            streamID = self.anyStreamID()
        elif self.gone:
            streamID = c.pick(self.gone)
            if self.session.hasStream(streamID):
                return self.ping()
        else:
            return self.ping()
        if c.chance(50):
            return self.dataFrame(self.flags(), streamID, c.integer(0, 3000))
        return encodeFrame(WINDOW_UPDATE, self.flags(), streamID, c.integer(0, 100))

    def oddHeader(self) -> bytes:
        """When rough, a header of any version, type, flags, stream and length, or garbage."""
        c = self.choices
        if not self.rough():
            return self.ping()
        if c.chance(30):
            return c.binary(48)
        version = c.weighted([(6, 0), (1, 1), (1, c.integer(0, 255))])
        frameType = c.weighted([(6, c.integer(0, 3)), (1, 4), (1, c.integer(0, 255))])
        length = c.pick([0, 1, 12, INITIAL_WINDOW, INITIAL_WINDOW + 1, MAX_UINT32, c.integer(0, MAX_UINT32)])
        header = HEADER.pack(version, frameType, self.flags(), self.anyStreamID(), length)
        if frameType == DATA:
            return header + pattern(min(length, c.integer(0, 32)))
        return header

    def flood(self) -> bytes:
        """Many pings, SYNs or small window updates at once."""
        c = self.choices
        count = c.pick([10, 200, 1200])
        kind = c.integer(0, 2)
        if kind == 0:
            return encodeFrame(PING, SYN, 0, 7) * count
        if kind == 1:
            return b"".join(
                encodeFrame(WINDOW_UPDATE, SYN, self.newID(), 0) for _ in range(count)
            )
        streamID = self.liveStream()
        if streamID is None or self.sendWindow(streamID) > MAX_UINT32 - count:
            return self.ping()
        self.batchDelta[streamID] = self.batchDelta.get(streamID, 0) + count
        return encodeFrame(WINDOW_UPDATE, 0, streamID, 1) * count

    def mutate(self, data: bytes) -> bytes:
        """Flip a bit, cut, insert, repeat or overwrite part of C{data}."""
        c = self.choices
        if not data:
            return c.binary(16)
        position = c.integer(0, len(data) - 1)
        kind = c.integer(0, 4)
        if kind == 0:
            flipped = data[position] ^ (1 << c.integer(0, 7))
            return data[:position] + bytes([flipped]) + data[position + 1 :]
        if kind == 1:
            return data[:position]
        if kind == 2:
            return data[:position] + c.binary(16) + data[position:]
        if kind == 3:
            return data[:position] + data[position : position + 24] * 2 + data[position + 24 :]
        return data[:position] + bytes([c.integer(0, 255)]) + data[position + 1 :]

    def cut(self, data: bytes) -> list[bytes]:
        """Cut C{data} into the pieces it arrives in."""
        c = self.choices
        if len(data) <= 200 and c.chance(5):
            return [data[i : i + 1] for i in range(len(data))]
        points = sorted({c.integer(0, len(data)) for _ in range(c.pick([0, 0, 1, 2, 4]))})
        pieces, previous = [], 0
        for point in points + [len(data)]:
            pieces.append(data[previous:point])
            previous = point
        return pieces


# -- the core ----------------------------------------------------------------


class StreamModel:
    """
    What the program knows of one stream: what was written to it and sent,
    received and not consumed, and which sides closed it.
    """

    def __init__(self, streamID: int, inbound: bool) -> None:
        self.streamID = streamID
        self.inbound = inbound
        self.accepted = False
        self.written = 0
        self.sent = 0
        self.unconsumed = 0
        self.closeAsked = False
        self.finSent = False
        self.remoteEnded = False
        self.live = True

    @property
    def offset(self) -> int:
        """Where this stream's bytes start in L{pattern}."""
        return self.streamID * 7 + (0 if self.inbound else 3)


class SessionProgram:
    """
    A program run against a sans-IO L{Session}, which the program drives as
    an application does, checking the session against a model of it.
    """

    def __init__(self, choices: Choices, isClient: bool) -> None:
        c = choices
        self.choices = choices
        self.config = SessionConfig(
            acceptBacklog=c.pick([256, 2, 1]),
            maxInboundStreams=c.pick([65536, 3]),
            maxStreamWindow=c.pick([INITIAL_WINDOW, LARGEST_WINDOW]),
        )
        self.session = Session(self.config, isClient)
        self.peer = Peer(self.session, choices)
        self.streams: dict[int, StreamModel] = {}
        # Streams that may still have bytes or a FIN to send, by ID, oldest first.
        self.senders: dict[int, list[StreamModel]] = {}
        self.pingsSent = 0
        self.terminated: SessionTerminated | None = None
        self.terminationEvents = 0
        self.quiet = False

    def run(self) -> None:
        """Run the program's steps, checking after each."""
        c = self.choices
        steps: list[tuple[int, Callable[[], None]]] = [
            (10, self.receive),
            (2, self.open),
            (2, self.accept),
            (3, self.write),
            (1, self.close),
            (1, self.reset),
            (3, self.acknowledge),
            (1, self.ping),
            (1, self.inspect),
            (1, self.goAway),
        ]
        while c.more():
            c.weighted(steps)()
            self.drain()
            self.check()

    # -- steps -------------------------------------------------------------

    def pickStream(self) -> int | None:
        """The stream a call is for: mostly a live one; it takes the focus."""
        c = self.choices
        streamID = self.peer.liveStream() if c.chance(90) else self.peer.anyStreamID()
        if streamID is not None:
            self.peer.focus = streamID
        return streamID

    def receive(self) -> None:
        """Bytes from the peer, in pieces."""
        data = self.peer.batch()
        before = self.session.terminated
        replies = 0
        for piece in self.peer.cut(data):
            events = self.session.receiveData(piece)
            if before is not None:
                check(events == [], lambda: f"events after the session ended: {events}")
            # The output first: what a reset stream sent before its RST is
            # checked against what was written to it.
            replies += self.drain()
            self.handle(events)
        check(
            replies <= len(data) // HEADER_SIZE + 1,
            lambda: f"{len(data)} bytes from the peer made the session answer {replies} frames",
        )

    def open(self) -> None:
        """Open a stream."""
        session = self.session
        try:
            streamID = session.openStream()
        except SessionClosedError:
            check(self.terminated is not None, "openStream: SessionClosedError while running")
            return
        except SessionGoingAwayError:
            check(session.remoteGoAway, "openStream: SessionGoingAwayError without Go Away")
            return
        except StreamLimitError:
            return
        check(self.terminated is None, "openStream succeeded after the session ended")
        check(not session.remoteGoAway, "openStream succeeded after the peer's Go Away")
        check(streamID % 2 == (1 if session.isClient else 0), f"opened stream {streamID} of the wrong parity")
        check(streamID not in self.streams, f"opened stream {streamID}, which is live")
        self.addStream(StreamModel(streamID, False))
        self.peer.focus = streamID

    def accept(self) -> None:
        """Accept a stream the peer opened (or try another)."""
        c = self.choices
        waiting = sorted(s for s, m in self.streams.items() if m.inbound and not m.accepted)
        streamID = c.pick(waiting) if waiting and c.chance(90) else self.peer.anyStreamID()
        model = self.streams.get(streamID)
        try:
            self.session.acceptStream(streamID)
        except UnknownStreamError:
            check(not self.session.hasStream(streamID), f"acceptStream({streamID}): UnknownStreamError for a live stream")
            check(model is None or self.terminated is not None, f"acceptStream({streamID}): UnknownStreamError for a modelled stream")
            return
        except YamuxError:
            check(
                model is None or not model.inbound or model.accepted or self.terminated is not None,
                f"acceptStream({streamID}) refused a stream waiting to be accepted",
            )
            return
        check(self.terminated is not None or (model is not None and model.inbound and not model.accepted),
              f"acceptStream({streamID}) accepted a stream that was not waiting")
        if model is not None:
            model.accepted = True

    def write(self) -> None:
        """Write to a stream: a little, about its window, or much more."""
        c = self.choices
        streamID = self.pickStream()
        if streamID is None:
            return
        session = self.session
        window = session.sendWindow(streamID) if session.hasStream(streamID) else 0
        size = c.weighted(
            [
                (5, lambda: c.integer(1, 2000)),
                (2, lambda: window),
                (2, lambda: window + 1),
                (1, lambda: c.integer(0, 3 * INITIAL_WINDOW)),
            ]
        )()
        size = min(size, 3 * INITIAL_WINDOW)
        model = self.streams.get(streamID)
        data = pattern(size, offset=model.offset + model.written if model else 0)
        try:
            session.sendData(streamID, data)
        except SessionClosedError:
            check(self.terminated is not None, "sendData: SessionClosedError while running")
            return
        except UnknownStreamError:
            check(model is None, f"sendData({streamID}): UnknownStreamError for a live stream")
            return
        except YamuxError:
            check(model is not None and model.closeAsked, f"sendData({streamID}) refused on a writable stream")
            return
        check(self.terminated is None, "sendData succeeded after the session ended")
        check(model is not None and not model.closeAsked, f"sendData({streamID}) succeeded on a stream not writable")
        model.written += size

    def close(self) -> None:
        """Half-close a stream."""
        streamID = self.pickStream()
        if streamID is None:
            return
        model = self.streams.get(streamID)
        try:
            events = self.session.closeStream(streamID)
        except SessionClosedError:
            check(self.terminated is not None, "closeStream: SessionClosedError while running")
            return
        except UnknownStreamError:
            check(model is None, f"closeStream({streamID}): UnknownStreamError for a live stream")
            return
        check(model is not None, f"closeStream({streamID}) succeeded on no stream")
        model.closeAsked = True
        self.handle(events)

    def reset(self) -> None:
        """Reset a stream (or one that is gone)."""
        streamID = self.pickStream()
        if streamID is None:
            return
        self.session.resetStream(streamID)
        model = self.streams.get(streamID)
        if model is not None and self.terminated is None:
            self.removeStream(model)
            # Its unsent bytes are dropped: nothing more may be sent.
            model.written = model.sent
            model.closeAsked = model.finSent = True

    def acknowledge(self) -> None:
        """Consume some of what a stream received (or more than it did)."""
        c = self.choices
        pending = sorted(s for s, m in self.streams.items() if m.unconsumed)
        streamID = c.pick(pending) if pending and c.chance(90) else self.peer.anyStreamID()
        model = self.streams.get(streamID)
        unconsumed = model.unconsumed if model is not None else 0
        # More than was received only where nothing was: the core takes an
        # acknowledgement in advance for the rest of a frame being received.
        size = c.weighted(
            [
                (3, lambda: unconsumed),
                (2, lambda: c.integer(0, unconsumed)),
                (1, lambda: c.integer(0, LARGEST_WINDOW + 10) if model is None else 0),
            ]
        )()
        self.session.acknowledgeReceivedData(streamID, size)
        if model is not None:
            model.unconsumed = max(0, unconsumed - size)

    def ping(self) -> None:
        """Ping the peer."""
        try:
            self.session.ping()
        except SessionClosedError:
            check(self.terminated is not None, "ping: SessionClosedError while running")
            return
        check(self.terminated is None, "ping succeeded after the session ended")
        self.pingsSent += 1

    def inspect(self) -> None:
        """Ask about a stream; only an unknown one may raise."""
        streamID = self.peer.anyStreamID()
        exists = self.session.hasStream(streamID)
        for method in (self.session.bufferedAmount, self.session.sendWindow, self.session.receiveWindow):
            try:
                method(streamID)
            except UnknownStreamError:
                check(not exists, f"{method.__name__}({streamID}) raised for a live stream")
            else:
                check(exists, f"{method.__name__}({streamID}) answered for no stream")
        self.session.describeStream(streamID)

    def goAway(self) -> None:
        """Send Go Away: mostly normal; rarely an error, or the connection lost."""
        c = self.choices
        kind = c.weighted([(8, 0), (1, 1), (1, 2)])
        if kind == 2:
            self.session.connectionLost("the fuzzer closed the connection")
        else:
            self.session.goAway(GoAwayCode.NORMAL if kind == 0 else GoAwayCode.PROTOCOL_ERROR)
        if self.session.terminated is not None and self.terminated is None:
            self.terminated = self.session.terminated

    # -- the model ---------------------------------------------------------

    def addStream(self, model: StreamModel) -> None:
        """A stream is live: opened by us, or by the peer."""
        self.streams[model.streamID] = model
        self.senders.setdefault(model.streamID, []).append(model)

    def removeStream(self, model: StreamModel) -> None:
        """A stream is gone: reset, or closed both ways."""
        model.live = False
        del self.streams[model.streamID]

    def handle(self, events: list[object]) -> None:
        """Check each event against the model, and update it."""
        window = self.config.maxStreamWindow
        for index, event in enumerate(events):
            check(self.terminated is None, lambda: f"event {event} after the session ended")
            kind = type(event)
            if kind is SessionTerminated:
                check(
                    self.peer.roughness > 0,
                    lambda: f"a peer that keeps to the rules ended the session: {event.reason}",
                )
                self.terminationEvents += 1
                check(index == len(events) - 1, "events after SessionTerminated")
                check(event is self.session.terminated, "SessionTerminated is not the session's")
                self.terminated = event
                continue
            if kind in (GoAwayReceived, PingAcknowledged):
                if kind is PingAcknowledged:
                    check(self.pingsSent > 0, "PingAcknowledged for a ping never sent")
                continue
            streamID = event.streamID
            model = self.streams.get(streamID)
            if kind is StreamOpened:
                check(model is None, f"StreamOpened for live stream {streamID}")
                check(streamID % 2 == (0 if self.session.isClient else 1), f"StreamOpened({streamID}) of our parity")
                self.addStream(StreamModel(streamID, True))
                inbound = [m for m in self.streams.values() if m.inbound]
                check(
                    sum(1 for m in inbound if not m.accepted) <= self.config.acceptBacklog,
                    "more streams waiting to be accepted than the backlog",
                )
                check(len(inbound) <= self.config.maxInboundStreams, "more inbound streams than maxInboundStreams")
                continue
            check(model is not None, lambda: f"{event} for a stream that is not live")
            if kind is DataReceived:
                check(event.data, "empty DataReceived")
                check(not model.remoteEnded, f"data on stream {streamID} after its end")
                model.unconsumed += len(event.data)
                check(
                    model.unconsumed <= window,
                    lambda: f"stream {streamID} holds {model.unconsumed} bytes, past its window of {window}",
                )
            elif kind is StreamEnded:
                check(not model.remoteEnded, f"second StreamEnded for stream {streamID}")
                model.remoteEnded = True
            elif kind is StreamAccepted:
                check(not model.inbound and not model.accepted, f"StreamAccepted for stream {streamID}")
                model.accepted = True
            elif kind is SendBufferDrained:
                pass
            elif kind is StreamReset:
                self.removeStream(model)
                model.written = model.sent
                model.closeAsked = model.finSent = True
            elif kind is StreamClosed:
                check(model.remoteEnded and model.closeAsked, f"StreamClosed for stream {streamID} not closed both ways")
                self.removeStream(model)
            else:
                raise FuzzFailure(f"unknown event {event!r}")

    def drain(self) -> int:
        """
        Take and check what the session queued.

        @return: how many frames in it answer the peer rather than carry our
            data: pings, Go Aways, RSTs, window updates.
        """
        output = self.session.dataToSend()
        if self.quiet:
            check(output == b"", lambda: f"{len(output)} bytes sent after the session ended")
        if self.session.terminated is not None:
            self.quiet = True
        frames = parseOutput(output)
        replies = 0
        for frameType, flags, streamID, length, payload in frames:
            if frameType == DATA:
                self.checkSent(streamID, payload)
            if flags & FIN:
                self.checkFin(streamID)
            if not (frameType == DATA or (frameType == WINDOW_UPDATE and flags in (FIN, SYN, ACK))):
                replies += 1
        self.peer.observe(frames)
        return replies

    def checkSent(self, streamID: int, payload: bytes) -> None:
        """Data sent on a stream is the next of what was written to it."""
        for model in self.senders.get(streamID, []):
            if model.sent < model.written:
                expected = pattern(len(payload), offset=model.offset + model.sent)
                check(len(payload) <= model.written - model.sent, f"stream {streamID}: more sent than written")
                check(payload == expected, f"stream {streamID}: sent bytes differ from those written")
                check(not model.finSent, f"stream {streamID}: data sent after FIN")
                model.sent += len(payload)
                return
        raise FuzzFailure(f"data sent on stream {streamID}, which has nothing to send")

    def checkFin(self, streamID: int) -> None:
        """A FIN follows a close, after every byte written."""
        for model in self.senders.get(streamID, []):
            if model.closeAsked and not model.finSent:
                check(model.sent == model.written, f"stream {streamID}: FIN sent before its data")
                model.finSent = True
                break
        else:
            raise FuzzFailure(f"FIN sent on stream {streamID}, never closed")
        self.senders[streamID] = [
            m for m in self.senders[streamID] if m.live or m.sent < m.written or not m.finSent
        ]

    def check(self) -> None:
        """The invariants that hold after every step."""
        session = self.session
        check(session.terminated is self.terminated, "the session's end changed")
        check(self.terminationEvents <= 1, "more than one SessionTerminated")
        check(len(session._header) < HEADER_SIZE, "more than a header of partial input held")
        window = self.config.maxStreamWindow
        if self.terminated is None:
            check(set(session.streamIDs) == set(self.streams),
                  lambda: f"live streams {sorted(session.streamIDs)}, expected {sorted(self.streams)}")
        for streamID in session.streamIDs:
            state = session._streams[streamID]
            check(0 <= state.recvWindow <= window, f"stream {streamID}: receive window {state.recvWindow}")
            unconsumed = window - state.recvWindow - state.recvConsumed
            check(0 <= unconsumed <= window, f"stream {streamID}: {unconsumed} bytes unconsumed")
            check(0 <= state.sendWindow <= MAX_UINT32, f"stream {streamID}: send window {state.sendWindow}")
            check(state.sendBuffered == sum(len(piece) for piece in state.sendBuffer),
                  f"stream {streamID}: buffered count is wrong")
            model = self.streams.get(streamID)
            if model is not None and self.terminated is None:
                check(
                    session.bufferedAmount(streamID) == model.written - model.sent,
                    lambda: f"stream {streamID}: {session.bufferedAmount(streamID)} bytes buffered, "
                    f"{model.written - model.sent} written and not sent",
                )
                if not model.remoteEnded:
                    pending = session._payloadRemaining if session._payloadStream is state else 0
                    check(
                        unconsumed == model.unconsumed + pending,
                        lambda: f"stream {streamID}: the core counts {unconsumed} bytes "
                        f"unconsumed, the application {model.unconsumed} (+{pending} to come)",
                    )
        if self.terminated is None:
            # What bounds the peer's streams counts them right.
            inbound = [m for m in self.streams.values() if m.inbound]
            waiting = sum(1 for m in inbound if not m.accepted)
            check(
                (session._unaccepted, session._inboundOpen) == (waiting, len(inbound)),
                lambda: f"the core counts {session._unaccepted} streams waiting and "
                f"{session._inboundOpen} inbound, not {waiting} and {len(inbound)}",
            )


# -- the adapter -------------------------------------------------------------


class InjectedError(Exception):
    """Raised on purpose by the program's protocols and factories."""


class FuzzTransport(StringTransport):
    """
    A connection's transport: records what is written; like a TCP
    transport, unregistering no producer is allowed.
    """

    def unregisterProducer(self) -> None:
        """Forget the producer, if any."""
        self.producer = None
        self.streaming = None


@implementer(IPushProducer)
class FuzzProducer:
    """A producer registered on a stream; records whether it is paused."""

    def __init__(self) -> None:
        self.paused = False
        self.stopped = False

    def pauseProducing(self) -> None:
        """Note the pause."""
        self.paused = True

    def resumeProducing(self) -> None:
        """Note the resumption."""
        self.paused = False

    def stopProducing(self) -> None:
        """Note the stop."""
        self.stopped = True


class FuzzStream(Protocol):
    """
    The protocol of one stream: counts what it receives, checks that its
    transport calls it in a legal order, and raises when told to.
    """

    def __init__(self, program: ProtocolProgram, raises: bool = False) -> None:
        self.program = program
        self.raises = raises
        self.received = 0
        self.readEnded = False
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        """Count the bytes; maybe pause the stream, or raise."""
        check(self.lost is None, "dataReceived after connectionLost")
        check(not self.readEnded, "dataReceived after readConnectionLost")
        check(data, "empty dataReceived")
        self.received += len(data)
        if self.program.decide(20):
            # Back-pressure: the program resumes it later, or never.
            self.transport.pauseProducing()
        if self.raises and self.program.decide(30):
            raise InjectedError("a stream protocol raised in dataReceived")

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Check that this happens once, for a reason a stream may end with."""
        check(self.lost is None, "connectionLost twice")
        check(
            reason.check(ConnectionDone, ConnectionLost, StreamOpenTimeoutError, StreamRefusedError),
            lambda: f"stream lost with {reason.value!r}",
        )
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class HalfCloseFuzzStream(FuzzStream):
    """A stream protocol that is told of half-closes."""

    def readConnectionLost(self) -> None:
        """Check that this happens once, before connectionLost."""
        check(self.lost is None, "readConnectionLost after connectionLost")
        check(not self.readEnded, "readConnectionLost twice")
        self.readEnded = True

    def writeConnectionLost(self) -> None:
        """Nothing to do."""


class FuzzStreamFactory(Factory):
    """Builds the protocols of the streams the peer opens: accepts, refuses or raises."""

    def __init__(self, program: ProtocolProgram) -> None:
        self.program = program

    def buildProtocol(self, addr: Any) -> Protocol | None:
        """A new stream protocol, mostly; L{None} or an exception sometimes."""
        program = self.program
        if program.decide(10):
            return None
        if program.decide(5):
            raise InjectedError("the stream factory raised")
        return program.newStream()


#: Failures the adapter's Deferreds may fail with.
EXPECTED_FAILURES = (
    SessionEndedError,
    StreamRefusedError,
    StreamOpenTimeoutError,
    PingTimeoutError,
    CancelledError,
    StreamLimitError,
    SessionGoingAwayError,
    SessionClosedError,
)


class ProtocolProgram:
    """
    A program run against a L{YamuxProtocol} over an in-memory transport and
    a fake clock: frames from the peer, calls on the protocol and on its
    streams' transports, time passing, and in the end the connection lost.
    """

    def __init__(self, choices: Choices, isClient: bool) -> None:
        c = choices
        self.choices = choices
        self.config = SessionConfig(
            acceptBacklog=c.pick([256, 2]),
            maxStreamWindow=c.pick([INITIAL_WINDOW, LARGEST_WINDOW]),
            enableKeepAlive=c.pick([True, False]),
            maxUnsentReplies=c.pick([1000, 3]),
            keepAliveInterval=30.0,
            keepAliveTimeout=10.0,
            streamOpenTimeout=75.0,
            streamCloseTimeout=300.0,
        )
        self.clock = Clock()
        self.protocol = YamuxProtocol(isClient, FuzzStreamFactory(self), self.config, self.clock)
        self.transport = FuzzTransport()
        self.peer = Peer(self.protocol.session, choices)
        self.protocols: list[FuzzStream] = []
        self.transports: list[StreamTransport] = []
        self.deferreds: list[Deferred[Any]] = []
        self.opening: list[Deferred[Any]] = []
        self.outcomes: dict[int, Any] = {}
        self.failures: list[Failure] = []
        self.paused = False
        self.repliesAtPause = 0
        self.lost = False
        self.quiet = False
        self.closingSince: float | None = None
        self.policy = [c.integer(0, 99) for _ in range(7)]
        self.decisions = 0

    def run(self) -> None:
        """Run the program's steps, checking after each; then lose the connection."""
        c = self.choices
        self.protocol.makeConnection(self.transport)
        steps: list[tuple[int, Callable[[], None]]] = [
            (10, self.receive),
            (2, self.open),
            (5, self.streamCall),
            (2, self.advance),
            (1, self.pauseTransport),
            (1, self.ping),
            (1, self.goAway),
            (1, self.cancelOpen),
            (1, self.loseConnection),
        ]
        observer = self.observeLog
        globalLogPublisher.addObserver(observer)
        try:
            while c.more():
                c.weighted(steps)()
                self.check()
            if not self.lost:
                self.connectionLost()
            self.checkAfterTheEnd()
        finally:
            globalLogPublisher.removeObserver(observer)
        for failure in self.failures:
            check(failure.check(InjectedError), lambda: f"logged failure {failure.getTraceback()}")

    def observeLog(self, event: dict[str, Any]) -> None:
        """Keep the failures logged, to check them at the end."""
        failure = event.get("log_failure")
        if failure is not None:
            self.failures.append(failure)

    def decide(self, percent: int) -> bool:
        """
        A decision taken while the protocol calls the program back: from
        the choices drawn at the start, in turn, so that no draw happens
        where the adapter catches every exception.
        """
        self.decisions += 1
        return self.policy[self.decisions % len(self.policy)] >= 100 - percent

    def newStream(self) -> FuzzStream:
        """A stream protocol, half-closeable or not, raising or not."""
        protocolClass = HalfCloseFuzzStream if self.decide(50) else FuzzStream
        protocol = protocolClass(self, raises=self.decide(5))
        self.protocols.append(protocol)
        return protocol

    def track(self, d: Deferred[Any]) -> Deferred[Any]:
        """Record how C{d} ends; check that it fails only as documented."""
        index = len(self.deferreds)
        self.deferreds.append(d)

        def done(result: Any) -> None:
            # Checked in check(): an exception here would stay in the Deferred.
            self.outcomes[index] = result

        d.addBoth(done)
        return d

    # -- steps -------------------------------------------------------------

    def receive(self) -> None:
        """Bytes from the peer, in pieces, while the connection is open."""
        if self.lost or self.transport.disconnecting:
            return
        data = self.peer.batch()
        for piece in self.peer.cut(data):
            if self.transport.disconnecting:
                break
            self.protocol.dataReceived(piece)
            self.readOutput()

    def open(self) -> None:
        """Open a stream, with a protocol or a factory."""
        c = self.choices
        if c.chance(20):
            factory = Factory()
            factory.buildProtocol = lambda addr: self.newStream()  # type: ignore[method-assign]
            d = self.protocol.openStream(factory)
        else:
            d = self.protocol.openStream(self.newStream())
        self.track(d)
        self.opening.append(d)
        if self.protocols and self.protocols[-1].transport is not None:
            self.peer.focus = self.protocols[-1].transport.streamID
        self.collectTransports()
        self.readOutput()

    def cancelOpen(self) -> None:
        """Cancel an open (maybe one that completed already)."""
        if self.opening:
            self.choices.pick(self.opening).cancel()
        self.readOutput()

    def streamCall(self) -> None:
        """Write to, close, abort, pause or resume one stream."""
        self.collectTransports()
        if not self.transports:
            return
        c = self.choices
        focused = [t for t in self.transports if t.streamID == self.peer.focus and t.connected]
        connected = [t for t in self.transports if t.connected]
        if focused and c.chance(50):
            transport = focused[-1]
        elif connected and c.chance(80):
            transport = c.pick(connected)
        else:
            transport = c.pick(self.transports)
        self.peer.focus = transport.streamID
        action = c.weighted(
            [(4, "write"), (2, "pause"), (2, "resume"), (1, "close"), (1, "halfClose"),
             (1, "abort"), (1, "producer"), (1, "unregister")]
        )
        if action == "write":
            window = self.config.maxStreamWindow
            size = c.weighted([(4, lambda: c.integer(1, 3000)), (1, lambda: c.integer(window - 10, window + 10)), (1, lambda: 3 * window)])()
            transport.write(pattern(size, offset=transport.streamID))
        elif action == "close":
            transport.loseConnection()
        elif action == "halfClose":
            transport.loseWriteConnection()
        elif action == "abort":
            transport.abortConnection()
        elif action == "pause":
            transport.pauseProducing()
        elif action == "resume":
            transport.resumeProducing()
        elif action == "producer":
            if transport._producer is None:
                transport.registerProducer(FuzzProducer(), c.chance(70))
        else:
            transport.unregisterProducer()
        self.readOutput()

    def advance(self) -> None:
        """Let time pass."""
        c = self.choices
        config = self.config
        self.clock.advance(
            c.weighted(
                [
                    (3, 0),
                    (3, 0.5),
                    (1, config.keepAliveTimeout),
                    (1, config.keepAliveInterval),
                    (1, config.streamOpenTimeout),
                    (1, config.streamCloseTimeout),
                ]
            )
        )
        self.readOutput()

    def pauseTransport(self) -> None:
        """The transport's buffer fills (the peer does not read), or drains."""
        if self.lost:
            return
        if self.paused:
            self.paused = False
            self.protocol.resumeProducing()
        else:
            self.paused = True
            self.repliesAtPause = self.protocol.session.repliesQueued
            self.protocol.pauseProducing()
        self.readOutput()

    def ping(self) -> None:
        """Ping, with the default timeout or another."""
        c = self.choices
        self.track(self.protocol.ping(c.pick([None, 1.0, 100.0])))
        self.readOutput()

    def goAway(self) -> None:
        """Go Away, or a graceful shutdown."""
        c = self.choices
        if c.chance(50):
            self.protocol.goAway()
        else:
            self.track(self.protocol.shutdown(c.pick([10.0, 0.5])))
        self.readOutput()

    def loseConnection(self) -> None:
        """The connection goes away (at once if the protocol closed it)."""
        if self.lost:
            return
        if self.transport.disconnecting or self.choices.chance(20):
            self.connectionLost()

    def connectionLost(self) -> None:
        """Lose the connection; nothing may be written after."""
        self.readOutput()
        self.lost = True
        self.quiet = True
        self.track(self.protocol.whenClosed())
        reason = ConnectionDone() if self.choices.chance(50) else ConnectionLost()
        self.protocol.connectionLost(Failure(reason))
        self.readOutput()

    # -- checks ------------------------------------------------------------

    def collectTransports(self) -> None:
        """Note the transports of the stream protocols connected since last time."""
        for protocol in self.protocols:
            transport = protocol.transport
            if transport is not None and transport not in self.transports:
                self.transports.append(transport)

    def readOutput(self) -> None:
        """Parse and check what the protocol wrote since last time."""
        output = self.transport.value()
        self.transport.clear()
        if self.quiet:
            check(output == b"", lambda: f"{len(output)} bytes written after the session ended")
        self.peer.observe(parseOutput(output))
        if self.protocol.session.terminated is not None:
            self.quiet = True

    def check(self) -> None:
        """The invariants that hold after every step."""
        protocol = self.protocol
        session = protocol.session
        self.collectTransports()
        self.checkOutcomes()
        check(len(session._header) < HEADER_SIZE, "more than a header of partial input held")
        window = self.config.maxStreamWindow
        for transport in self.transports:
            held = sum(len(piece) for piece in transport._received)
            check(held <= window, lambda: f"stream {transport.streamID} holds {held} bytes back")
        for streamID in session.streamIDs:
            state = session._streams[streamID]
            check(0 <= state.recvWindow <= window, f"stream {streamID}: receive window {state.recvWindow}")
            check(0 <= state.sendWindow <= MAX_UINT32, f"stream {streamID}: send window {state.sendWindow}")
        if protocol._mayWrite and not self.lost:
            check(session._outbound == [], "the core holds bytes the protocol did not write")
        if self.paused and not self.lost:
            unsent = session.repliesQueued - self.repliesAtPause
            check(
                unsent <= self.config.maxUnsentReplies or self.transport.disconnecting,
                lambda: f"{unsent} answers queued while the peer does not read",
            )
        if session.terminated is not None and not self.lost:
            check(self.transport.disconnecting, "the session ended and its connection stays open")
            check(
                self.peer.roughness > 0 or session.terminated.byPeer,
                lambda: f"a peer that keeps to the rules ended the session: {session.terminated.reason}",
            )
        if self.transport.disconnecting and not self.lost:
            # A peer that does not read keeps a closing connection open: it
            # is aborted after the keep-alive timeout.
            if self.closingSince is None:
                self.closingSince = self.clock.seconds()
            elif self.clock.seconds() - self.closingSince > self.config.keepAliveTimeout:
                check(self.transport.disconnected, "a closing connection is never aborted")

    def checkOutcomes(self) -> None:
        """The Deferreds that fired failed only as documented."""
        for result in self.outcomes.values():
            if isinstance(result, Failure):
                check(result.check(*EXPECTED_FAILURES), lambda: f"Deferred failed with {result.value!r}")

    def checkAfterTheEnd(self) -> None:
        """Once the connection is gone, everything is wound up."""
        self.collectTransports()
        # Calls after the end do nothing, or fail as documented.
        self.track(self.protocol.openStream(self.newStream()))
        self.track(self.protocol.ping())
        self.protocol.goAway()
        self.track(self.protocol.shutdown())
        for transport in self.transports:
            transport.write(b"late")
            transport.loseConnection()
        self.clock.advance(0)
        for protocol in self.protocols:
            if protocol.transport is not None:
                check(protocol.lost is not None, "a stream protocol was never told the connection is gone")
        for index, d in enumerate(self.deferreds):
            check(index in self.outcomes, lambda: f"Deferred {index} never fired")
        calls = self.clock.getDelayedCalls()
        check(calls == [], lambda: f"timers left after the connection is gone: {calls}")
        self.checkOutcomes()
        self.readOutput()


# -- the tests ---------------------------------------------------------------


def exampleCount() -> int:
    """The examples per test: C{TUNNEL_FUZZ_EXAMPLES}, or L{CI_EXAMPLES}."""
    return int(os.environ.get("TUNNEL_FUZZ_EXAMPLES", CI_EXAMPLES))


def fuzzSettings(examples: int) -> settings:
    """The hypothesis settings of a fuzz run of C{examples} examples."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: What hypothesis draws for a program: its decisions, as bytes.
PROGRAMS = st.binary(min_size=256, max_size=4096)


def runSession(data: bytes, isClient: bool) -> None:
    """Run the L{SessionProgram} that C{data} decides."""
    SessionProgram(BytesChoices(data), isClient).run()


def runProtocol(data: bytes, isClient: bool) -> None:
    """Run the L{ProtocolProgram} that C{data} decides."""
    ProtocolProgram(BytesChoices(data), isClient).run()


class SessionFuzzTests(SynchronousTestCase):
    """
    The sans-IO core, either side, driven by programs of peer frames and
    API calls.
    """

    @fuzzSettings(exampleCount())
    @given(PROGRAMS)
    def test_clientSession(self, data: bytes) -> None:
        """A client session keeps every promise whatever the peer sends."""
        runSession(data, True)

    @fuzzSettings(exampleCount())
    @given(PROGRAMS)
    def test_serverSession(self, data: bytes) -> None:
        """A server session keeps every promise whatever the peer sends."""
        runSession(data, False)


class ProtocolFuzzTests(SynchronousTestCase):
    """
    The Twisted adapter, either side, over an in-memory transport with a
    fake clock, driven by programs of peer frames, calls and time.
    """

    def tearDown(self) -> None:
        """
        Take the failures the programs logged, which they checked: only
        those of protocols that raise on purpose.
        """
        self.flushLoggedErrors(InjectedError)

    @fuzzSettings(exampleCount())
    @given(PROGRAMS)
    def test_clientProtocol(self, data: bytes) -> None:
        """A client protocol keeps every promise whatever the peer sends."""
        runProtocol(data, True)

    @fuzzSettings(exampleCount())
    @given(PROGRAMS)
    def test_serverProtocol(self, data: bytes) -> None:
        """A server protocol keeps every promise whatever the peer sends."""
        runProtocol(data, False)
