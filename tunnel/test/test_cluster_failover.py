"""
Tests for L{tunnel.cluster.failover}: how a connection finds the primary
its sentinels name, with plain calls and no I/O.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.cluster.failover import (
    FIRST_DELAY,
    MAX_DELAY,
    Action,
    Ask,
    Connect,
    Drop,
    Fail,
    PrimarySearch,
    State,
    Use,
    Wait,
)
from tunnel.cluster.settings import NodeAddress

S1, S2, S3 = (NodeAddress("10.0.0.1", 26379), NodeAddress("10.0.0.2", 26379),
              NodeAddress("10.0.0.3", 26379))
PRIMARY = NodeAddress("10.0.1.1", 6379)
REPLICA = NodeAddress("10.0.1.2", 6379)


def only(actions: list[Action], kind: type) -> Action:
    """The one action of C{actions}, which must be a C{kind}."""
    assert len(actions) == 1 and isinstance(actions[0], kind), actions
    return actions[0]


class SearchTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.search = PrimarySearch([S1, S2, S3], "main", checkInterval=1.0)

    def connectVia(self, actions: list[Action], primary: NodeAddress = PRIMARY) -> Connect:
        """Answer the L{Ask} of C{actions} with C{primary}: the L{Connect} that follows."""
        ask = only(actions, Ask)
        return only(self.search.sentinelAnswered(ask.attempt, primary), Connect)

    def use(self, actions: list[Action], primary: NodeAddress = PRIMARY) -> Wait:
        """Bring the L{Ask} of C{actions} to C{primary} in use: the check's L{Wait}."""
        connect = self.connectVia(actions, primary)
        use, wait = self.search.connected(connect.attempt, "master")
        self.assertEqual(use, Use(primary, connect.sentinel))
        self.assertEqual(self.search.state, State.CONNECTED)
        return wait


class FindingTests(SearchTestCase):
    def test_theFirstSentinelsPrimaryIsConnectedToAndUsed(self) -> None:
        ask = only(self.search.start(), Ask)
        self.assertEqual((ask.sentinel, self.search.state), (S1, State.ASKING))
        connect = only(self.search.sentinelAnswered(ask.attempt, PRIMARY), Connect)
        self.assertEqual((connect.primary, connect.sentinel), (PRIMARY, S1))
        self.assertEqual(self.search.state, State.CONNECTING)
        self.assertEqual(
            self.search.connected(connect.attempt, "master"),
            [Use(PRIMARY, S1), Wait(connect.attempt + 1, 1.0)],
        )
        self.assertEqual((self.search.state, self.search.primary), (State.CONNECTED, PRIMARY))

    def test_aSentinelThatFailsOrKnowsNothingGivesWayToTheNext(self) -> None:
        first = only(self.search.start(), Ask)
        second = only(self.search.sentinelFailed(first.attempt, "Connection refused"), Ask)
        self.assertEqual(second.sentinel, S2)
        third = only(self.search.sentinelAnswered(second.attempt, None), Ask)
        self.assertEqual(third.sentinel, S3)
        connect = self.connectVia([third])
        self.assertEqual(connect.sentinel, S3)

    def test_theSentinelThatAnsweredIsAskedFirstFromThenOn(self) -> None:
        first = only(self.search.start(), Ask)
        second = only(self.search.sentinelFailed(first.attempt, "refused"), Ask)
        self.use([second])
        ask = only(self.search.lost(PRIMARY, "connection lost")[1:], Ask)
        self.assertEqual(ask.sentinel, S2)

    def test_aReplicaIsNotUsed(self) -> None:
        connect = self.connectVia(self.search.start(), REPLICA)
        drop, ask = self.search.connected(connect.attempt, "slave")
        self.assertEqual(drop, Drop(REPLICA, drop.why))
        self.assertIn("is a slave, not the primary", drop.why)
        self.assertEqual((ask.sentinel, self.search.state), (S2, State.ASKING))
        self.assertIsNone(self.search.primary)

    def test_anUnreachablePrimaryGivesWayToTheNextSentinel(self) -> None:
        connect = self.connectVia(self.search.start())
        ask = only(self.search.connectFailed(connect.attempt, "Connection refused"), Ask)
        self.assertEqual(ask.sentinel, S2)
        self.use([ask], REPLICA)
        self.assertEqual(self.search.primary, REPLICA)


class RoundTests(SearchTestCase):
    def failRound(self, actions: list[Action]) -> list[Action]:
        for _ in range(3):
            ask = only(actions, Ask)
            actions = self.search.sentinelFailed(ask.attempt, f"{ask.sentinel} refused")
        return actions

    def test_aRoundThatFailsFailsTheWaitingCommandsAndWaits(self) -> None:
        fail, wait = self.failRound(self.search.start())
        self.assertIsInstance(fail, Fail)
        for sentinel in (S1, S2, S3):
            self.assertIn(f"sentinel {sentinel}: {sentinel} refused", fail.why)
        self.assertEqual(self.search.why, fail.why)
        self.assertEqual(self.search.state, State.WAITING)
        self.assertEqual(wait, Wait(wait.attempt, FIRST_DELAY))
        ask = only(self.search.waited(wait.attempt), Ask)
        self.assertEqual((ask.sentinel, self.search.state), (S1, State.ASKING))

    def test_theWaitDoublesWithEachRoundUpToTheLongest(self) -> None:
        actions = self.search.start()
        delays = []
        for _ in range(6):
            _, wait = self.failRound(actions)
            delays.append(wait.seconds)
            actions = self.search.waited(wait.attempt)
        self.assertEqual(delays, [0.2, 0.4, 0.8, 1.6, MAX_DELAY, MAX_DELAY])
        self.use(actions)
        _, wait = self.failRound(self.search.lost(PRIMARY, "gone")[1:])
        self.assertEqual(wait.seconds, FIRST_DELAY)

    def test_lateAnswersAreIgnored(self) -> None:
        first = only(self.search.start(), Ask)
        second = only(self.search.sentinelFailed(first.attempt, "no answer within 5 s"), Ask)
        # the first sentinel answers after all, once the search moved on
        self.assertEqual(self.search.sentinelAnswered(first.attempt, PRIMARY), [])
        self.assertEqual(self.search.sentinelFailed(first.attempt, "late"), [])
        connect = self.connectVia([second])
        self.assertEqual(self.search.connected(connect.attempt - 1, "master"), [])
        self.assertEqual(self.search.state, State.CONNECTING)
        self.search.connected(connect.attempt, "master")
        self.assertEqual(self.search.connectFailed(connect.attempt, "late"), [])
        self.assertEqual(self.search.waited(first.attempt), [])
        self.assertEqual(self.search.state, State.CONNECTED)


class FollowingTests(SearchTestCase):
    def test_aLostConnectionIsGivenUpAndTheSentinelsAskedAgain(self) -> None:
        self.use(self.search.start())
        drop, ask = self.search.lost(PRIMARY, "connection lost")
        self.assertEqual(drop, Drop(PRIMARY, "connection lost"))
        self.assertEqual((ask.sentinel, self.search.state), (S1, State.ASKING))
        self.assertIsNone(self.search.primary)
        # the same loss, told again (the command and the connection both
        # tell it), or of a primary given up already, changes nothing
        self.assertEqual(self.search.lost(PRIMARY, "connection lost"), [])
        self.use([ask], REPLICA)
        self.assertEqual(self.search.lost(PRIMARY, "READONLY"), [])
        self.assertEqual(self.search.primary, REPLICA)

    def test_theSentinelsAreAskedAgainEveryInterval(self) -> None:
        wait = self.use(self.search.start())
        for _ in range(3):
            self.assertEqual(wait.seconds, 1.0)
            ask = only(self.search.waited(wait.attempt), Ask)
            self.assertEqual(ask.sentinel, S1)
            wait = only(self.search.sentinelAnswered(ask.attempt, PRIMARY), Wait)
            self.assertEqual(self.search.state, State.CONNECTED)

    def test_anotherPrimaryNamedIsSwitchedTo(self) -> None:
        wait = self.use(self.search.start())
        ask = only(self.search.waited(wait.attempt), Ask)
        drop, connect = self.search.sentinelAnswered(ask.attempt, REPLICA)
        self.assertEqual(drop, Drop(PRIMARY, "sentinel 10.0.0.1:26379 names 10.0.1.2:6379 "
                                             "the primary of main now"))
        self.assertEqual((connect.primary, connect.sentinel), (REPLICA, S1))
        self.assertEqual(self.search.state, State.CONNECTING)
        self.assertEqual(self.search.connected(connect.attempt, "master")[0], Use(REPLICA, S1))

    def test_aSentinelThatFailsACheckKeepsThePrimary(self) -> None:
        wait = self.use(self.search.start())
        ask = only(self.search.waited(wait.attempt), Ask)
        wait = only(self.search.sentinelFailed(ask.attempt, "Connection refused"), Wait)
        self.assertEqual((self.search.state, self.search.primary), (State.CONNECTED, PRIMARY))
        # and the next check asks another sentinel
        self.assertEqual(only(self.search.waited(wait.attempt), Ask).sentinel, S2)

    def test_aSentinelThatForgotTheServiceKeepsThePrimary(self) -> None:
        wait = self.use(self.search.start())
        ask = only(self.search.waited(wait.attempt), Ask)
        only(self.search.sentinelAnswered(ask.attempt, None), Wait)
        self.assertEqual(self.search.primary, PRIMARY)

    def test_aLossDuringACheckIgnoresItsAnswer(self) -> None:
        wait = self.use(self.search.start())
        check = only(self.search.waited(wait.attempt), Ask)
        _, ask = self.search.lost(PRIMARY, "connection lost")
        self.assertEqual(self.search.sentinelAnswered(check.attempt, PRIMARY), [])
        self.assertEqual(self.search.state, State.ASKING)
        self.connectVia([ask], REPLICA)


class StopTests(SearchTestCase):
    def test_stopDropsThePrimaryAndFailsWhatWaits(self) -> None:
        wait = self.use(self.search.start())
        drop, fail = self.search.stop()
        self.assertEqual(drop, Drop(PRIMARY, "the connection to Redis is closed"))
        self.assertEqual(fail, Fail("the connection to Redis is closed"))
        self.assertEqual(self.search.state, State.STOPPED)
        self.assertEqual(self.search.waited(wait.attempt), [])
        self.assertEqual(self.search.lost(PRIMARY, "connection lost"), [])
        self.assertEqual(self.search.start(), [])

    def test_stopWhileConnectingIgnoresTheConnection(self) -> None:
        connect = self.connectVia(self.search.start())
        drop, fail = self.search.stop()
        self.assertEqual(drop.primary, PRIMARY)
        self.assertEqual(self.search.connected(connect.attempt, "master"), [])
        self.assertEqual(self.search.state, State.STOPPED)

    def test_aSearchNeedsASentinel(self) -> None:
        self.assertRaises(ValueError, PrimarySearch, [], "main")
