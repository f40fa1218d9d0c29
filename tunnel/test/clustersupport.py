"""
Support for the cluster's in-memory tests: a session directory kept in a
dictionary, shared by the nodes of a test, and links between L{Harness}es
made of in-memory connections.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.test import iosim

from tunnel.cluster.directory import StoreUnavailable, Holder
from tunnel.cluster.keys import ClusterKey
from tunnel.cluster.link import NodeLinks
from tunnel.cluster.node import ClusterNode
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


class _MemoryEndpoint:
    """Dials a node's link listener in memory, pumped by the dialling harness."""

    def __init__(self, dialler: Harness, listener: ClusterNode, listenerHarness: Harness) -> None:
        self._dialler = dialler
        self._listener = listener
        self._listenerHarness = listenerHarness

    def connect(self, factory: Factory) -> Deferred[Any]:
        here = IPv4Address("TCP", "127.0.0.1", 7101)
        there = IPv4Address("TCP", "127.0.0.1", 7102)
        server = self._listener.linkListener().buildProtocol(here)
        client = factory.buildProtocol(there)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, there, here),
            client,
            iosim.FakeTransport(client, False, here, there),
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

    @ivar harnesses: each node's L{Harness}, by name.
    @ivar nodes: each L{ClusterNode}, by name.
    @ivar unreachable: names of nodes whose links cannot be made.
    """

    def __init__(self, *names: str, **serverArguments: Any) -> None:
        self.key = ClusterKey(SECRET)
        self.store = MemoryStore()
        self.harnesses = {name: Harness(**serverArguments) for name in names}
        self.nodes: dict[str, ClusterNode] = {}
        self.unreachable: set[str] = set()
        for name, harness in self.harnesses.items():
            links = NodeLinks(
                self.key, name, harness.clock, endpointFor=lambda address, h=harness: self._dial(h, address)
            )
            node = ClusterNode(
                self.key,
                name,
                MemoryDirectory(self.store, name, name),
                harness.clock,
                links,
            )
            harness.server.joinCluster(node)
            self.nodes[name] = node

    def _dial(self, harness: Harness, address: str) -> Any:
        if address in self.unreachable:
            return _Refused()
        return _MemoryEndpoint(harness, self.nodes[address], self.harnesses[address])

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
