"""
Events a L{tunnel.yamux.session.Session} reports for the bytes it was given.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class StreamOpened:
    """The peer opened stream C{streamID}; accept or reset it."""

    streamID: int


@attrs.frozen
class StreamAccepted:
    """The peer acknowledged stream C{streamID} that we opened."""

    streamID: int


@attrs.frozen
class DataReceived:
    """
    Bytes arrived on stream C{streamID}. Tell the session with
    L{Session.acknowledgeReceivedData} once they are consumed, so that it
    grants the peer more window.
    """

    streamID: int
    data: bytes


@attrs.frozen
class StreamEnded:
    """The peer half-closed stream C{streamID}: it will send no more data."""

    streamID: int


@attrs.frozen
class StreamReset:
    """The peer reset (or refused) stream C{streamID}; the stream is gone."""

    streamID: int


@attrs.frozen
class StreamClosed:
    """Both sides have half-closed stream C{streamID}; the stream is gone."""

    streamID: int


@attrs.frozen
class SendBufferDrained:
    """
    Everything written to stream C{streamID} has been sent: the window that
    had run out was granted again.
    """

    streamID: int


@attrs.frozen
class PingAcknowledged:
    """The peer answered our ping carrying C{opaque}."""

    opaque: int


@attrs.frozen
class GoAwayReceived:
    """The peer will accept no new streams. C{code} is a L{GoAwayCode}."""

    code: int


@attrs.frozen
class SessionTerminated:
    """
    The session is over. C{code} is the L{GoAwayCode} sent or received;
    C{reason} says why in words; C{byPeer} tells whether the peer ended it.
    """

    code: int
    reason: str
    byPeer: bool
