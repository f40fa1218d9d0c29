"""
Limiting failed attempts per source address, so that nobody can try
identifiers quickly: each address may fail a few times in a row, then only
at a slow, steady rate (a token bucket).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

import attrs
from twisted.internet.interfaces import IAddress, IReactorTime


def sourceOf(address: IAddress) -> str:
    """
    The source an address counts as: its IP address; for IPv6 its /64
    network, which one host usually has all of; for a UNIX socket (or
    another address without a host) the kind of address, shared by all.
    """
    host = getattr(address, "host", None)
    if host is None:
        return type(address).__name__
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@attrs.define
class _Bucket:
    tokens: float
    updated: float


class FailureLimiter:
    """
    Counts failures per source address (see L{sourceOf}) in token buckets:
    a source may fail C{maxFailures} times in a row; after that it must wait
    C{window / maxFailures} seconds per further attempt, so that over time
    it fails at most C{maxFailures} times per C{window}. Successes cost
    nothing.

    At most C{maxSources} sources are remembered: a source whose bucket is
    full again is forgotten, and past the bound the source that failed
    longest ago is.

    @ivar maxFailures: failures a source may have in a row.
    @ivar window: seconds in which C{maxFailures} failures come back.
    """

    def __init__(
        self,
        clock: IReactorTime,
        maxFailures: int = 10,
        window: float = 60.0,
        maxSources: int = 10000,
    ) -> None:
        """
        @raise ValueError: if a limit is not positive.
        """
        if maxFailures < 1 or window <= 0 or maxSources < 1:
            raise ValueError("the limits of failed attempts must be positive")
        self.maxFailures = maxFailures
        self.window = window
        self._clock = clock
        self._maxSources = maxSources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def delay(self, address: IAddress) -> float:
        """
        How long the source of C{address} must wait before its next
        attempt: 0 when it may try now.
        """
        bucket = self._refilled(sourceOf(address))
        if bucket is None or bucket.tokens >= 1:
            return 0.0
        return (1 - bucket.tokens) * self.window / self.maxFailures

    def failed(self, address: IAddress) -> bool:
        """
        Count a failed attempt from the source of C{address}.

        @return: whether the source must now wait before its next attempt.
        """
        source = sourceOf(address)
        bucket = self._refilled(source)
        if bucket is None:
            bucket = self._buckets[source] = _Bucket(self.maxFailures, self._clock.seconds())
        self._buckets.move_to_end(source)
        bucket.tokens = max(bucket.tokens - 1, 0.0)
        self._forgetOld()
        return bucket.tokens < 1

    def __len__(self) -> int:
        """How many sources are remembered."""
        return len(self._buckets)

    def _refilled(self, source: str) -> _Bucket | None:
        bucket = self._buckets.get(source)
        if bucket is not None:
            now = self._clock.seconds()
            rate = self.maxFailures / self.window
            bucket.tokens = min(self.maxFailures, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        return bucket

    def _forgetOld(self) -> None:
        # The buckets are in the order of their last failure: the first
        # ones are the likeliest to be full again.
        while self._buckets:
            source, bucket = next(iter(self._buckets.items()))
            if len(self._buckets) <= self._maxSources:
                refilled = self._refilled(source)
                if refilled is None or refilled.tokens < self.maxFailures:
                    return
            del self._buckets[source]
