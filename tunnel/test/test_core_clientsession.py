"""
Tests for L{tunnel.core.clientsession}: the client's tunnel connection as
bytes and events in, steps out.
"""

from __future__ import annotations

from itertools import product

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.clientsession import (
    BODY_PREVIEW,
    MAX_RESPONSE_HEAD,
    TRANSITIONS,
    Action,
    ClientTunnel,
    Event,
    SetupFailed,
    StartSession,
    State,
    TunnelConnectError,
    TunnelRefusedError,
    TunnelResponseError,
)
from tunnel.core.control import CONNECTED_RESPONSE, CONNECTED_WITH_SERVER_STREAMS

A = Action

REFUSAL = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 19\r\n\r\nunknown identifier\n"


def ready(maxStreams: int = 4) -> ClientTunnel:
    """A tunnel whose handshake was answered."""
    tunnel = ClientTunnel(maxStreams, 30.0)
    tunnel.receiveResponse(CONNECTED_RESPONSE)
    tunnel.handshakeAnswered()
    return tunnel


def failure(steps: tuple[object, ...]) -> TunnelConnectError:
    """The error of the one L{SetupFailed} among C{steps}."""
    [error] = [step.error for step in steps if isinstance(step, SetupFailed)]
    return error


class ResponseTests(SynchronousTestCase):
    """The server's answer to the control request."""

    def test_connectedStartsTheSession(self) -> None:
        """
        A C{200} starts the session with the bytes that followed its head,
        whatever the line ends.
        """
        for head in (CONNECTED_RESPONSE, b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"):
            tunnel = ClientTunnel(4, 30.0)
            self.assertEqual(
                tunnel.receiveResponse(head + b"frames"),
                (StartSession(b"frames", False),),
            )
            self.assertEqual(tunnel.state, State.HANDSHAKE)

    def test_serverStreamsAccepted(self) -> None:
        """A C{200} that names the extension says the server opens the streams."""
        tunnel = ClientTunnel(4, 30.0)
        self.assertEqual(
            tunnel.receiveResponse(CONNECTED_WITH_SERVER_STREAMS),
            (StartSession(b"", True),),
        )

    def test_addressesSaid(self) -> None:
        """The addresses a C{200} lists go with the session's start."""
        tunnel = ClientTunnel(4, 30.0)
        self.assertEqual(
            tunnel.receiveResponse(
                b"HTTP/1.1 200 Connected to Tunnel\nX-Tunnel-Features: addresses\n"
                b"X-Tunnel-Addresses: https://a.example/, tcp://s.example:2222\n\n"
            ),
            (StartSession(b"", False, ("https://a.example/", "tcp://s.example:2222")),),
        )

    def test_headInPieces(self) -> None:
        """A head split anywhere is read once all of it came."""
        for cut in range(1, len(CONNECTED_RESPONSE)):
            tunnel = ClientTunnel(4, 30.0)
            self.assertEqual(tunnel.receiveResponse(CONNECTED_RESPONSE[:cut]), ())
            self.assertEqual(
                tunnel.receiveResponse(CONNECTED_RESPONSE[cut:]),
                (StartSession(b"", False),),
            )

    def test_refusalWaitsForItsBody(self) -> None:
        """
        A refusal fails the set-up once the body its C{Content-Length}
        promises came, with the status, reason and body; a C{403} says the
        identifier was refused.
        """
        tunnel = ClientTunnel(4, 30.0)
        self.assertEqual(tunnel.receiveResponse(REFUSAL[:-8]), ())
        self.assertEqual(tunnel.state, State.REFUSED)
        steps = tunnel.receiveResponse(REFUSAL[-8:])
        self.assertEqual(steps[0], A.STOP_SETUP_TIMER)
        self.assertEqual(steps[2], A.CLOSE)
        error = failure(steps)
        self.assertIsInstance(error, TunnelRefusedError)
        self.assertEqual(
            (error.status, error.reason, error.bodyPreview),
            (403, "Forbidden", b"unknown identifier\n"),
        )
        self.assertEqual(tunnel.state, State.FAILED)
        self.assertEqual(tunnel.receiveResponse(b"more"), ())

    def test_refusalPreviewIsBounded(self) -> None:
        """Of a long refusal body, the first L{BODY_PREVIEW} bytes are kept."""
        tunnel = ClientTunnel(4, 30.0)
        head = b"HTTP/1.1 500 Oops\r\nContent-Length: 100000\r\n\r\n"
        tunnel.receiveResponse(head + b"x" * (BODY_PREVIEW - 1))
        error = failure(tunnel.receiveResponse(b"y" * 5000))
        self.assertEqual(type(error), TunnelResponseError)
        self.assertEqual(error.bodyPreview, b"x" * (BODY_PREVIEW - 1) + b"y")

    def test_refusalCutShortKeepsWhatCame(self) -> None:
        """A connection that ends before the promised body fails with what came."""
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(REFUSAL[:-6])
        steps = tunnel.connectionLost("done")
        self.assertEqual(failure(steps).bodyPreview, b"unknown ident")
        self.assertEqual(steps[-1], A.NOTIFY_CLOSED)

    def test_notHTTP(self) -> None:
        """Something that is not an HTTP response fails the set-up, saying so."""
        tunnel = ClientTunnel(4, 30.0)
        steps = tunnel.receiveResponse(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertIn("not a valid HTTP response", str(failure(steps)))
        self.assertEqual(steps[-1], A.CLOSE)

    def test_tlsAnswer(self) -> None:
        """
        A TLS server's answer to the plain control request (an alert record)
        fails the set-up with how to connect to it instead.
        """
        tunnel = ClientTunnel(4, 30.0)
        steps = tunnel.receiveResponse(b"\x15\x03\x01\x00\x02\x02\x46")
        self.assertIn("the server answered in TLS: connect with tls:", str(failure(steps)))
        self.assertEqual(steps[-1], A.CLOSE)

    def test_tlsRecordByteLaterIsPlainGarbage(self) -> None:
        """Only the answer's first byte tells TLS: later on it is an invalid response."""
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(b"H")
        steps = tunnel.receiveResponse(b"\x16\x03\r\n\r\n")
        self.assertIn("not a valid HTTP response", str(failure(steps)))

    def test_endWithoutAnswerHintsAtTLS(self) -> None:
        """
        A connection that ends before any answer (what a TLS server does
        with a plain request) fails with a hint at tls:; one that ends in
        the middle of an answer does not.
        """
        tunnel = ClientTunnel(4, 30.0)
        self.assertIn("use tls: if and only if the server's port serves TLS",
                      str(failure(tunnel.connectionLost("reset"))))
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(b"HTTP/1.1 200")
        self.assertNotIn("TLS", str(failure(tunnel.connectionLost("reset"))))
        tunnel = ClientTunnel(4, 30.0)
        self.assertNotIn("if and only if", str(failure(tunnel.connectionLost("TLS failed: x"))))

    def test_headTooLong(self) -> None:
        """A head longer than L{MAX_RESPONSE_HEAD} fails without waiting for its end."""
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(b"HTTP/1.1 200 OK\r\n")
        steps = tunnel.receiveResponse(b"X: " + b"y" * MAX_RESPONSE_HEAD)
        self.assertIsInstance(failure(steps), TunnelConnectError)
        self.assertEqual(tunnel.state, State.FAILED)


class SetupTests(SynchronousTestCase):
    """The handshake, the set-up timer, cancelling and closing early."""

    def test_handshakeAnswered(self) -> None:
        """An answered handshake stops the timer and connects the program's protocol."""
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(CONNECTED_RESPONSE)
        self.assertEqual(tunnel.handshakeAnswered(), (A.STOP_SETUP_TIMER, A.CONNECT_PROTOCOL))
        self.assertEqual(tunnel.state, State.READY)
        self.assertFalse(tunnel.refusesStreams)

    def test_handshakeFailed(self) -> None:
        """A wrong handshake answer fails the set-up with its reason and closes."""
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(CONNECTED_RESPONSE)
        steps = tunnel.handshakeFailed("the answer is wrong")
        self.assertEqual(str(failure(steps)), "the answer is wrong")
        self.assertEqual(steps[-1], A.CLOSE)
        self.assertEqual(tunnel.handshakeAnswered(), ())

    def test_timeout(self) -> None:
        """The set-up timer fails the set-up, saying how long it waited, and aborts."""
        tunnel = ClientTunnel(4, 12.5)
        steps = tunnel.setupTimedOut()
        self.assertEqual(str(failure(steps)), "no tunnel within 12.5 s of connecting")
        self.assertEqual(steps[-1], A.ABORT)

    def test_timeoutDuringRefusal(self) -> None:
        """A refusal whose body never comes fails with the refusal at the timeout."""
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(REFUSAL[:-6])
        self.assertIsInstance(failure(tunnel.setupTimedOut()), TunnelRefusedError)

    def test_cancel(self) -> None:
        """Cancelling aborts; no error is made (the cancellation is the error)."""
        tunnel = ClientTunnel(4, 30.0)
        self.assertEqual(tunnel.cancelled(), (A.STOP_SETUP_TIMER, A.ABORT))
        self.assertEqual(tunnel.connectionLost("aborted"), (A.STOP_TIMERS, A.NOTIFY_CLOSED))

    def test_shutdownBeforeReady(self) -> None:
        """
        A close asked for before the tunnel is up closes at once; the set-up
        fails once the connection is gone, and a late C{200} starts nothing.
        """
        tunnel = ClientTunnel(4, 30.0)
        self.assertEqual(tunnel.shutdown(), (A.CLOSE,))
        self.assertEqual(tunnel.receiveResponse(CONNECTED_RESPONSE), ())
        steps = tunnel.connectionLost("closed")
        self.assertEqual(
            str(failure(steps)),
            "the connection ended before the tunnel was set up: closed",
        )
        self.assertEqual(tunnel.state, State.ENDED)


class ServingTests(SynchronousTestCase):
    """Streams, the bound on them, closing and the end."""

    def test_messagesHeldAtTheBound(self) -> None:
        """
        Control messages are held once the bound of open streams is reached,
        and read again below it.
        """
        tunnel = ready(maxStreams=2)
        self.assertEqual(tunnel.streamOpened(), ())
        self.assertEqual(tunnel.streamOpened(), (A.HOLD_MESSAGES,))
        self.assertEqual(tunnel.streamEnded(), (A.RELEASE_MESSAGES,))
        self.assertEqual(tunnel.openStreams, 1)

    def test_idleShutdownClosesAtOnce(self) -> None:
        """Without open streams a graceful close sends Go Away and closes."""
        tunnel = ready()
        self.assertEqual(tunnel.shutdown(), (A.GO_AWAY, A.CLOSE))
        self.assertEqual(tunnel.state, State.DISCONNECTING)
        self.assertEqual(tunnel.shutdown(), ())

    def test_shutdownWaitsForOpenStreams(self) -> None:
        """
        A graceful close refuses new streams, and closes once the open ones
        ended, the refusals it made meanwhile included.
        """
        tunnel = ready()
        tunnel.streamOpened()
        self.assertEqual(tunnel.shutdown(), (A.GO_AWAY,))
        self.assertTrue(tunnel.refusesStreams)
        tunnel.streamOpened()
        self.assertEqual(tunnel.streamEnded(), (A.RELEASE_MESSAGES,))
        self.assertEqual(tunnel.streamEnded(), (A.RELEASE_MESSAGES, A.CLOSE))

    def test_shutdownTimeoutAborts(self) -> None:
        """Streams still open at the close's deadline are cut with the connection."""
        tunnel = ready()
        tunnel.streamOpened()
        tunnel.shutdown()
        self.assertEqual(tunnel.shutdownTimedOut(), (A.ABORT,))
        self.assertEqual(tunnel.streamEnded(), (A.RELEASE_MESSAGES,))

    def test_controlEnded(self) -> None:
        """
        The end of the control stream closes an established tunnel; before
        the handshake it is the failed handshake that counts.
        """
        self.assertEqual(ready().controlEnded(), (A.CLOSE,))
        tunnel = ClientTunnel(4, 30.0)
        tunnel.receiveResponse(CONNECTED_RESPONSE)
        self.assertEqual(tunnel.controlEnded(), ())

    def test_lostAfterReady(self) -> None:
        """The end of an established tunnel's connection tells the program's protocol."""
        tunnel = ready()
        self.assertEqual(
            tunnel.connectionLost("gone"),
            (A.STOP_TIMERS, A.DISCONNECT_PROTOCOL, A.NOTIFY_CLOSED),
        )
        self.assertEqual(tunnel.state, State.ENDED)


def _paths(length: int) -> list[list[tuple[State, Event, tuple[Action, ...]]]]:
    """Every path of up to C{length} transitions from the start."""
    paths: list[list[tuple[State, Event, tuple[Action, ...]]]] = [[]]
    found = []
    for _ in range(length):
        longer = []
        for path in paths:
            state = path[-1][0] if path else State.REQUESTING
            for event in Event:
                if (state, event) in TRANSITIONS:
                    target, actions = TRANSITIONS[state, event]
                    longer.append(path + [(target, event, actions)])
        found += longer
        paths = longer
    return found


class TableTests(SynchronousTestCase):
    """Properties of the whole transition table."""

    paths = _paths(7)

    def test_endedIsFinal(self) -> None:
        """No event leaves L{State.ENDED}, and only the connection's loss reaches it."""
        for state, event in product(State, Event):
            if (state, event) in TRANSITIONS:
                self.assertNotEqual(state, State.ENDED)
                if TRANSITIONS[state, event][0] is State.ENDED:
                    self.assertEqual(event, Event.CONNECTION_LOST)

    def test_setupDecidedOnce(self) -> None:
        """
        Along every path, the set-up is decided at most once: it fails or
        the program's protocol is connected, never both, never twice.
        """
        reached = {state for path in self.paths for state, _, _ in path}
        self.assertEqual(reached, set(State) - {State.REQUESTING})
        for path in self.paths:
            decisions = [
                action
                for _, _, actions in path
                for action in actions
                if action in (A.FAIL_SETUP, A.CONNECT_PROTOCOL)
            ]
            self.assertLessEqual(len(decisions), 1, path)

    def test_theEndTellsWhoWaits(self) -> None:
        """
        Every path into L{State.ENDED} stops the timers and tells whoever
        waits for the close; the program's protocol is told of the end if
        and only if it was connected.
        """
        for path in self.paths:
            if path[-1][0] is not State.ENDED:
                continue
            actions = [action for _, _, step in path for action in step]
            self.assertIn(A.STOP_TIMERS, path[-1][2])
            self.assertEqual(path[-1][2][-1], A.NOTIFY_CLOSED)
            self.assertEqual(
                A.CONNECT_PROTOCOL in actions, A.DISCONNECT_PROTOCOL in actions, path
            )
            # A set-up that is still undecided fails with the loss.
            if A.CONNECT_PROTOCOL not in actions and not any(
                event is Event.CANCELLED for _, event, _ in path
            ):
                self.assertIn(A.FAIL_SETUP, actions, path)

    def test_sessionStartsOnlyOnAccept(self) -> None:
        """The session starts once at most, and only on a C{200}."""
        for path in self.paths:
            starts = [event for _, event, actions in path if A.START_SESSION in actions]
            self.assertIn(starts, ([], [Event.ACCEPTED]))
