"""
Limits per source address:

  - failed attempts, so that nobody can try identifiers quickly: each
    address may fail a few times in a row, then only at a slow, steady rate
    (a token bucket: L{FailureLimiter});
  - open connections, in all and per source (L{ConnectionLimit}).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict

import attrs
from twisted.internet.interfaces import IAddress, IReactorTime

#: The most public connections a tunnel server keeps open by default.
MAX_CONNECTIONS = 10000
#: The most public connections one source (see L{sourceOf}) may keep open by
#: default.
MAX_CONNECTIONS_PER_SOURCE = 256
#: File descriptors a server keeps for itself, out of its open-file limit,
#: when it fits its connection cap to that limit (see L{connectionBudget}):
#: listeners, logs, the hosts file, the reactor's own.
FILE_RESERVE = 64


def connectionBudget(wanted: int) -> int:
    """
    C{wanted}, or fewer if the process's open-file limit (less
    L{FILE_RESERVE}) does not let it hold that many connections: a
    connection refused with a C{503} is better than one the kernel queues
    while C{accept} fails for want of file descriptors.
    """
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - FILE_RESERVE))


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


class TooManyConnections(Exception):
    """A new connection would go past a L{ConnectionLimit}; the message says which."""


class _SlotState(enum.Enum):
    #: Counted in the total and in its source.
    COUNTED = "counted"
    #: A tunnel session: counted in its source only.
    SESSION = "session"
    #: No longer counted.
    RELEASED = "released"


@attrs.define(eq=False)
class ConnectionSlot:
    """
    The place of one open connection in a L{ConnectionLimit}, from
    L{ConnectionLimit.admit} until L{release}.

    @ivar source: the source the connection counts for.
    """

    _limit: ConnectionLimit
    source: str
    _state: _SlotState = _SlotState.COUNTED

    def becameSession(self) -> None:
        """
        The connection now carries a tunnel session: it no longer takes a
        place in the total (still one of its source's), so that a public
        flood that fills the total cannot push established tunnels out, nor
        tunnels take public places.
        """
        if self._state is _SlotState.COUNTED:
            self._state = _SlotState.SESSION
            self._limit._total -= 1
            self._limit._sessions += 1

    def release(self) -> None:
        """The connection is gone; releasing it again does nothing."""
        if self._state is _SlotState.RELEASED:
            return
        if self._state is _SlotState.COUNTED:
            self._limit._total -= 1
        else:
            self._limit._sessions -= 1
        self._state = _SlotState.RELEASED
        self._limit._releaseSource(self.source)


class ConnectionLimit:
    """
    Counts open connections against two caps: C{maxConnections} in all,
    and C{maxPerSource} per source address (see L{sourceOf}). Tunnel
    sessions count for their source only (see
    L{ConnectionSlot.becameSession}).

    @ivar maxConnections: the most connections in all, or L{None} for no
        limit.
    @ivar maxPerSource: the most connections of one source, or L{None} for
        no limit.
    @ivar refused: how many connections were refused so far.
    """

    def __init__(
        self,
        maxConnections: int | None = MAX_CONNECTIONS,
        maxPerSource: int | None = MAX_CONNECTIONS_PER_SOURCE,
    ) -> None:
        """
        @raise ValueError: if a cap is not positive.
        """
        if (maxConnections is not None and maxConnections < 1) or (
            maxPerSource is not None and maxPerSource < 1
        ):
            raise ValueError("the connection limits must be positive")
        self.maxConnections = maxConnections
        self.maxPerSource = maxPerSource
        self.refused = 0
        self._total = 0
        self._sessions = 0
        self._perSource: dict[str, int] = {}

    @property
    def total(self) -> int:
        """The connections counted in the total: all but tunnel sessions."""
        return self._total

    @property
    def sessions(self) -> int:
        """The connections that carry tunnel sessions."""
        return self._sessions

    def openFrom(self, address: IAddress) -> int:
        """How many connections the source of C{address} has open."""
        return self._perSource.get(sourceOf(address), 0)

    def admit(self, address: IAddress) -> ConnectionSlot:
        """
        Count a new connection from C{address}.

        @return: its slot, to release once the connection is gone.
        @raise TooManyConnections: if either cap is reached; nothing is
            counted then but the refusal (L{refused}).
        """
        source = sourceOf(address)
        opened = self._perSource.get(source, 0)
        if self.maxConnections is not None and self._total >= self.maxConnections:
            self.refused += 1
            raise TooManyConnections("the server has as many connections open as it may")
        if self.maxPerSource is not None and opened >= self.maxPerSource:
            self.refused += 1
            raise TooManyConnections("your address has as many connections open as it may")
        self._perSource[source] = opened + 1
        self._total += 1
        return ConnectionSlot(self, source)

    def _releaseSource(self, source: str) -> None:
        remaining = self._perSource[source] - 1
        if remaining:
            self._perSource[source] = remaining
        else:
            del self._perSource[source]
