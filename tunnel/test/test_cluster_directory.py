"""
Tests for L{tunnel.cluster.directory}, against a real C{redis-server}.

Each test has a Redis of its own. A L{Clock} drives when renewals happen;
Redis's own clock decides when leases run out, so the tests that need a
lease to lapse wait for it on the reactor, a lease at a time. Every
directory of a test shares one connection: Redis answers in the order it
was asked, so once later commands are answered (see
L{RedisTestCase.answered}), a renewal the clock started before has been
done.
"""

from __future__ import annotations

import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tunnel.cluster.directory import StoreUnavailable, Holder, SessionDirectory
from tunnel.server.health import Readiness
from tunnel.test.redisserver import RedisServer

#: The lease of the tests: short, as Redis times it for real; a binary
#: fraction, so that the clock lands on each renewal exactly.
LEASE = 0.75

#: How often a directory renews: a third of the lease.
PERIOD = LEASE / 3

#: Keys (hex HMACs, for the directory) of a few identifiers.
KEY = "a1b2c3d4"
OTHER_KEY = "0f0f0f0f"


class RedisTestCase(TestCase):
    """A test with a Redis of its own and a clock for the renewals."""

    timeout = 30

    @defer.inlineCallbacks
    def setUp(self):
        # after a restart of Redis, the connection is back within a tenth
        # of a second instead of txredisapi's one to ten
        self.patch(txredisapi.RedisFactory, "initialDelay", 0.02)
        self.patch(txredisapi.RedisFactory, "maxDelay", 0.1)
        self.server = RedisServer()
        yield self.server.start()
        self.addCleanup(self.server.stop)
        self.redis = txredisapi.lazyConnection("127.0.0.1", self.server.port)
        self.addCleanup(self.redis.disconnect)
        self.clock = Clock()

    def node(self, name: str, start: bool = True) -> SessionDirectory:
        """The directory of node C{name}, on this test's Redis and clock."""
        directory = SessionDirectory(
            self.redis, name, f"{name}.cluster.test:7100", lease=LEASE, clock=self.clock
        )
        if start:
            directory.start()
        self.addCleanup(self.stopNode, directory)
        return directory

    @defer.inlineCallbacks
    def stopNode(self, directory: SessionDirectory):
        if self.server.process is None:
            # a test that failed with Redis down; withdrawing needs it
            yield self.server.start()
        yield directory.stop()

    def answered(self):
        """
        Fire once Redis answered everything asked before: it answers in
        order, but a script it lacks (a new or restarted Redis) is sent
        again only on its C{NOSCRIPT} answer, so this asks twice.
        """
        return self.redis.ping().addCallback(lambda _: self.redis.ping())

    def tick(self, periods: int = 1) -> None:
        """Let C{periods} renewal periods pass on the clock, one at a time."""
        for _ in range(periods):
            self.clock.advance(PERIOD)

    def waitForRedis(self, seconds: float):
        """Let C{seconds} pass on the reactor, for Redis's clock."""
        return deferLater(reactor, seconds, lambda: None)

    def holder(self, name: str, access: str = "") -> Holder:
        """What another node's lookup says of node C{name}."""
        return Holder(node=name, address=f"{name}.cluster.test:7100", access=access)

    @defer.inlineCallbacks
    def killRedis(self):
        """
        Kill Redis; fire once the connection knows it is gone, so that
        what is asked from now on waits for Redis to be back, and times out.
        """
        yield self.server.kill()
        # the handler of a lazy connection has no public way to this
        yield self.redis._factory.waitForEmptyPool()

    def logged(self) -> list[tuple[LogLevel, str]]:
        """From now on, the level and text of what the directories log."""
        events: list[tuple[LogLevel, str]] = []

        def observe(event) -> None:
            if event.get("log_namespace") == "tunnel.cluster.directory.SessionDirectory":
                events.append((event["log_level"], formatEvent(event)))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return events

    @defer.inlineCallbacks
    def redisKeys(self):
        """Every key this test's Redis holds, sorted."""
        return sorted((yield self.redis.keys("*")))


class ClaimTests(RedisTestCase):
    """Claiming, looking up and releasing."""

    @defer.inlineCallbacks
    def test_anotherNodeSeesAClaim(self):
        """
        A claim is seen by the other nodes with the claiming node's address
        and access; the claiming node does not list itself.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY, "access-one")
        self.assertEqual((yield second.holders(KEY)), [self.holder("first", "access-one")])
        self.assertEqual((yield first.holders(KEY)), [])
        self.assertEqual((yield second.holders(OTHER_KEY)), [])

    @defer.inlineCallbacks
    def test_severalHolders(self):
        """
        Every node holding a session of a key is listed, each with its own
        access, and claiming again replaces the access.
        """
        first, third = self.node("first"), self.node("third")
        observer = self.node("observer", start=False)
        yield first.claim(KEY)
        yield third.claim(KEY, "old")
        yield third.claim(KEY, "new")
        found = yield observer.holders(KEY)
        self.assertEqual(
            sorted(found, key=lambda holder: holder.node),
            [self.holder("first", ""), self.holder("third", "new")],
        )
        self.assertEqual((yield first.holders(KEY)), [self.holder("third", "new")])

    @defer.inlineCallbacks
    def test_releaseRemoves(self):
        """
        A released claim is no longer seen, is no longer renewed, and
        leaves nothing of its key in Redis; the other claims stay.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY)
        yield first.claim(OTHER_KEY)
        yield first.release(KEY)
        self.assertEqual((yield second.holders(KEY)), [])
        self.assertEqual((yield second.holders(OTHER_KEY)), [self.holder("first")])
        self.tick()
        yield self.answered()
        self.assertEqual((yield second.holders(KEY)), [])
        self.assertEqual(
            (yield self.redisKeys()),
            [f"tunnel:claims:{OTHER_KEY}", f"tunnel:expiry:{OTHER_KEY}", "tunnel:node:first"],
        )

    def test_keysAreHex(self):
        """A key that is not hex digits is refused before Redis sees it."""
        directory = self.node("first", start=False)
        for key in ["", "A1B2", "a1:b2", "*", "a1 b2"]:
            self.assertRaises(ValueError, directory.claim, key)
            self.assertRaises(ValueError, directory.holders, key)
            self.assertRaises(ValueError, directory.release, key)
        self.assertEqual(directory.claims, {})

    @defer.inlineCallbacks
    def test_scriptsSentAgain(self):
        """
        Scripts Redis forgot (C{SCRIPT FLUSH}, as after a restart) are sent
        again: claims and lookups go on working.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY)
        yield self.redis.execute_command("SCRIPT", "FLUSH")
        yield first.claim(OTHER_KEY, "after the flush")
        self.assertEqual((yield second.holders(OTHER_KEY)), [self.holder("first", "after the flush")])

    @defer.inlineCallbacks
    def test_manyClaimsOneScriptCall(self):
        """
        A renewal renews the node record and all of the node's claims in
        one script call: after Redis lost everything, one renewal of a
        node with 500 claims makes one call, and brings all of them back.
        """
        first, second = self.node("first"), self.node("second", start=False)
        keys = [f"{number:08x}" for number in range(500)]
        yield defer.gatherResults([first.claim(key, f"access {key}") for key in keys])
        yield self.redis.flushall()
        yield self.redis.execute_command("CONFIG", "RESETSTAT")
        self.tick()
        yield self.answered()
        stats = yield self.redis.execute_command("INFO", "commandstats")
        calls = {
            line.split(":")[0]: line.split("calls=")[1].split(",")[0]
            for line in stats.splitlines()
            if line.startswith("cmdstat_")
        }
        self.assertEqual(calls.get("cmdstat_evalsha"), "1", stats)
        self.assertNotIn("cmdstat_eval", calls)
        found = yield defer.gatherResults([second.holders(key) for key in keys])
        self.assertEqual(found, [[self.holder("first", f"access {key}")] for key in keys])


class LeaseTests(RedisTestCase):
    """Claims live as long as their node renews them, by Redis's clock."""

    @defer.inlineCallbacks
    def test_renewalsKeepClaimsAlive(self):
        """
        While the clock drives renewals, a claim outlives its lease many
        times over.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY)
        for _ in range(4):
            yield self.waitForRedis(PERIOD)
            self.tick()
        yield self.answered()
        self.assertEqual((yield second.holders(KEY)), [self.holder("first")])

    @defer.inlineCallbacks
    def test_claimsLapseWithoutRenewals(self):
        """
        A node that stops renewing (its loop not driven, as when it lost
        Redis or died without cleaning up) drops out of the lookups once
        its lease ran out on Redis's clock, and everything it wrote
        disappears from Redis by itself.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY, "access")
        yield first.claim(OTHER_KEY)
        self.assertEqual((yield second.holders(KEY)), [self.holder("first", "access")])
        yield self.waitForRedis(LEASE + 0.05)
        self.assertEqual((yield second.holders(KEY)), [])
        self.assertEqual((yield self.redisKeys()), [])
        self.assertEqual(first.claims, {KEY: "access", OTHER_KEY: ""})

    @defer.inlineCallbacks
    def test_claimWithoutNodeRecordNotLive(self):
        """
        A claim whose node record lapsed is not live, though the claim
        itself has not lapsed; the node's next renewal brings it back.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY)
        yield self.redis.delete("tunnel:node:first")
        self.assertEqual((yield second.holders(KEY)), [])
        self.assertIn(f"tunnel:claims:{KEY}", (yield self.redisKeys()))
        self.tick()
        yield self.answered()
        self.assertEqual((yield second.holders(KEY)), [self.holder("first")])

    @defer.inlineCallbacks
    def test_readiness(self):
        """
        The directory is a readiness check named C{redis}: not ready before
        it starts nor before Redis first answered; ready while the last
        renewal is less than a lease old; not ready once it is older.
        """
        directory = self.node("first", start=False)
        readiness = Readiness([directory])
        self.assertEqual(readiness.problems(), {"redis": "the session directory is not started"})
        directory.start()
        self.assertEqual(directory.problem(), "Redis not reached yet")
        yield self.answered()
        self.assertEqual(readiness.problems(), {})
        self.clock.advance(LEASE - 0.001)
        self.assertIsNone(directory.problem())


class OutageTests(RedisTestCase):
    """Redis stops, restarts, loses everything; the nodes carry on."""

    @defer.inlineCallbacks
    def test_resyncAfterRestart(self):
        """
        After Redis restarted empty, the node's next renewal brings back
        its record and every claim, with their access.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY, "one")
        yield first.claim(OTHER_KEY, "two")
        yield self.killRedis()
        yield self.server.start()
        self.assertEqual((yield second.holders(KEY)), [])
        self.tick()
        yield self.answered()
        self.assertEqual((yield second.holders(KEY)), [self.holder("first", "one")])
        self.assertEqual((yield second.holders(OTHER_KEY)), [self.holder("first", "two")])

    @defer.inlineCallbacks
    def test_problemWhileRedisDown(self):
        """
        Failed renewals within a lease are no problem yet; once the last
        good one is a lease old, the problem says Redis is unreachable and
        for how long; once a renewal succeeds again, it is gone.
        """
        directory = self.node("first")
        yield self.answered()
        self.assertIsNone(directory.problem())
        yield self.killRedis()
        self.tick(2)  # a renewal, that gives up
        self.assertIsNone(directory.problem())
        self.tick()  # the lease is over
        self.assertEqual(
            directory.problem(), "Redis unreachable for 0.8 s: no answer within 0.25 s"
        )
        self.assertEqual(Readiness([directory]).problems(), {"redis": directory.problem()})
        yield self.server.start()
        yield self.answered()  # the renewal that started, now answered
        self.assertIsNone(directory.problem())

    @defer.inlineCallbacks
    def test_claimWhileRedisDown(self):
        """
        A claim while Redis is down fails, saying that Redis is unreachable,
        but is remembered: the first renewal once Redis is back records it.
        A lookup while Redis is down fails the same way.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield self.answered()
        yield self.killRedis()
        claiming = first.claim(KEY, "access")
        looking = second.holders(KEY)
        self.tick()  # both give up; a renewal starts
        error = yield self.assertFailure(claiming, StoreUnavailable)
        self.assertEqual(str(error), "Redis unreachable: no answer within 0.25 s")
        yield self.assertFailure(looking, StoreUnavailable)
        self.tick()  # the renewal gives up too
        yield self.server.start()
        self.assertEqual((yield second.holders(KEY)), [])
        self.tick()
        yield self.answered()
        self.assertEqual((yield second.holders(KEY)), [self.holder("first", "access")])

    @defer.inlineCallbacks
    def test_releaseWhileRedisDown(self):
        """
        A release while Redis is down fails, but is done: the renewals once
        Redis is back leave the released claim out.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY)
        yield first.claim(OTHER_KEY)
        yield self.killRedis()
        releasing = first.release(KEY)
        self.tick()
        yield self.assertFailure(releasing, StoreUnavailable)
        self.assertEqual(first.claims, {OTHER_KEY: ""})
        self.tick()
        yield self.server.start()
        self.tick()
        yield self.answered()
        self.assertEqual((yield second.holders(KEY)), [])
        self.assertEqual((yield second.holders(OTHER_KEY)), [self.holder("first")])

    @defer.inlineCallbacks
    def test_logsOutageOnce(self):
        """
        A warning says when Redis became unreachable, once however many
        renewals fail, and an information when it answers again.
        """
        logged = self.logged()
        directory = self.node("first")
        yield directory.claim(KEY)
        yield self.killRedis()
        self.tick(6)  # three renewals, that give up
        yield self.server.start()
        self.tick()
        yield self.answered()
        self.assertEqual([level for level, _ in logged], [LogLevel.warn, LogLevel.info], logged)
        self.assertIn("Redis unreachable: no answer within 0.25 s", logged[0][1])
        self.assertIn("Redis reachable again", logged[1][1])


class StopTests(RedisTestCase):
    """A node that stops takes what it wrote with it."""

    @defer.inlineCallbacks
    def test_stopRemovesEverything(self):
        """
        Stopping removes the node record and all its claims from Redis at
        once, forgets them, and renews nothing any more.
        """
        first, second = self.node("first"), self.node("second", start=False)
        yield first.claim(KEY)
        yield first.claim(OTHER_KEY)
        yield first.stop()
        self.assertEqual((yield self.redisKeys()), [])
        self.assertEqual((yield second.holders(KEY)), [])
        self.assertEqual(first.claims, {})
        self.assertEqual(first.problem(), "the session directory is not started")
        self.tick(3)
        yield self.answered()
        self.assertEqual((yield self.redisKeys()), [])

    @defer.inlineCallbacks
    def test_stopAwaitsRenewalUnderWay(self):
        """
        A renewal under way when the node stops does not bring back what
        stopping removed.
        """
        first = self.node("first")
        yield first.claim(KEY)
        yield self.killRedis()
        self.tick()  # a renewal, waiting for Redis
        stopped = []
        first.stop().addCallback(stopped.append)
        self.tick()  # the renewal gives up; only now does the withdrawal start
        self.assertEqual(stopped, [])
        self.tick()  # the withdrawal gives up
        self.assertEqual(stopped, [None])

    @defer.inlineCallbacks
    def test_stopWhileRedisDown(self):
        """Stopping while Redis is down still stops, warning that it could not clean up."""
        first = self.node("first")
        yield first.claim(KEY)
        yield self.killRedis()
        logged = self.logged()
        stopping = first.stop()
        self.tick()
        yield stopping
        self.assertEqual(first.claims, {})
        self.assertEqual([level for level, _ in logged], [LogLevel.warn, LogLevel.warn], logged)
        self.assertIn("could not withdraw", logged[1][1])
