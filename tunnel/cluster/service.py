"""
A server node's part in its cluster as a Twisted service: the connection
to Redis, the endpoint the other nodes link to, and the directory that
claims this node's sessions, started and stopped with the server.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.cluster.config import ConfigFollower, SharedConfig
from tunnel.cluster.directory import SessionDirectory
from tunnel.cluster.link import hostAndPort
from tunnel.cluster.listeners import SharedListeners
from tunnel.cluster.scripts import StoreUnavailable
from tunnel.cluster.node import ClusterNode
from tunnel.cluster.sentinel import SentinelConnection
from tunnel.cluster.settings import ClusterSettings, RedisAddress, SentinelAddress
from tunnel.server import TunnelServer
from tunnel.server.health import Readiness

#: Seconds to wait for Redis to accept a connection.
REDIS_CONNECT_TIMEOUT = 5.0
#: Seconds between two tries to add this node's own hosts to the shared
#: configuration, while Redis cannot be reached.
SEED_RETRY = 2.0


def redisConnection(
    address: RedisAddress | SentinelAddress,
    authorities: Sequence[Certificate] | None = None,
    reactor: object | None = None,
) -> object:
    """
    A connection to Redis that connects when first used and reconnects by
    itself after it is lost, checking Redis's certificate over TLS against
    C{authorities} (the system's by default). With a L{SentinelAddress},
    a L{SentinelConnection} to whichever Redis its sentinels name the
    primary (their certificates checked the same way), on C{reactor} (the
    global one by default).
    """
    tls = None
    if address.tls:
        trust = platformTrust() if authorities is None else trustRootFromCertificates(authorities)
        tls = partial(optionsForClientTLS, trustRoot=trust)
    if isinstance(address, SentinelAddress):
        if reactor is None:
            from twisted.internet import reactor
        return SentinelConnection(address, reactor, tls, timeout=REDIS_CONNECT_TIMEOUT)
    return txredisapi.lazyConnection(
        address.host,
        address.port,
        address.db,
        reconnect=True,
        password=address.password,
        ssl_context_factory=False if tls is None else tls(address.host),
        connectTimeout=REDIS_CONNECT_TIMEOUT,
    )


class ClusterService(Service):
    """
    Makes a L{TunnelServer} a node of the cluster its settings name: the
    server joins it at once (so that no session escapes its claim); the
    links are listened for, the directory started, and the shared
    configuration followed, with the service.

    The hosts and access rules the server has when the service starts
    (those of its command line and files) are added to the shared
    configuration where it has none for their hosts, until Redis takes
    them; from then on the shared configuration is the server's.

    @ivar node: the server's L{ClusterNode}.
    @ivar config: the cluster's L{SharedConfig}, for the admin API.
    @ivar listeners: the node's TCP listeners of it, for the admin API.
    """

    _log = Logger()

    def __init__(
        self,
        server: TunnelServer,
        settings: ClusterSettings,
        reactor: object,
        readiness: Readiness,
    ) -> None:
        self._settings = settings
        self._reactor = reactor
        self._redis = redisConnection(settings.redis, settings.redisCA, reactor)
        self._directory = SessionDirectory(
            self._redis, settings.name, settings.address or "", settings.lease, reactor
        )
        self.node = ClusterNode(
            settings.key, settings.name, self._directory, reactor, tls=settings.linkTLS
        )
        server.joinCluster(self.node)
        readiness.add(self._directory)
        self.config = SharedConfig(self._redis, reactor)
        self.listeners = SharedListeners(server, reactor, self.config)
        self._server = server
        self._follower: ConfigFollower | None = None
        self._seeding: LoopingCall | None = None
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        """Listen for the other nodes, then claim in Redis."""
        super().startService()
        failures: list[object] = []
        endpoint = serverFromString(self._reactor, self._settings.listen)
        listening = endpoint.listen(self.node.linkListener())
        listening.addCallbacks(self._listened, failures.append)
        if failures:
            failures[0].raiseException()

    def _listened(self, port: IListeningPort) -> None:
        self._port = port
        host = port.getHost()
        address = self._settings.address or f"{host.host}:{host.port}"
        self._directory.address = address
        self._checkCertificate(address)
        self._directory.start()
        self._seeding = LoopingCall(self._seed)
        self._seeding.clock = self._reactor
        self._seeding.start(SEED_RETRY, now=True)
        self._log.info(
            "Node {node} of the cluster on {redis}: other nodes link to {address}{over}",
            node=self._settings.name,
            redis=self._settings.redis,
            address=address,
            over=" over TLS" if self._settings.linkTLS is not None else "",
        )

    def _checkCertificate(self, address: str) -> None:
        """Warn if the other nodes would refuse this node's certificate for its address."""
        tls = self._settings.linkTLS
        if tls is None:
            return
        host, _ = hostAndPort(address)
        if not tls.validFor(host):
            self._log.warn(
                "The certificate of --cluster-tls is not valid for {host}, the host of this "
                "node's link address {address}: the other nodes will refuse to link to it; "
                "give a certificate for {host}, or a --cluster-address it is valid for",
                host=host,
                address=address,
            )

    def _seed(self) -> Deferred[None]:
        seeding = self.config.seed(self._server)

        def seeded(version: int) -> None:
            self._stopSeeding()
            self._log.info("Joined the shared configuration at version {version}", version=version)
            self._follower = ConfigFollower(
                self.config, self._server, self._reactor, listeners=self.listeners
            )
            self._follower.start()

        def notYet(failure: Failure) -> None:
            failure.trap(StoreUnavailable)
            self._log.warn(
                "Cannot reach the shared configuration yet ({why}); serving the {count} "
                "hosts of this node's own configuration meanwhile",
                why=failure.getErrorMessage(),
                count=len(self._server.hosts()),
            )

        return seeding.addCallbacks(seeded, notYet)

    def _stopSeeding(self) -> None:
        if self._seeding is not None and self._seeding.running:
            self._seeding.stop()
        self._seeding = None

    def stopService(self) -> Deferred[None]:
        """Release this node's claims, close its links, stop listening."""
        super().stopService()
        self._stopSeeding()
        if self._follower is not None:
            self._follower.stop()
        stopping = self.node.stop()
        if self._port is not None:
            port, self._port = self._port, None
            stopping.addBoth(lambda _: port.stopListening())
        return stopping.addBoth(lambda _: self._redis.disconnect())
