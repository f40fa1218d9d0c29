"""
Reasons a stream ends, as Twisted failure values.
"""

from twisted.internet.error import ConnectError, ConnectionLost, TimeoutError


class StreamResetError(ConnectionLost):
    """The peer reset the stream."""

    MESSAGE = "The peer reset the stream"


class StreamRefusedError(ConnectError):
    """The peer refused the stream we opened (it answered our SYN with RST)."""


class StreamOpenTimeoutError(TimeoutError):
    """The peer did not acknowledge the stream we opened in time."""


class SessionEndedError(ConnectionLost):
    """The yamux session carrying the stream ended."""

    MESSAGE = "The yamux session ended"


class PingTimeoutError(TimeoutError):
    """The peer did not answer a ping in time."""
