"""
A connection to the Redis primary that Sentinel names, and names again
after a failover: what a node of the cluster talks to with a
C{redis+sentinel://} URL, in place of C{txredisapi.lazyConnection}.

L{tunnel.cluster.failover.PrimarySearch} decides; L{SentinelConnection}
does what it says over the network, one C{txredisapi} protocol per
connection: it asks the sentinels C{SENTINEL get-master-addr-by-name},
connects to the primary named (C{AUTH}, C{SELECT}), checks that its
C{ROLE} is C{master}, sends the commands there, and asks the sentinels
again every second and whenever the connection is lost or a command
meets a replica (C{READONLY}).

While it looks for a primary, commands wait for it (the callers time
them out: see L{tunnel.cluster.scripts}); once every sentinel failed in a
round, they fail with L{PrimaryUnavailable}, a C{txredisapi.ConnectionError},
which the cluster takes as Redis unreachable. A command that met a
replica fails the same way. The scripts a new primary lacks are sent
again on its C{NOSCRIPT} answer (L{tunnel.cluster.scripts.Script}).

(C{txredisapi.Sentinel} does some of this, but speaks no TLS to the
primary, keeps using a primary that turned replica, uses the global
reactor and waits up to 10 s on sentinels that do not answer.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.cluster.failover import (
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
from tunnel.cluster.settings import NodeAddress, SentinelAddress

#: Makes the TLS options for a connection to a host, or L{None} for none.
TLSOptions = Callable[[str], IOpenSSLClientConnectionCreator]


class PrimaryUnavailable(txredisapi.ConnectionError):
    """
    No primary to send a command to: the sentinels name none that answers,
    or the one in use turned out a replica.
    """


class SentinelConnection:
    """
    The commands of the cluster's store (L{tunnel.cluster.scripts.Redis})
    sent to whichever Redis the sentinels of C{address} name the primary.
    It starts looking at once, as C{txredisapi.lazyConnection} connects at
    once.

    @ivar primary: the primary in use, or L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        address: SentinelAddress,
        reactor: Any,
        tls: TLSOptions | None = None,
        timeout: float = 5.0,
        checkInterval: float = 1.0,
    ) -> None:
        """
        @param address: the sentinels, the service, the database and the
            passwords.
        @param reactor: what connects and times.
        @param tls: the TLS options for the sentinels and the primary, by
            host name, or L{None} to speak in clear.
        @param timeout: seconds a sentinel or a primary has to take a
            connection and answer what it is asked, before the next one is.
        @param checkInterval: seconds between two questions to the
            sentinels while a primary is in use.
        """
        self._address = address
        self._reactor = reactor
        self._tls = tls
        self._timeout = timeout
        self._search = PrimarySearch(address.sentinels, address.service, checkInterval)
        self.primary: NodeAddress | None = None
        self._protocol: txredisapi.RedisProtocol | None = None
        self._candidate: txredisapi.RedisProtocol | None = None
        self._sentinelProtocols: dict[NodeAddress, txredisapi.RedisProtocol] = {}
        self._opened: set[txredisapi.RedisProtocol] = set()
        self._inFlight: set[Deferred[Any]] = set()
        self._waiters: list[Deferred[txredisapi.RedisProtocol]] = []
        self._timer: IDelayedCall | None = None
        self._unavailableSince: float | None = None
        self._do(self._search.start())

    # -- the commands --------------------------------------------------------

    def evalsha(
        self, sha1_hash: str, keys: Sequence[str] = (), args: Sequence[object] = ()
    ) -> Deferred[Any]:
        """Run the cached script of digest C{sha1_hash}."""
        return self._command("evalsha", sha1_hash, keys, args)

    def eval(
        self, script: str, keys: Sequence[str] = (), args: Sequence[object] = ()
    ) -> Deferred[Any]:
        """Run C{script}, caching it in Redis."""
        return self._command("eval", script, keys, args)

    def get(self, key: str) -> Deferred[Any]:
        """The value of C{key}, or L{None}."""
        return self._command("get", key)

    def ping(self) -> Deferred[Any]:
        """C{PING} the primary."""
        return self._command("ping")

    def execute_command(self, *args: object) -> Deferred[Any]:
        """Any other command, as C{txredisapi} spells it."""
        return self._command("execute_command", *args)

    def disconnect(self) -> Deferred[None]:
        """Stop: close every connection; fires once they are all closed."""
        self._do(self._search.stop())
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for pending in list(self._inFlight):
            pending.cancel()
        closing = [protocol.whenDisconnected() for protocol in self._opened]
        for protocol in list(self._opened):
            protocol.transport.loseConnection()
        return defer.gatherResults(closing).addCallback(lambda _: None)

    def _command(self, name: str, *args: object) -> Deferred[Any]:
        state = self._search.state
        if state is State.CONNECTED and self._protocol is not None:
            return self._send(self._protocol, name, args)
        if state in (State.ASKING, State.CONNECTING):
            waiter: Deferred[txredisapi.RedisProtocol] = Deferred(self._waiters.remove)
            self._waiters.append(waiter)
            return waiter.addCallback(self._send, name, args)
        return defer.fail(PrimaryUnavailable(self._search.why))

    def _send(
        self, protocol: txredisapi.RedisProtocol, name: str, args: Sequence[object]
    ) -> Deferred[Any]:
        primary = self.primary
        sending = defer.maybeDeferred(getattr(protocol, name), *args)
        return sending.addErrback(self._commandFailed, protocol, primary)

    def _commandFailed(
        self, failure: Failure, protocol: txredisapi.RedisProtocol, primary: NodeAddress
    ) -> Failure:
        if failure.check(txredisapi.ResponseError) and str(failure.value).startswith("READONLY"):
            why = f"the primary {primary} is a replica now (READONLY)"
            self._lost(protocol, why)
            return Failure(PrimaryUnavailable(why))
        if failure.check(txredisapi.ConnectionError) and not failure.check(PrimaryUnavailable):
            self._lost(protocol, failure.getErrorMessage() or "connection lost")
        return failure

    def _lost(self, protocol: txredisapi.RedisProtocol, why: str) -> None:
        if protocol is self._protocol and self.primary is not None:
            self._do(self._search.lost(self.primary, why))

    # -- doing what the search says ------------------------------------------

    def _do(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, (Ask, Connect, Wait)) and action.attempt != self._search.attempt:
                # what an action done before (the callbacks of failed
                # commands) made the search do since makes this one stale
                continue
            if isinstance(action, Ask):
                self._ask(action)
            elif isinstance(action, Connect):
                self._connect(action)
            elif isinstance(action, Use):
                self._use(action)
            elif isinstance(action, Drop):
                self._drop(action)
            elif isinstance(action, Fail):
                self._fail(action)
            elif isinstance(action, Wait):
                self._wait(action)

    def _track(self, pending: Deferred[Any]) -> Deferred[Any]:
        """Time C{pending} out, and cancel it on L{disconnect}."""
        self._inFlight.add(pending)
        pending.addTimeout(self._timeout, self._reactor)

        def done(result: object) -> object:
            self._inFlight.discard(pending)
            return result

        return pending.addBoth(done)

    def _ask(self, ask: Ask) -> None:
        asking = self._track(self._askSentinel(ask.sentinel))

        def failed(failure: Failure) -> None:
            self._forgetSentinel(ask.sentinel)
            self._do(self._search.sentinelFailed(ask.attempt, _describe(failure, self._timeout)))

        asking.addCallbacks(
            lambda primary: self._do(self._search.sentinelAnswered(ask.attempt, primary)), failed
        ).addErrback(self._bug)

    @defer.inlineCallbacks
    def _askSentinel(self, sentinel: NodeAddress) -> Any:
        protocol = self._sentinelProtocols.get(sentinel)
        if protocol is None or not protocol.connected:
            protocol = yield self._open(sentinel, self._address.sentinelPassword, 0)
            self._sentinelProtocols[sentinel] = protocol
        reply = yield protocol.execute_command(
            "SENTINEL", "get-master-addr-by-name", self._address.service
        )
        if reply is None:
            return None
        host, port = reply
        return NodeAddress(str(host), int(port))

    def _forgetSentinel(self, sentinel: NodeAddress) -> None:
        protocol = self._sentinelProtocols.pop(sentinel, None)
        if protocol is not None:
            protocol.transport.loseConnection()

    def _connect(self, connect: Connect) -> None:
        connecting = self._track(self._connectPrimary(connect.primary))

        def connected(result: tuple[txredisapi.RedisProtocol, str]) -> None:
            protocol, role = result
            self._candidate = protocol
            self._do(self._search.connected(connect.attempt, role))
            if self._candidate is protocol:
                # not taken: a replica, or an attempt the search moved on from
                self._candidate = None
                protocol.transport.loseConnection()

        def failed(failure: Failure) -> None:
            why = _describe(failure, self._timeout)
            self._do(self._search.connectFailed(connect.attempt, why))

        connecting.addCallbacks(connected, failed).addErrback(self._bug)

    @defer.inlineCallbacks
    def _connectPrimary(self, primary: NodeAddress) -> Any:
        protocol = yield self._open(primary, self._address.password, self._address.db)
        try:
            role = yield protocol.role()
        except BaseException:
            protocol.transport.loseConnection()
            raise
        return protocol, str(role[0])

    @defer.inlineCallbacks
    def _open(self, address: NodeAddress, password: str | None, db: int) -> Any:
        """A connection to C{address}, authenticated, on database C{db}."""
        endpoint: Any = HostnameEndpoint(
            self._reactor, address.host, address.port, timeout=self._timeout
        )
        if self._tls is not None:
            endpoint = wrapClientTLS(self._tls(address.host), endpoint)
        protocol = yield endpoint.connect(_FACTORY)
        self._opened.add(protocol)
        protocol.whenDisconnected().addCallback(self._opened.discard)
        try:
            if password is not None:
                yield protocol.auth(password)
            if db:
                yield protocol.select(db)
        except BaseException:
            protocol.transport.loseConnection()
            raise
        return protocol

    def _use(self, use: Use) -> None:
        protocol, self._candidate = self._candidate, None
        assert protocol is not None
        self._protocol = protocol
        self.primary = use.primary
        protocol.whenDisconnected().addCallback(self._lost, "connection lost")
        if self._unavailableSince is None:
            self._log.info(
                "Redis primary of {service}: {primary}, as sentinel {sentinel} says",
                service=self._address.service, primary=str(use.primary),
                sentinel=str(use.sentinel),
            )
        else:
            self._log.info(
                "Redis primary of {service}: {primary}, as sentinel {sentinel} says, after"
                " {seconds:.1f} s without one",
                service=self._address.service, primary=str(use.primary),
                sentinel=str(use.sentinel),
                seconds=self._reactor.seconds() - self._unavailableSince,
            )
            self._unavailableSince = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(protocol)

    def _drop(self, drop: Drop) -> None:
        protocol, self._protocol = self._protocol, None
        self.primary = None
        if protocol is None:
            return
        protocol.transport.loseConnection()
        if self._search.state is not State.STOPPED:
            self._log.warn(
                "Left the Redis primary {primary} of {service}: {why}; asking the sentinels",
                primary=str(drop.primary), service=self._address.service, why=drop.why,
            )

    def _fail(self, fail: Fail) -> None:
        if self._unavailableSince is None and self._search.state is not State.STOPPED:
            self._unavailableSince = self._reactor.seconds()
            self._log.warn(
                "No Redis primary of {service} for now: {why}; asking the sentinels again",
                service=self._address.service, why=fail.why,
            )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(PrimaryUnavailable(fail.why))

    def _wait(self, wait: Wait) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._reactor.callLater(
            wait.seconds, lambda: self._do(self._search.waited(wait.attempt))
        )

    def _bug(self, failure: Failure) -> None:
        self._log.failure("Redis Sentinel connection: unexpected failure", failure)


class _ProtocolFactory(Factory):
    """Makes the C{txredisapi} protocol of one connection, which asks nothing of it."""

    protocol = txredisapi.RedisProtocol

    noisy = False


_FACTORY = _ProtocolFactory()


def _describe(failure: Failure, timeout: float) -> str:
    """What went wrong, in a few words."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return f"no answer within {timeout:g} s"
    return failure.getErrorMessage() or failure.type.__name__
