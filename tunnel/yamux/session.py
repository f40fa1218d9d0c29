"""
The yamux session state machine: bytes in, events out; API calls in, bytes
out. No I/O, no reactor and no clock.
"""

from __future__ import annotations

from typing import Union

from tunnel.yamux.config import SessionConfig
from tunnel.yamux.errors import (
    ProtocolError,
    SessionClosedError,
    SessionGoingAwayError,
    StreamLimitError,
    UnknownStreamError,
    YamuxError,
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
from tunnel.yamux.frames import (
    HEADER,
    HEADER_SIZE,
    INITIAL_WINDOW,
    MAX_UINT32,
    PROTOCOL_VERSION,
    Flag,
    FrameType,
    GoAwayCode,
    describeHeader,
)
from tunnel.yamux.stream import StreamState

Event = Union[
    StreamOpened,
    StreamAccepted,
    DataReceived,
    StreamEnded,
    StreamReset,
    StreamClosed,
    SendBufferDrained,
    PingAcknowledged,
    GoAwayReceived,
    SessionTerminated,
]

# Plain ints: enum arithmetic on the hot path costs Python-level calls.
_DATA = int(FrameType.DATA)
_WINDOW_UPDATE = int(FrameType.WINDOW_UPDATE)
_PING = int(FrameType.PING)
_GO_AWAY = int(FrameType.GO_AWAY)
_SYN = int(Flag.SYN)
_ACK = int(Flag.ACK)
_FIN = int(Flag.FIN)
_RST = int(Flag.RST)
_FIN_OR_RST = _FIN | _RST
_pack = HEADER.pack
_unpackFrom = HEADER.unpack_from


class Session:
    """
    One yamux session, client or server side.

    Feed it the bytes that arrive with L{receiveData}, which returns the
    events they caused; call the API methods to open, write, close and reset
    streams; send whatever L{dataToSend} returns to the peer after each call.

    The peer's mistakes never raise: they end the session with a Go Away
    frame carrying code 1 and a L{SessionTerminated} event, after which the
    session ignores further input.

    Within the events of one L{receiveData} call a stream ID names one
    stream: a SYN that reuses the ID of a stream gone earlier in the same
    call (no peer reuses IDs) is refused with RST, as one beyond the accept
    backlog is.

    @ivar config: the session's settings.
    @ivar isClient: whether this is the client side (it opens odd stream IDs).
    @ivar localGoAway: whether we sent Go Away.
    @ivar remoteGoAway: whether the peer sent Go Away.
    @ivar terminated: why the session ended, or L{None} while it runs.
    @ivar repliesQueued: how many frames the session queued, so far, in
        answer to the peer's own frames: acknowledgements of its pings and
        RSTs refusing the streams it opened. The peer decides how many it
        asks for; a caller that cannot send them (the peer does not read)
        compares this count over time to bound what it buffers.
    @ivar sendingPaused: whether streams' data is held back whatever the
        windows allow (see L{pauseSending}).
    """

    def __init__(self, config: SessionConfig | None = None, isClient: bool = True):
        self.config = config if config is not None else SessionConfig()
        self.isClient = isClient
        self.localGoAway = False
        self.remoteGoAway = False
        self.terminated: SessionTerminated | None = None
        self.repliesQueued = 0
        self.sendingPaused = False
        self._streams: dict[int, StreamState] = {}
        # The streams with data in their send buffers, and its total size.
        self._buffering: dict[int, StreamState] = {}
        self._bufferedTotal = 0
        self._pausedTotal = 0
        # Our streams opened while sending was paused: their SYN goes out
        # with their data, so that data never lags far behind its SYN.
        self._synPending: dict[int, StreamState] = {}
        self._nextStreamID = 1 if isClient else 2
        self._peerParity = 0 if isClient else 1
        self._windowBonus = self.config.maxStreamWindow - INITIAL_WINDOW
        self._grantThreshold = self.config.maxStreamWindow // 2
        self._outbound: list[bytes] = []
        self._header = bytearray()
        self._payloadRemaining = 0
        self._payloadStream: StreamState | None = None
        self._payloadFlags = 0
        self._unaccepted = 0
        self._inboundOpen = 0
        self._nextPingID = 0
        self._pingsOutstanding: set[int] = set()
        # The peer's streams forgotten since the current receiveData began.
        self._goneInThisRead: set[int] = set()

    # -- inspection --------------------------------------------------------

    def dataToSend(self) -> bytes:
        """
        Take the bytes queued for the peer.

        @return: the bytes, possibly empty; they are not returned again.
        """
        return b"".join(self.chunksToSend())

    def chunksToSend(self) -> list[bytes]:
        """
        Take the bytes queued for the peer as the pieces they were queued in
        (headers and payloads), to hand to a vectored write without copying.

        @return: the pieces, possibly none; they are not returned again.
        """
        chunks, self._outbound = self._outbound, []
        return chunks

    @property
    def streamIDs(self) -> list[int]:
        """The IDs of the streams that are not gone yet."""
        return list(self._streams)

    def hasStream(self, streamID: int) -> bool:
        """Whether a stream exists (it is not closed on both sides, nor reset)."""
        return streamID in self._streams

    def awaitsAcceptance(self, streamID: int) -> bool:
        """
        Whether a stream the peer opened waits to be accepted or reset (see
        L{StreamOpened}). Events are returned once all the bytes given to
        L{receiveData} are read: by the time a L{StreamOpened} is handled,
        later frames may have reset the stream already.
        """
        stream = self._streams.get(streamID)
        return stream is not None and stream.inbound and not stream.established

    def bufferedAmount(self, streamID: int) -> int:
        """
        How many bytes written to a stream wait for the peer to grant window.

        @raise UnknownStreamError: if the stream is gone.
        """
        return self._stream(streamID).sendBuffered

    @property
    def bufferedTotal(self) -> int:
        """
        How many bytes written to streams wait to be sent, on all streams
        together: for the peer to grant window, or for L{resumeSending}.
        """
        return self._bufferedTotal

    @property
    def heldWhilePaused(self) -> int:
        """
        How many of those bytes were written while sending was paused (see
        L{pauseSending}), since it last resumed: what the session holds
        because the peer does not read, not because of its windows.
        """
        return self._pausedTotal

    def sendWindow(self, streamID: int) -> int:
        """
        How many bytes may be sent on a stream before the peer grants more.

        @raise UnknownStreamError: if the stream is gone.
        """
        return self._stream(streamID).sendWindow

    def receiveWindow(self, streamID: int) -> int:
        """
        How many bytes the peer may send on a stream before we grant more.

        @raise UnknownStreamError: if the stream is gone.
        """
        return self._stream(streamID).recvWindow

    def describeStream(self, streamID: int) -> str:
        """A short description of a stream's state, for logs."""
        stream = self._streams.get(streamID)
        return stream.describe() if stream else f"stream {streamID} (gone)"

    # -- API: streams ------------------------------------------------------

    def openStream(self) -> int:
        """
        Open a new stream: queue its SYN. Data may be sent at once.

        @return: the new stream's ID.
        @raise SessionClosedError: if the session has ended.
        @raise SessionGoingAwayError: if the peer sent Go Away.
        @raise StreamLimitError: if the session has used up its stream IDs.
        """
        self._checkRunning()
        if self.remoteGoAway:
            raise SessionGoingAwayError("the peer sent Go Away: no new streams")
        streamID = self._nextStreamID
        if streamID > MAX_UINT32:
            raise StreamLimitError("no stream IDs left in this session")
        self._nextStreamID += 2
        stream = StreamState(
            streamID, False, INITIAL_WINDOW, self.config.maxStreamWindow
        )
        self._streams[streamID] = stream
        if self.sendingPaused:
            self._synPending[streamID] = stream
        else:
            self._outbound.append(
                _pack(PROTOCOL_VERSION, _WINDOW_UPDATE, _SYN, streamID, self._windowBonus)
            )
        return streamID

    def acceptStream(self, streamID: int) -> None:
        """
        Accept a stream the peer opened (see L{StreamOpened}): queue its ACK.
        Once the session has ended nothing is queued, since no frame may
        follow its Go Away.

        @raise UnknownStreamError: if the stream is gone.
        @raise YamuxError: if the stream is not one waiting to be accepted.
        """
        stream = self._stream(streamID)
        if not stream.inbound or stream.established:
            raise YamuxError(f"stream {streamID} is not waiting to be accepted")
        stream.established = True
        self._unaccepted -= 1
        if self.terminated is not None:
            return
        self._outbound.append(
            _pack(PROTOCOL_VERSION, _WINDOW_UPDATE, _ACK, streamID, self._windowBonus)
        )

    def sendData(self, streamID: int, data: bytes) -> None:
        """
        Send bytes on a stream. What the peer's window does not allow yet,
        and all of it while sending is paused (L{pauseSending}), is buffered
        and sent as the peer grants window and sending resumes (see
        L{bufferedAmount} and L{SendBufferDrained}).

        @raise SessionClosedError: if the session has ended.
        @raise UnknownStreamError: if the stream is gone.
        @raise YamuxError: if we half-closed the stream already.
        """
        self._checkRunning()
        stream = self._stream(streamID)
        if not stream.writable:
            raise YamuxError(f"stream {streamID} is closed for writing")
        size = len(data)
        if not size:
            return
        if not stream.sendBuffer and size <= stream.sendWindow and not self.sendingPaused:
            stream.sendWindow -= size
            self._outbound.append(_pack(PROTOCOL_VERSION, _DATA, 0, streamID, size))
            self._outbound.append(data)
            return
        stream.sendBuffer.append(data)
        stream.sendBuffered += size
        self._bufferedTotal += size
        self._buffering[streamID] = stream
        if self.sendingPaused:
            stream.pausedBuffered += size
            self._pausedTotal += size
        else:
            self._sendBuffered(stream)

    def closeStream(self, streamID: int) -> list[Event]:
        """
        Half-close a stream: queue a FIN, sent once the buffered data is.
        Closing a stream that is already half-closed by us does nothing.

        @return: a L{StreamClosed} event if this ended the stream (the peer
            had half-closed it too), else nothing.
        @raise SessionClosedError: if the session has ended.
        @raise UnknownStreamError: if the stream is gone.
        """
        self._checkRunning()
        stream = self._stream(streamID)
        if not stream.writable:
            return []
        stream.finPending = True
        if streamID in self._synPending:
            return []
        return self._sendFinIfDrained(stream)

    def resetStream(self, streamID: int) -> None:
        """
        Reset a stream: queue an RST, drop what is buffered for it, forget it.
        Resetting a stream that is gone does nothing.
        """
        stream = self._streams.get(streamID)
        if stream is None or self.terminated is not None:
            return
        if stream.inbound and not stream.established:
            self.repliesQueued += 1
        if self._synPending.pop(streamID, None) is None:
            # A stream the peer never heard of goes without a word.
            self._outbound.append(
                _pack(PROTOCOL_VERSION, _WINDOW_UPDATE, _RST, streamID, 0)
            )
        self._forget(stream)

    def acknowledgeReceivedData(self, streamID: int, size: int) -> None:
        """
        Tell the session that C{size} bytes received on a stream were
        consumed. Once half a window's worth is consumed, the session grants
        it back to the peer with a Window Update, as HashiCorp's yamux does.
        Acknowledging data of a stream that is gone does nothing.
        """
        stream = self._streams.get(streamID)
        if stream is None or stream.remoteClosed or self.terminated is not None:
            return
        granted = self.config.maxStreamWindow - stream.recvWindow - stream.recvConsumed
        stream.recvConsumed += min(size, granted)
        if stream.recvConsumed >= self._grantThreshold:
            delta = stream.recvConsumed
            stream.recvConsumed = 0
            stream.recvWindow += delta
            self._outbound.append(
                _pack(PROTOCOL_VERSION, _WINDOW_UPDATE, 0, streamID, delta)
            )

    # -- API: session ------------------------------------------------------

    def pauseSending(self) -> None:
        """
        Hold back the data written to streams from now on, whatever the
        windows allow, until L{resumeSending}: the connection under the
        session takes no more (the peer does not read). The peer's window
        is no bound on what we buffer: only what is written while sending is
        paused is, and L{bufferedTotal} counts it. Other frames (window
        updates, pings and their answers, FIN and RST) are still queued.
        """
        self.sendingPaused = True

    def resumeSending(self) -> list[Event]:
        """
        Send the data held back since L{pauseSending}, as far as the windows
        allow.

        @return: a L{SendBufferDrained} event for each stream whose send
            buffer is now empty, and a L{StreamClosed} event for a stream
            that this ended (its FIN waited for the data, and the peer had
            half-closed it too).
        """
        self.sendingPaused = False
        self._pausedTotal = 0
        events: list[Event] = []
        for stream in self._buffering.values():
            stream.pausedBuffered = 0
        opened, self._synPending = self._synPending, {}
        if self.terminated is not None:
            return events
        order = list(opened.values()) + [
            stream for streamID, stream in self._buffering.items() if streamID not in opened
        ]
        for stream in order:
            if stream.streamID in opened:
                self._outbound.append(
                    _pack(
                        PROTOCOL_VERSION, _WINDOW_UPDATE, _SYN, stream.streamID, self._windowBonus
                    )
                )
            if stream.sendBuffered:
                if not stream.sendWindow:
                    continue
                self._sendBuffered(stream)
                if stream.sendBuffered:
                    continue
                events.append(SendBufferDrained(stream.streamID))
            if stream.finPending:
                events.extend(self._sendFinIfDrained(stream))
        return events

    def ping(self) -> int:
        """
        Queue a ping.

        @return: the opaque value the peer's answer will carry (see
            L{PingAcknowledged}).
        @raise SessionClosedError: if the session has ended.
        """
        self._checkRunning()
        opaque = self._nextPingID
        self._nextPingID = (opaque + 1) & MAX_UINT32
        self._pingsOutstanding.add(opaque)
        self._outbound.append(_pack(PROTOCOL_VERSION, _PING, _SYN, 0, opaque))
        return opaque

    def goAway(self, code: int = GoAwayCode.NORMAL) -> None:
        """
        Queue a Go Away: the peer may open no new streams. With code
        L{GoAwayCode.NORMAL} the open streams go on; any other code ends the
        session.
        """
        if self.terminated is not None:
            return
        self.localGoAway = True
        self._outbound.append(_pack(PROTOCOL_VERSION, _GO_AWAY, 0, 0, code))
        if code != GoAwayCode.NORMAL:
            self.terminated = SessionTerminated(
                code, f"we sent Go Away with code {code}", False
            )

    def connectionLost(self, reason: str = "connection lost") -> None:
        """
        Record that the connection under the session is gone.
        """
        if self.terminated is None:
            self.terminated = SessionTerminated(
                GoAwayCode.NORMAL, reason, True
            )
        self._outbound.clear()

    # -- bytes in ----------------------------------------------------------

    def receiveData(self, data: bytes) -> list[Event]:
        """
        Process bytes that arrived from the peer.

        @return: the events they caused, in order. After a
            L{SessionTerminated} event nothing more is processed.
        """
        events: list[Event] = []
        if self.terminated is not None:
            return events
        if self._goneInThisRead:
            self._goneInThisRead.clear()
        try:
            self._receive(data, events)
        except ProtocolError as e:
            self._protocolError(str(e), events)
        return events

    def _receive(self, data: bytes, events: list[Event]) -> None:
        position = 0
        end = len(data)
        header = self._header
        while position < end:
            if self._payloadRemaining:
                size = min(self._payloadRemaining, end - position)
                self._payloadRemaining -= size
                stream = self._payloadStream
                if stream is not None:
                    if size == end and position == 0:
                        chunk = data
                    else:
                        chunk = data[position : position + size]
                    events.append(DataReceived(stream.streamID, chunk))
                    if not self._payloadRemaining:
                        self._payloadStream = None
                        if self._payloadFlags:
                            self._processClosingFlags(stream, self._payloadFlags, events)
                position += size
                continue
            if not header and end - position >= HEADER_SIZE:
                fields = _unpackFrom(data, position)
                position += HEADER_SIZE
            else:
                take = min(HEADER_SIZE - len(header), end - position)
                header += data[position : position + take]
                position += take
                if len(header) < HEADER_SIZE:
                    return
                fields = _unpackFrom(header)
                header.clear()
            self._handleFrame(fields, events)
            if self.terminated is not None:
                return

    def _handleFrame(
        self, fields: tuple[int, int, int, int, int], events: list[Event]
    ) -> None:
        version, frameType, flags, streamID, length = fields
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"unsupported protocol version {version} in frame "
                f"{describeHeader(*fields)}"
            )
        if frameType == _DATA or frameType == _WINDOW_UPDATE:
            self._handleStreamFrame(frameType, flags, streamID, length, events)
        elif frameType == _PING:
            self._handlePing(flags, length, events)
        elif frameType == _GO_AWAY:
            self._handleGoAway(length, events)
        else:
            raise ProtocolError(f"unknown frame type {frameType}")

    def _handleStreamFrame(
        self, frameType: int, flags: int, streamID: int, length: int, events: list[Event]
    ) -> None:
        if flags & _SYN:
            stream = self._incomingStream(streamID, events)
        else:
            stream = self._streams.get(streamID)
        if stream is None:
            # Usually a stream we just reset: drop its data, go on.
            if frameType == _DATA:
                self._payloadRemaining = length
                self._payloadStream = None
            return
        if flags & _ACK and not stream.inbound and not stream.established:
            stream.established = True
            events.append(StreamAccepted(streamID))
        if frameType == _WINDOW_UPDATE:
            window = stream.sendWindow + length
            if window > MAX_UINT32:
                raise ProtocolError(
                    f"window update of {length} overflows the send window of "
                    f"stream {streamID}"
                )
            stream.sendWindow = window
            if length and stream.sendBuffered and not self.sendingPaused:
                self._sendBuffered(stream)
                if not stream.sendBuffered:
                    events.append(SendBufferDrained(streamID))
                    if stream.finPending:
                        events.extend(self._sendFinIfDrained(stream))
                        if streamID not in self._streams:
                            return
            if flags & _FIN_OR_RST:
                self._processClosingFlags(stream, flags, events)
            return
        if length:
            if stream.remoteClosed:
                raise ProtocolError(f"data on stream {streamID} after its FIN")
            if length > stream.recvWindow:
                raise ProtocolError(
                    f"receive window exceeded on stream {streamID}: "
                    f"{length} bytes sent, {stream.recvWindow} granted"
                )
            stream.recvWindow -= length
            self._payloadRemaining = length
            self._payloadStream = stream
            self._payloadFlags = flags & _FIN_OR_RST
        elif flags & _FIN_OR_RST:
            self._processClosingFlags(stream, flags, events)

    def _incomingStream(self, streamID: int, events: list[Event]) -> StreamState | None:
        if streamID == 0 or streamID & 1 != self._peerParity:
            raise ProtocolError(
                f"the peer opened stream {streamID}, an ID reserved for "
                f"{'this side' if streamID else 'the session'}"
            )
        if streamID in self._streams:
            raise ProtocolError(f"duplicate SYN for live stream {streamID}")
        if (
            self.localGoAway
            or self._unaccepted >= self.config.acceptBacklog
            or self._inboundOpen >= self.config.maxInboundStreams
            or streamID in self._goneInThisRead
        ):
            # No state is kept for a refused stream: a flood of SYNs costs
            # one RST each and nothing else.
            self.repliesQueued += 1
            self._outbound.append(
                _pack(PROTOCOL_VERSION, _WINDOW_UPDATE, _RST, streamID, 0)
            )
            return None
        stream = StreamState(streamID, True, INITIAL_WINDOW, self.config.maxStreamWindow)
        self._streams[streamID] = stream
        self._unaccepted += 1
        self._inboundOpen += 1
        events.append(StreamOpened(streamID))
        return stream

    def _processClosingFlags(
        self, stream: StreamState, flags: int, events: list[Event]
    ) -> None:
        if flags & _RST:
            self._forget(stream)
            events.append(StreamReset(stream.streamID))
            return
        if stream.remoteClosed:
            raise ProtocolError(f"second FIN on stream {stream.streamID}")
        stream.remoteClosed = True
        events.append(StreamEnded(stream.streamID))
        if stream.localClosed:
            self._forget(stream)
            events.append(StreamClosed(stream.streamID))

    def _handlePing(self, flags: int, opaque: int, events: list[Event]) -> None:
        if flags & _SYN:
            self.repliesQueued += 1
            self._outbound.append(_pack(PROTOCOL_VERSION, _PING, _ACK, 0, opaque))
        elif flags & _ACK and opaque in self._pingsOutstanding:
            self._pingsOutstanding.discard(opaque)
            events.append(PingAcknowledged(opaque))

    def _handleGoAway(self, code: int, events: list[Event]) -> None:
        self.remoteGoAway = True
        events.append(GoAwayReceived(code))
        if code == GoAwayCode.NORMAL:
            return
        if code == GoAwayCode.PROTOCOL_ERROR:
            reason = "the peer sent Go Away: protocol error"
        elif code == GoAwayCode.INTERNAL_ERROR:
            reason = "the peer sent Go Away: internal error"
        else:
            reason = f"the peer sent Go Away with unknown code {code}"
        self.terminated = SessionTerminated(code, reason, True)
        events.append(self.terminated)

    # -- helpers -----------------------------------------------------------

    def _stream(self, streamID: int) -> StreamState:
        stream = self._streams.get(streamID)
        if stream is None:
            raise UnknownStreamError(f"stream {streamID} does not exist")
        return stream

    def _checkRunning(self) -> None:
        if self.terminated is not None:
            raise SessionClosedError(f"the session has ended: {self.terminated.reason}")

    def _sendBuffered(self, stream: StreamState) -> None:
        size, pieces = stream.takeSendable()
        if size:
            self._bufferedTotal -= size
            if not stream.sendBuffered:
                del self._buffering[stream.streamID]
            self._outbound.append(_pack(PROTOCOL_VERSION, _DATA, 0, stream.streamID, size))
            self._outbound.extend(pieces)

    def _sendFinIfDrained(self, stream: StreamState) -> list[Event]:
        if stream.sendBuffered:
            return []
        stream.finPending = False
        stream.localClosed = True
        self._outbound.append(
            _pack(PROTOCOL_VERSION, _WINDOW_UPDATE, _FIN, stream.streamID, 0)
        )
        if stream.remoteClosed:
            self._forget(stream)
            return [StreamClosed(stream.streamID)]
        return []

    def _forget(self, stream: StreamState) -> None:
        del self._streams[stream.streamID]
        if stream.sendBuffered:
            self._bufferedTotal -= stream.sendBuffered
            self._pausedTotal -= stream.pausedBuffered
            stream.pausedBuffered = 0
            del self._buffering[stream.streamID]
        stream.sendBuffer.clear()
        stream.sendBuffered = 0
        if stream.inbound:
            self._inboundOpen -= 1
            if not stream.established:
                self._unaccepted -= 1
            self._goneInThisRead.add(stream.streamID)
        if self._payloadStream is stream:
            self._payloadStream = None
        self._synPending.pop(stream.streamID, None)

    def _protocolError(self, reason: str, events: list[Event]) -> None:
        self._outbound.append(
            _pack(PROTOCOL_VERSION, _GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR)
        )
        self.localGoAway = True
        self.terminated = SessionTerminated(GoAwayCode.PROTOCOL_ERROR, reason, False)
        events.append(self.terminated)
