"""
Running Lua scripts in Redis, as the cluster's store does: by digest, sent
again when Redis lacks it, and with Redis's failures told apart from the
code's.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol as TypingProtocol, Sequence

import attrs
import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Redis(TypingProtocol):
    """
    What the cluster's store needs of a Redis connection: the script
    commands of a C{txredisapi} connection (C{txredisapi.lazyConnection},
    a pool, ...).
    """

    def evalsha(
        self, sha1_hash: str, keys: Sequence[str] = ..., args: Sequence[object] = ...
    ) -> Deferred[Any]:
        """Run the cached script of digest C{sha1_hash}."""

    def eval(
        self, script: str, keys: Sequence[str] = ..., args: Sequence[object] = ...
    ) -> Deferred[Any]:
        """Run C{script}, caching it in Redis."""

    def get(self, key: str) -> Deferred[Any]:
        """The value of C{key}, or L{None}."""


class StoreUnavailable(Exception):
    """
    Redis did not do what the cluster asked: it is unreachable (no
    connection, or no answer in time) or it answered with an error.

    @ivar what: C{"unreachable"} or C{"refusing"}.
    @ivar why: the error, in a few words.
    """

    def __init__(self, what: str, why: str) -> None:
        super().__init__(what, why)
        self.what = what
        self.why = why

    def __str__(self) -> str:
        return f"Redis {self.what}: {self.why}"


@attrs.frozen
class Script:
    """A Lua script, run by its digest and sent again when Redis lacks it."""

    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _digest(self) -> str:
        return hashlib.sha1(self.source.encode("utf-8")).hexdigest()

    def run(self, redis: Redis, keys: Sequence[str], args: Sequence[object]) -> Deferred[Any]:
        """Run it with C{keys} and C{args}."""
        return redis.evalsha(self.sha, keys, args).addErrback(self._send, redis, keys, args)

    def _send(
        self, failure: Failure, redis: Redis, keys: Sequence[str], args: Sequence[object]
    ) -> Deferred[Any]:
        failure.trap(txredisapi.ScriptDoesNotExist)
        return redis.eval(self.source, keys, args)


def unavailable(failure: Failure, timeout: float) -> StoreUnavailable | None:
    """The L{StoreUnavailable} a failure of Redis amounts to, if any."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return StoreUnavailable("unreachable", f"no answer within {timeout:g} s")
    if failure.check(txredisapi.ConnectionError):
        return StoreUnavailable("unreachable", failure.getErrorMessage() or "no connection")
    if failure.check(txredisapi.RedisError):
        return StoreUnavailable("refusing", failure.getErrorMessage())
    return None
