"""
The Twisted adapter of the yamux core: a L{Protocol} that runs one yamux
session over any stream transport.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel._directwrite import writeSequenceNow
from tunnel.mux.address import StreamAddress
from tunnel.mux.errors import (
    PingTimeoutError,
    SessionEndedError,
    StreamOpenTimeoutError,
    StreamRefusedError,
    StreamResetError,
)
from tunnel.mux.stream import StreamTransport
from tunnel.yamux import GoAwayCode, Session, SessionConfig
from tunnel.yamux.errors import YamuxError
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


def _defaultClock() -> IReactorTime:
    from twisted.internet import reactor

    return reactor  # type: ignore[return-value]


@implementer(IPushProducer)
class YamuxProtocol(Protocol):
    """
    One yamux session over this protocol's transport.

    Streams the peer opens are handed to protocols built by C{streamFactory},
    as a server factory's protocols are handed connections; a factory whose
    C{buildProtocol} returns L{None} refuses the stream (RST). Streams we open
    with L{openStream} carry the protocol given there. Each stream's
    transport is a L{StreamTransport}.

    The session answers the peer's pings, and refuses the streams it cannot
    take, on its own. While the transport is paused (the peer does not read
    what we send) such answers pile up in the transport's buffer; a peer
    that makes the session queue more than the config's C{maxUnsentReplies}
    of them during one pause is dropped.

    What the session holds for the peer is bounded whatever window the peer
    grants: while the transport is paused (it is a push producer of its
    transport) the streams' data is held back in the session, not written,
    and every write made meanwhile pauses its stream's producer again, so
    that only what writers write after being told to pause is held
    (L{bufferedBytes}). Once that reaches the config's C{maxSessionBuffer},
    L{bufferFull} tells whoever would add streams (a tunnel server refuses
    requests then); a transport that stays paused for
    C{writeStallTimeout} seconds ends the session (L{writeStalled}).

    @ivar session: the sans-IO L{Session}.
    @ivar streamFactory: builds the protocols of incoming streams, or L{None}
        to refuse every incoming stream.
    """

    _log = Logger()

    def __init__(
        self,
        isClient: bool,
        streamFactory: IProtocolFactory | None = None,
        config: SessionConfig | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.session = Session(config, isClient)
        self.streamFactory = streamFactory
        self._clock = clock if clock is not None else _defaultClock()
        self._streams: dict[int, StreamTransport] = {}
        self._opening: dict[int, tuple[Deferred[Protocol], IDelayedCall, Protocol]] = {}
        # Opens beyond the backlog, waiting for an acknowledgement to send their SYN.
        self._waitingOpens: deque[tuple[Protocol | IProtocolFactory, Deferred[Protocol]]] = deque()
        self._lingering: dict[int, IDelayedCall] = {}
        self._idleCallback: Callable[[], None] | None = None
        self._pings: dict[int, tuple[Deferred[float], float, IDelayedCall]] = {}
        self._closedWaiters: list[Deferred[None]] = []
        self._keepAliveCall: IDelayedCall | None = None
        self._closingDeadline: IDelayedCall | None = None
        self._keepAlivePing: int | None = None
        self._transportPaused = False
        self._repliesAtPause = 0
        self._writtenWhilePaused = 0
        self._stallTimer: IDelayedCall | None = None
        self._dropped = False
        self._dispatching = False
        self._producingStreams: dict[StreamTransport, None] = {}
        self._resumeRotation = 0
        # A server must say nothing until the client spoke: a client that read
        # the HTTP 200 through a buffer would lose whatever followed it.
        self._mayWrite = isClient
        self._connectionDone = False
        self._description = f"yamux {'client' if isClient else 'server'} session"

    # -- public API --------------------------------------------------------

    @property
    def config(self) -> SessionConfig:
        """The session's settings."""
        return self.session.config

    @property
    def isClient(self) -> bool:
        """Whether this is the client side of the session."""
        return self.session.isClient

    @property
    def streams(self) -> dict[int, StreamTransport]:
        """The transports of the streams attached to protocols, by stream ID."""
        return dict(self._streams)

    @property
    def unacknowledgedStreams(self) -> int:
        """How many streams this side opened that the peer has not acknowledged yet."""
        return len(self._opening)

    @property
    def bufferedBytes(self) -> int:
        """
        How many bytes the session holds for the peer because it does not
        read: while the transport is paused, the data written to streams and
        held back since, and what was written to the transport since (with
        the write that paused it). What the transport held when it paused,
        about its own buffer size, is not counted, nor the data waiting for
        the peer's window: each stream's producer is paused as soon as its
        window is used up.
        """
        if not self._transportPaused:
            return 0
        return self.session.heldWhilePaused + self._writtenWhilePaused

    @property
    def bufferFull(self) -> bool:
        """
        Whether the session holds the config's C{maxSessionBuffer} bytes or
        more for the peer (see L{bufferedBytes}): whoever would add streams
        should not.
        """
        return self.bufferedBytes >= self.config.maxSessionBuffer

    def describe(self) -> str:
        """A short description of the session for logs."""
        return self._description

    def openStream(self, protocolOrFactory: Protocol | IProtocolFactory) -> Deferred[Protocol]:
        """
        Open a stream and attach a protocol to it.

        The protocol is connected as soon as the stream's SYN is sent (it
        may write before the peer acknowledges the stream); the returned
        L{Deferred} fires with it once the peer acknowledges the stream, or
        fails with L{StreamRefusedError} or L{StreamOpenTimeoutError} (the
        protocol then loses its connection too). Cancelling the L{Deferred}
        resets the stream. Streams are opened even while the session's
        buffer is full (L{bufferFull}): the caller decides whether to open
        more.

        As HashiCorp's yamux does, at most the config's C{acceptBacklog}
        streams are unacknowledged at once: a peer refuses SYNs beyond its
        own backlog, so further opens wait, in order, for an acknowledgement
        (or a refusal) before their SYN is sent.

        @param protocolOrFactory: the protocol, or a factory to build it with
            the stream's address.
        """
        if self._connectionDone:
            return fail(SessionEndedError(self._description))
        opened: Deferred[Protocol] = Deferred(self._cancelOpen)
        self._waitingOpens.append((protocolOrFactory, opened))
        self._sendWaitingOpens()
        return opened

    def _sendWaitingOpens(self) -> None:
        """Send the SYNs of waiting opens while the backlog has room."""
        backlog = self.config.acceptBacklog
        waiting = self._waitingOpens
        while waiting and len(self._opening) < backlog and not self._connectionDone:
            protocolOrFactory, opened = waiting.popleft()
            self._sendOpen(protocolOrFactory, opened)

    def _sendOpen(
        self, protocolOrFactory: Protocol | IProtocolFactory, opened: Deferred[Protocol]
    ) -> None:
        try:
            streamID = self.session.openStream()
        except YamuxError as e:
            opened.errback(e)
            return
        if IProtocolFactory.providedBy(protocolOrFactory):
            protocol = protocolOrFactory.buildProtocol(
                StreamAddress(self.transport.getPeer(), streamID)
            )
        else:
            protocol = protocolOrFactory
        transport = StreamTransport(self, streamID, protocol)
        self._streams[streamID] = transport
        timer = self._clock.callLater(
            self.config.streamOpenTimeout, self._openTimedOut, streamID
        )
        self._opening[streamID] = (opened, timer, protocol)
        self._flush()
        protocol.makeConnection(transport)

    def _cancelOpen(self, opened: Deferred[Protocol]) -> None:
        """Forget a waiting open, or reset the stream of a sent one."""
        for index, (_, waiting) in enumerate(self._waitingOpens):
            if waiting is opened:
                del self._waitingOpens[index]
                return
        for streamID, (pending, timer, _) in list(self._opening.items()):
            if pending is opened:
                del self._opening[streamID]
                timer.cancel()
                transport = self._streams.get(streamID)
                if transport is not None:
                    transport.abortConnection()
                self._sendWaitingOpens()
                return

    def ping(self, timeout: float | None = None) -> Deferred[float]:
        """
        Ping the peer.

        @param timeout: seconds to wait for the answer; the session's
            keep-alive timeout by default.
        @return: a L{Deferred} firing with the round-trip time in seconds, or
            failing with L{PingTimeoutError}, or with L{SessionEndedError} if
            the session has ended.
        """
        if self._connectionDone:
            return fail(SessionEndedError(self._description))
        try:
            opaque = self.session.ping()
        except YamuxError as e:
            # The session ended (a protocol error, or the peer's Go Away with
            # an error code) and its connection is closing.
            return fail(SessionEndedError(f"{self._description}: {e}"))
        answered: Deferred[float] = Deferred()
        timer = self._clock.callLater(
            self.config.keepAliveTimeout if timeout is None else timeout,
            self._pingTimedOut,
            opaque,
        )
        self._pings[opaque] = (answered, self._clock.seconds(), timer)
        self._flush()
        return answered

    def goAway(self) -> None:
        """
        Tell the peer to open no new streams; open streams go on. Streams the
        peer tries to open after this are refused.
        """
        self.session.goAway(GoAwayCode.NORMAL)
        self._flush()

    def shutdown(self, timeout: float = 10.0) -> Deferred[None]:
        """
        Close the session gracefully: send Go Away, let the open streams
        finish for up to C{timeout} seconds, then close the connection.

        @return: a L{Deferred} that fires once the connection is closed.
        """
        done = self.whenClosed()
        if self._connectionDone:
            return done
        self.goAway()
        deadline = self._clock.callLater(timeout, self._closeNow)

        def cancelDeadline(result: object = None) -> None:
            if deadline.active():
                deadline.cancel()

        def idle() -> None:
            cancelDeadline()
            self._closeNow()

        self._whenIdle(idle)
        # Gone sooner (the peer closed it, or the streams finished): the
        # deadline must not keep the session alive.
        self.whenClosed().addCallback(cancelDeadline)
        return done

    def whenClosed(self) -> Deferred[None]:
        """A L{Deferred} that fires once the session's connection is gone."""
        d: Deferred[None] = Deferred()
        if self._connectionDone:
            d.callback(None)
        else:
            self._closedWaiters.append(d)
        return d

    def goAwayReceived(self, code: int) -> None:
        """
        Called when the peer sent Go Away; override to react. The peer will
        accept no new streams from us.
        """

    # -- Protocol ----------------------------------------------------------

    def connectionMade(self) -> None:
        """Start the session: register for back-pressure, start keep-alive."""
        peer = self.transport.getPeer()
        self._description = (
            f"yamux {'client' if self.isClient else 'server'} session with {peer}"
        )
        self.transport.registerProducer(self, True)
        # Small frames must not wait for the acknowledgement of earlier ones:
        # a receiver that grants window only after a whole frame arrived
        # would otherwise stall each frame's tail (Nagle's algorithm).
        setTcpNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setTcpNoDelay is not None:
            setTcpNoDelay(True)
        self._log.debug("{session} started", session=self._description)
        if self._mayWrite:
            self._startKeepAlive()

    def dataReceived(self, data: bytes) -> None:
        """Feed the bytes to the session core and dispatch its events."""
        if not self._mayWrite:
            self._mayWrite = True
            self._startKeepAlive()
        events = self.session.receiveData(data)
        streams = self._streams
        # Everything the events cause is sent in one write at the end.
        self._dispatching = True
        try:
            for event in events:
                if type(event) is DataReceived:
                    transport = streams.get(event.streamID)
                    if transport is None:
                        self.session.acknowledgeReceivedData(
                            event.streamID, len(event.data)
                        )
                    else:
                        transport._dataReceived(event.data)
                else:
                    self._dispatch(event)
        finally:
            self._dispatching = False
        self._flush()
        if self._transportPaused:
            self._checkUnsentReplies()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """End every stream, every pending open and ping."""
        if self._connectionDone:
            return
        self._connectionDone = True
        terminated = self.session.terminated
        why = terminated.reason if terminated else reason.getErrorMessage()
        self.session.connectionLost(why)
        self._stopKeepAlive()
        self._stopStallTimer()
        if self._closingDeadline is not None and self._closingDeadline.active():
            self._closingDeadline.cancel()
        self._log.info("{session} ended: {why}", session=self._description, why=why)
        error = SessionEndedError(f"{self._description}: {why}")
        openings, self._opening = self._opening, {}
        lingering, self._lingering = self._lingering, {}
        for timer in [t for _, t, _ in openings.values()] + list(lingering.values()):
            timer.cancel()
        for transport in list(self._streams.values()):
            transport._connectionLost(Failure(error))
        waitingOpens, self._waitingOpens = self._waitingOpens, deque()
        for opened in [d for d, _, _ in openings.values()] + [d for _, d in waitingOpens]:
            opened.errback(error)
        pings, self._pings = self._pings, {}
        for answered, sent, timer in pings.values():
            timer.cancel()
            answered.errback(error)
        waiters, self._closedWaiters = self._closedWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- IPushProducer (towards our transport) -----------------------------

    def pauseProducing(self) -> None:
        """
        The connection's buffer is full: pause every stream's producer, hold
        the data written to streams back, start counting the answers the
        peer makes us queue and the bytes we write meanwhile, and give the
        peer C{writeStallTimeout} seconds to read.
        """
        if not self._transportPaused:
            self._repliesAtPause = self.session.repliesQueued
            self._writtenWhilePaused = 0
            self.session.pauseSending()
            if self._stallTimer is None and not self._connectionDone:
                self._stallTimer = self._clock.callLater(
                    self.config.writeStallTimeout, self._writeStallTimedOut
                )
        self._transportPaused = True
        for transport in list(self._producingStreams):
            transport._updateProducer()

    def resumeProducing(self) -> None:
        """
        The connection's buffer drained: resume the streams' producers, a
        different stream first each time so that none is favoured, and stop
        as soon as one of them has filled the buffer again. What was held
        back is written first.
        """
        self._transportPaused = False
        self._writtenWhilePaused = 0
        self._stopStallTimer()
        if self._connectionDone:
            return
        drained = self.session.resumeSending()
        self._flush()
        for event in drained:
            self._dispatch(event)
        if self._transportPaused:
            return
        transports = list(self._producingStreams)
        if not transports:
            return
        self._resumeRotation = (self._resumeRotation + 1) % len(transports)
        for transport in transports[self._resumeRotation:] + transports[:self._resumeRotation]:
            if self._transportPaused:
                break
            transport._updateProducer()

    def stopProducing(self) -> None:
        """The connection is going away; L{connectionLost} will follow."""

    # -- events from the core ----------------------------------------------

    def _dispatch(self, event: Any) -> None:
        kind = type(event)
        if kind is SendBufferDrained:
            transport = self._streams.get(event.streamID)
            if transport is not None:
                transport._drained()
        elif kind is StreamOpened:
            self._incomingStream(event.streamID)
        elif kind is StreamAccepted:
            pending = self._opening.pop(event.streamID, None)
            if pending is not None:
                opened, timer, protocol = pending
                timer.cancel()
                opened.callback(protocol)
                self._sendWaitingOpens()
        elif kind is StreamEnded:
            transport = self._streams.get(event.streamID)
            if transport is not None:
                transport._ended()
        elif kind is StreamClosed:
            self._streamGone(event.streamID, None)
        elif kind is StreamReset:
            self._streamGone(event.streamID, "reset")
        elif kind is PingAcknowledged:
            self._pingAnswered(event.opaque)
        elif kind is GoAwayReceived:
            self._log.info(
                "{session}: the peer sent Go Away (code {code})",
                session=self._description,
                code=event.code,
            )
            self.goAwayReceived(event.code)
        elif kind is SessionTerminated:
            self._terminated(event)

    def _incomingStream(self, streamID: int) -> None:
        session = self.session
        if session.terminated is not None:
            return
        # The events are dispatched once the core has read all the bytes
        # that came with this SYN: the peer may have reset the stream later
        # in the same read. Its protocol is built all the same, as if the
        # reset had come in a later read: a factory that pairs streams with
        # what waits for them (FIFO) must see every stream the peer opened.
        # The data that came before the reset is delivered, then the reset.
        reset = not session.awaitsAcceptance(streamID)
        protocol = None
        if self.streamFactory is not None:
            try:
                protocol = self.streamFactory.buildProtocol(
                    StreamAddress(self.transport.getPeer(), streamID)
                )
            except BaseException:
                self._log.failure(
                    "{session}: building a protocol for stream {streamID} failed",
                    session=self._description,
                    streamID=streamID,
                )
        if protocol is None:
            self.session.resetStream(streamID)
            return
        if not reset:
            self.session.acceptStream(streamID)
        transport = StreamTransport(self, streamID, protocol)
        self._streams[streamID] = transport
        protocol.makeConnection(transport)

    def _streamGone(self, streamID: int, how: str | None) -> None:
        transport = self._streams.pop(streamID, None)
        lingering = self._lingering.pop(streamID, None)
        if lingering is not None:
            lingering.cancel()
        pending = self._opening.pop(streamID, None)
        if pending is not None:
            opened, timer, protocol = pending
            timer.cancel()
            if how == "reset":
                opened.errback(StreamRefusedError(f"the peer refused stream {streamID}"))
            else:
                # The peer closed the stream without acknowledging it first:
                # it had the stream all the same.
                opened.callback(protocol)
            self._sendWaitingOpens()
        if transport is None:
            return
        if how == "reset":
            transport._connectionLost(
                Failure(StreamResetError(f"the peer reset stream {streamID}"))
            )
        else:
            transport._closed(Failure(ConnectionDone(f"stream {streamID} closed")))

    def _terminated(self, event: SessionTerminated) -> None:
        if event.byPeer:
            self._log.warn(
                "{session} ended by the peer: {reason}",
                session=self._description,
                reason=event.reason,
            )
        else:
            self._log.error(
                "{session}: protocol error, sending Go Away: {reason}",
                session=self._description,
                reason=event.reason,
            )
        self._loseConnection()

    # -- calls from stream transports --------------------------------------

    def _streamWrite(self, transport: StreamTransport, data: bytes) -> None:
        try:
            self.session.sendData(transport.streamID, data)
        except YamuxError:
            return
        self._flush()
        if self.session.bufferedAmount(transport.streamID):
            transport._blocked()
        else:
            transport._schedulePull()

    def _streamBuffered(self, transport: StreamTransport) -> int:
        try:
            return self.session.bufferedAmount(transport.streamID)
        except YamuxError:
            return 0

    def _streamClose(self, transport: StreamTransport) -> None:
        try:
            events = self.session.closeStream(transport.streamID)
        except YamuxError:
            return
        self._flush()
        for event in events:
            self._dispatch(event)

    def _streamReset(self, transport: StreamTransport) -> None:
        self.session.resetStream(transport.streamID)
        self._streams.pop(transport.streamID, None)
        self._flush()

    def _streamConsumed(self, transport: StreamTransport, size: int) -> None:
        self.session.acknowledgeReceivedData(transport.streamID, size)
        self._flush()

    def _streamProducing(self, transport: StreamTransport, streaming: bool) -> None:
        """Track which streams have a streaming producer to pause and resume."""
        if streaming:
            self._producingStreams[transport] = None
        else:
            self._producingStreams.pop(transport, None)

    def _streamDetached(self, transport: StreamTransport) -> None:
        """
        The protocol of a stream lost its connection. The stream itself may
        live on until the peer's FIN; it is forgotten here, and data arriving
        for it is consumed and dropped.
        """
        streamID = transport.streamID
        if self._streams.get(streamID) is transport:
            del self._streams[streamID]
        if self.session.hasStream(streamID) and not self._connectionDone:
            self._lingering[streamID] = self._clock.callLater(
                self.config.streamCloseTimeout, self._closeTimedOut, streamID
            )
        self._checkIdle()

    def _closeTimedOut(self, streamID: int) -> None:
        del self._lingering[streamID]
        self._log.warn(
            "{session}: the peer did not close stream {streamID} within {timeout} s "
            "of our close; resetting it",
            session=self._description,
            streamID=streamID,
            timeout=self.config.streamCloseTimeout,
        )
        self.session.resetStream(streamID)
        self._flush()

    # -- timers and helpers ------------------------------------------------

    def _flush(self, now: bool = False) -> None:
        """
        Write what the session queued, unless events are being dispatched
        (all is written at their end), or C{now}.
        """
        if (self._dispatching and not now) or not self._mayWrite or self._connectionDone:
            return
        chunks = self.session.chunksToSend()
        if chunks:
            writeSequenceNow(self.transport, chunks)
            # Counted once the transport paused: this write may have done it.
            if self._transportPaused:
                self._writtenWhilePaused += sum(map(len, chunks))

    def _openTimedOut(self, streamID: int) -> None:
        pending = self._opening.pop(streamID, None)
        if pending is None:
            return
        opened, timer, protocol = pending
        self._log.warn(
            "{session}: the peer did not acknowledge stream {streamID} in "
            "{timeout} s; resetting it",
            session=self._description,
            streamID=streamID,
            timeout=self.config.streamOpenTimeout,
        )
        transport = self._streams.pop(streamID, None)
        self.session.resetStream(streamID)
        self._flush()
        error = StreamOpenTimeoutError(f"stream {streamID} was not acknowledged in time")
        if transport is not None:
            transport._connectionLost(Failure(error))
        opened.errback(error)
        self._sendWaitingOpens()

    def _pingAnswered(self, opaque: int) -> None:
        pending = self._pings.pop(opaque, None)
        if pending is None:
            return
        answered, sent, timer = pending
        timer.cancel()
        answered.callback(self._clock.seconds() - sent)

    def _pingTimedOut(self, opaque: int) -> None:
        pending = self._pings.pop(opaque, None)
        if pending is not None:
            pending[0].errback(PingTimeoutError("the peer did not answer a ping in time"))

    def _startKeepAlive(self) -> None:
        if self.config.enableKeepAlive and self._keepAliveCall is None:
            self._keepAliveCall = self._clock.callLater(
                self.config.keepAliveInterval, self._keepAlive
            )

    def _stopKeepAlive(self) -> None:
        if self._keepAliveCall is not None and self._keepAliveCall.active():
            self._keepAliveCall.cancel()
        self._keepAliveCall = None

    def _keepAlive(self) -> None:
        self._keepAliveCall = None

        def answered(rtt: float) -> None:
            self.keepAliveAnswered(rtt)
            self._startKeepAlive()

        def failed(reason: Failure) -> None:
            if reason.check(PingTimeoutError):
                self._log.error(
                    "{session}: keep-alive ping not answered in {timeout} s; "
                    "dropping the session",
                    session=self._description,
                    timeout=self.config.keepAliveTimeout,
                )
                self.transport.abortConnection()

        self.ping().addCallbacks(answered, failed)

    def keepAliveAnswered(self, roundTrip: float) -> None:
        """
        The peer answered a keep-alive ping after C{roundTrip} seconds.
        Does nothing; override to measure it.
        """

    def writeStalled(self, seconds: float, queued: int) -> None:
        """
        The transport stayed paused for C{seconds} (the config's
        C{writeStallTimeout}): the peer read nothing of the C{queued} bytes
        held for it meanwhile. Log it and drop the session; override to say
        more, but drop it all the same.
        """
        self._log.error(
            "{session}: the peer did not read for {timeout} s with {queued} bytes "
            "queued; closing the session",
            session=self._description,
            timeout=seconds,
            queued=queued,
        )
        self.transport.abortConnection()

    def _writeStallTimedOut(self) -> None:
        self._stallTimer = None
        if not self._connectionDone:
            self.writeStalled(self.config.writeStallTimeout, self.bufferedBytes)

    def _stopStallTimer(self) -> None:
        if self._stallTimer is not None:
            if self._stallTimer.active():
                self._stallTimer.cancel()
            self._stallTimer = None

    def _checkUnsentReplies(self) -> None:
        unsent = self.session.repliesQueued - self._repliesAtPause
        if unsent > self.config.maxUnsentReplies and not self._dropped:
            self._dropped = True
            self._log.error(
                "{session}: the peer made us queue {count} answers (pings, refused "
                "streams) without reading them; dropping the session",
                session=self._description,
                count=unsent,
            )
            self.transport.abortConnection()

    def _closeNow(self) -> None:
        if not self._connectionDone:
            self._loseConnection()

    def _loseConnection(self) -> None:
        # What is queued (a Go Away) goes first, even in the middle of
        # dispatching events: a TLS transport drops what is written after
        # loseConnection. Data held back while the transport was paused goes
        # too; the streams end with the connection.
        self._stopStallTimer()
        if self.session.sendingPaused:
            self.session.resumeSending()
        self._flush(now=True)
        # A transport is not closed while a producer is registered on it
        # (a TLS transport waits for it to unregister).
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        # A transport closes once it has written everything: a peer that
        # does not read would keep the connection open for ever.
        if self._closingDeadline is None:
            self._closingDeadline = self._clock.callLater(
                self.config.keepAliveTimeout, self._closingTimedOut
            )

    def _closingTimedOut(self) -> None:
        self._log.warn(
            "{session}: the connection did not close within {timeout} s (the peer "
            "does not read); aborting it",
            session=self._description,
            timeout=self.config.keepAliveTimeout,
        )
        self.transport.abortConnection()

    def _whenIdle(self, callback: Callable[[], None]) -> None:
        self._idleCallback = callback
        self._checkIdle()

    def _checkIdle(self) -> None:
        callback = self._idleCallback
        if callback is not None and not self._streams and not self._connectionDone:
            self._idleCallback = None
            callback()


class YamuxFactory(Factory):
    """
    A factory of L{YamuxProtocol}s: one yamux session per connection.

    @ivar isClient: which side of the sessions we are.
    @ivar streamFactory: builds the protocols of the streams the peer opens.
    @ivar config: the sessions' settings.
    """

    def __init__(
        self,
        isClient: bool,
        streamFactory: IProtocolFactory | None = None,
        config: SessionConfig | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.isClient = isClient
        self.streamFactory = streamFactory
        self.config = config
        self.clock = clock

    def buildProtocol(self, addr: Any) -> YamuxProtocol:
        """Build the session protocol for one connection."""
        protocol = YamuxProtocol(self.isClient, self.streamFactory, self.config, self.clock)
        protocol.factory = self
        return protocol
