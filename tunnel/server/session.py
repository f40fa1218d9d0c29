"""
The server side of one client's tunnel: a yamux session, its control stream,
and the pairing of the streams the client opens with the requests for them.
"""

from __future__ import annotations

import enum
from collections import deque

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from tunnel.core.control import (
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    ControlLineReader,
    ControlMessage,
    ControlProtocolError,
    HandshakeReader,
    TransportProtocol,
    redactIdentifier,
)
from tunnel.core.serversession import SessionSettings
from tunnel.mux import SessionEndedError, StreamAddress, StreamTransport, YamuxProtocol
from tunnel.sparselog import isSparseCount
from tunnel.yamux import SessionConfig


class StreamTimeout(Exception):
    """The client did not open the stream asked for in time."""


class TooManyPendingStreams(Exception):
    """The client already owes as many streams as it may."""


class ClientNotReading(TooManyPendingStreams):
    """
    The client's session holds as many bytes for it as it may (the
    C{maxSessionBuffer} of its yamux settings): it does not read what it is
    sent, and no request may add to that.
    """


class ClientStalled(Exception):
    """The client read nothing of what was queued for it for too long."""


class ISessionObserver(Interface):
    """Is told when a L{ClientSession} becomes ready and when it ends."""

    def sessionReady(session: ClientSession) -> None:
        """The session completed its handshake and may carry streams."""

    def sessionEnded(session: ClientSession, reason: Failure) -> None:
        """The session's connection is gone, ready before or not."""


def _backlogForEveryOwedStream(settings: SessionSettings) -> SessionConfig:
    """
    The yamux settings of a session, with an accept backlog that holds every
    stream the client may owe: the client opens one for each request, and a
    burst of them can arrive in one read, before any is accepted. A smaller
    backlog would refuse streams the server asked for.
    """
    if settings.yamux.acceptBacklog >= settings.maxPendingStreams:
        return settings.yamux
    return attrs.evolve(settings.yamux, acceptBacklog=settings.maxPendingStreams)


class _State(enum.Enum):
    HANDSHAKE = "handshake"
    READY = "ready"
    CLOSING = "closing"
    ENDED = "ended"


@attrs.define(eq=False)
class _PendingStream:
    """
    A stream asked for and not opened yet.

    @ivar protocol: what to attach to the stream, or L{None} once the
        request gave up (timed out or cancelled): the stream is then closed
        as soon as it arrives.
    """

    protocol: Protocol | None
    connected: Deferred[Protocol]
    timer: IDelayedCall | None = None

    def abandon(self) -> None:
        """Give up waiting: the stream will be closed when it arrives."""
        self.protocol = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


class ClientSession:
    """
    The server side of one client's tunnel session.

    L{protocol} runs the yamux server side over the client's connection.
    The first stream the client opens is the control stream: the client
    writes the handshake, we answer it, and from then on we send control
    messages asking for streams (L{requestStream}). Each stream the client
    opens afterwards is paired with the oldest request still owed one, so
    that no request ever gets a stream opened for another; a stream nobody
    asked for is refused.

    With a client that accepted L{tunnel.core.control.SERVER_STREAMS} (ours; never a Go one),
    L{requestStream} opens the stream itself instead, its first line the
    control message, and the request goes on at once.

    @ivar protocol: the yamux protocol to connect to the client's connection.
    @ivar label: the identifier, redacted for logs.
    @ivar peer: the client's address, once connected.
    @ivar connectedSince: when the handshake completed (seconds on the
        session's clock), or L{None} before.
    """

    _log = Logger()

    def __init__(
        self,
        identifier: bytes,
        settings: SessionSettings,
        observer: ISessionObserver,
        clock: IReactorTime,
        serverStreams: bool = False,
    ) -> None:
        """
        @param serverStreams: whether the client accepted the extension in
            which the server opens the streams (L{tunnel.core.control.SERVER_STREAMS}).
        """
        self.identifier = identifier
        self.serverStreams = serverStreams
        self.label = redactIdentifier(identifier)
        self.peer: IAddress | None = None
        self.connectedSince: float | None = None
        self.protocol = _ServerProtocol(self, _backlogForEveryOwedStream(settings), clock)
        self._settings = settings
        self._observer = observer
        self._clock = clock
        self._state = _State.HANDSHAKE
        self._control: Protocol | None = None
        self._pending: deque[_PendingStream] = deque()
        self._handshakeTimer: IDelayedCall | None = None
        self._endReason: Failure | None = None
        self._refusedStreams = 0
        self._refusedForBuffer = 0

    @property
    def ready(self) -> bool:
        """Whether the session completed its handshake and is not closing."""
        return self._state is _State.READY

    def requestStream(
        self, transportProtocol: TransportProtocol, localPort: int, protocol: Protocol
    ) -> Deferred[Protocol]:
        """
        Ask the client for a stream and attach C{protocol} to it.

        @return: a L{Deferred} that fires with C{protocol} once it is
            connected to the stream, or fails with L{StreamTimeout},
            L{TooManyPendingStreams} (L{ClientNotReading} while the session
            holds as much as it may for the client), or L{SessionEndedError}
            if the session ends or closes first. Cancelling it gives up the
            request; the stream the client opens for it later is closed.
        """
        if self._state is not _State.READY:
            return fail(SessionEndedError(f"the session of client {self.label} is not ready"))
        if self.protocol.bufferFull:
            return fail(self._notReading())
        owed = self.protocol.unacknowledgedStreams if self.serverStreams else len(self._pending)
        if owed >= self._settings.maxPendingStreams:
            return fail(
                TooManyPendingStreams(f"client {self.label} owes {owed} streams already")
            )
        message = ControlMessage(transportProtocol=transportProtocol, localPort=localPort)
        if self.serverStreams:
            return self._openStream(message, protocol)
        entry = _PendingStream(protocol, Deferred(lambda d: entry.abandon()))
        entry.timer = self._clock.callLater(
            self._settings.streamTimeout, self._streamTimedOut, entry
        )
        self._pending.append(entry)
        self._control.transport.write(message.encode())
        return entry.connected

    def _notReading(self) -> ClientNotReading:
        """
        The refusal of a request while the session's buffer is full, logged
        for the 1st, 10th, 100th... of them.
        """
        queued = self.protocol.bufferedBytes
        self._refusedForBuffer += 1
        if isSparseCount(self._refusedForBuffer):
            self._log.warn(
                "Client {client} does not read: {queued} bytes are queued for it, "
                "{cap} at most; refusing requests for it ({count} so far)",
                client=self.label,
                queued=queued,
                cap=self.protocol.config.maxSessionBuffer,
                count=self._refusedForBuffer,
            )
        return ClientNotReading(
            f"client {self.label} does not read: {queued} bytes are queued for it"
        )

    def _openStream(self, message: ControlMessage, protocol: Protocol) -> Deferred[Protocol]:
        """
        Open a stream to the client, announced by C{message} as its first
        line, with C{protocol} attached at once; a stream the client refuses
        or does not acknowledge in time ends C{protocol}'s connection.
        """
        announcing = _Announcing(message.encode(), protocol)
        opened = self.protocol.openStream(announcing)
        failures: list[Failure] = []
        opened.addErrback(failures.append)
        if failures and protocol.transport is None:
            return fail(failures[0])
        return succeed(protocol)

    def close(self, why: str) -> Deferred[None]:
        """
        Close the session gracefully: requests waiting for a stream fail, the
        client is sent Go Away, the control stream is closed, and the
        connection is closed once the other streams finish, or after the
        drain timeout.

        @param why: the reason, for logs and observers.
        @return: a L{Deferred} that fires once the connection is closed.
        """
        if self._state in (_State.CLOSING, _State.ENDED):
            return self.protocol.whenClosed()
        self._log.info("Closing the session of client {client}: {why}", client=self.label, why=why)
        self._endReason = Failure(SessionEndedError(why))
        self._state = _State.CLOSING
        self._failPending(SessionEndedError(f"the session of client {self.label} closed: {why}"))
        closing = self.protocol.shutdown(self._settings.drainTimeout)
        if self._control is not None:
            # No more control messages: only the streams carrying traffic
            # keep the session open.
            self._control.transport.loseConnection()
        return closing

    # -- as the stream factory of the yamux session ------------------------

    def buildProtocol(self, addr: StreamAddress) -> Protocol | None:
        """
        Route a stream the client opened: the first is the control stream;
        later ones go to the oldest pending request; others are refused.
        """
        if self._control is None and self._state is _State.HANDSHAKE:
            self._control = _ControlStream(self)
            return self._control
        if self._state is not _State.READY or not self._pending:
            # Logged sparingly (the 1st, 10th, 100th...): a client flooding
            # the session with such streams must not flood the log too.
            self._refusedStreams += 1
            if isSparseCount(self._refusedStreams):
                self._log.warn(
                    "Client {client} opened stream {streamID} that nobody asked for; "
                    "refusing it ({count} such streams so far)",
                    client=self.label,
                    streamID=addr.streamID,
                    count=self._refusedStreams,
                )
            return None
        entry = self._pending.popleft()
        if entry.protocol is None:
            return _Discard()
        entry.timer.cancel()
        return _Handover(entry.protocol, entry.connected)

    # -- events from the yamux protocol and the control stream ------------

    def _connected(self) -> None:
        self.peer = self.protocol.transport.getPeer()
        self._log.info(
            "Client {client} connected from {peer}; waiting for its handshake",
            client=self.label,
            peer=self.peer,
        )
        self._handshakeTimer = self._clock.callLater(
            self._settings.handshakeTimeout, self._handshakeTimedOut
        )

    def _handshakeDone(self) -> None:
        self._handshakeTimer.cancel()
        if self._state is not _State.HANDSHAKE:
            return
        self._state = _State.READY
        self.connectedSince = self._clock.seconds()
        self._observer.sessionReady(self)

    def _protocolError(self, why: str) -> None:
        self._log.error(
            "Client {client} broke the tunnel protocol, ending its session: {why}",
            client=self.label,
            why=why,
        )
        self._drop(ControlProtocolError(why))

    def _controlLost(self) -> None:
        if self._state in (_State.HANDSHAKE, _State.READY):
            self._log.info("Client {client} closed its control stream", client=self.label)
            self._drop(ConnectionDone("the client closed its control stream"))

    def _ended(self, reason: Failure) -> None:
        if self._handshakeTimer is not None and self._handshakeTimer.active():
            self._handshakeTimer.cancel()
        self._state = _State.ENDED
        self._failPending(SessionEndedError(f"the session of client {self.label} ended"))
        self._observer.sessionEnded(self, self._endReason or reason)

    # -- helpers -----------------------------------------------------------

    def _handshakeTimedOut(self) -> None:
        self._log.warn(
            "Client {client} did not complete the handshake within {timeout} s; dropping it",
            client=self.label,
            timeout=self._settings.handshakeTimeout,
        )
        self._drop(StreamTimeout("no handshake in time"))

    def _stalled(self, seconds: float, queued: int) -> None:
        self._log.error(
            "Client {client} did not read for {timeout} s with {queued} bytes queued; "
            "closing its session",
            client=self.label,
            timeout=seconds,
            queued=queued,
        )
        self._drop(ClientStalled(f"the client did not read for {seconds} s"))

    def _streamTimedOut(self, entry: _PendingStream) -> None:
        entry.abandon()
        self._log.warn(
            "Client {client} did not open a stream within {timeout} s",
            client=self.label,
            timeout=self._settings.streamTimeout,
        )
        entry.connected.errback(
            StreamTimeout(f"client {self.label} did not open a stream in time")
        )

    def _failPending(self, error: Exception) -> None:
        for entry in self._pending:
            if entry.protocol is not None:
                entry.abandon()
                entry.connected.errback(error)

    def _drop(self, error: Exception) -> None:
        if self._endReason is None:
            self._endReason = Failure(error)
        self.protocol.transport.abortConnection()


class _ServerProtocol(YamuxProtocol):
    """The yamux server side of a L{ClientSession}'s connection."""

    def __init__(self, owner: ClientSession, config: SessionConfig, clock: IReactorTime) -> None:
        super().__init__(False, owner, config, clock)
        self._owner = owner

    def connectionMade(self) -> None:
        super().connectionMade()
        self._owner._connected()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        super().connectionLost(reason)
        self._owner._ended(reason)

    def writeStalled(self, seconds: float, queued: int) -> None:
        """The client read nothing for too long: end its session, saying why."""
        self._owner._stalled(seconds, queued)


class _ControlStream(Protocol):
    """
    The control stream: reads the handshake (accumulating until it is
    complete), answers it in one write, then reads the client's messages,
    which are checked and otherwise ignored.
    """

    def __init__(self, session: ClientSession) -> None:
        self._session = session
        self._handshake = HandshakeReader(HANDSHAKE_REQUEST)
        self._reader = ControlLineReader()

    def dataReceived(self, data: bytes) -> None:
        try:
            if not self._handshake.complete:
                rest = self._handshake.feed(data)
                if rest is None:
                    return
                self.transport.write(HANDSHAKE_RESPONSE)
                self._session._handshakeDone()
                data = rest
            self._reader.feed(data)
        except ControlProtocolError as e:
            self._session._protocolError(str(e))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._session._controlLost()


class _Handover(Protocol):
    """
    Stands for a requester's protocol when the stream arrives: attaches
    that protocol to the stream, then tells the requester.
    """

    def __init__(self, protocol: Protocol, connected: Deferred[Protocol]) -> None:
        self._protocol = protocol
        self._connected = connected

    def makeConnection(self, transport: StreamTransport) -> None:
        transport.attach(self._protocol)
        self._connected.callback(self._protocol)


class _Announcing(Protocol):
    """
    Opens a stream of the server's: writes the control message that says
    what the stream is for, then attaches the requester's protocol.
    """

    def __init__(self, message: bytes, protocol: Protocol) -> None:
        self._message = message
        self._protocol = protocol

    def makeConnection(self, transport: StreamTransport) -> None:
        transport.write(self._message)
        transport.attach(self._protocol)


class _Discard(Protocol):
    """Closes a stream that arrived for a request that gave up."""

    def connectionMade(self) -> None:
        self.transport.loseConnection()
