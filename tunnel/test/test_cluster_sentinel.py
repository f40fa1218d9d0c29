"""
Tests for L{tunnel.cluster.sentinel}, against real processes on loopback:
a C{redis-server} primary, a replica of it (C{--replicaof}) and a Redis
Sentinel watching them with a quorum of one, so that a failover (asked
for with C{SENTINEL FAILOVER}, or after the primary is killed) takes a
second or two. The session directory and the shared configuration run on
a L{SentinelConnection} as a node runs them, on the reactor's clock.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
import txredisapi
from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from tunnel.cluster.config import SharedConfig
from tunnel.cluster.directory import _RENEW, Holder, SessionDirectory, StoreUnavailable
from tunnel.cluster.sentinel import SentinelConnection
from tunnel.cluster.settings import SentinelAddress, parseRedisURL
from tunnel.test.redisserver import RedisSentinel, RedisServer, freeLoopbackPort, redisMissing
from tunnel.test.support import sleep

#: The lease of the directories: renewed every second, and Redis given
#: that long to answer.
LEASE = 3.0

#: Seconds a failover may take, from the moment it is asked for (or the
#: primary killed) until the directory and the configuration write to the
#: new primary.
FAILOVER_BOUND = 12.0

KEY, OTHER_KEY, LATE_KEY = "a1b2c3d4", "0f0f0f0f", "feedbeef"


@defer.inlineCallbacks
def direct(port: int, *command: object, password: str | None = None) -> Any:
    """Send C{command} to the Redis (or sentinel) on C{port} over a connection of its own."""
    redis = yield txredisapi.Connection(
        "127.0.0.1", port, reconnect=False, password=password, connectTimeout=2
    )
    try:
        return (yield redis.execute_command(*command))
    finally:
        yield redis.disconnect()


@defer.inlineCallbacks
def eventually(
    attempt: Callable[[], defer.Deferred[Any]], timeout: float, what: str
) -> Any:
    """
    Call C{attempt} until its L{Deferred} succeeds, every 0.1 s; fire
    with its result, or fail if none succeeded within C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while True:
        try:
            return (yield attempt())
        except (StoreUnavailable, AssertionError, txredisapi.RedisError) as e:
            if reactor.seconds() >= deadline:
                raise AssertionError(f"{what}: not within {timeout} s (last: {e})") from None
        yield sleep(0.1)


class SentinelTestCase(TestCase):
    """A primary, a replica and a sentinel of their own for each test."""

    timeout = 25

    #: The password of the primary and the replica, if any.
    password: str | None = None
    #: The sentinel's own password, if any.
    sentinelPassword: str | None = None

    @defer.inlineCallbacks
    def setUp(self):
        missing = redisMissing()
        if missing is not None:
            raise SkipTest(missing)
        auth = [] if self.password is None else ["--requirepass", self.password]
        # the replica's first sync at once, not after 5 s
        self.primary = RedisServer(reactor, auth + ["--repl-diskless-sync-delay", "0"])
        yield self.primary.start()
        self.addCleanup(self.primary.stop)
        self.replica = RedisServer(reactor, auth + ["--repl-diskless-sync-delay", "0",
            "--replicaof", "127.0.0.1", str(self.primary.port),
            *([] if self.password is None else ["--masterauth", self.password]),
        ])
        yield self.replica.start()
        self.addCleanup(self.replica.stop)
        yield self.replica.process.waitFor("MASTER <-> REPLICA sync: Finished with success", 10)
        self.sentinel = RedisSentinel(self.primary, "main", reactor, password=self.password,
                                      sentinelPassword=self.sentinelPassword)
        yield self.sentinel.start()
        self.addCleanup(self.sentinel.stop)

    def connect(self, url: str | None = None) -> SentinelConnection:
        """A connection through this test's sentinel, closed with the test."""
        if url is None:
            # a sentinel that is down, first: the next one is asked
            url = (f"redis+sentinel://127.0.0.1:{freeLoopbackPort()},"
                   f"127.0.0.1:{self.sentinel.port}/main")
        address = parseRedisURL(url)
        assert isinstance(address, SentinelAddress)
        address = attrs.evolve(address, password=self.password,
                               sentinelPassword=self.sentinelPassword)
        connection = SentinelConnection(address, reactor, timeout=2.0, checkInterval=0.25)
        self.addCleanup(connection.disconnect)
        return connection

    def node(self, connection: SentinelConnection, name: str) -> SessionDirectory:
        """The started directory of node C{name} on C{connection}."""
        directory = SessionDirectory(
            connection, name, f"{name}.cluster.test:7100", lease=LEASE, clock=reactor
        )
        directory.start()
        self.addCleanup(directory.stop)
        return directory

    @defer.inlineCallbacks
    def failOver(self):
        """Ask the sentinel to fail over, until it has a replica good enough to."""
        yield eventually(
            lambda: direct(self.sentinel.port, "SENTINEL", "FAILOVER", "main",
                           password=self.sentinelPassword),
            10, "the sentinel accepts to fail over",
        )

    @defer.inlineCallbacks
    def onTheReplica(self, *command: object) -> Any:
        """Fire with what the replica (the primary after a failover) answers C{command}."""
        return (yield direct(self.replica.port, *command, password=self.password))


class SentinelConnectionTests(SentinelTestCase):
    @defer.inlineCallbacks
    def test_theDirectoryAndTheConfigurationWorkThroughTheSentinels(self):
        connection = self.connect()
        first, second = self.node(connection, "first"), self.node(connection, "second")
        yield first.claim(KEY, "rule")
        self.assertEqual((yield second.holders(KEY)),
                         [Holder("first", "first.cluster.test:7100", "rule")])
        config = SharedConfig(connection, reactor, timeout=2.0)
        version = yield config.change({"app.example.com": KEY})
        snapshot = yield config.read()
        self.assertEqual((snapshot.version, snapshot.hosts),
                         (version, {"app.example.com": KEY}))
        self.assertEqual(connection.primary.port, self.primary.port)
        self.assertEqual((yield direct(self.primary.port, "HEXISTS", f"tunnel:claims:{KEY}",
                                       "first")), 1)

    @defer.inlineCallbacks
    def test_aFailoverIsFollowedScriptsAndAll(self):
        connection = self.connect()
        first, second = self.node(connection, "first"), self.node(connection, "second")
        config = SharedConfig(connection, reactor, timeout=2.0)
        yield first.claim(KEY)
        yield config.change({"app.example.com": KEY})
        yield connection.execute_command("WAIT", 1, 2000)
        # the new primary lacks the scripts: they must be sent again there
        yield self.onTheReplica("SCRIPT", "FLUSH")
        started = reactor.seconds()
        yield self.failOver()

        @defer.inlineCallbacks
        def promoted():
            role = yield self.onTheReplica("ROLE")
            self.assertEqual(role[0], "master")

        # until then, what the old primary is given reaches the replica too
        yield eventually(promoted, FAILOVER_BOUND, "the replica promoted")

        @defer.inlineCallbacks
        def claimedOnTheNewPrimary():
            yield first.claim(OTHER_KEY)
            on = yield self.onTheReplica("HEXISTS", f"tunnel:claims:{OTHER_KEY}", "first")
            self.assertEqual(on, 1, "the claim went to the old primary")

        yield eventually(claimedOnTheNewPrimary, FAILOVER_BOUND, "claims on the new primary")
        self.assertEqual(connection.primary.port, self.replica.port)
        self.assertEqual(
            (yield self.onTheReplica("SCRIPT", "EXISTS", _RENEW.sha)), [1]
        )
        # what was there before the failover, and what is written after
        self.assertEqual([h.node for h in (yield second.holders(KEY))], ["first"])
        self.assertEqual([h.node for h in (yield second.holders(OTHER_KEY))], ["first"])
        version = yield config.change({"api.example.com": OTHER_KEY})
        self.assertEqual((yield self.onTheReplica("GET", "tunnel:config:version")), version)
        snapshot = yield config.read()
        self.assertEqual(snapshot.hosts, {"app.example.com": KEY, "api.example.com": OTHER_KEY})
        self.assertLess(reactor.seconds() - started, FAILOVER_BOUND)

    @defer.inlineCallbacks
    def test_aKilledPrimaryIsReplaced(self):
        connection = self.connect()
        first, second = self.node(connection, "first"), self.node(connection, "second")
        config = SharedConfig(connection, reactor, timeout=2.0)
        yield first.claim(KEY)
        yield connection.execute_command("WAIT", 1, 2000)
        started = reactor.seconds()
        yield self.primary.kill()
        # until the sentinel gives up on it, it names the dead primary
        failure = yield self.assertFailure(second.holders(KEY), StoreUnavailable)
        self.assertEqual(failure.what, "unreachable")

        @defer.inlineCallbacks
        def heldOnTheNewPrimary():
            # the claim may have lapsed meanwhile: a renewal gives it back
            holders = yield second.holders(KEY)
            self.assertEqual([h.node for h in holders], ["first"])

        yield eventually(heldOnTheNewPrimary, FAILOVER_BOUND, "lookups on the new primary")
        self.assertEqual(connection.primary.port, self.replica.port)
        yield first.claim(LATE_KEY)
        self.assertEqual([h.node for h in (yield second.holders(LATE_KEY))], ["first"])
        version = yield config.change({"app.example.com": LATE_KEY})
        self.assertEqual((yield self.onTheReplica("GET", "tunnel:config:version")), version)
        self.assertLess(reactor.seconds() - started, FAILOVER_BOUND)

    @defer.inlineCallbacks
    def test_commandsFailWhileNoSentinelAnswers(self):
        connection = self.connect(f"redis+sentinel://127.0.0.1:{freeLoopbackPort()}/main")
        directory = SessionDirectory(connection, "first", "first.cluster.test:7100",
                                     lease=LEASE, clock=reactor)
        failure = yield self.assertFailure(directory.holders(KEY), StoreUnavailable)
        self.assertEqual(failure.what, "unreachable")
        self.assertIn("no sentinel names a primary of main that answers", failure.why)

    @defer.inlineCallbacks
    def test_aPrimaryThatTurnedReplicaIsLeft(self):
        connection = self.connect()
        # not started: no renewal meets the replica before the claim below
        directory = SessionDirectory(connection, "first", "first.cluster.test:7100",
                                     lease=LEASE, clock=reactor)
        yield directory.claim(KEY)
        # the primary is made a replica behind the sentinel's back: the
        # next write meets READONLY, and the connection leaves it
        yield direct(self.primary.port, "REPLICAOF", "127.0.0.1", freeLoopbackPort())
        failure = yield self.assertFailure(directory.claim(OTHER_KEY), StoreUnavailable)
        self.assertIn(f"127.0.0.1:{self.primary.port} is a replica now (READONLY)", failure.why)
        self.assertEqual(failure.what, "unreachable")


class PasswordTests(SentinelTestCase):
    password = "primary-password"
    sentinelPassword = "sentinel-password"

    @defer.inlineCallbacks
    def test_thePrimarysAndTheSentinelsPasswordsAreGiven(self):
        connection = self.connect()
        yield self.node(connection, "first").claim(KEY)
        self.assertEqual(connection.primary.port, self.primary.port)
        self.assertEqual(
            (yield direct(self.primary.port, "EXISTS", f"tunnel:claims:{KEY}",
                          password=self.password)), 1
        )

    @defer.inlineCallbacks
    def test_aWrongPasswordIsSaidAndNeverShown(self):
        address = attrs.evolve(
            parseRedisURL(f"redis+sentinel://127.0.0.1:{self.sentinel.port}/main"),
            password="not-it", sentinelPassword=self.sentinelPassword,
        )
        wrong = SentinelConnection(address, reactor, timeout=2.0)
        self.addCleanup(wrong.disconnect)
        directory = SessionDirectory(wrong, "first", "first.cluster.test:7100",
                                     lease=LEASE, clock=reactor)
        failure = yield self.assertFailure(directory.holders(KEY), StoreUnavailable)
        self.assertIn(f"the primary 127.0.0.1:{self.primary.port}", failure.why)
        self.assertNotIn("not-it", failure.why)
