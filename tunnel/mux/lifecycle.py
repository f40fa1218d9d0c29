"""
The life of one stream as the protocol attached to it sees it, sans I/O:
which halves are closed, whether the peer's end (and then the stream's
close) wait for a reader that paused with data held back, whether the
protocol asked to close, and whether it lost its connection, as one
explicit transition table.

L{tunnel.mux.stream.StreamTransport} moves its L{StreamLifecycle} along
with L{advance} at each L{StreamEvent}, before it carries the event out;
its C{connected} and C{disconnecting} are read from the state. The
transport tells only the events its state allows (it ignores a
C{loseConnection} after the connection was lost, as a TCP transport does,
without telling it): any other pair is a mistake in the transport, and
L{advance} refuses it with L{StreamStateError}.
"""

from __future__ import annotations

import enum
from typing import Mapping


class StreamLifecycle(enum.Enum):
    """Where a stream is, for the protocol attached to it."""

    #: Both halves are open.
    OPEN = "open"
    #: The protocol closed its writing half (our FIN is sent once the
    #: buffered data is); it goes on reading.
    HALF_CLOSED_LOCAL = "half-closed local"
    #: The protocol was told the peer's end; it may go on writing.
    HALF_CLOSED_REMOTE = "half-closed remote"
    #: The protocol closed its writing half and was told the peer's end: it
    #: loses its connection once our FIN is sent (at once if the stream's
    #: close was held back).
    HALF_CLOSED_BOTH = "half-closed both"
    #: The peer's end came while the protocol paused reading with data held
    #: back: it is told once it resumed and had that data. Writing is open.
    END_HELD = "end held"
    #: As L{END_HELD}, with the protocol's writing half closed.
    HALF_CLOSED_LOCAL_END_HELD = "half-closed local, end held"
    #: The stream closed both ways while the peer's end was held back: once
    #: the protocol had the data and the end, it loses its connection.
    CLOSE_HELD = "close held"
    #: The protocol called C{loseConnection}: it loses its connection once
    #: the buffered data and our FIN are sent; what the peer sends meanwhile
    #: is discarded.
    CLOSING = "closing"
    #: The protocol lost its connection after it called C{loseConnection}.
    CLOSED = "closed"
    #: The protocol lost its connection without calling C{loseConnection}:
    #: both halves closed, the stream was reset or aborted, its open timed
    #: out, or its session ended.
    LOST = "lost"


class StreamEvent(enum.Enum):
    """What can happen to a stream."""

    #: The protocol closed its writing half (C{loseWriteConnection}).
    CLOSE_WRITE = "close write"
    #: The protocol asked to close the stream (C{loseConnection}).
    CLOSE = "close"
    #: The peer's end came while the protocol paused reading with data
    #: held back.
    END_HELD_BACK = "end held back"
    #: The protocol is told the peer's end: C{readConnectionLost}, or
    #: C{loseConnection} for a protocol that cannot half-close.
    END_DELIVERED = "end delivered"
    #: The stream closed both ways while the peer's end was held back.
    CLOSE_HELD_BACK = "close held back"
    #: The protocol loses its connection.
    CONNECTION_LOST = "connection lost"


class StreamStateError(Exception):
    """
    An event that cannot happen to a stream in its state: a mistake in the
    stream's transport.

    @ivar state: the state the stream was in.
    @ivar event: the event that cannot happen in it.
    """

    def __init__(self, state: StreamLifecycle, event: StreamEvent) -> None:
        super().__init__(f"a stream that is {state.value} cannot take {event.value!r}")
        self.state = state
        self.event = event


_L = StreamLifecycle
_E = StreamEvent

#: The states in which the protocol may write.
WRITABLE = frozenset({_L.OPEN, _L.HALF_CLOSED_REMOTE, _L.END_HELD})

#: The states in which the peer's end waits for the paused protocol.
HOLDING_END = frozenset({_L.END_HELD, _L.HALF_CLOSED_LOCAL_END_HELD, _L.CLOSE_HELD})

#: The states after C{loseConnection}: a transport's C{disconnecting}.
DISCONNECTING = frozenset({_L.CLOSING, _L.CLOSED})

#: The states after the protocol lost its connection: no event is taken.
FINAL = frozenset({_L.CLOSED, _L.LOST})


def _table() -> Mapping[tuple[StreamLifecycle, StreamEvent], StreamLifecycle]:
    table: dict[tuple[StreamLifecycle, StreamEvent], StreamLifecycle] = {
        (_L.OPEN, _E.CLOSE_WRITE): _L.HALF_CLOSED_LOCAL,
        (_L.OPEN, _E.END_HELD_BACK): _L.END_HELD,
        (_L.OPEN, _E.END_DELIVERED): _L.HALF_CLOSED_REMOTE,
        (_L.HALF_CLOSED_LOCAL, _E.END_HELD_BACK): _L.HALF_CLOSED_LOCAL_END_HELD,
        (_L.HALF_CLOSED_LOCAL, _E.END_DELIVERED): _L.HALF_CLOSED_BOTH,
        (_L.HALF_CLOSED_REMOTE, _E.CLOSE_WRITE): _L.HALF_CLOSED_BOTH,
        (_L.END_HELD, _E.CLOSE_WRITE): _L.HALF_CLOSED_LOCAL_END_HELD,
        (_L.END_HELD, _E.END_DELIVERED): _L.HALF_CLOSED_REMOTE,
        (_L.HALF_CLOSED_LOCAL_END_HELD, _E.END_DELIVERED): _L.HALF_CLOSED_BOTH,
        (_L.HALF_CLOSED_LOCAL_END_HELD, _E.CLOSE_HELD_BACK): _L.CLOSE_HELD,
        (_L.CLOSE_HELD, _E.END_DELIVERED): _L.HALF_CLOSED_BOTH,
        (_L.CLOSING, _E.CONNECTION_LOST): _L.CLOSED,
    }
    for state in set(_L) - FINAL - {_L.CLOSING}:
        table[state, _E.CLOSE] = _L.CLOSING
        table[state, _E.CONNECTION_LOST] = _L.LOST
    return table


#: Every transition: C{(state, event)} to the next state. No other pair
#: can happen; none leaves L{FINAL}.
TRANSITIONS = _table()


def advance(state: StreamLifecycle, event: StreamEvent) -> StreamLifecycle:
    """
    The state a stream in C{state} is in after C{event}.

    @raise StreamStateError: if C{event} cannot happen in C{state}.
    """
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise StreamStateError(state, event) from None
