"""
How a server node is told to join a cluster: where its Redis is
(L{parseRedisURL}), and the rest of L{ClusterSettings}.
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

import attrs
from twisted.internet.ssl import Certificate

from tunnel.cluster.handshake import isNodeName
from tunnel.cluster.keys import ClusterKey

if TYPE_CHECKING:
    from tunnel.cluster.tls import LinkTLS

#: Where a node listens for the links of the others, by default: loopback
#: only, for nodes on one machine; give an interface for several machines.
DEFAULT_CLUSTER_LISTEN = "tcp:7946:interface=127.0.0.1"
#: Seconds a node's claims outlive its last renewal, by default.
DEFAULT_LEASE = 10.0


@attrs.frozen
class RedisAddress:
    """
    Where the cluster's Redis is.

    @ivar tls: whether to speak TLS to it (a C{rediss://} URL).
    @ivar password: its password, or L{None}; never shown in C{repr}.
    """

    host: str
    port: int = 6379
    db: int = 0
    tls: bool = False
    password: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"


def parseRedisURL(url: str) -> RedisAddress:
    """
    Read C{redis://[:PASSWORD@]HOST[:PORT][/DB]} (C{rediss://} for TLS).

    @raise ValueError: if it is not one.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"{url!r} is not a redis:// or rediss:// URL")
    if parts.query or parts.fragment:
        raise ValueError("a Redis URL takes no query or fragment")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the port of the Redis URL is malformed") from None
    if not parts.hostname:
        raise ValueError("the Redis URL names no host")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database of the Redis URL must be a number, not {path!r}")
    password = None if parts.password is None else unquote(parts.password)
    return RedisAddress(parts.hostname, port, int(path or 0), parts.scheme == "rediss", password)


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def readCertificates(path: str) -> list[Certificate]:
    """
    Every certificate of the PEM file at C{path}.

    @raise ValueError: if it cannot be read or holds no certificate.
    """
    try:
        with open(path, "rb") as pem:
            blocks = _PEM_CERTIFICATE.findall(pem.read())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not blocks:
        raise ValueError(f"{path} holds no PEM certificate")
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except Exception as e:
        raise ValueError(f"{path} holds a malformed certificate: {e}") from None


def defaultNodeName() -> str:
    """A name for this node: its host's name and its process's ID."""
    name = f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
    return name if isNodeName(name) else f"node-{os.getpid()}"


@attrs.frozen
class ClusterSettings:
    """
    What a node needs to join its cluster.

    @ivar redis: where the shared store is.
    @ivar key: the cluster's key, from its secret.
    @ivar name: this node's name, unique in the cluster.
    @ivar listen: the server endpoint this node takes links on.
    @ivar address: where the other nodes reach that endpoint
        (C{HOST:PORT}), or L{None} for the address it listens on.
    @ivar lease: seconds this node's claims outlive its last renewal.
    @ivar redisCA: the CA certificates to check Redis's TLS certificate
        with, or L{None} for the system's.
    @ivar linkTLS: this node's certificate and the nodes' authorities, to
        speak TLS on the links; L{None} for plain links.
    """

    redis: RedisAddress
    key: ClusterKey = attrs.field(repr=False)
    name: str
    listen: str = DEFAULT_CLUSTER_LISTEN
    address: str | None = None
    lease: float = DEFAULT_LEASE
    redisCA: tuple[Certificate, ...] | None = attrs.field(default=None, repr=False)
    linkTLS: LinkTLS | None = attrs.field(default=None, repr=False)
