"""
The client's side of one tunnel connection, sans I/O: from the control
request to the end of the connection, as one explicit transition table.

The client's adapter (L{tunnel.client.connect}) feeds a L{ClientTunnel}
the bytes the server answers the control request with, and tells it each
L{Event} (the handshake was answered, a timer fired, a stream opened or
ended, a graceful close was asked for, the connection is gone...). It
carries out the L{Step}s it gets back, in order. The tunnel decides what the
adapter would otherwise keep as flags: whether the answer is a C{200}, a
refusal whose body is still coming or no HTTP at all; why the set-up failed
(L{TunnelConnectError} and its subclasses); when the yamux session starts,
with which bytes and whether the server opens the streams itself; when the
program's protocol is connected and when it is told the tunnel ended;
whether the connection is closed gracefully or aborted; when the control
messages are held because too many streams are open; and that a closing
tunnel refuses new streams and closes once they all ended.
"""

from __future__ import annotations

import enum
from typing import Mapping, Union

import attrs

from tunnel.core.control import (
    ACCESS,
    ADDRESSES_HEADER,
    FEATURES_HEADER,
    REGISTERED_HOST_HEADER,
    REGISTERED_IDENTIFIER_HEADER,
    SERVER_STREAMS,
    Registered,
    readAddresses,
    readRegistered,
)
from tunnel.core.http import ResponseError, ResponseHead, ResponseHeadReader, contentLength

#: The longest response head accepted from the server.
MAX_RESPONSE_HEAD = 16 * 1024

#: How much of the body of a refusal is kept for the error.
BODY_PREVIEW = 1024


# The first byte of a TLS alert or handshake record: what a TLS server
# answers to plain text. No HTTP response starts with either.
_TLS_RECORD_TYPES = (b"\x15", b"\x16")


class TunnelConnectError(Exception):
    """
    The tunnel could not be set up: the server's answer was not what the
    protocol expects, the connection ended or nothing happened in time.
    """


class TunnelResponseError(TunnelConnectError):
    """
    The server answered the control request with something other than
    C{200}.

    @ivar status: the response's status code.
    @ivar reason: the response's reason phrase.
    @ivar bodyPreview: the start of the response's body, as far as it came
        with the response.
    """

    def __init__(self, status: int, reason: str, bodyPreview: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.bodyPreview = bodyPreview
        super().__init__(status, reason, bodyPreview)

    def __str__(self) -> str:
        text = f"the server answered {self.status} {self.reason}".rstrip()
        body = self.bodyPreview.decode("utf-8", "replace").strip()
        return f"{text}: {body}" if body else text


class TunnelRefusedError(TunnelResponseError):
    """
    The server refused the identifier (it answered C{403}).

    Retrying is pointless until the server learns the identifier, so this
    is worth telling the user about loudly.
    """


class TunnelInUseError(TunnelResponseError):
    """
    Another client with the same identifier holds its tunnel, and answers
    (the server answered C{409}): retrying soon would only be refused again.
    """


class TunnelUnsupportedError(TunnelConnectError):
    """
    The server accepted the control request without an extension the client
    cannot do without (it asked for access rules, and a server that ignores
    them would expose its hosts to everyone): the client does not serve.
    """


class State(enum.Enum):
    """Where a client's tunnel connection is."""

    #: The control request is sent; the response head is being read.
    REQUESTING = "requesting"
    #: The server answered with something other than C{200}; the start of
    #: the body is being read for the error.
    REFUSED = "refused"
    #: The server said C{200}: the yamux session runs, the control
    #: handshake waits for its answer.
    HANDSHAKE = "handshake"
    #: The handshake was answered: the tunnel serves.
    READY = "ready"
    #: A graceful close: Go Away is sent, new streams are refused, the open
    #: ones finish.
    CLOSING = "closing"
    #: Closed before the tunnel was set up; the set-up fails once the
    #: connection is gone.
    ABANDONED = "abandoned"
    #: The set-up failed (or was cancelled); the connection is closing.
    FAILED = "failed"
    #: The tunnel was up and its connection is closing.
    DISCONNECTING = "disconnecting"
    #: The connection is gone.
    ENDED = "ended"


class Event(enum.Enum):
    """What can happen to a client's tunnel connection."""

    #: The response head is a C{200}.
    ACCEPTED = "accepted"
    #: The response head is anything else.
    REFUSED = "refused"
    #: As much of the refusal's body as is kept has arrived.
    REFUSAL_READ = "refusal read"
    #: The answer is not a valid HTTP response head.
    INVALID_RESPONSE = "invalid response"
    #: The server answered the control handshake.
    HANDSHAKE_ANSWERED = "handshake answered"
    #: The handshake answer is wrong, or the control stream ended first.
    HANDSHAKE_FAILED = "handshake failed"
    #: The set-up took longer than allowed.
    SETUP_TIMED_OUT = "setup timed out"
    #: Whoever waited for the set-up gave up on it.
    CANCELLED = "cancelled"
    #: A graceful close was asked for.
    SHUTDOWN = "shutdown"
    #: No stream is open any more while closing.
    IDLE = "idle"
    #: The open streams did not finish in time while closing.
    SHUTDOWN_TIMED_OUT = "shutdown timed out"
    #: The server ended the control stream after the handshake.
    CONTROL_ENDED = "control ended"
    #: The connection is gone.
    CONNECTION_LOST = "connection lost"


class Action(enum.Enum):
    """What the adapter does for the tunnel connection."""

    #: Stop the set-up timer.
    STOP_SETUP_TIMER = "stop setup timer"
    #: Connect the program's protocol and say the tunnel is established.
    CONNECT_PROTOCOL = "connect protocol"
    #: Send Go Away and start the timer of the graceful close.
    GO_AWAY = "go away"
    #: Close the connection once what is written is sent.
    CLOSE = "close"
    #: Drop the connection at once.
    ABORT = "abort"
    #: Stop reading control messages: too many streams are open.
    HOLD_MESSAGES = "hold messages"
    #: Read control messages again.
    RELEASE_MESSAGES = "release messages"
    #: Stop every timer that runs.
    STOP_TIMERS = "stop timers"
    #: Tell the program's protocol that the tunnel ended.
    DISCONNECT_PROTOCOL = "disconnect protocol"
    #: Tell whoever waits for the close that it is done.
    NOTIFY_CLOSED = "notify closed"
    #: Say why the set-up failed (a L{SetupFailed} stands for it).
    FAIL_SETUP = "fail setup"
    #: Start the yamux session (a L{StartSession} stands for it).
    START_SESSION = "start session"


@attrs.frozen
class StartSession:
    """
    Start the yamux session on the connection.

    @ivar rest: the bytes that followed the C{200}'s head: the session's.
    @ivar serverStreams: whether the server accepted the extension in which
        it opens the streams itself.
    @ivar addresses: where the public reaches this client, as the server
        said (L{tunnel.core.control.ADDRESSES}); none from a server that
        does not say.
    @ivar registered: the host and identifier the server registered for
        the client's token, if it asked and the server did.
    """

    rest: bytes
    serverStreams: bool
    addresses: tuple[str, ...] = ()
    registered: Registered | None = None


@attrs.frozen
class SetupFailed:
    """
    Fail whoever waits for the tunnel with C{error}.
    """

    error: TunnelConnectError


#: What the adapter carries out.
Step = Union[Action, StartSession, SetupFailed]

_S = State
_E = Event
_A = Action

# Before the tunnel is established, and while it could still be.
_SETTING_UP = (_S.REQUESTING, _S.REFUSED, _S.HANDSHAKE)
# The tunnel is up.
_UP = (_S.READY, _S.CLOSING)


def _table() -> Mapping[tuple[State, Event], tuple[State, tuple[Action, ...]]]:
    failed = (_A.STOP_SETUP_TIMER, _A.FAIL_SETUP)
    table: dict[tuple[State, Event], tuple[State, tuple[Action, ...]]] = {
        (_S.REQUESTING, _E.ACCEPTED): (_S.HANDSHAKE, (_A.START_SESSION,)),
        (_S.REQUESTING, _E.REFUSED): (_S.REFUSED, ()),
        (_S.REQUESTING, _E.INVALID_RESPONSE): (_S.FAILED, failed + (_A.CLOSE,)),
        (_S.REFUSED, _E.REFUSAL_READ): (_S.FAILED, failed + (_A.CLOSE,)),
        (_S.HANDSHAKE, _E.HANDSHAKE_ANSWERED): (
            _S.READY,
            (_A.STOP_SETUP_TIMER, _A.CONNECT_PROTOCOL),
        ),
        (_S.HANDSHAKE, _E.HANDSHAKE_FAILED): (_S.FAILED, failed + (_A.CLOSE,)),
        (_S.READY, _E.SHUTDOWN): (_S.CLOSING, (_A.GO_AWAY,)),
        (_S.CLOSING, _E.IDLE): (_S.DISCONNECTING, (_A.CLOSE,)),
        (_S.CLOSING, _E.SHUTDOWN_TIMED_OUT): (_S.DISCONNECTING, (_A.ABORT,)),
        # An abandoned set-up may still time out or be cancelled before
        # the connection is gone.
        (_S.ABANDONED, _E.SETUP_TIMED_OUT): (_S.FAILED, (_A.FAIL_SETUP, _A.ABORT)),
        (_S.ABANDONED, _E.CANCELLED): (_S.FAILED, (_A.STOP_SETUP_TIMER, _A.ABORT)),
        (_S.ABANDONED, _E.CONNECTION_LOST): (
            _S.ENDED,
            (_A.STOP_TIMERS, _A.FAIL_SETUP, _A.NOTIFY_CLOSED),
        ),
        (_S.FAILED, _E.CONNECTION_LOST): (_S.ENDED, (_A.STOP_TIMERS, _A.NOTIFY_CLOSED)),
        (_S.DISCONNECTING, _E.CONNECTION_LOST): (
            _S.ENDED,
            (_A.STOP_TIMERS, _A.DISCONNECT_PROTOCOL, _A.NOTIFY_CLOSED),
        ),
    }
    for state in _SETTING_UP:
        table[state, _E.SETUP_TIMED_OUT] = (_S.FAILED, (_A.FAIL_SETUP, _A.ABORT))
        table[state, _E.CANCELLED] = (_S.FAILED, (_A.STOP_SETUP_TIMER, _A.ABORT))
        table[state, _E.SHUTDOWN] = (_S.ABANDONED, (_A.CLOSE,))
        table[state, _E.CONNECTION_LOST] = (
            _S.ENDED,
            (_A.STOP_TIMERS, _A.FAIL_SETUP, _A.NOTIFY_CLOSED),
        )
    for state in _UP:
        table[state, _E.CONTROL_ENDED] = (_S.DISCONNECTING, (_A.CLOSE,))
        table[state, _E.CONNECTION_LOST] = (
            _S.ENDED,
            (_A.STOP_TIMERS, _A.DISCONNECT_PROTOCOL, _A.NOTIFY_CLOSED),
        )
    return table


#: Every transition: C{(state, event)} to the next state and the actions to
#: carry out. Any other pair leaves the state as it is, with nothing to do:
#: events that come after the matter was decided (a handshake answer on a
#: connection that is closing, a second graceful close, a timer that fired
#: as it was stopped) change nothing.
TRANSITIONS = _table()


class ClientTunnel:
    """
    The state of a client's tunnel connection.

    @ivar state: where it is.
    @ivar openStreams: how many tunnelled connections are open.
    @ivar maxStreams: how many may be open before control messages are held.
    @ivar setupTimeout: the seconds the set-up may take, for its error.
    @ivar registering: whether the control request asked for a host to be
        registered (it had a token): only then does the C{200} say what was.
    @ivar requiresAccess: whether the control request asked for access
        rules (L{ACCESS}): a C{200} that does not accept them fails the
        set-up with L{TunnelUnsupportedError}.
    """

    def __init__(
        self,
        maxStreams: int,
        setupTimeout: float,
        registering: bool = False,
        requiresAccess: bool = False,
    ) -> None:
        self.state = State.REQUESTING
        self.openStreams = 0
        self.maxStreams = maxStreams
        self.setupTimeout = setupTimeout
        self._headReader = ResponseHeadReader(MAX_RESPONSE_HEAD)
        self._refusal: ResponseHead | None = None
        self._preview = b""
        self._serverStreams = False
        self._addresses: tuple[str, ...] = ()
        self._registered: Registered | None = None
        self.registering = registering
        self.requiresAccess = requiresAccess
        self._unsupported = False
        self._answered = False

    @property
    def refusesStreams(self) -> bool:
        """Whether new streams are refused: the tunnel is closing."""
        return self.state is not State.READY

    def receiveResponse(self, data: bytes) -> tuple[Step, ...]:
        """
        Take the next bytes of the server's answer to the control request.
        Once the tunnel's session started, the bytes are the session's:
        they must not come here any more.
        """
        if self.state is State.REFUSED:
            return self._readRefusal(data)
        if self.state is not State.REQUESTING:
            return ()
        if not self._answered and data[:1] in _TLS_RECORD_TYPES:
            return self._receive(
                Event.INVALID_RESPONSE,
                "the server answered in TLS: connect with tls:HOST:PORT (or "
                "https://HOST:PORT)",
                b"",
            )
        self._answered = self._answered or bool(data)
        try:
            parsed = self._headReader.feed(data)
        except ResponseError as e:
            return self._receive(
                Event.INVALID_RESPONSE,
                f"the server's answer is not a valid HTTP response: {e}",
                b"",
            )
        if parsed is None:
            return ()
        head, rest = parsed
        if head.code == 200:
            features = head.tokens(FEATURES_HEADER.lower())
            if self.requiresAccess and ACCESS not in features:
                self._unsupported = True
                return self._receive(
                    Event.INVALID_RESPONSE,
                    "the server does not take the access rules asked for (--allow, "
                    "--deny, --basic-auth): not serving, which would expose the local "
                    "service to everyone; ask the server's operator to set them instead",
                    b"",
                )
            self._serverStreams = SERVER_STREAMS in features
            self._addresses = readAddresses(head.values(ADDRESSES_HEADER.lower()))
            if self.registering:
                self._registered = readRegistered(
                    head.values(REGISTERED_HOST_HEADER.lower()),
                    head.values(REGISTERED_IDENTIFIER_HEADER.lower()),
                )
            return self._receive(Event.ACCEPTED, "", rest)
        self._refusal = head
        return self._receive(Event.REFUSED) + self._readRefusal(rest)

    def handshakeAnswered(self) -> tuple[Step, ...]:
        """The server answered the control handshake."""
        return self._receive(Event.HANDSHAKE_ANSWERED)

    def handshakeFailed(self, why: str) -> tuple[Step, ...]:
        """The handshake answer is wrong, or the control stream ended first."""
        return self._receive(Event.HANDSHAKE_FAILED, why)

    def setupTimedOut(self) -> tuple[Step, ...]:
        """The set-up timer fired."""
        return self._receive(
            Event.SETUP_TIMED_OUT, f"no tunnel within {self.setupTimeout} s of connecting"
        )

    def cancelled(self) -> tuple[Step, ...]:
        """Whoever waited for the set-up gave up on it."""
        return self._receive(Event.CANCELLED)

    def shutdown(self) -> tuple[Step, ...]:
        """
        A graceful close was asked for: once the tunnel is up, Go Away and
        a close once the open streams ended; before, a close at once.
        """
        return self._receive(Event.SHUTDOWN) + self._closeIfIdle()

    def shutdownTimedOut(self) -> tuple[Step, ...]:
        """The timer of the graceful close fired."""
        return self._receive(Event.SHUTDOWN_TIMED_OUT)

    def controlEnded(self) -> tuple[Step, ...]:
        """The server ended the control stream."""
        return self._receive(Event.CONTROL_ENDED)

    def streamOpened(self) -> tuple[Step, ...]:
        """
        A tunnelled connection opened: at the bound, control messages are
        held (holding them again changes nothing).
        """
        self.openStreams += 1
        return (Action.HOLD_MESSAGES,) if self.openStreams >= self.maxStreams else ()

    def streamEnded(self) -> tuple[Step, ...]:
        """
        A tunnelled connection ended: below the bound, control messages are
        read again (releasing them when none are held changes nothing).
        """
        self.openStreams -= 1
        held = (Action.RELEASE_MESSAGES,) if self.openStreams < self.maxStreams else ()
        return held + self._closeIfIdle()

    def connectionLost(self, why: str) -> tuple[Step, ...]:
        """The connection is gone, for the reason C{why}."""
        hint = ""
        if self.state is State.REQUESTING and not self._answered and "TLS" not in why:
            # What a TLS server does with a plain request, OpenSSL's at least.
            hint = (" (no answer came: use tls: if and only if the server's port serves TLS)")
        return self._receive(
            Event.CONNECTION_LOST,
            f"the connection ended before the tunnel was set up: {why}{hint}",
        )

    def _closeIfIdle(self) -> tuple[Step, ...]:
        if self.state is State.CLOSING and not self.openStreams:
            return self._receive(Event.IDLE)
        return ()

    def _readRefusal(self, body: bytes) -> tuple[Step, ...]:
        """
        Keep the start of a refusal's body (as much as its
        C{Content-Length} promises, up to L{BODY_PREVIEW}), then fail.
        """
        assert self._refusal is not None
        self._preview = (self._preview + body)[:BODY_PREVIEW]
        try:
            wanted = min(contentLength(self._refusal) or 0, BODY_PREVIEW)
        except ResponseError:
            wanted = 0  # Content-Lengths that disagree promise nothing.
        if len(self._preview) >= wanted:
            return self._receive(Event.REFUSAL_READ)
        return ()

    def _receive(self, event: Event, why: str = "", rest: bytes = b"") -> tuple[Step, ...]:
        """
        Take in an event; return what to do, in order. C{why} says why the
        set-up failed, if the event fails it; C{rest} is what followed a
        C{200}'s head.
        """
        self.state, actions = TRANSITIONS.get((self.state, event), (self.state, ()))
        return tuple(self._step(action, why, rest) for action in actions)

    def _step(self, action: Action, why: str, rest: bytes) -> Step:
        if action is Action.FAIL_SETUP:
            return SetupFailed(self._setupError(why))
        if action is Action.START_SESSION:
            return StartSession(rest, self._serverStreams, self._addresses, self._registered)
        return action

    def _setupError(self, why: str) -> TunnelConnectError:
        """Why the set-up failed: a refusal said why, or else C{why} does."""
        refusal = self._refusal
        if refusal is None:
            return (TunnelUnsupportedError if self._unsupported else TunnelConnectError)(why)
        errorClass = {403: TunnelRefusedError, 409: TunnelInUseError}.get(
            refusal.code, TunnelResponseError
        )
        return errorClass(refusal.code, refusal.phrase.decode("latin-1"), self._preview)
