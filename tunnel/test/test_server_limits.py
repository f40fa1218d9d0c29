"""
Tests for L{tunnel.server.limits}: counting failed attempts per source
address in token buckets, and open connections against caps.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tunnel.server import limits
from tunnel.server.limits import (
    FILE_RESERVE,
    ConnectionLimit,
    FailureLimiter,
    TooManyConnections,
    connectionBudget,
    sourceOf,
)


def ipv4(host: str) -> IPv4Address:
    return IPv4Address("TCP", host, 40000)


def ipv6(host: str) -> IPv6Address:
    return IPv6Address("TCP", host, 40000)


class SourceTests(SynchronousTestCase):
    """What address counts as which source."""

    def test_ipv4AddressIsItsOwnSource(self) -> None:
        """An IPv4 address is a source; the port does not matter."""
        self.assertEqual(sourceOf(ipv4("198.51.100.7")), "198.51.100.7")
        self.assertEqual(
            sourceOf(IPv4Address("TCP", "198.51.100.7", 1)),
            sourceOf(IPv4Address("TCP", "198.51.100.7", 2)),
        )

    def test_ipv6AddressCountsAsItsSlash64(self) -> None:
        """An IPv6 address counts as its /64; IPv4-mapped ones as IPv4."""
        self.assertEqual(sourceOf(ipv6("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64")
        self.assertEqual(
            sourceOf(ipv6("2001:db8:1:2::1")), sourceOf(ipv6("2001:db8:1:2:ffff::1"))
        )
        self.assertNotEqual(sourceOf(ipv6("2001:db8:1:2::1")), sourceOf(ipv6("2001:db8:1:3::1")))
        self.assertEqual(sourceOf(ipv6("::ffff:198.51.100.7")), "198.51.100.7")

    def test_addressesWithoutHostShareOneSource(self) -> None:
        """UNIX socket peers, which have no host, are one source."""
        self.assertEqual(sourceOf(UNIXAddress(None)), sourceOf(UNIXAddress(b"/tmp/x")))


class FailureLimiterTests(SynchronousTestCase):
    """A token bucket of failures per source."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = FailureLimiter(self.clock, maxFailures=4, window=8.0)
        self.peer = ipv4("198.51.100.7")

    def test_burstThenSteadyRate(self) -> None:
        """
        A source may fail C{maxFailures} times in a row, then once every
        C{window / maxFailures} seconds.
        """
        for i in range(3):
            self.assertFalse(self.limiter.failed(self.peer))
            self.assertEqual(self.limiter.delay(self.peer), 0)
        self.assertTrue(self.limiter.failed(self.peer))
        self.assertEqual(self.limiter.delay(self.peer), 2.0)
        self.clock.advance(1.5)
        self.assertEqual(self.limiter.delay(self.peer), 0.5)
        self.clock.advance(0.5)
        self.assertEqual(self.limiter.delay(self.peer), 0)
        self.assertTrue(self.limiter.failed(self.peer))
        self.assertEqual(self.limiter.delay(self.peer), 2.0)

    def test_fullBucketAfterTheWindow(self) -> None:
        """After a whole window without failures, a burst is allowed again."""
        for _ in range(4):
            self.limiter.failed(self.peer)
        self.clock.advance(8.0)
        for _ in range(3):
            self.assertFalse(self.limiter.failed(self.peer))

    def test_sourcesAreIndependent(self) -> None:
        """One source's failures do not delay another."""
        for _ in range(4):
            self.limiter.failed(self.peer)
        self.assertEqual(self.limiter.delay(ipv4("198.51.100.8")), 0)

    def test_rememberedSourcesAreBounded(self) -> None:
        """
        Sources whose bucket is full again are forgotten; past C{maxSources},
        the source that failed longest ago is.
        """
        limiter = FailureLimiter(self.clock, maxFailures=4, window=8.0, maxSources=100)
        for i in range(1000):
            for _ in range(4):
                limiter.failed(ipv4(f"10.0.{i // 256}.{i % 256}"))
        self.assertEqual(len(limiter), 100)
        self.assertEqual(limiter.delay(ipv4("10.0.3.231")), 2.0)
        self.assertEqual(limiter.delay(ipv4("10.0.0.0")), 0)
        self.clock.advance(8.0)
        limiter.failed(self.peer)
        self.assertEqual(len(limiter), 1)

    def test_limitsMustBePositive(self) -> None:
        """Zero or negative limits are refused."""
        for arguments in ({"maxFailures": 0}, {"window": 0}, {"maxSources": 0}):
            self.assertRaises(ValueError, FailureLimiter, self.clock, **arguments)


class ConnectionLimitTests(SynchronousTestCase):
    """Open connections counted against a total and a per-source cap."""

    def test_totalCap(self) -> None:
        """Past C{maxConnections}, whatever the source, a connection is refused."""
        limit = ConnectionLimit(maxConnections=3, maxPerSource=None)
        for i in range(3):
            limit.admit(ipv4(f"198.51.100.{i}"))
        with self.assertRaises(TooManyConnections) as caught:
            limit.admit(ipv4("198.51.100.9"))
        self.assertEqual(str(caught.exception), "the server has as many connections open as it may")
        self.assertEqual((limit.total, limit.refused), (3, 1))

    def test_perSourceCap(self) -> None:
        """
        Past C{maxPerSource}, a source's connections are refused; another
        source's are not. An IPv6 /64 is one source.
        """
        limit = ConnectionLimit(maxConnections=None, maxPerSource=2)
        limit.admit(ipv6("2001:db8:1:2::1"))
        limit.admit(ipv6("2001:db8:1:2::2"))
        with self.assertRaises(TooManyConnections) as caught:
            limit.admit(ipv6("2001:db8:1:2:ffff::3"))
        self.assertEqual(str(caught.exception), "your address has as many connections open as it may")
        limit.admit(ipv6("2001:db8:1:3::1"))
        self.assertEqual(limit.openFrom(ipv6("2001:db8:1:2::9")), 2)

    def test_releaseFreesThePlaceOnce(self) -> None:
        """A released slot frees its place; releasing it again changes nothing."""
        limit = ConnectionLimit(maxConnections=1, maxPerSource=1)
        slot = limit.admit(ipv4("198.51.100.7"))
        slot.release()
        slot.release()
        self.assertEqual((limit.total, limit.openFrom(ipv4("198.51.100.7"))), (0, 0))
        limit.admit(ipv4("198.51.100.7"))
        self.assertRaises(TooManyConnections, limit.admit, ipv4("198.51.100.8"))

    def test_sessionCountsForItsSourceOnly(self) -> None:
        """
        A slot that became a tunnel session leaves the total (another
        connection may take its place) and stays in its source's count,
        until it is released.
        """
        limit = ConnectionLimit(maxConnections=1, maxPerSource=2)
        session = limit.admit(ipv4("198.51.100.7"))
        session.becameSession()
        session.becameSession()
        self.assertEqual((limit.total, limit.sessions), (0, 1))
        limit.admit(ipv4("198.51.100.7"))
        self.assertRaises(TooManyConnections, limit.admit, ipv4("198.51.100.8"))
        self.assertRaises(TooManyConnections, limit.admit, ipv4("198.51.100.7"))
        session.release()
        self.assertEqual((limit.total, limit.sessions), (1, 0))
        self.assertEqual(limit.openFrom(ipv4("198.51.100.7")), 1)

    def test_capsMustBePositive(self) -> None:
        """Zero or negative caps are refused; L{None} is no cap."""
        self.assertRaises(ValueError, ConnectionLimit, 0, 1)
        self.assertRaises(ValueError, ConnectionLimit, 1, 0)
        limit = ConnectionLimit(None, None)
        for _ in range(1000):
            limit.admit(ipv4("198.51.100.7"))


class ConnectionBudgetTests(SynchronousTestCase):
    """The connection cap is fitted to the open-file limit."""

    def fakeLimit(self, soft: int) -> None:
        import resource

        self.patch(resource, "getrlimit", lambda which: (soft, soft))

    def test_fitsTheOpenFileLimit(self) -> None:
        """A cap the open-file limit cannot hold is lowered to fit, with a reserve."""
        self.fakeLimit(1024)
        self.assertEqual(connectionBudget(10000), 1024 - FILE_RESERVE)
        self.assertEqual(connectionBudget(100), 100)

    def test_unlimited(self) -> None:
        """Without an open-file limit, the cap stays."""
        import resource

        self.fakeLimit(resource.RLIM_INFINITY)
        self.assertEqual(connectionBudget(10000), 10000)
        self.assertEqual(limits.MAX_CONNECTIONS, 10000)
