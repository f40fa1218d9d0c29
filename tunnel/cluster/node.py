"""
A tunnel server as one node of a cluster: it claims in the store the
sessions it holds, finds which nodes hold the others, and relays the
streams other nodes forward to its own clients.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from zope.interface import implementer

from tunnel.cluster.claims import Claim, decodeClaim
from tunnel.cluster.directory import Holder, SessionDirectory
from tunnel.cluster.handoff import handOff, mayHandOff
from tunnel.cluster.keys import ClusterKey
from tunnel.cluster.link import LinkListenerFactory, NodeLinks
from tunnel.cluster.tls import LinkTLS
from tunnel.cluster.relay import RelayFactory
from tunnel.cluster.remote import RemoteSession
from tunnel.cluster.scripts import StoreUnavailable
from tunnel.server.registry import Registry
from tunnel.server.session import ClientSession, ISessionObserver

#: Seconds a lookup of who holds a client's session is used again: a
#: client that connects to another node is reached through this one at
#: most that long after.
HOLDERS_CACHE_SECONDS = 1.0
#: The most clients whose holders are remembered at once.
HOLDERS_CACHE_SIZE = 10_000


class ClusterNode:
    """
    What a tunnel server does as a node of a cluster.

    @ivar key: the cluster's key.
    @ivar name: this node's name, unique in the cluster.
    @ivar directory: who holds which client's session.
    @ivar links: this node's links to the others.
    @ivar tls: what this node speaks TLS on its links with, or L{None}
        for plain links.
    @ivar publicSite: gives the node's public site, which reads the public
        connections other nodes hand over (L{tunnel.cluster.handoff}), if
        it has one.
    """

    _log = Logger()

    def __init__(
        self,
        key: ClusterKey,
        name: str,
        directory: SessionDirectory,
        reactor: IReactorTime,
        links: NodeLinks | None = None,
        cacheSeconds: float = HOLDERS_CACHE_SECONDS,
        tls: LinkTLS | None = None,
    ) -> None:
        """
        @param links: the links to the other nodes; by default TCP ones,
            over TLS with C{tls}.
        @param tls: this node's certificate and the nodes' authorities:
            its links are TLS, both those it listens for and those it
            dials by default.
        """
        self.key = key
        self.name = name
        self.directory = directory
        self.tls = tls
        self.links = NodeLinks(key, name, reactor, tls=tls) if links is None else links
        self._clock = reactor
        self._cacheSeconds = cacheSeconds
        self._local: dict[str, ClientSession] = {}
        self._holders: dict[str, tuple[float, list[Holder]]] = {}
        self.publicSite: Callable[[], Factory | None] = lambda: None

    def observing(self, registry: Registry) -> ISessionObserver:
        """
        An observer of sessions that tells C{registry} first,
        then claims each session the registry made the connected one of its
        identifier, and releases it when it ends.
        """
        return _ClaimingObserver(self, registry)

    def linkListener(self) -> Factory:
        """
        The factory to serve on this node's link endpoint, for the other
        nodes: a L{LinkListenerFactory}, wrapped in TLS if this node has
        L{tls}.
        """
        relays = RelayFactory(self._local.get, lambda: self.publicSite())
        listener = LinkListenerFactory(
            self.key, self.name, relays, self._clock, tls=self.tls is not None
        )
        return listener if self.tls is None else self.tls.listening(listener, self._clock)

    def mayHandOff(self, request: Request) -> bool:
        """Whether the connection of C{request} may go to another node (see L{handOff})."""
        return mayHandOff(request)

    def handOff(self, request: Request, session: RemoteSession) -> Deferred[bool]:
        """
        Hand the connection of C{request} to a node holding C{session}, as
        L{tunnel.cluster.handoff.handOff} does.
        """
        return handOff(request, session)

    def identifierName(self, identifier: bytes) -> bytes:
        """The key the cluster knows C{identifier} by, as the registry keeps it."""
        return self.key.identifierKey(identifier).encode("ascii")

    def remoteSession(self, name: bytes) -> Deferred[RemoteSession | None]:
        """
        The session that other nodes hold of the client the registry knows
        by C{name} (see L{identifierName}).

        @return: a L{Deferred} firing with it, or with L{None} if no other
            node holds one (or the store cannot say, and did not say
            lately), or the client's stored access rule is unreadable.
        """
        key = name.decode("ascii")
        now = self._clock.seconds()
        cached = self._holders.get(key)
        if cached is not None and now - cached[0] < self._cacheSeconds:
            return succeed(self._remote(key, cached[1]))
        looking = self.directory.holders(key)

        def found(holders: list[Holder]) -> RemoteSession | None:
            if len(self._holders) >= HOLDERS_CACHE_SIZE:
                self._holders.clear()
            self._holders[key] = (self._clock.seconds(), holders)
            return self._remote(key, holders)

        def unknown(reason: Failure) -> RemoteSession | None:
            reason.trap(StoreUnavailable)
            # What the store said last is better than nothing while it is away.
            return None if cached is None else self._remote(key, cached[1])

        return looking.addCallbacks(found, unknown)

    def _remote(self, key: str, holders: list[Holder]) -> RemoteSession | None:
        if not holders:
            return None
        try:
            claim = decodeClaim(holders[0].access)
        except ValueError as e:
            self._log.error(
                "The stored claim of client key {key} is unreadable ({why}); "
                "refusing its requests",
                key=key[:8],
                why=e,
            )
            return None
        return RemoteSession(key, holders, self.links, claim.access, self.forget)

    def rival(self, name: bytes, instance: str | None) -> Deferred[Holder | None]:
        """
        A node holding a session of the client known by C{name} that is not
        the client process C{instance}, and whose client answers a ping: a
        second client with the same identifier, to be refused. L{None} if
        there is none, or the store cannot say.
        """
        key = name.decode("ascii")

        def others(holders: list[Holder]) -> list[Holder]:
            found = []
            for holder in holders:
                try:
                    claimed = decodeClaim(holder.access).instance
                except ValueError:
                    claimed = None
                if instance is None or claimed != instance:
                    found.append(holder)
            return found

        def answering(candidates: list[Holder]) -> Deferred[Holder | None] | None:
            if not candidates:
                return None
            holder = candidates.pop(0)
            asked = RemoteSession(key, [holder], self.links, None).ping()
            return asked.addCallback(lambda alive: holder if alive else answering(candidates))

        def unknown(reason: Failure) -> None:
            reason.trap(StoreUnavailable)

        looking = self.directory.holders(key).addCallback(others).addCallback(answering)
        return looking.addErrback(unknown)

    def forget(self, key: str) -> None:
        """Look up who holds the session of C{key}'s client anew next time."""
        self._holders.pop(key, None)

    def _claim(self, session: ClientSession) -> None:
        key = session.identifier.decode("ascii")
        self._local[key] = session
        claimed = self.directory.claim(key, Claim(session.access, session.instance).encode())
        claimed.addErrback(self._storeFailed, "claim", session)

    def _release(self, session: ClientSession) -> None:
        key = session.identifier.decode("ascii")
        if self._local.get(key) is session:
            del self._local[key]
            self.directory.release(key).addErrback(self._storeFailed, "release", session)

    def _storeFailed(self, reason: Failure, what: str, session: ClientSession) -> None:
        self._log.warn(
            "Could not {what} the session of client {client} in the store, which will "
            "be told once it is back: {why}",
            what=what,
            client=session.label,
            why=reason.getErrorMessage(),
        )

    def stop(self) -> Deferred[None]:
        """Release every claim and close the links."""
        self._local.clear()
        stopping = self.directory.stop()
        return stopping.addBoth(lambda _: self.links.close())


@implementer(ISessionObserver)
class _ClaimingObserver:
    """Tells the registry of a session, then claims or releases it."""

    def __init__(self, node: ClusterNode, registry: Registry) -> None:
        self._node = node
        self._registry = registry

    def sessionReady(self, session: ClientSession) -> None:
        self._registry.sessionReady(session)
        if self._registry.session(session.identifier) is session:
            self._node._claim(session)

    def sessionEnded(self, session: ClientSession, reason: Failure) -> None:
        self._registry.sessionEnded(session, reason)
        self._node._release(session)
