"""
The tunnel client: connects to a tunnel server, asks for a tunnel with a
secret identifier, and forwards each connection the server sends through
the tunnel to a local service.

Embedding it in a Twisted application::

    from twisted.internet import reactor
    from tunnel.client import (
        LocalRoutes, TunnelClientService, TunnelEndpoint, TunnelSettings,
        parseServerAddress,
    )

    server = parseServerAddress("tls:tunnel.example.com:443")
    settings = TunnelSettings(
        identifier, routes=LocalRoutes.fromStrings(["3000"]), host=server.host
    )
    service = TunnelClientService(
        TunnelEndpoint(server.endpoint(reactor), settings, reactor)
    )
    service.addStateObserver(lambda state: print(state.name, state.detail))
    service.startService()

L{TunnelEndpoint} alone makes one tunnel: its C{connect} fires once the
server accepted the identifier and answered the handshake.
"""

from tunnel.client.address import PortRanges
from tunnel.client.connect import TunnelClientProtocol, TunnelSettings
from tunnel.client.endpoint import ServerAddress, TunnelEndpoint, parseServerAddress
from tunnel.client.errors import (
    TunnelConnectError,
    TunnelInUseError,
    TunnelRefusedError,
    TunnelResponseError,
)
from tunnel.client.local import (
    LocalAddress,
    LocalRoutes,
    parseLocalAddress,
    parseLocalOption,
)
from tunnel.client.service import ClientState, Forward, TunnelClientService

__all__ = [
    "ClientState",
    "Forward",
    "LocalAddress",
    "LocalRoutes",
    "PortRanges",
    "ServerAddress",
    "TunnelClientProtocol",
    "TunnelClientService",
    "TunnelConnectError",
    "TunnelEndpoint",
    "TunnelInUseError",
    "TunnelRefusedError",
    "TunnelResponseError",
    "TunnelSettings",
    "parseLocalAddress",
    "parseLocalOption",
    "parseServerAddress",
]
