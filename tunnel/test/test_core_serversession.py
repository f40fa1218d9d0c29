"""
Tests for L{tunnel.core.serversession}: the server side of a tunnel
session as events in, steps out.
"""

from __future__ import annotations

from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.control import (
    Action,
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    MAX_CONTROL_LINE,
    ControlMessage,
    TransportProtocol,
)
from tunnel.core.serversession import (
    HANDSHAKE_TIMER,
    TRANSITIONS,
    Abort,
    AcceptControl,
    Backlog,
    CancelTimer,
    CloseControl,
    CloseStream,
    Deliver,
    Event,
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
    Timer,
    UnexpectedEvent,
)

E = Event
S = State

LABEL = "0123…"
SETTINGS = SessionSettings(
    streamTimeout=10.0, handshakeTimeout=5.0, maxPendingStreams=3, drainTimeout=60.0
)
IDLE = Backlog()
HTTP = TransportProtocol.HTTP
#: The control message of a request for an HTTP stream to port 0.
MESSAGE = ControlMessage(transportProtocol=HTTP).encode()
CONTROL = "control stream"


def session(
    *events: Callable[[ServerSession], object],
    serverStreams: bool = False,
    notices: bool = False,
) -> ServerSession:
    """A new session, told C{events} (functions of it) in order."""
    tunnel = ServerSession(SETTINGS, LABEL, serverStreams, notices)
    for event in events:
        event(tunnel)
    return tunnel


def connect(tunnel: ServerSession) -> None:
    tunnel.connected()


def openControl(tunnel: ServerSession) -> None:
    tunnel.streamArrived(CONTROL)


def handshake(tunnel: ServerSession) -> None:
    tunnel.controlDataReceived(HANDSHAKE_REQUEST)


def close(tunnel: ServerSession) -> None:
    tunnel.close("testing")


def lose(tunnel: ServerSession) -> None:
    tunnel.connectionLost()


#: The events that bring a new session to each state.
PATHS = {
    S.AWAITING_CONTROL: (connect,),
    S.HANDSHAKE: (connect, openControl),
    S.READY: (connect, openControl, handshake),
    S.CLOSING: (connect, openControl, handshake, close),
    S.ENDED: (connect, openControl, handshake, lose),
}


def ready(serverStreams: bool = False) -> ServerSession:
    """A session whose handshake is done."""
    return session(*PATHS[S.READY], serverStreams=serverStreams)


def request(tunnel: ServerSession, token: object, backlog: Backlog = IDLE) -> tuple:
    """Ask C{tunnel} for an HTTP stream for C{token}."""
    return tunnel.streamRequested(token, HTTP, 0, backlog)


def fire(tunnel: ServerSession, event: Event) -> object:
    """Tell C{tunnel} an instance of C{event}."""
    if event is E.CONNECTED:
        return tunnel.connected()
    if event is E.STREAM_ARRIVED:
        return tunnel.streamArrived("a stream")
    if event is E.CONTROL_DATA:
        return tunnel.controlDataReceived(b"")
    if event is E.HANDSHAKE_DONE:
        return tunnel.controlDataReceived(HANDSHAKE_REQUEST)
    if event is E.CONTROL_LOST:
        return tunnel.controlLost()
    if event is E.STREAM_REQUESTED:
        return request(tunnel, "a request")
    if event is E.REQUEST_ABANDONED:
        return tunnel.requestAbandoned("a request")
    if event is E.HANDSHAKE_TIMED_OUT:
        return tunnel.timerFired(HANDSHAKE_TIMER)
    if event is E.STREAM_TIMED_OUT:
        if tunnel.state is S.READY:
            request(tunnel, "waiting")
        return tunnel.timerFired(Timer("waiting"))
    if event is E.STALLED:
        return tunnel.stalled(5.0)
    if event is E.CLOSE_REQUESTED:
        return tunnel.close("testing")
    assert event is E.CONNECTION_LOST
    return tunnel.connectionLost()


class LifecycleTests(SynchronousTestCase):
    """The transition table, and only it, moves a session."""

    def test_everyPairGoesWhereItSays(self) -> None:
        """Each event of the table takes a session in its state to the state it gives."""
        for (state, event), expected in TRANSITIONS.items():
            if (state, event) == (S.CLOSING, E.HANDSHAKE_DONE):
                # Only a session closed during its handshake completes it
                # while closing.
                tunnel = session(*PATHS[S.HANDSHAKE], close)
            else:
                tunnel = session(*PATHS[state])
            fire(tunnel, event)
            self.assertEqual(tunnel.state, expected, (state, event))

    def test_illegalPairsAreRefused(self) -> None:
        """
        An event the table does not have for the state raises
        L{UnexpectedEvent}, and the session stays where it was.
        """
        refused = 0
        for state in State:
            for event in Event:
                if (state, event) in TRANSITIONS or event is E.HANDSHAKE_DONE:
                    # The bytes of a handshake are control data: outside
                    # the handshake they are no handshake at all.
                    continue
                tunnel = session(*PATHS[state])
                self.assertRaises(UnexpectedEvent, fire, tunnel, event)
                self.assertEqual(tunnel.state, state, (state, event))
                refused += 1
        self.assertGreater(refused, 10)

    def test_endedIsFinal(self) -> None:
        """No transition leaves L{State.ENDED}; only requests and closes are told there."""
        self.assertEqual(
            {event: target for (state, event), target in TRANSITIONS.items() if state is S.ENDED},
            {e: S.ENDED for e in (E.STREAM_REQUESTED, E.REQUEST_ABANDONED, E.CLOSE_REQUESTED)},
        )

    def test_noTransitionReturnsToAnEarlierState(self) -> None:
        """A session only goes forward: control, handshake, ready, closing, ended."""
        order = list(State)
        for (state, event), target in TRANSITIONS.items():
            self.assertGreaterEqual(order.index(target), order.index(state), (state, event))

    def test_aStreamTimerThatDoesNotRunCannotFire(self) -> None:
        """The timer of a request that no longer waits cannot fire."""
        tunnel = ready()
        request(tunnel, "gone")
        tunnel.requestAbandoned("gone")
        self.assertRaises(UnexpectedEvent, tunnel.timerFired, Timer("gone"))


class HandshakeTests(SynchronousTestCase):
    """The control stream, its handshake and its end."""

    def test_connectionStartsTheHandshakeTimer(self) -> None:
        """Once connected, the client has the handshake timeout to handshake."""
        self.assertEqual(
            session().connected(), (StartTimer(HANDSHAKE_TIMER, SETTINGS.handshakeTimeout),)
        )

    def test_firstStreamIsTheControlStream(self) -> None:
        """The first stream is accepted as the control stream; the next is refused."""
        tunnel = session(connect)
        self.assertEqual(tunnel.streamArrived(CONTROL), (AcceptControl(CONTROL),))
        self.assertEqual(tunnel.state, S.HANDSHAKE)
        self.assertEqual(tunnel.streamArrived("second"), (RefuseStream("second"),))

    def test_splitHandshakeIsAnsweredOnceComplete(self) -> None:
        """
        A handshake in pieces is answered once complete: the answer is
        written, the timer stops, the session is ready.
        """
        tunnel = session(connect, openControl)
        self.assertEqual(tunnel.controlDataReceived(HANDSHAKE_REQUEST[:5]), ())
        self.assertEqual(tunnel.state, S.HANDSHAKE)
        self.assertEqual(
            tunnel.controlDataReceived(HANDSHAKE_REQUEST[5:]),
            (SendControl(HANDSHAKE_RESPONSE), CancelTimer(HANDSHAKE_TIMER), NotifyReady()),
        )
        self.assertEqual(tunnel.state, S.READY)

    def test_messagesAfterTheHandshakeAreReadAndIgnored(self) -> None:
        """Well-formed messages, with the handshake or after it, change nothing."""
        tunnel = session(connect, openControl)
        steps = tunnel.controlDataReceived(HANDSHAKE_REQUEST + MESSAGE)
        self.assertEqual(steps[-1], NotifyReady())
        self.assertEqual(tunnel.controlDataReceived(MESSAGE + MESSAGE[:4]), ())
        self.assertIsNone(tunnel.endReason)

    def test_wrongHandshakeAborts(self) -> None:
        """
        A wrong byte aborts at once with the protocol error; the session
        never gets ready.
        """
        tunnel = session(connect, openControl)
        [abort] = tunnel.controlDataReceived(b"GET / ")
        self.assertEqual(abort, Abort(Reason.PROTOCOL_ERROR, "bad handshake b'GET / '"))
        self.assertEqual(tunnel.state, S.HANDSHAKE)
        self.assertEqual(tunnel.endReason, (Reason.PROTOCOL_ERROR, abort.message))

    def test_malformedMessageAfterTheHandshakeAborts(self) -> None:
        """A malformed message in the same bytes as the handshake aborts after the answer."""
        tunnel = session(connect, openControl)
        steps = tunnel.controlDataReceived(HANDSHAKE_REQUEST + b"{not json}\n")
        self.assertEqual(
            steps[:3],
            (SendControl(HANDSHAKE_RESPONSE), CancelTimer(HANDSHAKE_TIMER), NotifyReady()),
        )
        [abort] = steps[3:]
        self.assertEqual(abort.reason, Reason.PROTOCOL_ERROR)
        self.assertIn("not JSON", abort.message)

    def test_endlessMessageAborts(self) -> None:
        """A control line longer than the bound aborts."""
        tunnel = ready()
        self.assertEqual(tunnel.controlDataReceived(b"x" * MAX_CONTROL_LINE), ())
        [abort] = tunnel.controlDataReceived(b"x")
        self.assertEqual(abort.reason, Reason.PROTOCOL_ERROR)
        self.assertIn("longer than", abort.message)

    def test_handshakeTimeoutAborts(self) -> None:
        """A client that does not handshake in time is dropped, control stream or not."""
        for state in (S.AWAITING_CONTROL, S.HANDSHAKE):
            tunnel = session(*PATHS[state])
            self.assertEqual(
                tunnel.timerFired(HANDSHAKE_TIMER),
                (Abort(Reason.HANDSHAKE_TIMEOUT, "no handshake in time"),),
            )
            self.assertEqual(tunnel.endReason, (Reason.HANDSHAKE_TIMEOUT, "no handshake in time"))

    def test_endOfTheControlStreamAborts(self) -> None:
        """The client closing its control stream is the client going away."""
        for state in (S.HANDSHAKE, S.READY):
            tunnel = session(*PATHS[state])
            self.assertEqual(
                tunnel.controlLost(),
                (Abort(Reason.CONTROL_CLOSED, "the client closed its control stream"),),
            )

    def test_stallAborts(self) -> None:
        """A client that does not read is dropped, saying for how long."""
        self.assertEqual(
            ready().stalled(30.0),
            (Abort(Reason.STALLED, "the client did not read for 30.0 s"),),
        )

    def test_handshakeCompletedWhileClosingIsAnsweredButNotReady(self) -> None:
        """A session closed during its handshake answers it and never gets ready."""
        tunnel = session(connect, openControl, close)
        self.assertEqual(
            tunnel.controlDataReceived(HANDSHAKE_REQUEST),
            (SendControl(HANDSHAKE_RESPONSE), CancelTimer(HANDSHAKE_TIMER)),
        )
        self.assertEqual(tunnel.state, S.CLOSING)


class PairingTests(SynchronousTestCase):
    """
    Each arriving stream goes to the oldest request still owed one;
    requests that gave up keep their place.
    """

    def test_requestSendsAControlMessageAndStartsItsTimer(self) -> None:
        """A request waits, with its timer, for the stream its message asks for."""
        tunnel = ready()
        self.assertEqual(
            tunnel.streamRequested("one", TransportProtocol.TCP, 2222, IDLE),
            (
                StartTimer(Timer("one"), SETTINGS.streamTimeout),
                SendControl(b'{"action":1,"transportProtocol":2,"localPort":2222}\n'),
            ),
        )

    def test_streamsGoToRequestsInOrder(self) -> None:
        """Streams are delivered in the order the requests were made."""
        tunnel = ready()
        request(tunnel, "one")
        request(tunnel, "two")
        self.assertEqual(
            tunnel.streamArrived("s1"), (CancelTimer(Timer("one")), Deliver("s1", "one"))
        )
        self.assertEqual(
            tunnel.streamArrived("s2"), (CancelTimer(Timer("two")), Deliver("s2", "two"))
        )
        self.assertEqual(tunnel.streamArrived("s3"), (RefuseStream("s3"),))

    def test_timedOutRequestConsumesTheNextStream(self) -> None:
        """
        A request that timed out fails; the stream that arrives for it is
        closed, and the request after it gets the stream after that.
        """
        tunnel = ready()
        request(tunnel, "late")
        request(tunnel, "next")
        self.assertEqual(
            tunnel.timerFired(Timer("late")),
            (
                Fail(
                    "late", Reason.STREAM_TIMEOUT, f"client {LABEL} did not open a stream in time"
                ),
            ),
        )
        self.assertEqual(tunnel.streamArrived("s1"), (CloseStream("s1"),))
        self.assertEqual(
            tunnel.streamArrived("s2"), (CancelTimer(Timer("next")), Deliver("s2", "next"))
        )

    def test_cancelledRequestConsumesTheNextStream(self) -> None:
        """
        A request given up by its caller stops its timer and keeps its
        place; giving it up again, or once served, changes nothing.
        """
        tunnel = ready()
        request(tunnel, "cancelled")
        request(tunnel, "next")
        self.assertEqual(tunnel.requestAbandoned("cancelled"), (CancelTimer(Timer("cancelled")),))
        self.assertEqual(tunnel.requestAbandoned("cancelled"), ())
        self.assertEqual(tunnel.streamArrived("s1"), (CloseStream("s1"),))
        self.assertEqual(tunnel.streamArrived("s2")[-1], Deliver("s2", "next"))
        self.assertEqual(tunnel.requestAbandoned("next"), ())

    def test_streamNobodyAskedForIsRefused(self) -> None:
        """A stream without a request waiting is refused, and the session goes on."""
        tunnel = ready()
        self.assertEqual(tunnel.streamArrived("s1"), (RefuseStream("s1"),))
        self.assertEqual(tunnel.state, S.READY)
        self.assertIsNone(tunnel.endReason)


class LimitTests(SynchronousTestCase):
    """Which requests are refused, and why."""

    def test_pendingBoundCountsRequestsThatGaveUp(self) -> None:
        """
        A client may owe no more than C{maxPendingStreams} streams, timed-out
        ones included; once one arrives, a request goes again.
        """
        tunnel = ready()
        for token in ("one", "two", "three"):
            request(tunnel, token)
            tunnel.timerFired(Timer(token))
        self.assertEqual(
            request(tunnel, "four"),
            (Fail("four", Reason.TOO_MANY_PENDING, f"client {LABEL} owes 3 streams already"),),
        )
        tunnel.streamArrived("s1")
        self.assertEqual(request(tunnel, "five")[-1], SendControl(MESSAGE))

    def test_clientNotReadingIsRefusedFirst(self) -> None:
        """A full buffer refuses a request, even when the client owes too many streams."""
        tunnel = ready()
        for token in ("one", "two", "three"):
            request(tunnel, token)
        self.assertEqual(
            request(tunnel, "four", Backlog(bufferedBytes=2000, bufferFull=True)),
            (
                Fail(
                    "four",
                    Reason.NOT_READING,
                    f"client {LABEL} does not read: 2000 bytes are queued for it",
                ),
            ),
        )

    def test_requestsBeforeOrAfterReadyAreRefused(self) -> None:
        """Only a ready session takes requests."""
        for state in (S.AWAITING_CONTROL, S.HANDSHAKE, S.CLOSING, S.ENDED):
            self.assertEqual(
                request(session(*PATHS[state]), "t"),
                (Fail("t", Reason.NOT_READY, f"the session of client {LABEL} is not ready"),),
            )

    def test_serverStreamsOpenAtOnce(self) -> None:
        """
        With the server-streams extension a request opens a stream with its
        control message at once: nothing waits, no timer runs.
        """
        tunnel = ready(serverStreams=True)
        self.assertEqual(
            tunnel.streamRequested("t", TransportProtocol.WEBSOCKET, 8080, IDLE),
            (OpenStream("t", b'{"action":1,"transportProtocol":3,"localPort":8080}\n'),),
        )
        self.assertEqual(tunnel.streamArrived("s1"), (RefuseStream("s1"),))

    def test_serverStreamsBoundCountsUnacknowledgedStreams(self) -> None:
        """With the extension, the streams the client has not acknowledged are what it owes."""
        tunnel = ready(serverStreams=True)
        self.assertEqual(
            request(tunnel, "t", Backlog(unacknowledgedStreams=3)),
            (Fail("t", Reason.TOO_MANY_PENDING, f"client {LABEL} owes 3 streams already"),),
        )
        [opened] = request(tunnel, "u", Backlog(unacknowledgedStreams=2))
        self.assertIsInstance(opened, OpenStream)


class EndTests(SynchronousTestCase):
    """Closing, the end of the connection, and why the session ended."""

    def test_closeFailsEachWaitingRequest(self) -> None:
        """
        A close fails every request still waiting (not those that gave up),
        each with the reason of the close, then shuts the connection down
        and closes the control stream.
        """
        tunnel = ready()
        for token in ("gone", "one", "two"):
            request(tunnel, token)
        tunnel.requestAbandoned("gone")
        closed = f"the session of client {LABEL} closed: replaced"
        self.assertEqual(
            tunnel.close("replaced"),
            (
                CancelTimer(Timer("one")),
                Fail("one", Reason.CLOSED, closed),
                CancelTimer(Timer("two")),
                Fail("two", Reason.CLOSED, closed),
                Shutdown("replaced", SETTINGS.drainTimeout),
                CloseControl(),
            ),
        )
        self.assertEqual(tunnel.state, S.CLOSING)
        self.assertEqual(tunnel.endReason, (Reason.CLOSED, "replaced"))

    def test_closeTellsAClientThatTakesNotices(self) -> None:
        """
        A ready client that took notices is told why, in a last control
        message before the control stream closes; one still in its
        handshake is not (the control stream carries no message yet).
        """
        tunnel = session(*PATHS[S.READY], notices=True)
        notice = ControlMessage(Action.NOTICE, 0, 0, "its hosts were removed")
        self.assertEqual(
            tunnel.close("its hosts were removed"),
            (
                Shutdown("its hosts were removed", SETTINGS.drainTimeout),
                SendControl(notice.encode()),
                CloseControl(),
            ),
        )
        early = session(connect, openControl, notices=True)
        self.assertNotIn(
            SendControl(notice.encode()), early.close("its hosts were removed")
        )

    def test_closingTwiceChangesNothing(self) -> None:
        """A second close, or one after the end, has nothing to do."""
        tunnel = ready()
        close(tunnel)
        self.assertEqual(tunnel.close("again"), ())
        self.assertEqual(tunnel.endReason, (Reason.CLOSED, "testing"))
        lose(tunnel)
        self.assertEqual(tunnel.close("again"), ())

    def test_closeBeforeTheControlStream(self) -> None:
        """Closed before the control stream opened: no control stream to close, none accepted."""
        tunnel = session(connect)
        self.assertEqual(tunnel.close("early"), (Shutdown("early", SETTINGS.drainTimeout),))
        self.assertEqual(tunnel.streamArrived("s1"), (RefuseStream("s1"),))

    def test_whileClosingStreamsAreRefusedAndTheControlStreamMayEnd(self) -> None:
        """A closing session refuses streams; the end of its control stream is its own doing."""
        tunnel = session(*PATHS[S.CLOSING])
        self.assertEqual(tunnel.streamArrived("s1"), (RefuseStream("s1"),))
        self.assertEqual(tunnel.controlLost(), ())
        self.assertEqual(tunnel.endReason, (Reason.CLOSED, "testing"))

    def test_endFailsEachWaitingRequest(self) -> None:
        """The end of the connection stops the timers and fails the waiting requests."""
        tunnel = ready()
        request(tunnel, "one")
        request(tunnel, "gone")
        tunnel.timerFired(Timer("gone"))
        self.assertEqual(
            tunnel.connectionLost(),
            (
                CancelTimer(HANDSHAKE_TIMER),
                CancelTimer(Timer("one")),
                Fail("one", Reason.ENDED, f"the session of client {LABEL} ended"),
            ),
        )
        self.assertEqual(tunnel.state, S.ENDED)
        self.assertIsNone(tunnel.endReason)
        self.assertEqual(
            request(tunnel, "late"),
            (Fail("late", Reason.NOT_READY, f"the session of client {LABEL} is not ready"),),
        )

    def test_firstFaultIsWhyTheSessionEnds(self) -> None:
        """Of several faults before the end, the first is the session's end reason."""
        tunnel = ready()
        tunnel.stalled(30.0)
        tunnel.controlLost()
        self.assertEqual(tunnel.endReason, (Reason.STALLED, "the client did not read for 30.0 s"))

    def test_closeOverridesAFault(self) -> None:
        """
        A close after a fault, before the end, is why the session ends; a
        fault after the close is not.
        """
        tunnel = ready()
        tunnel.stalled(30.0)
        tunnel.close("replaced")
        tunnel.stalled(30.0)
        self.assertEqual(tunnel.endReason, (Reason.CLOSED, "replaced"))
