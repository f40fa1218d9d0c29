"""
The Twisted adapter of the yamux core: L{YamuxProtocol} runs a session over
any stream transport, and each stream is a L{StreamTransport} for the
protocol attached to it.
"""

from tunnel.mux.address import StreamAddress
from tunnel.mux.errors import (
    PingTimeoutError,
    SessionEndedError,
    StreamOpenTimeoutError,
    StreamRefusedError,
    StreamResetError,
)
from tunnel.mux.protocol import YamuxFactory, YamuxProtocol
from tunnel.mux.stream import StreamTransport

__all__ = [
    "PingTimeoutError",
    "SessionEndedError",
    "StreamAddress",
    "StreamOpenTimeoutError",
    "StreamRefusedError",
    "StreamResetError",
    "StreamTransport",
    "YamuxFactory",
    "YamuxProtocol",
]
