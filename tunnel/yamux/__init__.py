"""
A sans-IO implementation of the yamux stream multiplexer (framing version 0),
byte-compatible with HashiCorp's yamux.

Nothing in this package does I/O, imports Twisted or reads a clock: a
L{Session} takes the bytes that arrived and returns L{events<tunnel.yamux.events>};
API calls queue bytes that the caller fetches with L{Session.dataToSend}.
"""

from tunnel.yamux.config import SessionConfig
from tunnel.yamux.errors import (
    SessionClosedError,
    SessionGoingAwayError,
    StreamLimitError,
    UnknownStreamError,
    YamuxError,
)
from tunnel.yamux.frames import (
    HEADER_SIZE,
    INITIAL_WINDOW,
    Flag,
    FrameType,
    GoAwayCode,
    encodeFrame,
)
from tunnel.yamux.session import Session

__all__ = [
    "HEADER_SIZE",
    "INITIAL_WINDOW",
    "Flag",
    "FrameType",
    "GoAwayCode",
    "Session",
    "SessionClosedError",
    "SessionConfig",
    "SessionGoingAwayError",
    "StreamLimitError",
    "UnknownStreamError",
    "YamuxError",
    "encodeFrame",
]
