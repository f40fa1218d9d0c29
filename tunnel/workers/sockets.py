"""
The public listeners the workers of one server share: bound once by the
supervisor (L{bindShared}), inherited by each worker as a file descriptor
and adopted there (L{adoptingEndpoint}).

Both sides read the same endpoint description with Twisted's own parser
(C{serverFromString}), through a stand-in reactor that gets the port, the
backlog, the interface and, for C{ssl:}, the TLS context factory the
parser made: the supervisor's binds a socket with them, the worker's
adopts the inherited one with C{adoptStreamPort} and, for C{ssl:}, wraps
it in TLS (C{TLSMemoryBIOFactory}, as the reactor's C{listenSSL} does).
So an endpoint means the same to a worker as to a single process, and no
description is taken apart here.

Only the endpoint types that are one TCP socket can be shared:
L{SHAREABLE_TYPES}.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.abstract import isIPv6Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorSocket, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory

#: The server endpoint types whose listening socket the workers can share:
#: those that listen on one TCP socket.
SHAREABLE_TYPES = frozenset({"tcp", "tcp6", "ssl"})


def sharingProblem(description: str) -> str | None:
    """
    L{None} if the workers can share a listener of this server endpoint
    description, otherwise why not, in words fit for a usage error.
    """
    kind = description.partition(":")[0].strip().lower()
    if kind in SHAREABLE_TYPES:
        return None
    return (
        f"a {kind}: endpoint cannot be shared by workers: they share tcp:, tcp6: and "
        "ssl: listeners only"
    )


class _Bound:
    """What the stand-in reactor of L{bindShared} answers C{listenTCP} with."""

    def __init__(self, bound: socket.socket) -> None:
        self.socket = bound


class _BindingReactor:
    """
    A stand-in reactor for an endpoint of L{SHAREABLE_TYPES}: it binds a
    listening socket where the endpoint would listen, and accepts nothing.
    """

    def listenTCP(
        self, port: int, factory: Factory, backlog: int = 50, interface: str = ""
    ) -> _Bound:
        return _Bound(bindSocket(port, backlog, interface))

    def listenSSL(
        self,
        port: int,
        factory: Factory,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> _Bound:
        return _Bound(bindSocket(port, backlog, interface))


def bindSocket(port: int, backlog: int, interface: str) -> socket.socket:
    """
    A non-blocking TCP socket listening on C{interface} (IPv6 if it is an
    IPv6 address, IPv4 otherwise; all of them if empty) and C{port}, with
    C{SO_REUSEADDR} as Twisted's own ports have.

    @raise CannotListenError: if it cannot be bound, as Twisted says it.
    """
    family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
    bound = socket.socket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            address = socket.getaddrinfo(interface, port, family, socket.SOCK_STREAM)[0][4]
        else:
            address = (interface, port)
        bound.bind(address)
        bound.listen(backlog)
        bound.setblocking(False)
    except OSError as e:
        bound.close()
        raise CannotListenError(interface, port, e) from None
    return bound


def bindShared(description: str) -> socket.socket:
    """
    Bind the listening socket of a server endpoint description of
    L{SHAREABLE_TYPES}, for workers to adopt; the caller closes it.

    @raise CannotListenError: if it cannot be bound.
    @raise ValueError: if the description is of another type.
    """
    problem = sharingProblem(description)
    if problem is not None:
        raise ValueError(problem)
    endpoint = serverFromString(_BindingReactor(), description)
    results: list[Any] = []
    # The stand-in reactor binds at once: the endpoint's Deferred has fired.
    endpoint.listen(Factory()).addBoth(results.append)
    [result] = results
    if not isinstance(result, _Bound):
        result.raiseException()
    return result.socket


class _AdoptingReactor:
    """
    A stand-in reactor for an endpoint of L{SHAREABLE_TYPES}: where the
    endpoint would listen, it adopts an inherited listening socket.
    """

    def __init__(self, reactor: IReactorSocket, fileno: int) -> None:
        self._reactor = reactor
        self._fileno = fileno

    def listenTCP(
        self, port: int, factory: Factory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        return self._reactor.adoptStreamPort(self._fileno, socketFamily(self._fileno), factory)

    def listenSSL(
        self,
        port: int,
        factory: Factory,
        contextFactory: object,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        tls = TLSMemoryBIOFactory(contextFactory, False, factory)
        return self.listenTCP(port, tls, backlog, interface)


def socketFamily(fileno: int) -> int:
    """The address family of the socket of file descriptor C{fileno}."""
    probe = socket.socket(fileno=fileno)
    try:
        return probe.family
    finally:
        probe.detach()


def adoptingEndpoint(
    reactor: IReactorSocket, description: str, fileno: int
) -> IStreamServerEndpoint:
    """
    The endpoint of a server endpoint description of L{SHAREABLE_TYPES}
    that, instead of binding, listens on the inherited socket of file
    descriptor C{fileno}, which L{bindShared} bound for the same
    description.
    """
    problem = sharingProblem(description)
    if problem is not None:
        raise ValueError(problem)
    return serverFromString(_AdoptingReactor(reactor, fileno), description)

