"""
What the tunnel server tells about its clients and hosts.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IAddress
from twisted.python.failure import Failure


@attrs.frozen
class ClientInfo:
    """
    A connected client.

    @ivar identifier: the client's identifier, redacted (its first four
        characters only).
    @ivar peer: the address the client connected from.
    @ivar connectedSince: when its session completed the handshake, in
        seconds on the server's clock.
    @ivar hosts: the virtual hosts routed to it, sorted.
    """

    identifier: str
    peer: IAddress | None
    connectedSince: float
    hosts: tuple[str, ...]


@attrs.frozen
class ClientConnected:
    """
    A client completed its handshake; its hosts and listeners now reach it.

    @ivar client: the client.
    """

    client: ClientInfo


@attrs.frozen
class ClientDisconnected:
    """
    A client's session is no longer the one its hosts and listeners reach:
    it ended, a newer session of the same client replaced it, or its
    identifier was removed.

    @ivar client: the client as it was.
    @ivar reason: why.
    """

    client: ClientInfo
    reason: Failure


@attrs.frozen
class HostStatus:
    """
    A virtual host and whether its client is connected.

    @ivar host: the host name, lower-cased, with its port if it was added
        with one.
    @ivar connected: whether the client of this host is connected.
    """

    host: str
    connected: bool


@attrs.frozen
class ListenerStatus:
    """
    A TCP listener bound to a client, and whether the client is connected;
    never its identifier.

    @ivar port: the port it listens on.
    @ivar host: the first (sorted) virtual host of its identifier, or
        L{None} if the identifier has none.
    @ivar connected: whether the client of its identifier is connected.
    """

    port: int
    host: str | None
    connected: bool
