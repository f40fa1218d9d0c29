"""
One forwarded HTTP exchange, sans I/O: where a public request is between
"a stream was asked for" and "the response is relayed", and what to do at
each event, as one explicit transition table.

The server's adapter (L{tunnel.server.forwarding}) tells an L{Exchange}
each L{Event} as it happens (the stream opened, the request body is all
written, the response head arrived, the public client left, a timer
fired...) and carries out the L{Action}s and L{Answer}s it gets back, in
order. The exchange decides everything the adapter would otherwise keep as
flags: which error answers the public client (502, 503 or 504, and which
reason), when the response timer runs, when the stream is reset, when the
public connection is cut because a response broke after its head was
relayed, and that nothing happens once the exchange is done.

The response timer runs while the local service keeps the request waiting:
once the request is all written and no response head came, or while the
stream holds the request body back before the head came. A response head
stops it for good: a body may take as long as it likes.
"""

from __future__ import annotations

import enum
from typing import Mapping, Union


class State(enum.Enum):
    """Where an exchange is."""

    #: The stream was asked for; the session has not opened it yet.
    AWAITING_STREAM = "awaiting stream"
    #: The request head is written; its body is being written.
    SENDING = "sending"
    #: The whole request is written; the response head has not come.
    AWAITING_HEAD = "awaiting head"
    #: The response head came before the whole request body was written:
    #: the body goes on, the response is relayed.
    SENDING_AFTER_RESPONSE = "sending after response"
    #: The whole request is written; the response body is relayed.
    RELAYING = "relaying"
    #: Finished, answered with an error, cut, switched to a pipe, or the
    #: public client left: no event changes anything any more.
    DONE = "done"


class Event(enum.Enum):
    """What can happen to an exchange."""

    #: The session opened the stream.
    STREAM_OPENED = "stream opened"
    #: The session gave up waiting for the client to open a stream.
    STREAM_TIMED_OUT = "stream timed out"
    #: Too many requests wait for a stream of this client.
    TOO_MANY_PENDING = "too many pending"
    #: The client's session ended (before the stream opened, or under it).
    SESSION_ENDED = "session ended"
    #: No valid response can come: the response is malformed, the stream
    #: ended before the response did, or the request could not be written.
    FAILED = "failed"
    #: The request head is written, and the request has no body.
    REQUEST_SENT = "request sent"
    #: The request body is all written.
    BODY_SENT = "body sent"
    #: The stream holds the request body back: the local service reads none.
    BODY_HELD_BACK = "body held back"
    #: The request body flows again.
    BODY_MOVING = "body moving"
    #: The final response head arrived (not a C{101}).
    HEAD_RECEIVED = "head received"
    #: A C{101} arrived for an upgrade request.
    SWITCHED = "switched"
    #: The whole response arrived.
    RESPONSE_COMPLETE = "response complete"
    #: The response timer fired.
    RESPONSE_TIMED_OUT = "response timed out"
    #: The public client went away.
    PUBLIC_LOST = "public lost"


class Action(enum.Enum):
    """What the adapter does for the exchange."""

    #: Give up on the stream that was asked for.
    CANCEL_STREAM_REQUEST = "cancel stream request"
    #: Write the request head (and start its body, if any) into the stream.
    SEND_REQUEST = "send request"
    #: Write the end of the request body (the chunked terminator, if any).
    END_BODY = "end body"
    #: Stop writing the request body and abort the stream: the local
    #: service answered before it had all of it.
    STOP_BODY = "stop body"
    #: Start the response timer, unless it runs or there is none.
    START_TIMER = "start timer"
    #: Stop the response timer, if it runs.
    STOP_TIMER = "stop timer"
    #: Relay the response head to the public client; its body follows.
    RELAY_HEAD = "relay head"
    #: Relay the C{101} and join the public connection and the stream.
    SWITCH = "switch"
    #: Finish the public response.
    FINISH = "finish"
    #: Close the stream after the whole exchange.
    CLOSE_STREAM = "close stream"
    #: Reset the stream: the local service need not go on.
    RESET_STREAM = "reset stream"
    #: Close the public connection: its response broke after the head.
    CUT_PUBLIC = "cut public"


class Answer(enum.Enum):
    """
    An error answer to the public request: its status code and what it says.
    """

    STREAM_TIMEOUT = (
        504,
        b"the tunnel client for host %(host)s did not open a stream in time",
    )
    TOO_MANY_PENDING = (
        503,
        b"too many requests are waiting for the tunnel client for host %(host)s",
    )
    CLIENT_GONE = (502, b"the tunnel client for host %(host)s went away")
    INVALID_RESPONSE = (
        502,
        b"no valid response from the tunnel client for host %(host)s",
    )
    LOCAL_TIMEOUT = (
        504,
        b"the local service for host %(host)s did not answer within %(timeout)s s",
    )

    @property
    def code(self) -> int:
        """The status code."""
        return self.value[0]

    def body(self, host: bytes, timeout: float = 0.0) -> bytes:
        """
        What the answer says, without a line end, about C{host} and, for
        L{LOCAL_TIMEOUT}, the response timeout in seconds.
        """
        return self.value[1] % {b"host": host, b"timeout": b"%g" % (timeout,)}


#: What the adapter carries out: actions, and error answers.
Step = Union[Action, Answer]

_S = State
_E = Event
_A = Action

# States in which no response head came yet, and after it.
_BEFORE_HEAD = (_S.SENDING, _S.AWAITING_HEAD)
_AFTER_HEAD = (_S.SENDING_AFTER_RESPONSE, _S.RELAYING)
_STREAM_OPEN = _BEFORE_HEAD + _AFTER_HEAD

# A response that broke once its head was relayed.
_CUT = (_S.DONE, (_A.RESET_STREAM, _A.CUT_PUBLIC))


def _table() -> Mapping[tuple[State, Event], tuple[State, tuple[Step, ...]]]:
    table: dict[tuple[State, Event], tuple[State, tuple[Step, ...]]] = {
        (_S.AWAITING_STREAM, _E.STREAM_OPENED): (_S.SENDING, (_A.SEND_REQUEST,)),
        (_S.AWAITING_STREAM, _E.STREAM_TIMED_OUT): (_S.DONE, (Answer.STREAM_TIMEOUT,)),
        (_S.AWAITING_STREAM, _E.TOO_MANY_PENDING): (_S.DONE, (Answer.TOO_MANY_PENDING,)),
        (_S.AWAITING_STREAM, _E.PUBLIC_LOST): (_S.DONE, (_A.CANCEL_STREAM_REQUEST,)),
        (_S.SENDING, _E.REQUEST_SENT): (_S.AWAITING_HEAD, (_A.START_TIMER,)),
        (_S.SENDING, _E.BODY_SENT): (_S.AWAITING_HEAD, (_A.END_BODY, _A.START_TIMER)),
        (_S.SENDING, _E.BODY_HELD_BACK): (_S.SENDING, (_A.START_TIMER,)),
        (_S.SENDING, _E.BODY_MOVING): (_S.SENDING, (_A.STOP_TIMER,)),
        (_S.SENDING, _E.HEAD_RECEIVED): (
            _S.SENDING_AFTER_RESPONSE,
            (_A.STOP_TIMER, _A.RELAY_HEAD),
        ),
        (_S.AWAITING_HEAD, _E.HEAD_RECEIVED): (_S.RELAYING, (_A.STOP_TIMER, _A.RELAY_HEAD)),
        (_S.AWAITING_HEAD, _E.SWITCHED): (_S.DONE, (_A.STOP_TIMER, _A.SWITCH)),
        (_S.SENDING_AFTER_RESPONSE, _E.BODY_SENT): (_S.RELAYING, (_A.END_BODY,)),
        (_S.SENDING_AFTER_RESPONSE, _E.RESPONSE_COMPLETE): (
            _S.DONE,
            (_A.STOP_BODY, _A.FINISH),
        ),
        (_S.RELAYING, _E.RESPONSE_COMPLETE): (_S.DONE, (_A.CLOSE_STREAM, _A.FINISH)),
        # A stream that opens after all (the public client left, or the
        # request was refused, as it opened) is not needed.
        (_S.DONE, _E.STREAM_OPENED): (_S.DONE, (_A.RESET_STREAM,)),
        (_S.DONE, _E.SWITCHED): (_S.DONE, (_A.RESET_STREAM,)),
    }
    for state in (_S.AWAITING_STREAM, *_BEFORE_HEAD):
        table[state, _E.SESSION_ENDED] = (_S.DONE, (_A.STOP_TIMER, Answer.CLIENT_GONE))
        table[state, _E.FAILED] = (
            _S.DONE,
            (_A.STOP_TIMER, _A.RESET_STREAM, Answer.INVALID_RESPONSE),
        )
    for state in _BEFORE_HEAD:
        table[state, _E.RESPONSE_TIMED_OUT] = (
            _S.DONE,
            (Answer.LOCAL_TIMEOUT, _A.RESET_STREAM),
        )
    for state in _STREAM_OPEN:
        table[state, _E.PUBLIC_LOST] = (_S.DONE, (_A.STOP_TIMER, _A.RESET_STREAM))
    for state in _AFTER_HEAD:
        table[state, _E.SESSION_ENDED] = _CUT
        table[state, _E.FAILED] = _CUT
    return table


#: Every transition: C{(state, event)} to the next state and the steps to
#: carry out. Any other pair leaves the state as it is, with nothing to do:
#: events that come after the exchange was decided (a late stream failure,
#: a timer that fired as it was stopped, a request body that ends after
#: the public client left) change nothing.
TRANSITIONS = _table()


class Exchange:
    """
    The state of one forwarded exchange.

    @ivar state: where it is.
    """

    def __init__(self) -> None:
        self.state = State.AWAITING_STREAM

    def receive(self, event: Event) -> tuple[Step, ...]:
        """
        Take in an event; return what to do, in order. The state changes
        before the steps are returned, so that the adapter may tell the
        next event while it carries them out.
        """
        self.state, steps = TRANSITIONS.get((self.state, event), (self.state, ()))
        return steps

    @property
    def relaying(self) -> bool:
        """Whether the response body goes to the public client now."""
        return self.state in _AFTER_HEAD

    @property
    def done(self) -> bool:
        """Whether the exchange is decided: nothing changes any more."""
        return self.state is State.DONE
