"""
The server side of one client's tunnel: a yamux session, its control stream,
and the pairing of the streams the client opens with the requests for them.

What happens when is decided by L{tunnel.core.serversession.ServerSession};
this module connects it to Twisted: it tells the core what the yamux session
and the control stream report, and carries out the core's steps with
transports, timers and L{Deferred}s, logging as it goes.
"""

from __future__ import annotations

from typing import Iterable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from tunnel.core.access import AccessRule
from tunnel.core.control import ControlProtocolError, TransportProtocol, redactIdentifier
from tunnel.core.serversession import (
    Abort,
    AcceptControl,
    Backlog,
    CancelTimer,
    CloseControl,
    CloseStream,
    Deliver,
    Fail,
    NotifyReady,
    OpenStream,
    Reason,
    RefuseStream,
    SendControl,
    ServerSession,
    SessionSettings,
    Shutdown,
    StartTimer,
    State,
    Step,
    Timer,
)
from tunnel.mux import SessionEndedError, StreamAddress, StreamTransport, YamuxProtocol
from tunnel.server.metrics import ServerMetrics
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


#: The error that stands for each reason of the core, given its message.
_ERRORS: dict[Reason, type[Exception]] = {
    Reason.NOT_READY: SessionEndedError,
    Reason.NOT_READING: ClientNotReading,
    Reason.TOO_MANY_PENDING: TooManyPendingStreams,
    Reason.STREAM_TIMEOUT: StreamTimeout,
    Reason.CLOSED: SessionEndedError,
    Reason.ENDED: SessionEndedError,
    Reason.PROTOCOL_ERROR: ControlProtocolError,
    Reason.HANDSHAKE_TIMEOUT: StreamTimeout,
    Reason.STALLED: ClientStalled,
    Reason.CONTROL_CLOSED: ConnectionDone,
}


def _error(reason: Reason, message: str) -> Exception:
    """The error that stands for C{reason}, saying C{message}."""
    return _ERRORS[reason](message)


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


@attrs.define(eq=False)
class _Request:
    """
    A request for a stream, the core's token for it.

    @ivar protocol: what to attach to the stream.
    @ivar connected: fires with C{protocol} once it is attached.
    """

    protocol: Protocol
    connected: Deferred[Protocol]


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
    @ivar access: whom the client asked its hosts to admit
        (L{tunnel.core.control.ACCESS}), on top of the operator's rules;
        L{None} for no more than those.
    @ivar instance: the client process's instance
        (L{tunnel.core.control.INSTANCE_HEADER}), if it sent one.
    """

    _log = Logger()

    def __init__(
        self,
        identifier: bytes,
        settings: SessionSettings,
        observer: ISessionObserver,
        clock: IReactorTime,
        metrics: ServerMetrics,
        serverStreams: bool = False,
        notices: bool = False,
    ) -> None:
        """
        @param metrics: is told each keep-alive ping's round trip.
        @param serverStreams: whether the client accepted the extension in
            which the server opens the streams (L{tunnel.core.control.SERVER_STREAMS}).
        @param notices: whether it accepted the one in which the server says
            why it closes the session (L{tunnel.core.control.NOTICES}).
        """
        self.identifier = identifier
        self.serverStreams = serverStreams
        self.label = redactIdentifier(identifier)
        self.peer: IAddress | None = None
        self.connectedSince: float | None = None
        self.access: AccessRule | None = None
        self.instance: str | None = None
        self.protocol = _ServerProtocol(self, _backlogForEveryOwedStream(settings), clock)
        self._settings = settings
        self._observer = observer
        self._clock = clock
        self._metrics = metrics
        self._core = ServerSession(settings, self.label, serverStreams, notices)
        self._control: Protocol | None = None
        self._timers: dict[Timer, IDelayedCall] = {}
        self._refusedStreams = 0
        self._refusedForBuffer = 0

    @property
    def ready(self) -> bool:
        """Whether the session completed its handshake and is not closing."""
        return self._core.state is State.READY

    @property
    def openStreams(self) -> int:
        """How many streams carry requests or TCP connections (all but the control stream)."""
        return sum(
            1 for stream in self.protocol.streams.values() if stream.protocol is not self._control
        )

    @property
    def waitingRequests(self) -> int:
        """How many requests wait for a stream the client owes them."""
        return self._core.waitingRequests

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
        request = _Request(
            protocol, Deferred(lambda _: self._carryOut(self._core.requestAbandoned(request)))
        )
        backlog = Backlog(
            self.protocol.bufferedBytes,
            self.protocol.bufferFull,
            self.protocol.unacknowledgedStreams,
        )
        self._carryOut(
            self._core.streamRequested(request, transportProtocol, localPort, backlog)
        )
        return request.connected

    def close(self, why: str) -> Deferred[None]:
        """
        Close the session gracefully: requests waiting for a stream fail, the
        client is sent Go Away, the control stream is closed, and the
        connection is closed once the other streams finish, or after the
        drain timeout.

        @param why: the reason, for logs and observers.
        @return: a L{Deferred} that fires once the connection is closed.
        """
        self._carryOut(self._core.close(why))
        return self.protocol.whenClosed()

    # -- as the stream factory of the yamux session ------------------------

    def buildProtocol(self, addr: StreamAddress) -> Protocol | None:
        """
        Route a stream the client opened: the first is the control stream;
        later ones go to the oldest pending request; others are refused.
        """
        return self._carryOut(self._core.streamArrived(addr))

    # -- events from the yamux protocol and the control stream ------------

    def _connected(self) -> None:
        self.peer = self.protocol.transport.getPeer()
        self._log.info(
            "Client {client} connected from {peer}; waiting for its handshake",
            client=self.label,
            peer=self.peer,
        )
        self._carryOut(self._core.connected())

    def _controlDataReceived(self, data: bytes) -> None:
        self._carryOut(self._core.controlDataReceived(data))

    def _controlLost(self) -> None:
        self._carryOut(self._core.controlLost())

    def _stalled(self, seconds: float, queued: int) -> None:
        self._log.error(
            "Client {client} did not read for {timeout} s with {queued} bytes queued; "
            "closing its session",
            client=self.label,
            timeout=seconds,
            queued=queued,
        )
        self._carryOut(self._core.stalled(seconds))

    def _ended(self, reason: Failure) -> None:
        self._carryOut(self._core.connectionLost())
        why = self._core.endReason
        self._observer.sessionEnded(self, reason if why is None else Failure(_error(*why)))

    def _keepAliveAnswered(self, roundTrip: float) -> None:
        self._metrics.keepAliveAnswered(roundTrip)

    def _timerFired(self, timer: Timer) -> None:
        del self._timers[timer]
        self._carryOut(self._core.timerFired(timer))

    # -- carrying out the core's steps -------------------------------------

    def _carryOut(self, steps: Iterable[Step]) -> Protocol | None:
        """
        Carry out the core's steps, in order.

        @return: the protocol for the stream that arrived, if the steps
            accept one; L{None} refuses it.
        """
        protocol: Protocol | None = None
        for step in steps:
            match step:
                case SendControl(data):
                    self._control.transport.write(data)
                case CloseControl():
                    # No more control messages: only the streams carrying
                    # traffic keep the session open.
                    self._control.transport.loseConnection()
                case NotifyReady():
                    self.connectedSince = self._clock.seconds()
                    self._observer.sessionReady(self)
                case StartTimer(timer, seconds):
                    self._timers[timer] = self._clock.callLater(seconds, self._timerFired, timer)
                case CancelTimer(timer):
                    call = self._timers.pop(timer, None)
                    if call is not None:
                        call.cancel()
                case AcceptControl():
                    protocol = self._control = _ControlStream(self)
                case Deliver(token=request):
                    protocol = _Handover(request.protocol, request.connected)
                case CloseStream():
                    protocol = _Discard()
                case RefuseStream(stream):
                    self._refuse(stream)
                case OpenStream(request, announcement):
                    self._openStream(request, announcement)
                case Fail(request, reason, message):
                    self._fail(request, reason, message)
                case Shutdown(why, drainTimeout):
                    self._log.info(
                        "Closing the session of client {client}: {why}",
                        client=self.label,
                        why=why,
                    )
                    self.protocol.shutdown(drainTimeout)
                case Abort(reason, message):
                    self._abort(reason, message)
        return protocol

    def _refuse(self, stream: StreamAddress) -> None:
        """
        Refuse a stream nobody asked for, logged sparingly (the 1st, 10th,
        100th...): a client flooding the session with such streams must not
        flood the log too.
        """
        self._refusedStreams += 1
        if isSparseCount(self._refusedStreams):
            self._log.warn(
                "Client {client} opened stream {streamID} that nobody asked for; "
                "refusing it ({count} such streams so far)",
                client=self.label,
                streamID=stream.streamID,
                count=self._refusedStreams,
            )

    def _openStream(self, request: _Request, announcement: bytes) -> None:
        """
        Open a stream to the client, C{announcement} its first line, with
        the request's protocol attached at once; a stream the client
        refuses or does not acknowledge in time ends that protocol's
        connection.
        """
        opened = self.protocol.openStream(_Announcing(announcement, request.protocol))
        failures: list[Failure] = []
        opened.addErrback(failures.append)
        if failures and request.protocol.transport is None:
            request.connected.errback(failures[0])
        else:
            request.connected.callback(request.protocol)

    def _fail(self, request: _Request, reason: Reason, message: str) -> None:
        """
        Fail a request with the error that stands for C{reason}, logging a
        stream that did not come and, sparingly, a client that does not read.
        """
        if reason is Reason.STREAM_TIMEOUT:
            self._log.warn(
                "Client {client} did not open a stream within {timeout} s",
                client=self.label,
                timeout=self._settings.streamTimeout,
            )
        elif reason is Reason.NOT_READING:
            # For the 1st, 10th, 100th... of them.
            self._refusedForBuffer += 1
            if isSparseCount(self._refusedForBuffer):
                self._log.warn(
                    "Client {client} does not read: {queued} bytes are queued for it, "
                    "{cap} at most; refusing requests for it ({count} so far)",
                    client=self.label,
                    queued=self.protocol.bufferedBytes,
                    cap=self.protocol.config.maxSessionBuffer,
                    count=self._refusedForBuffer,
                )
        request.connected.errback(_error(reason, message))

    def _abort(self, reason: Reason, message: str) -> None:
        """
        Drop the connection, saying why in the log (a stall was logged
        with its figures as it was reported).
        """
        if reason is Reason.PROTOCOL_ERROR:
            self._log.error(
                "Client {client} broke the tunnel protocol, ending its session: {why}",
                client=self.label,
                why=message,
            )
        elif reason is Reason.HANDSHAKE_TIMEOUT:
            self._log.warn(
                "Client {client} did not complete the handshake within {timeout} s; "
                "dropping it",
                client=self.label,
                timeout=self._settings.handshakeTimeout,
            )
        elif reason is Reason.CONTROL_CLOSED:
            self._log.info("Client {client} closed its control stream", client=self.label)
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

    def keepAliveAnswered(self, roundTrip: float) -> None:
        """The client answered a keep-alive ping: tell the session how fast."""
        self._owner._keepAliveAnswered(roundTrip)


class _ControlStream(Protocol):
    """The control stream: its bytes and its end go to the session."""

    def __init__(self, session: ClientSession) -> None:
        self._session = session

    def dataReceived(self, data: bytes) -> None:
        self._session._controlDataReceived(data)

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
