"""
Which virtual hosts and TCP listeners lead to which identifier, and which
identifier's client is connected.

Identifiers are secrets: they are looked up by their SHA-256 digest and
then compared in constant time, and never logged in full.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Callable, Union

import attrs
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.core.access import AccessRule
from tunnel.core.http import normaliseHost, parseHost
from tunnel.mux import SessionEndedError
from tunnel.server.events import (
    ClientConnected,
    ClientDisconnected,
    ClientInfo,
    HostStatus,
    ListenerStatus,
)
from tunnel.server.session import ClientSession, ISessionObserver

#: Why the session of an identifier that lost its last host and TCP
#: listener is closed: in logs, and told to clients that take notices.
REMOVED = (
    "this identifier has no host or TCP listener on the server any more (its "
    "operator removed them)"
)

#: What observers of the registry are told.
Event = Union[ClientConnected, ClientDisconnected]


@attrs.frozen
class Route:
    """
    Where a public request goes.

    @ivar host: the virtual host that matched.
    @ivar port: the port to forward the request with (the control message's
        C{localPort}): one the server's operator exposed, never merely one
        the public wrote into its Host header (see L{Registry.route}); 0
        for none.
    @ivar session: the connected session of the host's client, or L{None}.
    @ivar access: the networks the host admits, if its operator said.
    @ivar identifier: the identifier of the host's client.
    """

    host: str
    port: int
    session: ClientSession | None
    access: AccessRule | None = None
    identifier: bytes = attrs.field(default=b"", repr=False)


@attrs.frozen
class Bindings:
    """
    What an identifier's client is reachable through.

    @ivar hosts: its virtual hosts, sorted.
    @ivar tcpPorts: the ports of its TCP listeners, sorted.
    """

    hosts: tuple[str, ...]
    tcpPorts: tuple[int, ...]


@attrs.define(eq=False)
class _Tunnel:
    """
    One identifier: its hosts, the ports of the TCP listeners bound to it
    (one entry per listener), and its connected session.
    """

    identifier: bytes
    hosts: set[str] = attrs.Factory(set)
    listeners: list[int] = attrs.Factory(list)
    session: ClientSession | None = None

    def info(self, session: ClientSession) -> ClientInfo:
        """Describe C{session}, one of this identifier's, for observers."""
        return ClientInfo(
            identifier=session.label,
            peer=session.peer,
            connectedSince=session.connectedSince,
            hosts=tuple(sorted(self.hosts)),
        )


def _digest(identifier: bytes) -> bytes:
    return hashlib.sha256(identifier).digest()


def checkIdentifier(identifier: bytes) -> bytes:
    """
    C{identifier}, if it can be one.

    @raise ValueError: if it is empty.
    """
    if not identifier:
        raise ValueError("an identifier must not be empty")
    return identifier


@implementer(ISessionObserver)
class Registry:
    """
    The routing table of a tunnel server, and the observer of its sessions:
    a session that completes its handshake becomes the connected session of
    its identifier, replacing (and closing) any older one.

    An identifier is known while it has a host or a TCP listener; when it
    loses the last one its session is closed.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._tunnels: dict[bytes, _Tunnel] = {}
        self._hosts: dict[str, _Tunnel] = {}
        self._access: dict[str, AccessRule] = {}
        self._observers: list[Callable[[Event], None]] = []

    # -- configuration -----------------------------------------------------

    def addHost(self, host: str, identifier: bytes) -> None:
        """
        Route the virtual host C{host} (a name, or C{name:port}; case does
        not matter) to the client with C{identifier}, instead of any other.

        @raise ValueError: if the host is not a host name (see
            L{normaliseHost}) or the identifier is empty.
        """
        name = normaliseHost(host)
        tunnel = self._tunnel(identifier, create=True)
        previous = self._hosts.get(name)
        if previous is tunnel:
            return
        self._hosts[name] = tunnel
        tunnel.hosts.add(name)
        if previous is not None:
            previous.hosts.discard(name)
            self._forgetIfUnused(previous)

    def setAccess(self, host: str, rule: AccessRule | None) -> None:
        """
        Admit to the virtual host C{host} only the sources C{rule} permits
        (all of them for L{None}), whether or not the host is routed yet.

        @raise ValueError: if the host is not a host name.
        """
        name = normaliseHost(host)
        if rule is None:
            self._access.pop(name, None)
        else:
            self._access[name] = rule

    def accessOf(self, host: str) -> AccessRule | None:
        """The rule set for C{host} by L{setAccess}, if any."""
        return self._access.get(normaliseHost(host))

    def guardedHosts(self) -> list[str]:
        """The hosts with a rule set by L{setAccess}, sorted."""
        return sorted(self._access)

    def deleteHost(self, host: str) -> None:
        """
        Stop routing the virtual host C{host}.

        @raise KeyError: if it is not routed.
        """
        name = host.lower()
        tunnel = self._hosts.pop(name)
        tunnel.hosts.discard(name)
        self._forgetIfUnused(tunnel)

    def bindListener(self, identifier: bytes, port: int) -> None:
        """
        Count a TCP listener on C{port} bound to C{identifier}, which keeps
        the identifier known.

        @raise ValueError: if the identifier is empty.
        """
        self._tunnel(identifier, create=True).listeners.append(port)

    def unbindListener(self, identifier: bytes, port: int) -> None:
        """Forget a TCP listener counted by L{bindListener}."""
        tunnel = self._tunnel(identifier)
        tunnel.listeners.remove(port)
        self._forgetIfUnused(tunnel)

    def addObserver(self, observer: Callable[[Event], None]) -> None:
        """Call C{observer} with every L{ClientConnected} and L{ClientDisconnected}."""
        self._observers.append(observer)

    def removeObserver(self, observer: Callable[[Event], None]) -> None:
        """Stop calling C{observer}."""
        self._observers.remove(observer)

    # -- lookups -----------------------------------------------------------

    def knowsAny(self) -> bool:
        """Whether any identifier has a host or a TCP listener."""
        return bool(self._tunnels)

    def knows(self, identifier: bytes) -> bool:
        """Whether C{identifier} has a host or a TCP listener."""
        return self._lookup(identifier) is not None

    def session(self, identifier: bytes) -> ClientSession | None:
        """The connected session of C{identifier}'s client, if any."""
        tunnel = self._lookup(identifier)
        return None if tunnel is None else tunnel.session

    def hasHost(self, host: str) -> bool:
        """Whether C{host} is routed (see L{normaliseHost} for its form)."""
        return normaliseHost(host) in self._hosts

    def identifierOf(self, host: str) -> bytes:
        """
        The identifier C{host} is routed to.

        @raise KeyError: if C{host} is not routed.
        """
        return self._hosts[normaliseHost(host)].identifier

    def bindings(self, identifier: bytes) -> Bindings:
        """
        What C{identifier}'s client is reachable through.

        @raise KeyError: if the identifier is not known.
        """
        tunnel = self._tunnel(identifier)
        return Bindings(tuple(sorted(tunnel.hosts)), tuple(sorted(tunnel.listeners)))

    def route(self, hostHeader: bytes, listenerPort: int | None = None) -> Route | None:
        """
        Find where a public request with this Host header goes: the full
        C{host:port} first, then the host alone.

        The route's port is the Host header's port only where the server's
        operator exposed it: when the full C{host:port} is a virtual host,
        or when it is the port of the public listener that accepted the
        request (C{listenerPort}); any other port is the public's choice
        alone, and the route's port is 0 (the client's default).

        @param listenerPort: the port of the listener that accepted the
            request, if it has one.
        @return: the route, or L{None} if the Host header is malformed (see
            L{parseHost}) or no virtual host matches.
        """
        try:
            host = parseHost(hostHeader)
        except ValueError:
            return None
        names = [host.name] if host.port is None else [str(host), host.name]
        port = host.port or 0
        for index, name in enumerate(names):
            tunnel = self._hosts.get(name)
            if tunnel is not None:
                exposed = (index == 0 and len(names) > 1) or port == listenerPort
                return Route(
                    name,
                    port if exposed else 0,
                    tunnel.session,
                    self._access.get(name),
                    tunnel.identifier,
                )
        return None

    def hosts(self) -> list[HostStatus]:
        """Every virtual host, sorted, and whether its client is connected."""
        return [
            HostStatus(name, tunnel.session is not None)
            for name, tunnel in sorted(self._hosts.items())
        ]

    def listeners(self) -> list[ListenerStatus]:
        """Every TCP listener, by port, and whether its client is connected."""
        statuses = [
            ListenerStatus(port, min(tunnel.hosts, default=None), tunnel.session is not None)
            for tunnel in self._tunnels.values()
            for port in tunnel.listeners
        ]
        return sorted(statuses, key=lambda status: status.port)

    def clients(self) -> list[ClientInfo]:
        """The connected clients, in the order they connected."""
        infos = [
            tunnel.info(tunnel.session)
            for tunnel in self._tunnels.values()
            if tunnel.session is not None
        ]
        return sorted(infos, key=lambda info: info.connectedSince)

    def sessions(self) -> list[ClientSession]:
        """The connected sessions."""
        return [t.session for t in self._tunnels.values() if t.session is not None]

    # -- ISessionObserver --------------------------------------------------

    def sessionReady(self, session: ClientSession) -> None:
        """Make C{session} the connected one of its identifier."""
        tunnel = self._lookup(session.identifier)
        if tunnel is None:
            session.close(REMOVED)
            return
        previous, tunnel.session = tunnel.session, session
        if previous is not None:
            self._disconnected(tunnel, previous, "replaced by a newer session")
            previous.close("replaced by a newer session")
        self._log.info(
            "Client {client} is connected from {peer} for {hosts}",
            client=session.label,
            peer=session.peer,
            hosts=", ".join(sorted(tunnel.hosts)) or "TCP listeners only",
        )
        self._emit(ClientConnected(tunnel.info(session)))

    def sessionEnded(self, session: ClientSession, reason: Failure) -> None:
        """Forget C{session} if it is the connected one of its identifier."""
        tunnel = self._lookup(session.identifier)
        if tunnel is None or tunnel.session is not session:
            return
        tunnel.session = None
        self._log.info(
            "Client {client} disconnected: {why}",
            client=session.label,
            why=reason.getErrorMessage(),
        )
        self._emit(ClientDisconnected(tunnel.info(session), reason))

    # -- helpers -----------------------------------------------------------

    def _lookup(self, identifier: bytes) -> _Tunnel | None:
        tunnel = self._tunnels.get(_digest(identifier))
        if tunnel is None or not hmac.compare_digest(tunnel.identifier, identifier):
            return None
        return tunnel

    def _tunnel(self, identifier: bytes, create: bool = False) -> _Tunnel:
        key = _digest(checkIdentifier(identifier))
        tunnel = self._tunnels.get(key)
        if tunnel is None:
            if not create:
                raise KeyError("unknown identifier")
            tunnel = self._tunnels[key] = _Tunnel(identifier)
        return tunnel

    def _forgetIfUnused(self, tunnel: _Tunnel) -> None:
        if tunnel.hosts or tunnel.listeners:
            return
        del self._tunnels[_digest(tunnel.identifier)]
        session, tunnel.session = tunnel.session, None
        if session is not None:
            self._disconnected(tunnel, session, REMOVED)
            session.close(REMOVED)

    def _disconnected(self, tunnel: _Tunnel, session: ClientSession, why: str) -> None:
        self._log.info("Client {client} disconnected: {why}", client=session.label, why=why)
        self._emit(ClientDisconnected(tunnel.info(session), Failure(SessionEndedError(why))))

    def _emit(self, event: Event) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self._log.failure("Observer {observer!r} failed", observer=observer)
