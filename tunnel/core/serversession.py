"""
The server's side of one client's tunnel session, sans I/O: the control
handshake, the streams asked of the client and paired with their requests,
closing and the end, with the lifecycle as one explicit transition table.

The server's adapter (L{tunnel.server.session}) tells a L{ServerSession}
each event as it happens (the connection is made, a stream arrived, bytes
came on the control stream, a stream is requested or given up, a timer
fired, a close is asked for, the connection is gone...) and carries out the
L{Step}s it gets back, in order. The session decides what the adapter would
otherwise keep as flags: which stream is the control stream, when the
handshake is complete and answered, which request an arriving stream
belongs to, which requests are refused and why, when a timer runs, and
what ends the connection.

Requests and streams are the adapter's: the session holds them as opaque
tokens and hands them back in the steps. The adapter owns the clock: the
session says which L{Timer} to start or cancel, and is told when one fired.

Without the server-streams extension the client opens a stream for each
control message, in order, so each arriving stream goes to the oldest
request still owed one. A request that gives up (it timed out or was
cancelled) keeps its place: the stream that arrives for it later is closed,
and the requests after it stay paired with their own streams.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Hashable, Mapping, Union

import attrs

from tunnel.core.control import (
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    ControlLineReader,
    ControlMessage,
    ControlProtocolError,
    HandshakeReader,
    TransportProtocol,
)
from tunnel.yamux import SessionConfig


@attrs.frozen
class SessionSettings:
    """
    Limits and timeouts of the server side of a tunnel session.

    @ivar streamTimeout: seconds the client has to open a stream asked for.
    @ivar handshakeTimeout: seconds the client has to open the control
        stream and send the handshake; a client that does not is dropped.
    @ivar maxPendingStreams: the most streams a client may owe: asked for
        and not opened yet, timed-out ones included. Asking for more is
        refused (L{Reason.TOO_MANY_PENDING}).
    @ivar drainTimeout: seconds the open streams of a session that is closed
        (replaced by a newer one, or its identifier removed) may take to
        finish before the connection is closed.
    @ivar responseTimeout: seconds the local service may keep a forwarded
        HTTP request waiting, once its stream is there: for the response
        head after the whole request was sent, or at a time while it reads
        none of the request body; the public request then gets a C{504}.
        L{None} for no limit.
    @ivar yamux: the yamux settings of the sessions; an accept backlog
        smaller than C{maxPendingStreams} is raised to it. Its
        C{maxSessionBuffer} bounds what a session holds for a client that
        does not read (requests beyond get a C{503}), and its
        C{writeStallTimeout} how long such a client keeps its session.
    """

    streamTimeout: float = 10.0
    handshakeTimeout: float = 10.0
    maxPendingStreams: int = 1000
    drainTimeout: float = 60.0
    responseTimeout: float | None = 60.0
    yamux: SessionConfig = SessionConfig()


class State(enum.Enum):
    """Where a session is."""

    #: The client has not opened the control stream yet.
    AWAITING_CONTROL = "awaiting control"
    #: The control stream is open; the handshake has not all come.
    HANDSHAKE = "handshake"
    #: The handshake is answered: streams are asked for and paired.
    READY = "ready"
    #: Closed by the server: the open streams finish, nothing new starts.
    CLOSING = "closing"
    #: The connection is gone.
    ENDED = "ended"


class Event(enum.Enum):
    """What can happen to a session."""

    #: The client's connection is made.
    CONNECTED = "connected"
    #: The client opened a stream.
    STREAM_ARRIVED = "stream arrived"
    #: Bytes came on the control stream.
    CONTROL_DATA = "control data"
    #: The handshake is complete (found in the control stream's bytes).
    HANDSHAKE_DONE = "handshake done"
    #: The control stream ended.
    CONTROL_LOST = "control lost"
    #: A stream of the client is requested.
    STREAM_REQUESTED = "stream requested"
    #: A request gave up waiting for its stream.
    REQUEST_ABANDONED = "request abandoned"
    #: The handshake timer fired.
    HANDSHAKE_TIMED_OUT = "handshake timed out"
    #: The timer of a request waiting for its stream fired.
    STREAM_TIMED_OUT = "stream timed out"
    #: The client read nothing of what was queued for it for too long.
    STALLED = "stalled"
    #: A graceful close is asked for.
    CLOSE_REQUESTED = "close requested"
    #: The connection is gone.
    CONNECTION_LOST = "connection lost"


_S = State
_E = Event

# While the session may still be closed, and while it has a connection.
_OPEN = (_S.AWAITING_CONTROL, _S.HANDSHAKE, _S.READY)
_CONNECTED = _OPEN + (_S.CLOSING,)
# Once the control stream may be open.
_WITH_CONTROL = (_S.HANDSHAKE, _S.READY, _S.CLOSING)


def _table() -> Mapping[tuple[State, Event], State]:
    table: dict[tuple[State, Event], State] = {
        (_S.AWAITING_CONTROL, _E.CONNECTED): _S.AWAITING_CONTROL,
        # The first stream the client opens is the control stream.
        (_S.AWAITING_CONTROL, _E.STREAM_ARRIVED): _S.HANDSHAKE,
        (_S.HANDSHAKE, _E.HANDSHAKE_DONE): _S.READY,
        # Closed during the handshake: answered, but never ready.
        (_S.CLOSING, _E.HANDSHAKE_DONE): _S.CLOSING,
        (_S.READY, _E.STREAM_TIMED_OUT): _S.READY,
        (_S.ENDED, _E.CLOSE_REQUESTED): _S.ENDED,
        (_S.ENDED, _E.STREAM_REQUESTED): _S.ENDED,
        (_S.ENDED, _E.REQUEST_ABANDONED): _S.ENDED,
    }
    for state in _OPEN:
        table[state, _E.CLOSE_REQUESTED] = _S.CLOSING
    for state in _CONNECTED:
        table[state, _E.STREAM_REQUESTED] = state
        table[state, _E.STALLED] = state
        table[state, _E.CONNECTION_LOST] = _S.ENDED
    for state in _WITH_CONTROL:
        table[state, _E.STREAM_ARRIVED] = state
        table[state, _E.CONTROL_DATA] = state
        table[state, _E.CONTROL_LOST] = state
    # A close during the handshake leaves its timer running.
    for state in (_S.AWAITING_CONTROL, _S.HANDSHAKE, _S.CLOSING):
        table[state, _E.HANDSHAKE_TIMED_OUT] = state
    # Requests exist from the handshake on; one may give up while the
    # others are failed at a close.
    for state in (_S.READY, _S.CLOSING):
        table[state, _E.REQUEST_ABANDONED] = state
    table[_S.CLOSING, _E.CLOSE_REQUESTED] = _S.CLOSING
    return table


#: Every transition: C{(state, event)} to the next state. Any other pair
#: cannot happen (the adapter is wrong) and is refused with
#: L{UnexpectedEvent}. Nothing leaves L{State.ENDED}.
TRANSITIONS = _table()


class UnexpectedEvent(Exception):
    """An event that cannot happen in the session's state."""


class Reason(enum.Enum):
    """Why a request for a stream failed, or why the connection ends."""

    #: The session is not ready: still in its handshake, closing or ended.
    NOT_READY = "not ready"
    #: The yamux session holds as much as it may for the client: the
    #: client does not read what it is sent.
    NOT_READING = "not reading"
    #: The client owes as many streams as it may.
    TOO_MANY_PENDING = "too many pending"
    #: The client did not open the stream in time.
    STREAM_TIMEOUT = "stream timeout"
    #: The session was closed by the server.
    CLOSED = "closed"
    #: The connection is gone.
    ENDED = "ended"
    #: The client broke the control protocol.
    PROTOCOL_ERROR = "protocol error"
    #: The client did not complete the handshake in time.
    HANDSHAKE_TIMEOUT = "handshake timeout"
    #: The client read nothing of what was queued for it for too long.
    STALLED = "stalled"
    #: The client closed its control stream.
    CONTROL_CLOSED = "control closed"


@attrs.frozen
class Timer:
    """
    A timer the adapter runs for the session, named by what it waits for.

    @ivar token: the request whose stream it waits for; L{None} for the
        handshake timer (L{HANDSHAKE_TIMER}).
    """

    token: Hashable | None = None


#: The timer of the handshake.
HANDSHAKE_TIMER = Timer()


@attrs.frozen
class Backlog:
    """
    What the yamux session holds for the client as a stream is requested.

    @ivar bufferedBytes: the bytes it holds because the client does not read.
    @ivar bufferFull: whether that is as much as it may hold.
    @ivar unacknowledgedStreams: the streams the server opened that the
        client has not acknowledged yet.
    """

    bufferedBytes: int = 0
    bufferFull: bool = False
    unacknowledgedStreams: int = 0


@attrs.frozen
class SendControl:
    """Write C{data} on the control stream."""

    data: bytes


@attrs.frozen
class CloseControl:
    """Close the control stream: no more control messages."""


@attrs.frozen
class NotifyReady:
    """Tell whoever observes the session that it is ready."""


@attrs.frozen
class StartTimer:
    """Start C{timer}, to fire after C{seconds}."""

    timer: Timer
    seconds: float


@attrs.frozen
class CancelTimer:
    """Cancel C{timer}, if it runs."""

    timer: Timer


@attrs.frozen
class AcceptControl:
    """The arriving C{stream} is the control stream: read it."""

    stream: object


@attrs.frozen
class Deliver:
    """Attach the arriving C{stream} to the request C{token}."""

    stream: object
    token: Hashable


@attrs.frozen
class CloseStream:
    """Close the arriving C{stream}: its request gave up."""

    stream: object


@attrs.frozen
class RefuseStream:
    """Refuse (reset) the arriving C{stream}: nobody asked for it."""

    stream: object


@attrs.frozen
class OpenStream:
    """
    Open a stream to the client for the request C{token}, with
    C{announcement} (the control message) as its first line.
    """

    token: Hashable
    announcement: bytes


@attrs.frozen
class Fail:
    """Fail the request C{token}: C{message} says why, C{reason} in short."""

    token: Hashable
    reason: Reason
    message: str


@attrs.frozen
class Shutdown:
    """
    Close the connection gracefully, for the reason C{why}: send Go Away,
    and close once the open streams finish, or after C{drainTimeout}
    seconds.
    """

    why: str
    drainTimeout: float


@attrs.frozen
class Abort:
    """Drop the connection at once: C{message} says why, C{reason} in short."""

    reason: Reason
    message: str


#: What the adapter carries out.
Step = Union[
    SendControl,
    CloseControl,
    NotifyReady,
    StartTimer,
    CancelTimer,
    AcceptControl,
    Deliver,
    CloseStream,
    RefuseStream,
    OpenStream,
    Fail,
    Shutdown,
    Abort,
]


class ServerSession:
    """
    The state of the server side of one client's tunnel session.

    @ivar state: where it is.
    @ivar settings: its limits and timeouts.
    @ivar label: the client's identifier, redacted, for the messages.
    @ivar serverStreams: whether the client accepted the extension in which
        the server opens the streams
        (L{tunnel.core.control.SERVER_STREAMS}).
    @ivar notices: whether the client accepted the extension in which the
        server says why it closes the session (L{tunnel.core.control.NOTICES}).
    @ivar endReason: why the session ends, once a close or a fault decided
        it (a close overrides a fault, the first fault stays): the reason
        and its message; L{None} while the connection may simply go.
    """

    def __init__(
        self,
        settings: SessionSettings,
        label: str,
        serverStreams: bool = False,
        notices: bool = False,
    ) -> None:
        self.state = State.AWAITING_CONTROL
        self.settings = settings
        self.label = label
        self.serverStreams = serverStreams
        self.notices = notices
        self.endReason: tuple[Reason, str] | None = None
        self._handshake = HandshakeReader(HANDSHAKE_REQUEST)
        self._lines = ControlLineReader()
        # Every stream the client owes, oldest first, by its request's
        # token: True while the request waits, False once it gave up.
        self._owed: OrderedDict[Hashable, bool] = OrderedDict()

    @property
    def waitingRequests(self) -> int:
        """How many requests wait for a stream the client owes them."""
        return sum(self._owed.values())

    def connected(self) -> tuple[Step, ...]:
        """The client's connection is made: the handshake timer starts."""
        self._enter(Event.CONNECTED)
        return (StartTimer(HANDSHAKE_TIMER, self.settings.handshakeTimeout),)

    def streamArrived(self, stream: object) -> tuple[Step, ...]:
        """
        The client opened C{stream} (opaque, handed back in the step): the
        first is the control stream; after the handshake, each goes to the
        oldest request owed one; any other is refused.
        """
        left = self._enter(Event.STREAM_ARRIVED)
        if left is State.AWAITING_CONTROL:
            return (AcceptControl(stream),)
        if left is not State.READY or not self._owed:
            return (RefuseStream(stream),)
        token, waiting = self._owed.popitem(last=False)
        if not waiting:
            return (CloseStream(stream),)
        return (CancelTimer(Timer(token)), Deliver(stream, token))

    def controlDataReceived(self, data: bytes) -> tuple[Step, ...]:
        """
        Bytes came on the control stream: first the handshake, however it is
        split, answered once complete; then the client's control messages,
        which are checked and otherwise ignored. Bytes that break the
        protocol end the connection.
        """
        self._enter(Event.CONTROL_DATA)
        steps: tuple[Step, ...] = ()
        try:
            if not self._handshake.complete:
                rest = self._handshake.feed(data)
                if rest is None:
                    return steps
                steps = self._handshakeDone()
                data = rest
            self._lines.feed(data)
        except ControlProtocolError as e:
            steps += self._abort(Reason.PROTOCOL_ERROR, str(e))
        return steps

    def controlLost(self) -> tuple[Step, ...]:
        """
        The control stream ended: the client went away, unless the server
        closed it.
        """
        self._enter(Event.CONTROL_LOST)
        if self.state is State.CLOSING:
            return ()
        return self._abort(Reason.CONTROL_CLOSED, "the client closed its control stream")

    def streamRequested(
        self,
        token: Hashable,
        transportProtocol: TransportProtocol,
        localPort: int,
        backlog: Backlog,
    ) -> tuple[Step, ...]:
        """
        A stream of the client carrying C{transportProtocol} is requested
        for C{localPort}; C{token} (unique, opaque) stands for the request
        in the steps. It is refused unless the session is ready, the client
        reads what it is sent and owes fewer streams than it may: the
        server-streams extension opens a stream at once, else a control
        message asks the client for it, and the request waits.

        @param backlog: what the yamux session holds for the client now.
        """
        self._enter(Event.STREAM_REQUESTED)
        if self.state is not State.READY:
            return (
                Fail(token, Reason.NOT_READY, f"the session of client {self.label} is not ready"),
            )
        if backlog.bufferFull:
            return (
                Fail(
                    token,
                    Reason.NOT_READING,
                    f"client {self.label} does not read: "
                    f"{backlog.bufferedBytes} bytes are queued for it",
                ),
            )
        owed = backlog.unacknowledgedStreams if self.serverStreams else len(self._owed)
        if owed >= self.settings.maxPendingStreams:
            return (
                Fail(
                    token,
                    Reason.TOO_MANY_PENDING,
                    f"client {self.label} owes {owed} streams already",
                ),
            )
        message = ControlMessage(transportProtocol=transportProtocol, localPort=localPort)
        if self.serverStreams:
            return (OpenStream(token, message.encode()),)
        self._owed[token] = True
        return (
            StartTimer(Timer(token), self.settings.streamTimeout),
            SendControl(message.encode()),
        )

    def requestAbandoned(self, token: Hashable) -> tuple[Step, ...]:
        """
        The request C{token} gave up waiting (it was cancelled): the stream
        that arrives for it is closed. A request that no longer waits
        changes nothing.
        """
        self._enter(Event.REQUEST_ABANDONED)
        if not self._owed.get(token):
            return ()
        self._owed[token] = False
        return (CancelTimer(Timer(token)),)

    def timerFired(self, timer: Timer) -> tuple[Step, ...]:
        """
        C{timer} fired: a client that did not complete the handshake is
        dropped; a request whose stream did not come fails, and the stream
        that arrives for it later is closed.
        """
        if timer == HANDSHAKE_TIMER:
            self._enter(Event.HANDSHAKE_TIMED_OUT)
            return self._abort(Reason.HANDSHAKE_TIMEOUT, "no handshake in time")
        self._enter(Event.STREAM_TIMED_OUT)
        if not self._owed.get(timer.token):
            raise UnexpectedEvent("the timer of a request that does not wait fired")
        self._owed[timer.token] = False
        return (
            Fail(
                timer.token,
                Reason.STREAM_TIMEOUT,
                f"client {self.label} did not open a stream in time",
            ),
        )

    def stalled(self, seconds: float) -> tuple[Step, ...]:
        """The client read nothing of what was queued for it for C{seconds}."""
        self._enter(Event.STALLED)
        return self._abort(Reason.STALLED, f"the client did not read for {seconds} s")

    def close(self, why: str) -> tuple[Step, ...]:
        """
        Close the session gracefully, for the reason C{why}: the requests
        waiting for a stream fail, the connection is shut down, a ready
        client that took L{tunnel.core.control.NOTICES} is told C{why}, and
        the control stream is closed. Closing again changes nothing.
        """
        left = self._enter(Event.CLOSE_REQUESTED)
        if left not in _OPEN:
            return ()
        self.endReason = (Reason.CLOSED, why)
        steps = self._failWaiting(
            Reason.CLOSED, f"the session of client {self.label} closed: {why}"
        )
        steps += (Shutdown(why, self.settings.drainTimeout),)
        if self.notices and left is State.READY:
            steps += (SendControl(ControlMessage.ofNotice(why).encode()),)
        if left is not State.AWAITING_CONTROL:
            steps += (CloseControl(),)
        return steps

    def connectionLost(self) -> tuple[Step, ...]:
        """
        The connection is gone: the timers stop and the requests waiting for
        a stream fail. L{endReason} says why, if the session knows.
        """
        self._enter(Event.CONNECTION_LOST)
        return (CancelTimer(HANDSHAKE_TIMER),) + self._failWaiting(
            Reason.ENDED, f"the session of client {self.label} ended"
        )

    def _enter(self, event: Event) -> State:
        """
        Take the transition of C{event}; return the state it left.

        @raise UnexpectedEvent: if C{event} cannot happen in this state.
        """
        left = self.state
        try:
            self.state = TRANSITIONS[left, event]
        except KeyError:
            raise UnexpectedEvent(f"{event.value} in state {left.value}") from None
        return left

    def _handshakeDone(self) -> tuple[Step, ...]:
        """The handshake is complete: answer it; ready, unless closing."""
        left = self._enter(Event.HANDSHAKE_DONE)
        steps: tuple[Step, ...] = (SendControl(HANDSHAKE_RESPONSE), CancelTimer(HANDSHAKE_TIMER))
        if left is State.HANDSHAKE:
            steps += (NotifyReady(),)
        return steps

    def _failWaiting(self, reason: Reason, message: str) -> tuple[Step, ...]:
        """Fail every request waiting for a stream; none is owed any more."""
        steps: list[Step] = []
        for token, waiting in self._owed.items():
            if waiting:
                steps += (CancelTimer(Timer(token)), Fail(token, reason, message))
        self._owed.clear()
        return tuple(steps)

    def _abort(self, reason: Reason, message: str) -> tuple[Step, ...]:
        """Drop the connection; the first fault is why the session ends."""
        if self.endReason is None:
            self.endReason = (reason, message)
        return (Abort(reason, message),)
