"""
Tests for L{tunnel.core.exchange}: one forwarded exchange as events in,
steps out.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.exchange import TRANSITIONS, Action, Answer, Event, Exchange, State, Step

A = Action
E = Event
S = State


def run(*events: Event) -> tuple[Exchange, list[Step]]:
    """Feed C{events} to a new exchange; return it and the steps of the last event."""
    exchange = Exchange()
    steps: list[Step] = []
    for event in events:
        steps = list(exchange.receive(event))
    return exchange, steps


#: The events that bring a new exchange to each state.
PATHS = {
    S.AWAITING_STREAM: (),
    S.SENDING: (E.STREAM_OPENED,),
    S.AWAITING_HEAD: (E.STREAM_OPENED, E.REQUEST_SENT),
    S.SENDING_AFTER_RESPONSE: (E.STREAM_OPENED, E.HEAD_RECEIVED),
    S.RELAYING: (E.STREAM_OPENED, E.REQUEST_SENT, E.HEAD_RECEIVED),
    S.DONE: (E.PUBLIC_LOST,),
}


class PlainExchangeTests(SynchronousTestCase):
    """The exchanges that go well."""

    def test_withoutBody(self) -> None:
        """
        A request without body: sent once the stream opens, the timer from
        then to the head, the head relayed, the stream closed at the end.
        """
        exchange = Exchange()
        self.assertEqual(exchange.receive(E.STREAM_OPENED), (A.SEND_REQUEST,))
        self.assertEqual(exchange.receive(E.REQUEST_SENT), (A.START_TIMER,))
        self.assertEqual(exchange.receive(E.HEAD_RECEIVED), (A.STOP_TIMER, A.RELAY_HEAD))
        self.assertTrue(exchange.relaying)
        self.assertEqual(exchange.receive(E.RESPONSE_COMPLETE), (A.CLOSE_STREAM, A.FINISH))
        self.assertTrue(exchange.done)

    def test_withBody(self) -> None:
        """
        While the body is written, the timer runs only when the stream holds
        it back; the end of the body is written, then the timer runs.
        """
        exchange, steps = run(E.STREAM_OPENED)
        self.assertEqual(exchange.state, S.SENDING)
        self.assertEqual(exchange.receive(E.BODY_HELD_BACK), (A.START_TIMER,))
        self.assertEqual(exchange.receive(E.BODY_MOVING), (A.STOP_TIMER,))
        self.assertEqual(exchange.receive(E.BODY_SENT), (A.END_BODY, A.START_TIMER))
        self.assertEqual(exchange.state, S.AWAITING_HEAD)
        self.assertEqual(exchange.receive(E.BODY_MOVING), ())

    def test_responseBeforeTheWholeBody(self) -> None:
        """
        A head before the whole body is relayed while the body goes on; if
        the response ends first, the body is stopped.
        """
        exchange, steps = run(E.STREAM_OPENED, E.HEAD_RECEIVED)
        self.assertEqual(steps, [A.STOP_TIMER, A.RELAY_HEAD])
        self.assertTrue(exchange.relaying)
        self.assertEqual(exchange.receive(E.BODY_HELD_BACK), ())
        self.assertEqual(exchange.receive(E.RESPONSE_COMPLETE), (A.STOP_BODY, A.FINISH))
        self.assertEqual(exchange.receive(E.BODY_SENT), ())

    def test_bodyEndsAfterTheHead(self) -> None:
        """A body that ends after the head is ended; the response closes the stream."""
        exchange, steps = run(E.STREAM_OPENED, E.HEAD_RECEIVED, E.BODY_SENT)
        self.assertEqual(steps, [A.END_BODY])
        self.assertEqual(exchange.receive(E.RESPONSE_COMPLETE), (A.CLOSE_STREAM, A.FINISH))

    def test_switch(self) -> None:
        """A C{101} switches to a pipe, which the exchange no longer follows."""
        exchange, steps = run(E.STREAM_OPENED, E.REQUEST_SENT, E.SWITCHED)
        self.assertEqual(steps, [A.STOP_TIMER, A.SWITCH])
        self.assertTrue(exchange.done)


class ErrorTests(SynchronousTestCase):
    """Which error answers the public request, and when a response is cut."""

    def test_streamRefusals(self) -> None:
        """A stream that does not open is a 504, 503 or 502, by why."""
        for event, answer in [
            (E.STREAM_TIMED_OUT, Answer.STREAM_TIMEOUT),
            (E.TOO_MANY_PENDING, Answer.TOO_MANY_PENDING),
            (E.SESSION_ENDED, Answer.CLIENT_GONE),
        ]:
            exchange, steps = run(event)
            self.assertIn(answer, steps)
            self.assertTrue(exchange.done)
        self.assertEqual(
            [Answer.STREAM_TIMEOUT.code, Answer.TOO_MANY_PENDING.code, Answer.CLIENT_GONE.code],
            [504, 503, 502],
        )

    def test_failureBeforeTheHead(self) -> None:
        """
        No valid response before the head, in any state with a stream: a
        502, the timer stopped, the stream reset.
        """
        for state in (S.SENDING, S.AWAITING_HEAD):
            exchange, steps = run(*PATHS[state], E.FAILED)
            self.assertEqual(steps, [A.STOP_TIMER, A.RESET_STREAM, Answer.INVALID_RESPONSE])
            self.assertTrue(exchange.done)

    def test_failureAfterTheHeadCuts(self) -> None:
        """
        Once the head is relayed, a broken response or an ended session
        cuts the public connection: no error can be answered any more.
        """
        for state in (S.SENDING_AFTER_RESPONSE, S.RELAYING):
            for event in (E.FAILED, E.SESSION_ENDED):
                exchange, steps = run(*PATHS[state], event)
                self.assertEqual(steps, [A.RESET_STREAM, A.CUT_PUBLIC])
                self.assertFalse(any(isinstance(step, Answer) for step in steps))

    def test_responseTimeout(self) -> None:
        """The timer firing before the head is a 504 and a reset stream."""
        for state in (S.SENDING, S.AWAITING_HEAD):
            exchange, steps = run(*PATHS[state], E.RESPONSE_TIMED_OUT)
            self.assertEqual(steps, [Answer.LOCAL_TIMEOUT, A.RESET_STREAM])
        exchange, steps = run(*PATHS[S.RELAYING], E.RESPONSE_TIMED_OUT)
        self.assertEqual((exchange.state, steps), (S.RELAYING, []))

    def test_answerBodies(self) -> None:
        """An answer names the host, and the timeout where it is one."""
        self.assertEqual(
            Answer.LOCAL_TIMEOUT.body(b"app.example", 2.5),
            b"the local service for host app.example did not answer within 2.5 s",
        )
        self.assertEqual(
            Answer.CLIENT_GONE.body(b"app.example"),
            b"the tunnel client for host app.example went away",
        )


class PublicLostTests(SynchronousTestCase):
    """The public client leaving."""

    def test_beforeTheStream(self) -> None:
        """Before the stream opens, the request for it is given up."""
        exchange, steps = run(E.PUBLIC_LOST)
        self.assertEqual(steps, [A.CANCEL_STREAM_REQUEST])
        self.assertEqual(exchange.receive(E.STREAM_OPENED), (A.RESET_STREAM,))

    def test_withAStream(self) -> None:
        """With a stream, in any state, the timer stops and the stream is reset."""
        for state in (S.SENDING, S.AWAITING_HEAD, S.SENDING_AFTER_RESPONSE, S.RELAYING):
            exchange, steps = run(*PATHS[state], E.PUBLIC_LOST)
            self.assertEqual(steps, [A.STOP_TIMER, A.RESET_STREAM])
            self.assertTrue(exchange.done)


class TableTests(SynchronousTestCase):
    """Properties of the whole table."""

    def test_paths(self) -> None:
        """Each path of L{PATHS} leads where it says."""
        for state, events in PATHS.items():
            self.assertEqual(run(*events)[0].state, state)

    def test_doneIsFinal(self) -> None:
        """
        Once done, no event leaves C{DONE}, and nothing is answered or
        relayed: a late stream is only reset.
        """
        for event in Event:
            exchange, steps = run(*PATHS[S.DONE], event)
            self.assertEqual(exchange.state, S.DONE)
            self.assertTrue(set(steps) <= {A.RESET_STREAM}, (event, steps))

    def test_atMostOneAnswer(self) -> None:
        """
        Every transition answers at most once, only to C{DONE}, and never
        after the head was relayed.
        """
        for (state, event), (after, steps) in TRANSITIONS.items():
            answers = [step for step in steps if isinstance(step, Answer)]
            self.assertLessEqual(len(answers), 1)
            if answers:
                self.assertEqual(after, S.DONE)
                self.assertNotIn(state, (S.SENDING_AFTER_RESPONSE, S.RELAYING))

    def test_timerNeverLeftRunning(self) -> None:
        """
        Every way into C{DONE} or into relaying stops the timer (or it was
        not running: it runs only before the head).
        """
        for (state, event), (after, steps) in TRANSITIONS.items():
            if state in (S.SENDING, S.AWAITING_HEAD) and after is not state:
                self.assertTrue(
                    A.STOP_TIMER in steps or event is E.RESPONSE_TIMED_OUT
                    or after is S.AWAITING_HEAD,
                    (state, event),
                )

    def test_unknownEventsChangeNothing(self) -> None:
        """An event with no transition leaves the state, with nothing to do."""
        exchange, steps = run(E.HEAD_RECEIVED)
        self.assertEqual((exchange.state, steps), (S.AWAITING_STREAM, []))
