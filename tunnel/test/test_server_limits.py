"""
Tests for L{tunnel.server.limits}: counting failed attempts per source
address in token buckets.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tunnel.server.limits import FailureLimiter, sourceOf


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
