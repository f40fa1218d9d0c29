"""
The services behind C{twistd tunnel-server} and C{twistd tunnel-client}.
"""

from __future__ import annotations

import functools
from typing import Sequence

import attrs
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.client import TunnelClientService, TunnelEndpoint
from tunnel.client.endpoint import connectorFor
from tunnel.cluster.config import SharedHostsReloader, shareAccounts
from tunnel.cluster.service import ClusterService
from tunnel.client.inspector import (
    DEFAULT_FALLBACKS,
    DEFAULT_INSPECT,
    Inspector,
    InspectorService,
)
from tunnel.options import ClientOptions, ServerOptions
from tunnel.core.control import redactIdentifier
from tunnel.server import TunnelServer
from tunnel.server.admin import AdminResource, AdminSite
from tunnel.server.health import ListenersCheck, Milestone, Readiness
from tunnel.server.limits import connectionBudget
from tunnel.server.monitoring import MonitoringResource, MonitoringSite
from tunnel.server.reload import AccountsReloader, HostsReloader, Reloader, ReloadOnHangUp
from tunnel.workers.command import sharedListeners
from tunnel.workers.service import WorkersService
from tunnel.workers.sockets import adoptingEndpoint

_log = Logger()


class TCPTunnelService(Service):
    """
    Keeps a TCP listener bound to a tunnel client while running.

    @ivar endpoint: where to listen.
    @ivar identifier: the client the connections go to.
    """

    _log = Logger()

    def __init__(self, server: TunnelServer, endpoint: IStreamServerEndpoint, identifier: str):
        self.server = server
        self.endpoint = endpoint
        self.identifier = identifier
        self._port: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        """
        Bind the listener.

        @raise Exception: why it cannot listen, when the endpoint says so at
            once (TCP, TLS and UNIX endpoints do), so that the server stops
            as it does for a C{--listen} endpoint.
        """
        super().startService()
        port = self.server.bindTCP(self.endpoint, self.identifier)
        if port.called and isinstance(port.result, Failure):
            failure = port.result
            port.addErrback(lambda _: None)
            failure.raiseException()
        self._port = port
        port.addErrback(
            lambda f: self._log.failure(
                "Cannot listen for TCP tunnel of {identifier}",
                f,
                identifier=redactIdentifier(self.identifier),
            )
        )

    def stopService(self) -> Deferred[None] | None:
        """Unbind the listener."""
        super().stopService()
        if self._port is None:
            return None
        return self._port.addCallback(self.server.unbindTCP)


class TunnelServerService(MultiService):
    """
    The tunnel server's listeners; stopping it closes every client session.

    @ivar server: the L{TunnelServer}.
    """

    def __init__(self, server: TunnelServer) -> None:
        super().__init__()
        self.server = server

    def stopService(self) -> Deferred[None]:
        """Stop listening, then close the sessions."""
        stopped = super().stopService()
        return stopped.addCallback(lambda _: self.server.close())


def _listen(endpoint: IStreamServerEndpoint, factory: object) -> StreamServerEndpointService:
    service = StreamServerEndpointService(endpoint, factory)
    # A port that cannot be bound stops twistd with a clear error.
    service._raiseSynchronously = True
    return service


def makeServerService(
    options: ServerOptions, reactor: object = None, inherited: Sequence[int] | None = None
) -> IService:
    """
    Build the tunnel server's service from its options: with C{--workers}
    above 1, the supervisor of the workers (L{WorkersService}).

    @param inherited: for a worker, the file descriptors of the listeners
        it shares with the others, which it listens on instead of binding
        its own: one for each of L{sharedListeners}, in their order.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    if inherited is None and options["workers"] > 1:
        return WorkersService(options, reactor)
    public = _publicEndpoints(reactor, sharedListeners(options), inherited)
    server = TunnelServer(
        reactor,
        streamTimeout=options["stream-timeout"],
        maxFailedConnects=options["max-failed-connects"] or None,
        failedConnectWindow=options["failed-connect-window"],
        responseTimeout=options["response-timeout"] or None,
        yamuxConfig=options["yamuxConfig"],
    )
    listeners = ListenersCheck()
    hosts = Milestone("hosts", "the hosts are not loaded yet")
    readiness = Readiness([listeners, hosts])
    top = TunnelServerService(server)
    cluster = None
    if options["cluster"] is not None:
        cluster = ClusterService(server, options["cluster"], reactor, readiness)
        cluster.setServiceParent(top)
    for host, identifier in options["hosts"].items():
        server.addHost(host, identifier)
    hosts.reach()
    for host, rule in options["access"].items():
        server.setAccess(host, rule)
    if options["accounts"] is not None:
        server.enableSelfService(
            options["domain"],
            options["accounts"],
            options["hosts-file"] if cluster is None else None,
            shared=None if cluster is None else cluster.config,
        )
    site = server.site(
        logPath=options["access-log"],
        maxConnections=_fittedConnectionCap(options["max-connections"]),
        maxConnectionsPerSource=options["max-connections-per-source"] or None,
        writeTimeout=options["write-timeout"] or None,
    )
    for endpoint in public[: len(options["listen"])]:
        _listen(listeners.watch(endpoint), site).setServiceParent(top)
    for endpoint, (_, identifier) in zip(public[len(options["listen"]):], options["tcp"]):
        TCPTunnelService(server, endpoint, identifier).setServiceParent(top)
    reloaders: list[Reloader] = []
    if options["hosts-file"] and cluster is None:
        reloaders.append(
            HostsReloader(server, options["hosts-file"], options["commandLineHosts"])
        )
    elif options["hosts-file"]:
        reloaders.append(
            SharedHostsReloader(
                cluster.config, server, options["hosts-file"], options["commandLineHosts"]
            )
        )
    if options["accounts-file"] and cluster is None:
        reloaders.append(AccountsReloader(options["accounts-file"], server.setAccounts))
    elif options["accounts-file"]:
        reloaders.append(
            AccountsReloader(
                options["accounts-file"],
                functools.partial(shareAccounts, cluster.config),
                options["accounts"].digest,
            )
        )
    if reloaders or cluster is not None:
        # A node of a cluster takes SIGHUP even with nothing to reload, as
        # its supervisor (--workers) or systemd's reload may send it.
        ReloadOnHangUp(reloaders, reactor).setServiceParent(top)
    monitoring = MonitoringResource(server.metrics, readiness)
    if options["admin"]:
        # A node of a cluster keeps its changes in the shared configuration,
        # its files being only what it adds to it when it starts.
        alone = cluster is None
        admin = AdminResource(
            server,
            options["adminToken"],
            options["hosts-file"] if alone else None,
            reactor=reactor,
            accessFile=options["access-file"] if alone else None,
            monitoring=monitoring,
            shared=None if alone else cluster.config,
            sharedListeners=None if alone else cluster.listeners,
        )
        adminEndpoint = serverFromString(reactor, options["admin"])
        _listen(adminEndpoint, AdminSite(admin)).setServiceParent(top)
    if options["metrics"]:
        metricsEndpoint = serverFromString(reactor, options["metrics"])
        _listen(metricsEndpoint, MonitoringSite(monitoring)).setServiceParent(top)
    return top


def _publicEndpoints(
    reactor: object, descriptions: list[str], inherited: Sequence[int] | None
) -> list[IStreamServerEndpoint]:
    """
    The endpoints of the public listeners' C{descriptions}: of their own,
    or on the C{inherited} listeners of a worker.
    """
    if inherited is None:
        return [serverFromString(reactor, description) for description in descriptions]
    if len(inherited) != len(descriptions):
        raise ValueError(
            f"{len(inherited)} inherited listeners for {len(descriptions)} public endpoints"
        )
    return [
        adoptingEndpoint(reactor, description, fileno)  # type: ignore[arg-type]
        for description, fileno in zip(descriptions, inherited)
    ]


def _fittedConnectionCap(wanted: int) -> int | None:
    """
    The cap of C{--max-connections} (L{None} for none), lowered to what the
    open-file limit allows, with a log line saying so.
    """
    if not wanted:
        return None
    fitted = connectionBudget(wanted)
    if fitted < wanted:
        _log.warn(
            "--max-connections lowered from {wanted} to {fitted} to fit the open-file "
            "limit (raise it with ulimit -n)",
            wanted=wanted,
            fitted=fitted,
        )
    return fitted


class TunnelClientsService(MultiService):
    """
    The tunnel clients of one local side, one per server, and the
    inspector of them all, if any; the inspector starts first (its address
    is said before the tunnels come up).

    @ivar clients: the L{TunnelClientService}s, in the order of the servers.
    @ivar inspector: the L{InspectorService}, or L{None}.
    """

    def __init__(
        self, clients: list[TunnelClientService], inspector: InspectorService | None = None
    ) -> None:
        super().__init__()
        self.clients = clients
        self.inspector = inspector
        if inspector is not None:
            inspector.setServiceParent(self)
        for client in clients:
            client.setServiceParent(self)


def clientServicesOf(service: IService) -> list[TunnelClientService]:
    """The tunnel clients of a service L{makeClientService} built."""
    if isinstance(service, TunnelClientsService):
        return service.clients
    return [service] if isinstance(service, TunnelClientService) else []


def makeClientService(options: ClientOptions, reactor: object = None) -> IService:
    """
    Build the tunnel client's service from its options: a
    L{TunnelClientService}, or with several servers or an inspector a
    L{TunnelClientsService} of one client per server sharing one local
    side.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    limits = options["inspectLimits"]
    inspector = None if limits is None else Inspector(reactor, limits)
    settings = options["settings"]
    connector = connectorFor(
        settings,
        reactor,
        None if inspector is None else inspector.store,
        None if inspector is None else inspector.metrics,
    )
    stateFile, key = options["stateFile"], options.get("registrationKey")
    clients = [
        TunnelClientService(
            TunnelEndpoint(
                address.endpoint(reactor),
                attrs.evolve(settings, host=address.host),
                reactor,
                connector,
            ),
            giveUpAfter=options["give-up-after"] or None,
            onRegistered=None if stateFile is None else (
                lambda registered: stateFile.keep(key, registered)
            ),
        )
        for address in options["serverAddresses"]
    ]
    if inspector is None:
        return clients[0] if len(clients) == 1 else TunnelClientsService(clients)
    inspector.attach(clients)
    description = options["inspect"]
    if description == DEFAULT_INSPECT:
        listening = InspectorService(inspector, (description, *DEFAULT_FALLBACKS), required=False)
    else:
        listening = InspectorService(inspector, (description,))
    return TunnelClientsService(clients, listening)
