"""
Tests for the configuration the nodes of a cluster share, against a real
C{redis-server}: changes, versions, and a server that follows them.
"""

from __future__ import annotations

from functools import partial

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor

from tunnel.cluster.accesstext import encodeAccess
from tunnel.cluster.config import (
    NOBODY,
    ConfigFollower,
    SharedConfig,
    SharedHostsReloader,
    shareAccounts,
)
from tunnel.cluster.keys import ClusterKey
from tunnel.core.access import AccessRule, parseNetworks
from tunnel.server import TunnelServer
from tunnel.server.accounts import Accounts
from tunnel.server.reload import AccountsReloader
from tunnel.server.selfservice import RegistrationError
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


TOKEN = "alice-token-0123456789"
OTHER_TOKEN = "bob-token-0123456789ab"
KEY = ClusterKey(b"cluster secret of the tests")


class SharedAccountsTests(RedisTestCase):
    """
    Self-service hosts in a cluster: the accounts are the cluster's, and a
    registration made on one node counts on all.
    """

    def setUp(self):
        d = super().setUp()
        return d.addCallback(lambda _: self.made())

    def made(self) -> None:
        self.config = SharedConfig(self.redis, self.clock)

    def node(self, accounts: dict[str, tuple[int, str]]) -> TunnelServer:
        """A server of the cluster with self-service hosts and C{accounts}."""
        server = TunnelServer(reactor=Clock())
        server.enableSelfService(
            "tunnel.example", Accounts(accounts, KEY.tokenDigest), shared=self.config
        )
        return server

    def register(self, server: TunnelServer, subdomain: bytes | None, token: str = TOKEN):
        selfService = server.resource.selfService
        return selfService.register(selfService.account(token.encode()), subdomain)

    @defer.inlineCallbacks
    def test_anAccountsLimitCountsOnEveryNode(self):
        """
        Hosts an account registered through one node count against it on
        another; a host deleted no longer counts.
        """
        first, second = self.node({"alice": (2, TOKEN)}), self.node({"alice": (2, TOKEN)})
        one = yield self.register(first, b"one")
        yield self.register(second, None)
        self.assertEqual(first.identifierOf("one.tunnel.example"), one.identifier.encode())
        refused = yield self.assertFailure(self.register(first, b"three"), RegistrationError)
        self.assertEqual(refused.code, 403)
        self.assertIn("holds 2 hosts", str(refused))
        yield self.config.change({"one.tunnel.example": ""})
        three = yield self.register(first, b"three")
        self.assertEqual(three.host, "three.tunnel.example")

    @defer.inlineCallbacks
    def test_aHostRegisteredOnAnotherNodeIsTaken(self):
        """A node that does not know a host yet still cannot register it twice."""
        first, second = self.node({"alice": (5, TOKEN)}), self.node({"alice": (5, TOKEN)})
        yield self.register(first, b"app")
        self.assertEqual(second.hosts(), [])
        refused = yield self.assertFailure(self.register(second, b"app"), RegistrationError)
        self.assertEqual(refused.code, 409)
        self.assertIn("app.tunnel.example is taken", str(refused))

    @defer.inlineCallbacks
    def test_aRandomSubdomainTakenMeanwhileIsPickedAgain(self):
        """A random pick another node took at the same time gives way to another."""
        picks = iter(["same", "same", "other"])
        first, second = self.node({"alice": (5, TOKEN)}), self.node({"alice": (5, TOKEN)})
        for server in (first, second):
            server.resource.selfService._subdomainFactory = lambda: next(picks)
        yield self.register(first, None)
        registration = yield self.register(second, None)
        self.assertEqual(registration.host, "other.tunnel.example")

    @defer.inlineCallbacks
    def test_whileRedisIsAwayARegistrationIsRefusedFor503(self):
        server = self.node({"alice": (5, TOKEN)})
        yield self.killRedis()
        registering = self.register(server, b"app")
        self.clock.advance(10)
        refused = yield self.assertFailure(registering, RegistrationError)
        self.assertEqual(refused.code, 503)
        self.assertEqual(server.hosts(), [])

    @defer.inlineCallbacks
    def test_theAccountsAreSeededSharedAndFollowed(self):
        """
        A starting node adds its accounts, only digests of their tokens; a
        node following the configuration takes them; an accounts file
        reloaded replaces them all.
        """
        seeding = self.node({"alice": (3, TOKEN)})
        yield self.config.seed(seeding)
        stored = yield self.redis.hgetall("tunnel:config:accounts")
        self.assertEqual(list(stored), ["alice"])
        self.assertNotIn(TOKEN, stored["alice"])
        self.assertEqual(stored["alice"], f"3 {KEY.tokenDigest(TOKEN.encode()).hex()}")
        following = self.node({})
        follower = ConfigFollower(self.config, following, self.clock)
        yield follower.poll()
        selfService = following.resource.selfService
        self.assertEqual(selfService.account(TOKEN.encode()).maxHosts, 3)
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"bob 1 {OTHER_TOKEN}\n")
        reloader = AccountsReloader(path, partial(shareAccounts, self.config), KEY.tokenDigest)
        self.assertTrue(reloader.reload())
        yield self.answered()
        yield follower.poll()
        self.assertIsNone(selfService.account(TOKEN.encode()))
        self.assertEqual(selfService.account(OTHER_TOKEN.encode()).name, "bob")

    @defer.inlineCallbacks
    def test_aMalformedStoredAccountIsLeftOut(self):
        yield self.config.change(accounts=Accounts({"bob": (1, OTHER_TOKEN)}, KEY.tokenDigest))
        yield self.redis.hset("tunnel:config:accounts", "alice", "many hosts")
        yield self.redis.incr("tunnel:config:version")
        server = self.node({"alice": (3, TOKEN)})
        yield ConfigFollower(self.config, server, self.clock).poll()
        selfService = server.resource.selfService
        self.assertIsNone(selfService.account(TOKEN.encode()))
        self.assertEqual(selfService.account(OTHER_TOKEN.encode()).name, "bob")
