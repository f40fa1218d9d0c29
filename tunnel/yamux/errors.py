"""
Errors raised by the yamux core's API.

Bad input from the peer never raises: it ends the session and is reported as
a L{tunnel.yamux.events.SessionTerminated} event.
"""


class YamuxError(Exception):
    """Base class of the errors the yamux core raises."""


class SessionClosedError(YamuxError):
    """The session has ended; no stream can be opened or written."""


class SessionGoingAwayError(YamuxError):
    """The peer sent Go Away (or we did): no new stream may be opened."""


class StreamLimitError(YamuxError):
    """No stream ID is left in this session."""


class UnknownStreamError(YamuxError):
    """The stream does not exist (any more) in this session."""


class ProtocolError(YamuxError):
    """
    The peer broke the protocol. Used inside the core only: the session turns
    it into a Go Away with code 1 and a L{SessionTerminated} event.
    """
