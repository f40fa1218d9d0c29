"""
Tests for the TCP listeners of a cluster's shared configuration
(L{tunnel.cluster.listeners}) and the admin API's C{/tcp} on a node,
against a real C{redis-server}; the nodes listen on memory reactors.
"""

from __future__ import annotations

import errno
import json
import socket

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor

from tunnel.cluster.config import ConfigFollower, SharedConfig
from tunnel.cluster.listeners import SharedListeners
from tunnel.server import TunnelServer
from tunnel.server.admintcp import TCPListenersAPI
from tunnel.server.jsonapi import JSONError
from tunnel.test.test_cluster_directory import RedisTestCase


class BusyReactor(MemoryReactor):
    """A memory reactor on which the ports of C{busy} are taken by another program."""

    def __init__(self) -> None:
        super().__init__()
        self.busy: set[int] = set()

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.busy:
            taken = socket.error(errno.EADDRINUSE, "Address already in use")
            raise CannotListenError(interface, port, taken)
        return super().listenTCP(port, factory, backlog, interface)


class Node:
    """A tunnel server of the cluster, its shared listeners and its follower."""

    def __init__(self, config: SharedConfig, clock: Clock) -> None:
        self.reactor = BusyReactor()
        self.server = TunnelServer(reactor=Clock())
        self.server.addHostByName("a.example", b"aa")
        self.server.addHostByName("b.example", b"bb")
        self.listeners = SharedListeners(self.server, self.reactor, config)
        self.follower = ConfigFollower(config, self.server, clock, listeners=self.listeners)
        self.api = TCPListenersAPI(self.server, self.reactor, self.listeners)

    def ports(self) -> list[tuple[int, str]]:
        return [(status.port, status.host) for status in self.server.tcpListeners()]


class SharedListenersTests(RedisTestCase):
    def setUp(self):
        d = super().setUp()
        return d.addCallback(lambda _: self.made())

    def made(self) -> defer.Deferred[int]:
        self.config = SharedConfig(self.redis, self.clock)
        self.first, self.second = Node(self.config, self.clock), Node(self.config, self.clock)
        return self.config.change({"a.example": "aa", "b.example": "bb"})

    def add(self, node: Node, listen: str, host: str):
        return node.api.addFromBody(json.dumps({"listen": listen, "sameAs": host}).encode())

    @defer.inlineCallbacks
    def test_aListenerAddedThroughOneNodeListensOnEvery(self):
        """
        C{POST /tcp} on one node listens there, then in the shared
        configuration; the other node follows; C{DELETE} through the other
        stops both.
        """
        code, body = yield self.add(self.first, "tcp:2222", "a.example")
        self.assertEqual((code, body["port"]), (201, 2222))
        self.assertEqual(self.first.ports(), [(2222, "a.example")])
        stored = yield self.redis.hgetall("tunnel:config:tcp")
        self.assertEqual(stored, {"tcp:2222": "aa"})
        yield self.second.follower.poll()
        self.assertEqual(self.second.ports(), [(2222, "a.example")])
        code, body = yield self.second.api.delete("2222")
        self.assertEqual((code, body), (200, {"deleted": 2222}))
        self.assertEqual(self.second.ports(), [])
        yield self.first.follower.poll()
        self.assertEqual(self.first.ports(), [])
        self.assertEqual((yield self.redis.hgetall("tunnel:config:tcp")), {})

    @defer.inlineCallbacks
    def test_aPortTakenOnANodeIsSaidAndTriedAgain(self):
        """
        A node that cannot listen where the configuration says lists why
        in C{GET /tcp}, and listens once the port is free and the
        configuration changes again.
        """
        self.second.reactor.busy.add(2222)
        yield self.add(self.first, "tcp:2222", "a.example")
        yield self.second.follower.poll()
        self.assertEqual(self.second.ports(), [])
        code, body = self.second.api.list()
        [unbound] = body["unbound"]
        self.assertEqual(unbound["listen"], "tcp:2222")
        self.assertIn("cannot listen on port 2222: Address already in use", unbound["problem"])
        self.second.reactor.busy.clear()
        yield self.add(self.first, "tcp:2223", "b.example")
        yield self.second.follower.poll()
        self.assertEqual(self.second.ports(), [(2222, "a.example"), (2223, "b.example")])
        self.assertEqual(self.second.listeners.unbound(), [])

    @defer.inlineCallbacks
    def test_aPortTakenOnTheNodeAskedIsAConflictAndNotShared(self):
        self.first.reactor.busy.add(2222)
        failure = yield self.assertFailure(self.add(self.first, "tcp:2222", "a.example"), JSONError)
        self.assertEqual(failure.code, 409)
        self.assertEqual((yield self.redis.hgetall("tunnel:config:tcp")), {})

    @defer.inlineCallbacks
    def test_aRotationKeepsTheListenersListening(self):
        """
        The listeners of a rotated key are the new key's on every node,
        without listening again.
        """
        yield self.add(self.first, "tcp:2222", "a.example")
        yield self.second.follower.poll()
        [port] = self.second.reactor.tcpServers
        yield self.config.change({"a.example": "cc"}, rotated={"aa": "cc"})
        self.assertEqual((yield self.redis.hgetall("tunnel:config:tcp")), {"tcp:2222": "cc"})
        yield self.second.follower.poll()
        self.assertEqual(self.second.ports(), [(2222, "a.example")])
        self.assertEqual(self.second.server.identifierOf("a.example"), b"cc")
        self.assertEqual(self.second.reactor.tcpServers, [port])
        yield self.second.follower.poll()
        self.assertEqual(len(self.second.reactor.tcpServers), 1)

    @defer.inlineCallbacks
    def test_aListenerMovedToAnotherClientListensForIt(self):
        yield self.add(self.first, "tcp:2222", "a.example")
        yield self.second.follower.poll()
        yield self.config.change(tcp={"tcp:2222": "bb"})
        yield self.second.follower.poll()
        self.assertEqual(self.second.ports(), [(2222, "b.example")])

    @defer.inlineCallbacks
    def test_whileRedisIsAwayAListenerIsNotAdded(self):
        """Redis cannot take it: 503, and the node asked stops listening again."""
        yield self.killRedis()
        adding = self.add(self.first, "tcp:2222", "a.example")
        self.clock.advance(10)
        failure = yield self.assertFailure(adding, JSONError)
        self.assertEqual(failure.code, 503)
        self.assertIn("nothing was changed", str(failure))
        self.assertEqual(self.first.ports(), [])
