"""
Which nodes hold a session of which identifier, kept in Redis under leases.

A node's L{SessionDirectory} registers the node (its id and the address of
its node link), records every session the node holds (L{claim}) and keeps
the record and all the claims alive by renewing them every third of the
lease. Other nodes ask it which nodes hold a session for an identifier
(L{holders}). A node that stops renewing, because it stopped, crashed or
lost Redis, drops out once its lease has run out, without anyone
cleaning up after it.

Identifiers never reach Redis: callers name one by a key, the hex HMAC of
the identifier, computed elsewhere; here it is an opaque string of
C{[0-9a-f]}.

Leases run on Redis's clock, not the nodes' (the machines' clocks differ):
every claim, renewal and lookup is a Lua script that reads
C{redis.call('TIME')}, in milliseconds. The schema, under a prefix
(C{"tunnel:"} by default):

  - C{{prefix}node:{node}}: a string, the node's link address
    (C{"HOST:PORT"}), expiring (C{PX}) one lease after the node's last
    renewal. A claim of a node without this record is not live.
  - C{{prefix}claims:{key}}: a hash, node id -> the access text the node
    stored with its claim (C{""} for none).
  - C{{prefix}expiry:{key}}: a sorted set, node id -> when that node's
    claim expires, in milliseconds of Redis's clock.

Both structures of a key expire (C{PEXPIRE}) with the last of its claims:
a key no node renews disappears from Redis by itself, and so does
everything else, so what Redis holds stays bounded by the live sessions.
Lookups and renewals drop the expired claims of the keys they touch.

One script call renews the node record and every claim of the node, each
period: the cost is one round trip per period, however many sessions the
node holds. A renewal re-creates whatever Redis has lost (a restart or a
flush), so a node resynchronises by itself at the next period. Scripts are
run by C{EVALSHA} and sent again on C{NOSCRIPT}.

The scripts name keys they compute (the node records, in a lookup), so
this needs one Redis (with replicas and Sentinel, say: see
L{tunnel.cluster.sentinel}), not a Redis Cluster.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.cluster.scripts import StoreUnavailable, Redis, Script, unavailable


@attrs.frozen
class Holder:
    """
    A node holding a session of an identifier.

    @ivar node: the node's id.
    @ivar address: where its node link listens, C{"HOST:PORT"} as the node
        registered it.
    @ivar access: the opaque text the claiming node stored with its claim
        (C{""} for none).
    """

    node: str
    address: str
    access: str


#: What every script starts with: the time on Redis's clock, in
#: milliseconds, and the dropping of a key's expired claims.
_PRELUDE = """
local function now()
    local time = redis.call('TIME')
    return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
local function tidy(claims, expiry, at)
    local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', at)
    for _, node in ipairs(gone) do
        redis.call('HDEL', claims, node)
    end
    if #gone > 0 then
        redis.call('ZREMRANGEBYSCORE', expiry, '-inf', at)
    end
end
"""


#: Renew (or make) the node record and claims. KEYS: the node record, then
#: the claims hash and expiry set of each key. ARGV: the node, its
#: address, the lease in milliseconds, then the access of each key.
_RENEW = Script(_PRELUDE + """
local at = now()
local lease = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[2], 'PX', lease)
for i = 2, #KEYS, 2 do
    local claims, expiry = KEYS[i], KEYS[i + 1]
    tidy(claims, expiry, at)
    redis.call('HSET', claims, ARGV[1], ARGV[3 + i / 2])
    redis.call('ZADD', expiry, at + lease, ARGV[1])
    local last = redis.call('ZRANGE', expiry, -1, -1, 'WITHSCORES')
    local left = tonumber(last[2]) - at
    redis.call('PEXPIRE', claims, left)
    redis.call('PEXPIRE', expiry, left)
end
return (#KEYS - 1) / 2
""")

#: The live claims of a key but one node's, freshest first, as JSON: a list
#: of C{[node, address, access]}. KEYS: the claims hash and expiry set.
#: ARGV: the prefix of node records, the node to leave out.
_HOLDERS = Script(_PRELUDE + """
local at = now()
tidy(KEYS[1], KEYS[2], at)
local found = {}
local live = redis.call('ZREVRANGEBYSCORE', KEYS[2], '+inf', string.format('(%d', at))
for _, node in ipairs(live) do
    if node ~= ARGV[2] then
        local address = redis.call('GET', ARGV[1] .. node)
        if address then
            table.insert(found, {node, address, redis.call('HGET', KEYS[1], node) or ''})
        end
    end
end
return cjson.encode(found)
""")

#: Withdraw a node's claims and, if named, its record. KEYS: the node
#: record or C{""}, then the claims hash and expiry set of each key. ARGV:
#: the node.
_WITHDRAW = Script(_PRELUDE + """
local at = now()
if KEYS[1] ~= '' then
    redis.call('DEL', KEYS[1])
end
for i = 2, #KEYS, 2 do
    redis.call('HDEL', KEYS[i], ARGV[1])
    redis.call('ZREM', KEYS[i + 1], ARGV[1])
    tidy(KEYS[i], KEYS[i + 1], at)
end
return (#KEYS - 1) / 2
""")

_KEY = re.compile(r"[0-9a-f]+")


class SessionDirectory:
    """
    Which nodes hold a session of which identifier, in Redis, under leases
    (see the module's description).

    It is a readiness check (L{tunnel.server.health.ReadinessCheck}) of
    name C{"redis"}: a node whose claims may have lapsed in Redis is not
    ready.

    @ivar name: see L{tunnel.server.health.ReadinessCheck.name}.
    @ivar address: where this node's link listens, C{"HOST:PORT"}; it may
        be set (once the link listens) until L{start}.
    """

    name = "redis"

    _log = Logger()

    def __init__(
        self,
        redis: Redis,
        node: str,
        address: str,
        lease: float = 10.0,
        clock: IReactorTime | None = None,
        prefix: str = "tunnel:",
        timeout: float | None = None,
    ) -> None:
        """
        @param redis: a C{txredisapi} connection, such as
            C{txredisapi.lazyConnection(...)}.
        @param node: this node's id.
        @param address: where this node's link listens, C{"HOST:PORT"}.
        @param lease: how long, in seconds, a claim and the node record last
            in Redis after their last renewal; they are renewed every third
            of it.
        @param clock: what schedules renewals and times Redis out; the
            global reactor by default.
        @param prefix: what the names of this directory's Redis keys start
            with.
        @param timeout: how long, in seconds, to wait for Redis's answer
            before taking it as unreachable; a third of the lease by
            default, so that one renewal gives up before the next is due.
        """
        if not node:
            raise ValueError("a node needs an id")
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self._redis = redis
        self._node = node
        self.address = address
        self._lease = lease
        self._leaseMs = max(1, round(lease * 1000))
        self._clock: IReactorTime = clock  # type: ignore[assignment]
        self._prefix = prefix
        self._timeout = lease / 3 if timeout is None else timeout
        self._claims: dict[str, str] = {}
        self._loop: LoopingCall | None = None
        self._looping: Deferred[LoopingCall] | None = None
        self._startedAt = 0.0
        self._renewedAt: float | None = None
        self._renewalError: StoreUnavailable | None = None
        self._renewalWaiters: list[Deferred[None]] = []
        self._downSince: float | None = None

    # -- the node's life ---------------------------------------------------

    def start(self) -> None:
        """
        Register the node and renew its record and claims every third of
        the lease, from now on, until L{stop}.
        """
        if self._loop is not None:
            return
        self._startedAt = self._clock.seconds()
        self._renewedAt = None
        self._renewalError = None
        self._loop = LoopingCall(self.renew)
        self._loop.clock = self._clock
        self._looping = self._loop.start(self._lease / 3, now=True)
        self._looping.addErrback(self._loopFailed)

    def _loopFailed(self, failure: Failure) -> None:
        self._log.failure("session directory: renewals stopped", failure)

    def stop(self) -> Deferred[None]:
        """
        Stop renewing, then delete the node record and all the node's
        claims from Redis, and forget them. Fires once done, even if Redis
        could not be reached (a warning is logged then: the record and
        the claims lapse by themselves within a lease).
        """
        loop, self._loop = self._loop, None
        looping, self._looping = self._looping, None
        claims, self._claims = self._claims, {}
        renewing: Deferred[Any] = defer.succeed(None)
        if loop is not None and looping is not None:
            loop.stop()
            # a renewal under way ends first, or it would bring back what
            # this deletes
            renewing = looping
        keys = [self._nodeKey()] + self._claimKeys(claims)

        def withdraw(_: object) -> Deferred[Any]:
            return self._call(_WITHDRAW, keys, [self._node])

        def failed(failure: Failure) -> None:
            failure.trap(StoreUnavailable)
            self._log.warn(
                "session directory: could not withdraw node {node} from Redis ({error});"
                " its record and {count} claims lapse within {lease} s",
                node=self._node, error=str(failure.value), count=len(claims), lease=self._lease,
            )

        return renewing.addCallback(withdraw).addCallbacks(lambda _: None, failed)

    def renew(self) -> Deferred[None]:
        """
        Renew the node record and every claim now, in one script call,
        re-creating whatever Redis lost; what L{start} does every third of
        the lease. A renewal already under way is joined, not doubled: it
        renews the claims there were when it began.

        @return: fires once Redis answered or failed to; never fails (see
            L{problem}).
        """
        waiter: Deferred[None] = Deferred()
        self._renewalWaiters.append(waiter)
        if len(self._renewalWaiters) == 1:
            began = self._clock.seconds()
            claims = dict(self._claims)
            self._call(
                _RENEW,
                [self._nodeKey()] + self._claimKeys(claims),
                [self._node, self.address, self._leaseMs, *claims.values()],
            ).addCallbacks(
                self._renewed, self._renewalFailed, callbackArgs=(began,)
            ).addBoth(self._renewalEnded)
        return waiter

    def _renewed(self, _: object, began: float) -> None:
        # Redis timed the lease from some moment after this: counting from
        # here, the node never believes in claims Redis has let lapse
        self._renewedAt = began
        self._renewalError = None

    def _renewalFailed(self, failure: Failure) -> None:
        if failure.check(StoreUnavailable):
            self._renewalError = failure.value
        else:
            self._log.failure("session directory: renewal failed", failure)

    def _renewalEnded(self, _: None) -> None:
        waiters, self._renewalWaiters = self._renewalWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def problem(self) -> str | None:
        """
        L{None} while the last renewal succeeded less than a lease ago:
        Redis still holds this node's claims. Otherwise why not, in one
        line, such as C{"Redis unreachable for 12.3 s: Lost connection"}.

        This is a method, as L{tunnel.server.health.ReadinessCheck} wants.
        """
        if self._loop is None:
            return "the session directory is not started"
        now = self._clock.seconds()
        if self._renewedAt is not None and now - self._renewedAt < self._lease:
            return None
        error = self._renewalError
        if self._renewedAt is None:
            return "Redis not reached yet" + ("" if error is None else f": {error}")
        elapsed = now - self._renewedAt
        if error is None:
            return f"Redis has not answered a renewal for {elapsed:.1f} s"
        return f"Redis {error.what} for {elapsed:.1f} s: {error.why}"

    # -- claims and lookups ------------------------------------------------

    def claim(self, key: str, access: str = "") -> Deferred[None]:
        """
        This node holds a session for C{key}, with C{access} for whoever
        forwards to it: remembered here at once, and renewed until
        L{release} or L{stop}.

        @return: fires once Redis has the claim; fails with
            L{StoreUnavailable} if Redis is unreachable, in which case
            the claim is still remembered, and the first renewal Redis
            answers records it.
        """
        _checkKey(key)
        self._claims[key] = access
        return self._call(
            _RENEW,
            [self._nodeKey()] + self._claimKeys({key: access}),
            [self._node, self.address, self._leaseMs, access],
        ).addCallback(lambda _: None)

    def release(self, key: str) -> Deferred[None]:
        """
        This node no longer holds a session for C{key}: forgotten here at
        once, and removed from Redis.

        @return: fires once Redis removed the claim; fails with
            L{StoreUnavailable} if Redis is unreachable, in which case
            the claim, no longer renewed, lapses within a lease.
        """
        _checkKey(key)
        self._claims.pop(key, None)
        return self._call(
            _WITHDRAW, [""] + self._claimKeys({key: ""}), [self._node]
        ).addCallback(lambda _: None)

    def holders(self, key: str) -> Deferred[list[Holder]]:
        """
        The nodes other than this one holding a live session for C{key}
        (their claim and their node record have not lapsed), the freshest
        claim first.

        @return: fails with L{StoreUnavailable} if Redis is unreachable.
        """
        _checkKey(key)
        return self._call(
            _HOLDERS, self._claimKeys({key: ""}), [self._prefix + "node:", self._node]
        ).addCallback(_parseHolders)

    @property
    def claims(self) -> dict[str, str]:
        """What this node claims, key -> access, as it remembers it."""
        return dict(self._claims)

    # -- Redis -------------------------------------------------------------

    def _nodeKey(self) -> str:
        return f"{self._prefix}node:{self._node}"

    def _claimKeys(self, claims: dict[str, str]) -> list[str]:
        keys = []
        for key in claims:
            keys.append(f"{self._prefix}claims:{key}")
            keys.append(f"{self._prefix}expiry:{key}")
        return keys

    def _call(self, script: Script, keys: list[str], args: list[object]) -> Deferred[Any]:
        """
        Run C{script}, giving up after the timeout; note whether Redis
        answered, and turn its failures into L{StoreUnavailable}.
        """
        try:
            running = script.run(self._redis, keys, args)
        except Exception:
            running = defer.fail()
        running.addTimeout(self._timeout, self._clock)
        return running.addCallbacks(self._answered, self._failed)

    def _answered(self, result: object) -> object:
        if self._downSince is not None:
            self._log.info(
                "session directory: Redis reachable again after {seconds:.1f} s",
                seconds=self._clock.seconds() - self._downSince,
            )
            self._downSince = None
        return result

    def _failed(self, failure: Failure) -> Failure:
        error = unavailable(failure, self._timeout)
        if error is None:
            return failure
        if self._downSince is None:
            self._downSince = self._clock.seconds()
            self._log.warn(
                "session directory: {error}; node {node} keeps its {count} claims"
                " and renews them once Redis answers",
                error=str(error), node=self._node, count=len(self._claims),
            )
        return Failure(error)


def _checkKey(key: str) -> None:
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        raise ValueError(f"a directory key is hex digits, not {key!r}")


def _parseHolders(reply: str | bytes) -> list[Holder]:
    """The holders in the JSON a lookup answered."""
    found = json.loads(reply)
    # Lua's cjson writes an empty table as an object
    if not found:
        return []
    return [Holder(node=node, address=address, access=access) for node, address, access in found]
