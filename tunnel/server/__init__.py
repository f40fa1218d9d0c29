"""
The tunnel server, to embed in a twisted.web application.

Typical use::

    server = TunnelServer()
    server.addHost("demo.example.com", "secret-identifier")
    endpoints.serverFromString(reactor, "tcp:8080").listen(server.site())

or put C{server.resource} anywhere in an existing resource tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import attrs

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorTime, IStreamServerEndpoint
from twisted.internet.task import Cooperator

from tunnel.core.access import AccessRule
from tunnel.server.accounts import Accounts
from tunnel.server.events import (
    ClientConnected,
    ClientDisconnected,
    ClientInfo,
    HostStatus,
    ListenerStatus,
)
from tunnel.server.limits import FailureLimiter
from tunnel.server.metrics import ServerMetrics
from tunnel.server.registry import Event, Registry, checkIdentifier
from tunnel.server.resource import TunnelResource
from tunnel.server.selfservice import SelfService
from tunnel.server.session import SessionSettings, StreamTimeout, TooManyPendingStreams
from tunnel.server.site import TunnelSite
from tunnel.server.tcp import TCPTunnelFactory
from tunnel.yamux import SessionConfig

if TYPE_CHECKING:
    from tunnel.cluster.node import ClusterNode
    from tunnel.cluster.config import SharedConfig

__all__ = [
    "Accounts",
    "ClientConnected",
    "ClientDisconnected",
    "ClientInfo",
    "HostStatus",
    "ListenerStatus",
    "ServerMetrics",
    "SessionSettings",
    "StreamTimeout",
    "TooManyPendingStreams",
    "TunnelResource",
    "TunnelServer",
    "TunnelSite",
]


def _identifier(identifier: str | bytes) -> bytes:
    return identifier.encode("utf-8") if isinstance(identifier, str) else identifier


@attrs.define
class _Binding:
    """The identifier a TCP listener's connections go to; rotation changes it."""

    identifier: bytes


class TunnelServer:
    """
    A tunnel server: virtual hosts and TCP listeners routed to clients, and
    the web resource clients connect to and public requests arrive at.

    @ivar resource: the L{TunnelResource} to serve, as a site's root (see
        L{site}) or anywhere in a resource tree.
    @ivar metrics: the server's L{ServerMetrics}; expose their registry
        (see L{tunnel.server.monitoring}). The requests are counted by the
        site of L{site}.
    """

    def __init__(
        self,
        reactor: IReactorTime | None = None,
        streamTimeout: float = 10.0,
        yamuxConfig: SessionConfig | None = None,
        handshakeTimeout: float = 10.0,
        maxPendingStreams: int = 1000,
        drainTimeout: float = 60.0,
        maxFailedConnects: int | None = 10,
        failedConnectWindow: float = 60.0,
        responseTimeout: float | None = 60.0,
    ) -> None:
        """
        @param reactor: the reactor (a clock at least; for the site, a
            reactor); the global one by default.
        @param streamTimeout: seconds a client has to open a stream asked
            for; a public request that waits longer gets a 504.
        @param yamuxConfig: the settings of the clients' yamux sessions.
        @param handshakeTimeout: seconds a connecting client has to complete
            the handshake before it is dropped.
        @param maxPendingStreams: the most streams a client may owe; public
            requests beyond that get a 503.
        @param drainTimeout: seconds the open streams of a replaced or
            removed client's session may take to finish.
        @param maxFailedConnects: how many CONNECTs with an unknown
            identifier a source address (an IPv6 /64) may make in a row;
            after that its CONNECTs get a C{429}, whatever their
            identifier, and it may try once more every
            C{failedConnectWindow / maxFailedConnects} seconds. L{None}
            for no limit (behind a reverse proxy, every client has the
            proxy's address).
        @param failedConnectWindow: seconds in which C{maxFailedConnects}
            failed attempts are allowed again.
        @param responseTimeout: seconds the local service behind a client
            may keep a forwarded HTTP request waiting: for its response head
            once the whole request was sent, or while it reads none of the
            request body; the public request then gets a C{504}. L{None}
            for no limit (WebSocket and other upgrades have none).
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self._registry = Registry()
        self.metrics = ServerMetrics(self._registry.sessions)
        self._registry.addObserver(self.metrics.observe)
        self._listeners: dict[IListeningPort, _Binding] = {}
        self._site: TunnelSite | None = None
        settings = SessionSettings(
            streamTimeout=streamTimeout,
            handshakeTimeout=handshakeTimeout,
            maxPendingStreams=maxPendingStreams,
            drainTimeout=drainTimeout,
            responseTimeout=responseTimeout,
            yamux=yamuxConfig or SessionConfig(),
        )
        cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))
        limiter = (
            None
            if maxFailedConnects is None
            else FailureLimiter(reactor, maxFailedConnects, failedConnectWindow)
        )
        self.resource = TunnelResource(
            self._registry, settings, reactor, cooperator, self.metrics, limiter
        )

    def site(self, **arguments: Any) -> TunnelSite:
        """
        A site serving L{resource} that streams request bodies, and counts
        its requests in L{metrics}; in a cluster, the last one made also
        reads the public connections other nodes hand over.

        @param arguments: as L{TunnelSite} takes them: the limits of its
            public connections (C{idleTimeout}, C{headerTimeout},
            C{maxHeaderBytes}, C{maxHeaders}), and C{logPath}, the file of
            its access log (none by default).
        """
        self._site = TunnelSite(
            self.resource, reactor=self._reactor, metrics=self.metrics, **arguments
        )
        return self._site

    def addHost(self, host: str, identifier: str | bytes) -> None:
        """
        Route the virtual host C{host} to the client with C{identifier}.

        @param host: a host name, or C{name:port} to match only requests
            whose Host header has that port; case does not matter.
        @param identifier: the client's secret identifier.
        @raise ValueError: if the host is not a host name or the identifier
            is empty.
        """
        self._registry.addHost(host, self.nameOf(identifier))

    def addHostByName(self, host: str, name: bytes) -> None:
        """
        Route the virtual host C{host} to the client known by C{name}: what
        L{identifierOf} gives for another host of it, or L{nameOf} for its
        identifier.

        @raise ValueError: if C{host} is not a host name or C{name} is empty.
        """
        self._registry.addHost(host, name)

    def nameOf(self, identifier: str | bytes) -> bytes:
        """
        What the server knows C{identifier} by: itself, or in a cluster its
        key there (see L{joinCluster}).

        @raise ValueError: if it is empty.
        """
        return self.resource.identifierName(checkIdentifier(_identifier(identifier)))

    def enableSelfService(
        self,
        domain: str,
        accounts: Accounts,
        hostsFile: str | None = None,
        shared: SharedConfig | None = None,
    ) -> None:
        """
        Let clients with an account's token register a host under
        C{domain} for themselves: C{NAME.domain} for a subdomain they ask
        for, or a random free one. Each gets a new identifier, returned to
        it on the control request's C{200}; each account holds at most its
        limit of hosts.

        @param accounts: who may register, and how many hosts (see
            L{tunnel.server.accounts}).
        @param hostsFile: a hosts file to save registrations to, so that
            they survive a restart.
        @param shared: in a cluster (see L{joinCluster}), its shared
            configuration: registrations are made there, for every node,
            each account's limit counted on every node together, and the
            accounts are those it has (see L{setAccounts}); C{accounts}
            must then be made with the cluster key's digest.
        @raise ValueError: if C{domain} is not a host name without port.
        """
        self.resource.selfService = SelfService(
            domain, accounts, self._registry, hostsFile, nameOf=self.nameOf, shared=shared
        )

    def accounts(self) -> Accounts | None:
        """The accounts that may register hosts, or L{None} without self-service."""
        selfService = self.resource.selfService
        return None if selfService is None else selfService.accounts

    def setAccounts(self, accounts: Accounts) -> None:
        """
        Let C{accounts} register hosts, and no others (the hosts the others
        registered stay); needs L{enableSelfService} first.
        """
        self.resource.selfService.accounts = accounts

    def joinCluster(self, node: ClusterNode) -> None:
        """
        Be C{node} of a cluster: know identifiers by their key in the
        cluster (see L{identifierOf}), claim the sessions of this server's
        clients in the cluster's store, and forward a public request (HTTP,
        WebSocket, or a connection to a TCP listener bound after this call)
        for a client whose session another node holds to that node. Serve
        C{node.linkListener()} on the node's link endpoint for the others.

        @raise ValueError: if the server has hosts or listeners already.
        """
        if self._registry.knowsAny():
            raise ValueError("a server joins its cluster before it has hosts or listeners")
        self.resource.cluster = node
        self.resource.sessionObserver = node.observing(self._registry)
        node.publicSite = lambda: self._site
        self.resource.identifierName = node.identifierName

    def setAccess(self, host: str, rule: AccessRule | None) -> None:
        """
        Admit to C{host} only the public sources C{rule} permits (all of
        them for L{None}); others get a C{403} before anything is forwarded.

        @raise ValueError: if the host is not a host name.
        """
        self._registry.setAccess(host, rule)

    def accessOf(self, host: str) -> AccessRule | None:
        """
        The rule set for C{host} by L{setAccess}, if any.

        @raise ValueError: if the host is not a host name.
        """
        return self._registry.accessOf(host)

    def guardedHosts(self) -> list[str]:
        """The hosts with a rule set by L{setAccess}, sorted."""
        return self._registry.guardedHosts()

    def deleteHost(self, host: str) -> None:
        """
        Stop routing C{host}. If its client has no host or TCP listener
        left, the client's session is closed.

        @raise KeyError: if C{host} is not routed.
        """
        self._registry.deleteHost(host)

    def hasHost(self, host: str) -> bool:
        """
        Whether C{host} is routed.

        @raise ValueError: if it is not a host name.
        """
        return self._registry.hasHost(host)

    def identifierOf(self, host: str) -> bytes:
        """
        The secret identifier C{host} is routed to: in a cluster, the key
        the cluster knows it by (see L{joinCluster}), which the API takes
        wherever it takes an identifier this method gave.

        @raise KeyError: if C{host} is not routed (or not a host name).
        """
        try:
            return self._registry.identifierOf(host)
        except ValueError:
            raise KeyError(host) from None

    def hosts(self) -> list[HostStatus]:
        """The virtual hosts, sorted, and whether their client is connected."""
        return self._registry.hosts()

    def clients(self) -> list[ClientInfo]:
        """The connected clients, with redacted identifiers."""
        return self._registry.clients()

    def tcpListeners(self) -> list[ListenerStatus]:
        """
        The TCP listeners bound by L{bindTCP}, by port, each with a host of
        its identifier and whether its client is connected.
        """
        return self._registry.listeners()

    def bindTCP(
        self, endpoint: IStreamServerEndpoint, identifier: str | bytes
    ) -> Deferred[IListeningPort]:
        """
        Listen on C{endpoint} and tunnel every accepted connection to the
        client with C{identifier}.

        @return: a L{Deferred} firing with the listening port once it
            listens; pass it to L{unbindTCP} to stop.
        @raise ValueError: if the identifier is empty, before listening.
        """
        return self.bindTCPByName(endpoint, self.nameOf(identifier))

    def bindTCPByName(
        self, endpoint: IStreamServerEndpoint, name: bytes
    ) -> Deferred[IListeningPort]:
        """
        L{bindTCP} for the client known by C{name} (what L{identifierOf}
        gives for a host of it).
        """
        binding = _Binding(checkIdentifier(name))
        cluster = self.resource.cluster
        listening = endpoint.listen(
            TCPTunnelFactory(
                lambda: self._registry.session(binding.identifier),
                None if cluster is None else lambda: cluster.remoteSession(binding.identifier),
            )
        )

        def listened(port: IListeningPort) -> IListeningPort:
            self._registry.bindListener(binding.identifier, port.getHost().port)
            self._listeners[port] = binding
            return port

        return listening.addCallback(listened)

    def unbindTCP(self, port: IListeningPort) -> Deferred[None]:
        """
        Stop a listener started by L{bindTCP}. If its client has no host or
        TCP listener left, the client's session is closed.

        @return: a L{Deferred} firing once the port stopped listening.
        @raise KeyError: if C{port} was not bound by L{bindTCP}.
        """
        binding = self._listeners.pop(port)
        self._registry.unbindListener(binding.identifier, port.getHost().port)
        return maybeDeferred(port.stopListening)

    def moveTCP(self, old: bytes, new: bytes) -> list[int]:
        """
        Tunnel the connections of every TCP listener bound to the client
        known by C{old} to the client known by C{new} instead, as when an
        identifier is rotated: C{old} is then forgotten unless a host keeps
        it known. Both are names, as L{identifierOf} gives and L{nameOf}
        makes.

        @return: the ports of the listeners moved.
        @raise ValueError: if C{new} is empty.
        """
        oldKey, newKey = old, checkIdentifier(new)
        moved = [port for port, binding in self._listeners.items() if binding.identifier == oldKey]
        for port in moved:
            number = port.getHost().port
            self._registry.bindListener(newKey, number)
            self._listeners[port].identifier = newKey
            self._registry.unbindListener(oldKey, number)
        return [port.getHost().port for port in moved]

    def addObserver(self, observer: Callable[[Event], None]) -> None:
        """
        Call C{observer} with a L{ClientConnected} each time a client
        completes its handshake, and a L{ClientDisconnected} (with the
        reason) each time a client's session stops serving its hosts.
        """
        self._registry.addObserver(observer)

    def removeObserver(self, observer: Callable[[Event], None]) -> None:
        """Stop calling C{observer}."""
        self._registry.removeObserver(observer)

    def close(self) -> Deferred[None]:
        """
        Stop every TCP listener and close every client's session.

        @return: a L{Deferred} firing once all are closed.
        """
        closing = [
            session.close("the server is stopping") for session in self._registry.sessions()
        ]
        closing += [self.unbindTCP(port) for port in list(self._listeners)]
        return gatherResults(closing).addCallback(lambda _: None)
