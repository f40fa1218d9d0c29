"""
A server node's part in its cluster as a Twisted service: the connection
to Redis, the endpoint the other nodes link to, and the directory that
claims this node's sessions, started and stopped with the server.
"""

from __future__ import annotations

import txredisapi
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust
from twisted.logger import Logger

from tunnel.cluster.directory import SessionDirectory
from tunnel.cluster.node import ClusterNode
from tunnel.cluster.settings import ClusterSettings, RedisAddress
from tunnel.server import TunnelServer
from tunnel.server.health import Readiness

#: Seconds to wait for Redis to accept a connection.
REDIS_CONNECT_TIMEOUT = 5.0


def redisConnection(address: RedisAddress, caFile: str | None = None) -> object:
    """
    A connection to Redis that connects when first used and reconnects by
    itself after it is lost, checking Redis's certificate over TLS.
    """
    tls = None
    if address.tls:
        if caFile is None:
            trust = platformTrust()
        else:
            with open(caFile, "rb") as pem:
                trust = Certificate.loadPEM(pem.read())
        tls = optionsForClientTLS(address.host, trust)
    return txredisapi.lazyConnection(
        address.host,
        address.port,
        address.db,
        reconnect=True,
        password=address.password,
        ssl_context_factory=tls or False,
        connectTimeout=REDIS_CONNECT_TIMEOUT,
    )


class ClusterService(Service):
    """
    Makes a L{TunnelServer} a node of the cluster its settings name: the
    server joins it at once (so that no session escapes its claim); the
    links are listened for, and the directory started, with the service.

    @ivar node: the server's L{ClusterNode}.
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
        self._redis = redisConnection(settings.redis, settings.redisCA)
        self._directory = SessionDirectory(
            self._redis, settings.name, settings.address or "", settings.lease, reactor
        )
        self.node = ClusterNode(settings.key, settings.name, self._directory, reactor)
        server.joinCluster(self.node)
        readiness.add(self._directory)
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
        self._directory.start()
        self._log.info(
            "Node {node} of the cluster on {redis}: other nodes link to {address}",
            node=self._settings.name,
            redis=self._settings.redis,
            address=address,
        )

    def stopService(self) -> Deferred[None]:
        """Release this node's claims, close its links, stop listening."""
        super().stopService()
        stopping = self.node.stop()
        if self._port is not None:
            port, self._port = self._port, None
            stopping.addBoth(lambda _: port.stopListening())
        return stopping.addBoth(lambda _: self._redis.disconnect())
