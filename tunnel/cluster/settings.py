"""
How a server node is told to join a cluster: where its Redis is
(L{parseRedisURL}), and the rest of L{ClusterSettings}.
"""

from __future__ import annotations

import os
import re
import socket
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urlsplit

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


#: The port of a sentinel the URL gives none for.
DEFAULT_SENTINEL_PORT = 26379

#: What a Sentinel service (a monitored primary) may be called here.
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,64}")


@attrs.frozen
class NodeAddress:
    """A host and port of Redis or of a sentinel."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@attrs.frozen
class RedisAddress:
    """
    Where the cluster's Redis is: one address.

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
        return f"{scheme}://{NodeAddress(self.host, self.port)}/{self.db}"


@attrs.frozen
class SentinelAddress:
    """
    Where the cluster's Redis is: the primary that the sentinels at
    C{sentinels} name for C{service}, whichever it is at the time.

    @ivar tls: whether to speak TLS to the sentinels and to the primary (a
        C{rediss+sentinel://} URL).
    @ivar password: the password of the primary (and of its replicas), or
        L{None}; never shown in C{repr}.
    @ivar sentinelPassword: the sentinels' own password, or L{None}; never
        shown in C{repr}.
    """

    sentinels: tuple[NodeAddress, ...]
    service: str
    db: int = 0
    tls: bool = False
    password: str | None = attrs.field(default=None, repr=False)
    sentinelPassword: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        sentinels = ",".join(str(sentinel) for sentinel in self.sentinels)
        return f"{scheme}://{sentinels}/{self.service}/{self.db}"


def parseRedisURL(url: str) -> RedisAddress | SentinelAddress:
    """
    Read C{redis://[:PASSWORD@]HOST[:PORT][/DB]} (C{rediss://} for TLS),
    or C{redis+sentinel://[:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB]}
    (C{rediss+sentinel://} for TLS), whose hosts are sentinels (port
    26379 by default) and whose password is the primary's.

    @raise ValueError: if it is not one.
    """
    parts = urlsplit(url)
    if parts.scheme in ("redis+sentinel", "rediss+sentinel"):
        return _parseSentinelURL(parts)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"{url!r} is not a redis://, rediss://, redis+sentinel:// or rediss+sentinel:// URL"
        )
    if parts.query or parts.fragment:
        raise ValueError("a Redis URL takes no query or fragment")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("the port of the Redis URL is malformed") from None
    if not parts.hostname:
        raise ValueError("the Redis URL names no host")
    path = parts.path.strip("/")
    password = None if parts.password is None else unquote(parts.password)
    return RedisAddress(parts.hostname, port, _database(path), parts.scheme == "rediss", password)


def _parseSentinelURL(parts: SplitResult) -> SentinelAddress:
    if parts.query or parts.fragment:
        raise ValueError("a Redis URL takes no query or fragment")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        if user or not colon:
            raise ValueError("a Redis URL takes a password only, as :PASSWORD@")
        password = unquote(secret)
    sentinels = tuple(_hostAndPort(host) for host in hosts.split(","))
    path = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not path:
        raise ValueError("the Redis Sentinel URL names no service: .../SERVICE[/DB]")
    if len(path) > 2:
        raise ValueError("a Redis Sentinel URL's path is /SERVICE[/DB]")
    service = unquote(path[0])
    if _SERVICE.fullmatch(service) is None:
        raise ValueError(
            f"the service of the Redis Sentinel URL must be 1 to 64 letters, digits and ._-,"
            f" not {service!r}"
        )
    db = _database(path[1] if len(path) == 2 else "")
    return SentinelAddress(
        sentinels, service, db, parts.scheme == "rediss+sentinel", password
    )


def _hostAndPort(text: str) -> NodeAddress:
    """One C{HOST[:PORT]} of a Sentinel URL (C{[V6]:PORT} for IPv6)."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"the sentinel {text!r} of the Redis URL is malformed")
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
        if ":" in port:
            raise ValueError(
                f"the sentinel {text!r} of the Redis URL is malformed (IPv6 is [ADDRESS]:PORT)"
            )
    if not host:
        raise ValueError("the Redis Sentinel URL names a sentinel without a host")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"the port of the sentinel {text!r} of the Redis URL is malformed")
    return NodeAddress(host.lower(), int(port) if port else DEFAULT_SENTINEL_PORT)


def _database(path: str) -> int:
    if path and not path.isdigit():
        raise ValueError(f"the database of the Redis URL must be a number, not {path!r}")
    return int(path or 0)


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

    @ivar redis: where the shared store is: one Redis, or the primary
        its sentinels name.
    @ivar key: the cluster's key, from its secret.
    @ivar name: this node's name, unique in the cluster.
    @ivar listen: the server endpoint this node takes links on.
    @ivar address: where the other nodes reach that endpoint
        (C{HOST:PORT}), or L{None} for the address it listens on.
    @ivar lease: seconds this node's claims outlive its last renewal.
    @ivar redisCA: the CA certificates to check Redis's TLS certificate
        (and the sentinels') with, or L{None} for the system's.
    @ivar linkTLS: this node's certificate and the nodes' authorities, to
        speak TLS on the links; L{None} for plain links.
    """

    redis: RedisAddress | SentinelAddress
    key: ClusterKey = attrs.field(repr=False)
    name: str
    listen: str = DEFAULT_CLUSTER_LISTEN
    address: str | None = None
    lease: float = DEFAULT_LEASE
    redisCA: tuple[Certificate, ...] | None = attrs.field(default=None, repr=False)
    linkTLS: LinkTLS | None = attrs.field(default=None, repr=False)
