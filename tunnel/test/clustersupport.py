"""
Support for the cluster's in-memory tests: a session directory kept in a
dictionary, shared by the nodes of a test, and links between L{Harness}es
made of in-memory connections, plain or TLS.
"""

from __future__ import annotations

from typing import Any

import trustme
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.test import iosim

from tunnel.cluster.directory import StoreUnavailable, Holder
from tunnel.cluster.keys import ClusterKey
from tunnel.cluster.link import NodeLinks
from tunnel.cluster.node import ClusterNode
from tunnel.cluster.tls import LinkTLS
from tunnel.test.serversupport import Harness

SECRET = b"a cluster secret of the tests"


class MemoryStore:
    """
    What a cluster's store holds, in memory: the claims of each key, by
    node, and the nodes' addresses; L{available} says whether it answers.
    """

    def __init__(self) -> None:
        self.claims: dict[str, dict[str, str]] = {}
        self.addresses: dict[str, str] = {}
        self.available = True


class MemoryDirectory:
    """One node's view of a L{MemoryStore}, as a session directory gives it."""

    name = "redis"

    def __init__(self, store: MemoryStore, node: str, address: str) -> None:
        self.store = store
        self.node = node
        store.addresses[node] = address

    def _answer(self, result: Any) -> Deferred[Any]:
        if not self.store.available:
            return fail(StoreUnavailable("unreachable", "the test says so"))
        return succeed(result)

    def claim(self, key: str, access: str = "") -> Deferred[None]:
        if self.store.available:
            self.store.claims.setdefault(key, {})[self.node] = access
        return self._answer(None)

    def release(self, key: str) -> Deferred[None]:
        if self.store.available:
            self.store.claims.get(key, {}).pop(self.node, None)
        return self._answer(None)

    def holders(self, key: str) -> Deferred[list[Holder]]:
        claims = self.store.claims.get(key, {})
        return self._answer(
            [
                Holder(node, self.store.addresses[node], access)
                for node, access in sorted(claims.items())
                if node != self.node
            ]
        )

    def stop(self) -> Deferred[None]:
        for claims in self.store.claims.values():
            claims.pop(self.node, None)
        return succeed(None)


class _RecordingTransport(iosim.FakeTransport):
    """An in-memory transport that also keeps every byte it sends in C{wire}."""

    def __init__(self, protocol: Any, isServer: bool, *addresses: Any, wire: list[bytes]) -> None:
        super().__init__(protocol, isServer, *addresses)
        self._wire = wire

    def write(self, data: bytes) -> None:
        self._wire.append(data)
        super().write(data)


class _MemoryEndpoint:
    """Dials a node's link listener in memory, pumped by the dialling harness."""

    def __init__(
        self, dialler: Harness, listener: ClusterNode, listenerHarness: Harness, wire: list[bytes]
    ) -> None:
        self._dialler = dialler
        self._listener = listener
        self._listenerHarness = listenerHarness
        self._wire = wire

    def connect(self, factory: Factory) -> Deferred[Any]:
        here = IPv4Address("TCP", "127.0.0.1", 7101)
        there = IPv4Address("TCP", "127.0.0.1", 7102)
        server = self._listener.linkListener().buildProtocol(here)
        client = factory.buildProtocol(there)
        pump = iosim.connect(
            server,
            _RecordingTransport(server, True, there, here, wire=self._wire),
            client,
            _RecordingTransport(client, False, here, there, wire=self._wire),
            greet=False,
            clock=self._dialler.clock,
        )
        self._dialler.pumps.append(pump)
        self._listenerHarness.pumps.append(pump)
        return succeed(client)


class Cluster:
    """
    Tunnel servers in memory, each the node of one cluster, sharing one
    L{MemoryStore}; L{flush} pumps them all.

    A node with a L{LinkTLS} speaks TLS on its links. With C{tls}, every
    node's address is C{NAME.nodes.test:7946}, whose host its certificate
    must be valid for (L{nodeCertificate}); without, its name.

    @ivar harnesses: each node's L{Harness}, by name.
    @ivar nodes: each L{ClusterNode}, by name.
    @ivar addresses: each node's link address, by name.
    @ivar unreachable: names of nodes whose links cannot be made.
    @ivar wire: every byte sent on a link, both ways, in order.
    """

    def __init__(
        self, *names: str, tls: dict[str, LinkTLS] | None = None, **serverArguments: Any
    ) -> None:
        addressed = tls is not None
        tls = tls or {}
        self.key = ClusterKey(SECRET)
        self.store = MemoryStore()
        self.harnesses = {name: Harness(**serverArguments) for name in names}
        self.nodes: dict[str, ClusterNode] = {}
        self.addresses = {name: f"{name}.nodes.test:7946" if addressed else name for name in names}
        self._names = {address: name for name, address in self.addresses.items()}
        self.unreachable: set[str] = set()
        self.wire: list[bytes] = []
        for name, harness in self.harnesses.items():
            links = NodeLinks(
                self.key,
                name,
                harness.clock,
                endpointFor=lambda address, h=harness: self._dial(h, address),
                tls=tls.get(name),
            )
            node = ClusterNode(
                self.key,
                name,
                MemoryDirectory(self.store, name, self.addresses[name]),
                harness.clock,
                links,
                tls=tls.get(name),
            )
            harness.server.joinCluster(node)
            self.nodes[name] = node

    def _dial(self, harness: Harness, address: str) -> Any:
        name = self._names[address]
        if name in self.unreachable:
            return _Refused()
        return _MemoryEndpoint(harness, self.nodes[name], self.harnesses[name], self.wire)

    def link(self, dialler: str, listener: str) -> Any:
        """The yamux session of C{dialler}'s link to C{listener}, or L{None}."""
        return self.nodes[dialler].links._links.get(self.addresses[listener])

    def flush(self) -> None:
        """Pump every connection of every node until nothing moves."""
        pumps = {id(pump): pump for h in self.harnesses.values() for pump in h.pumps}
        while any([pump.flush() for pump in pumps.values()]):
            pumps = {id(pump): pump for h in self.harnesses.values() for pump in h.pumps}

    def advance(self, seconds: float) -> None:
        """Let time pass on every node's clock, then pump."""
        for harness in self.harnesses.values():
            harness.clock.advance(seconds)
        self.flush()


class _Refused:
    """An endpoint whose connections are refused."""

    def connect(self, factory: Factory) -> Deferred[Any]:
        return fail(ConnectionRefusedError("the node is down"))


def nodeCertificate(authority: trustme.CA, name: str) -> LinkTLS:
    """
    The L{LinkTLS} of node C{name} of a L{Cluster}: a certificate for its
    address's host from C{authority}, trusting C{authority} alone.
    """
    issued = authority.issue_cert(f"{name}.nodes.test")
    pem = issued.private_key_and_cert_chain_pem.bytes()
    return LinkTLS(PrivateCertificate.loadPEM(pem), (Certificate.loadPEM(authority.cert_pem.bytes()),))
