"""
Tests for the configuration the nodes of a cluster share, against a real
C{redis-server}: changes, versions, and a server that follows them.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor

from tunnel.cluster.accesstext import encodeAccess
from tunnel.cluster.config import NOBODY, ConfigFollower, SharedConfig, SharedHostsReloader
from tunnel.core.access import AccessRule, parseNetworks
from tunnel.server import TunnelServer
from tunnel.test.test_cluster_directory import RedisTestCase

RULE = AccessRule(allow=parseNetworks("10.0.0.0/8"))


class SharedConfigTests(RedisTestCase):
    def setUp(self):
        d = super().setUp()
        return d.addCallback(lambda _: self.made())

    def made(self) -> None:
        self.config = SharedConfig(self.redis, self.clock)
        self.tunnel = TunnelServer(reactor=Clock())
        self.follower = ConfigFollower(self.config, self.tunnel, self.clock)

    @defer.inlineCallbacks
    def test_changesAreReadBackWithTheirVersion(self):
        self.assertIsNone((yield self.config.version()))
        first = yield self.config.change({"a.example": "aa", "b.example": "bb"})
        second = yield self.config.change({"b.example": ""}, {"a.example": encodeAccess(RULE)})
        self.assertEqual((first, second), (1, 2))
        snapshot = yield self.config.read()
        self.assertEqual(
            (snapshot.version, dict(snapshot.hosts), dict(snapshot.access)),
            (2, {"a.example": "aa"}, {"a.example": encodeAccess(RULE)}),
        )
        self.assertEqual((yield self.config.version()), 2)

    @defer.inlineCallbacks
    def test_onlyNewKeepsWhatIsThere(self):
        """What a starting node adds never replaces what the admin API changed."""
        yield self.config.change({"a.example": "rotated"})
        yield self.config.change({"a.example": "original", "c.example": "cc"}, onlyNew=True)
        snapshot = yield self.config.read()
        self.assertEqual(dict(snapshot.hosts), {"a.example": "rotated", "c.example": "cc"})

    @defer.inlineCallbacks
    def test_theFollowerMakesTheServerWhatTheConfigurationSays(self):
        """Hosts added, moved and deleted, and rules set and lifted, as a whole."""
        self.tunnel.addHost("gone.example", "old")
        self.tunnel.addHost("moved.example", "old")
        self.tunnel.setAccess("moved.example", RULE)
        yield self.config.change(
            {"moved.example": "new", "added.example": "other"},
            {"added.example": encodeAccess(RULE)},
        )
        yield self.follower.poll()
        self.assertEqual([s.host for s in self.tunnel.hosts()], ["added.example", "moved.example"])
        self.assertEqual(self.tunnel.identifierOf("moved.example"), b"new")
        self.assertEqual(self.tunnel.identifierOf("added.example"), b"other")
        self.assertEqual(self.tunnel.guardedHosts(), ["added.example"])
        self.assertEqual(self.follower.applied, 1)

    @defer.inlineCallbacks
    def test_aRotationMovesThisNodesTCPListeners(self):
        """
        A key whose hosts all moved to another was rotated: the TCP
        listeners of this node follow, and the old key is forgotten.
        """
        self.tunnel.addHost("a.example", "old")
        yield self.tunnel.bindTCPByName(TCP4ServerEndpoint(MemoryReactor(), 2222), b"old")
        yield self.config.change({"a.example": "new"})
        yield self.follower.poll()
        [listener] = self.tunnel.tcpListeners()
        self.assertEqual((listener.port, listener.host), (2222, "a.example"))
        self.assertEqual(self.tunnel.identifierOf("a.example"), b"new")

    @defer.inlineCallbacks
    def test_aHangUpAddsTheNewHostsOfTheFile(self):
        """
        On SIGHUP a node adds the hosts of its file that the shared
        configuration lacks, under their key, and changes none it has.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("kept.example=file-identifier\nnew.example=another-identifier\n")
        yield self.config.change({"kept.example": "rotated"})
        reloader = SharedHostsReloader(self.config, self.tunnel, path, {})
        self.assertTrue(reloader.reload())
        yield self.answered()
        snapshot = yield self.config.read()
        self.assertEqual(
            dict(snapshot.hosts),
            {"kept.example": "rotated", "new.example": "another-identifier"},
        )
        with open(path, "w") as f:
            f.write("not an assignment\n")
        self.assertFalse(reloader.reload())

    @defer.inlineCallbacks
    def test_anUnreadableRuleAdmitsNobody(self):
        yield self.config.change({"a.example": "aa"}, {"a.example": "{not json"})
        yield self.follower.poll()
        self.assertEqual(self.tunnel.accessOf("a.example"), NOBODY)

    @defer.inlineCallbacks
    def test_theFollowerPollsOnItsClock(self):
        self.follower.start()
        self.addCleanup(self.follower.stop)
        yield self.answered()
        self.assertEqual(self.tunnel.hosts(), [])
        yield self.config.change({"a.example": "aa"})
        self.clock.advance(0.5)
        yield self.answered()
        yield self.answered()
        self.assertEqual([s.host for s in self.tunnel.hosts()], ["a.example"])

    @defer.inlineCallbacks
    def test_aConfigurationRedisLostIsGivenBack(self):
        """
        After Redis lost its data (a restart without persistence), a node
        gives it the configuration it follows instead of dropping every host.
        """
        yield self.config.change({"a.example": "aa"}, {"a.example": encodeAccess(RULE)})
        yield self.follower.poll()
        yield self.killRedis()
        yield self.server.start()
        yield self.follower.poll()
        self.assertEqual([s.host for s in self.tunnel.hosts()], ["a.example"])
        snapshot = yield self.config.read()
        self.assertEqual(dict(snapshot.hosts), {"a.example": "aa"})
        self.assertEqual(dict(snapshot.access), {"a.example": encodeAccess(RULE)})
        yield self.follower.poll()
        self.assertEqual(self.follower.applied, snapshot.version)

    @defer.inlineCallbacks
    def test_whileRedisIsAwayTheHostsStay(self):
        yield self.config.change({"a.example": "aa"})
        yield self.follower.poll()
        yield self.killRedis()
        polling = self.follower.poll()
        self.clock.advance(10)
        yield polling
        self.assertEqual([s.host for s in self.tunnel.hosts()], ["a.example"])
        changing = self.config.change({"b.example": "bb"})
        self.clock.advance(10)
        failure = yield self.assertFailure(changing, Exception)
        self.assertIn("Redis unreachable", str(failure))
