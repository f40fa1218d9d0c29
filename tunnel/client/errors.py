"""
Why setting up a tunnel failed. The errors are the client core's
(L{tunnel.core.clientsession}), which decides them.
"""

from tunnel.core.clientsession import (
    TunnelConnectError,
    TunnelInUseError,
    TunnelRefusedError,
    TunnelResponseError,
    TunnelUnsupportedError,
)

__all__ = [
    "TunnelConnectError",
    "TunnelInUseError",
    "TunnelRefusedError",
    "TunnelResponseError",
    "TunnelUnsupportedError",
]
