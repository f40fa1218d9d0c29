"""
A client endpoint whose connections are tunnels: C{connect} succeeds only
once the server accepted the identifier and answered the handshake.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from zope.interface import implementer

from tunnel.client.address import (
    dialledHostPort,
    escapeField,
    hostFromDescription,
    isEndpointDescription,
    joinHostPort,
    parseHostPort,
    tcpDescription,
)
from tunnel.client.connect import TunnelClientProtocol, TunnelSettings
from tunnel.client.local import LocalConnector
from tunnel.client.metrics import ClientMetrics
from tunnel.core.capture import CaptureStore
from tunnel.core.control import redactIdentifier


@attrs.frozen
class ServerAddress:
    """
    The tunnel server to connect to.

    @ivar description: the Twisted client endpoint description to dial.
    @ivar host: the C{Host} header for the control request, if the
        description names a host.
    """

    description: str
    host: str | None

    def endpoint(self, reactor: object) -> IStreamClientEndpoint:
        """
        The endpoint that dials the server.

        @raise ValueError: if the description is not a valid one.
        """
        return clientFromString(reactor, self.description)


#: The endpoint type and default port of each URL scheme C{--server} takes.
_URL_SCHEMES = {"http": ("tcp", 80), "https": ("tls", 443)}


def parseServerAddress(text: str) -> ServerAddress:
    """
    Read the C{--server} option: a Twisted client endpoint description
    (C{tcp:HOST:PORT}, C{tls:HOST:PORT}, C{unix:PATH}, ...), a bare
    C{HOST:PORT}, which means C{tcp:HOST:PORT}, or the URL of the server
    (C{http://HOST[:PORT]} over TCP, C{https://HOST[:PORT]} over TLS).

    @raise ValueError: if C{text} is none of them.
    """
    scheme, separator, rest = text.partition("://")
    if separator:
        return _serverAddressFromURL(scheme.lower(), rest, text)
    if isEndpointDescription(text):
        return ServerAddress(text, hostFromDescription(text))
    host, port = parseHostPort(text)
    return ServerAddress(tcpDescription(host, port), joinHostPort(host, port))


def everyAddress(
    address: ServerAddress,
    resolve: Callable[[str, int], list[str]] | None = None,
) -> list[ServerAddress]:
    """
    One server address for each address the name C{address} dials resolves
    to now (the nodes of a cluster behind one name), in the order of the
    answer: each dials that address, with the same C{Host} header and, over
    TLS, the certificate checked for the name. An address that dials an IP
    address, a UNIX socket, another kind of endpoint or one of its own
    (C{endpoint=}), or a name that does not resolve, is the only one.

    @param resolve: gives the IP addresses of a host name and port; the
        system's resolver by default.
    """
    dialled = dialledHostPort(address.description)
    if dialled is None or "endpoint=" in address.description:
        return [address]
    kind, host, port = dialled
    try:
        ipaddress.ip_address(host)
        return [address]
    except ValueError:
        pass
    try:
        found = (resolve or _systemAddresses)(host, port)
    except OSError:
        return [address]
    addresses = []
    for ip in dict.fromkeys(found):
        direct = tcpDescription(ip, port)
        description = (
            direct if kind == "tcp" else f"{address.description}:endpoint={escapeField(direct)}"
        )
        addresses.append(ServerAddress(description, address.host))
    return addresses or [address]


def _systemAddresses(host: str, port: int) -> list[str]:
    return [
        info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    ]


def _serverAddressFromURL(scheme: str, rest: str, text: str) -> ServerAddress:
    """The server address of the URL C{text}: C{scheme://rest}."""
    if scheme not in _URL_SCHEMES:
        raise ValueError(f"a server URL starts with http:// or https://: {text!r}")
    authority, _, path = rest.partition("/")
    if path or "?" in authority or "#" in authority or "@" in authority:
        raise ValueError(f"a server URL has no path, query or user: {text!r}")
    kind, defaultPort = _URL_SCHEMES[scheme]
    if authority.endswith("]") or ":" not in authority:
        authority = f"{authority}:{defaultPort}"
    host, port = parseHostPort(authority)
    description = tcpDescription(host, port)
    if kind == "tls":
        description = "tls:" + description.partition(":")[2]
    return ServerAddress(description, joinHostPort(host, port))


def connectorFor(
    settings: TunnelSettings,
    reactor: object,
    capture: CaptureStore | None = None,
    metrics: ClientMetrics | None = None,
) -> LocalConnector:
    """
    The L{LocalConnector} of C{settings}: their routes, their bound on local
    connections and their request log; recording into C{capture} and
    counting in C{metrics}, if given.
    """
    return LocalConnector(
        settings.routes,
        reactor,
        settings.maxLocalConnections,
        settings.logRequests,
        capture,
        metrics,
    )


@implementer(IStreamClientEndpoint)
class TunnelEndpoint:
    """
    Connects to a tunnel server and sets up a tunnel.

    L{connect} fires once the tunnel is established, with the protocol the
    given factory built; that protocol's transport is the
    L{TunnelClientProtocol}, whose C{loseConnection} closes the tunnel
    gracefully, and it loses its connection when the tunnel ends. L{connect}
    fails with L{TunnelRefusedError} if the server refused the identifier,
    and with L{TunnelConnectError} (or the connection error) for any other
    failure to set the tunnel up. So a L{ClientService} on this endpoint
    counts a refused identifier as a failed attempt and backs off.

    @ivar serverEndpoint: the endpoint of the server's HTTP port.
    @ivar settings: the tunnel's settings.
    @ivar reactor: the reactor used for timers and to dial local services.
    @ivar connector: what builds the local end of each tunnelled connection.
    """

    def __init__(
        self,
        serverEndpoint: IStreamClientEndpoint,
        settings: TunnelSettings,
        reactor: IReactorTime,
        connector: LocalConnector | None = None,
    ) -> None:
        """
        @param connector: what builds the local end of each tunnelled
            connection (it may be shared with the endpoints of other
            servers); by default one made from the settings.
        @raise ValueError: if a local address in the settings' routes is not
            a valid endpoint description.

        Every tunnel the endpoint makes shares its L{LocalConnector}, so one
        bound on local connections (the settings' C{maxLocalConnections}).
        """
        self.serverEndpoint = serverEndpoint
        self.settings = settings
        self.reactor = reactor
        self.connector = connectorFor(settings, reactor) if connector is None else connector

    def __repr__(self) -> str:
        server = self.settings.host or repr(self.serverEndpoint)
        return f"<TunnelEndpoint to {server} as {redactIdentifier(self.settings.identifier)}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """
        Set up a tunnel, and connect a protocol built by C{protocolFactory}
        to it once it is established.
        """
        connecting = self.serverEndpoint.connect(_TunnelFactory(self, protocolFactory))
        return connecting.addCallback(lambda tunnel: tunnel.established)

    def buildProtocol(self, wrappedProtocol: IProtocol) -> TunnelClientProtocol:
        """The protocol of one connection to the server."""
        return TunnelClientProtocol(
            wrappedProtocol, self.settings, self.connector, self.reactor
        )


class _TunnelFactory(Factory):
    """Builds the protocol of a connection to the server."""

    noisy = False

    def __init__(self, endpoint: TunnelEndpoint, wrappedFactory: IProtocolFactory) -> None:
        self._endpoint = endpoint
        self._wrappedFactory = wrappedFactory

    def buildProtocol(self, addr: Any) -> TunnelClientProtocol | None:
        wrapped = self._wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self._endpoint.buildProtocol(wrapped)
