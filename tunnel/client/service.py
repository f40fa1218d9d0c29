"""
The long-running client: keeps one tunnel up, reconnecting with back-off,
and tells embedding code what state it is in.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Callable, Iterator, Literal

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.client.connect import TunnelClientProtocol
from tunnel.client.endpoint import TunnelEndpoint
from tunnel.client.errors import TunnelInUseError, TunnelRefusedError, TunnelUnsupportedError
from tunnel.client.local import LocalAddress
from tunnel.core.control import Registered, redactIdentifier

StateName = Literal[
    "stopped", "connecting", "connected", "disconnected", "waiting", "stopping", "refused"
]


def reconnectPolicy() -> Callable[[int], float]:
    """
    The default retry policy: the first attempt after a tunnel ended or an
    attempt failed comes within a second (0.375 s plus up to 0.5 s of
    jitter), then the wait grows by a factor of 1.5 up to 10 s, so that a
    client is back within about 10 s of its server, however long it was
    away.
    """
    return backoffPolicy(
        initialDelay=0.25, factor=1.5, maxDelay=10.0, jitter=lambda: random.uniform(0, 0.5)
    )


#: The least seconds a client waits after the server said that another
#: client with its identifier holds the tunnel (C{409}).
IN_USE_RETRY_DELAY = 30.0


@attrs.frozen
class Forward:
    """
    What arrives at one public address goes to one local address.

    @ivar public: the URL the server said (C{https://myapp.example.com/},
        C{tcp://tunnel.example.com:2222}).
    @ivar local: where the client sends it, or L{None} if no C{--local}
        route takes it.
    """

    public: str
    local: LocalAddress | None

    @property
    def destination(self) -> str:
        """Where it leads, for people."""
        return "nothing: no local route takes it" if self.local is None else str(self.local)

    def __str__(self) -> str:
        return f"{self.public} -> {self.destination}"


@attrs.frozen
class ClientState:
    """
    What the client is doing.

    @ivar name: C{"stopped"} (not running), C{"connecting"} (an attempt is
        under way), C{"connected"} (the tunnel is up), C{"disconnected"}
        (the tunnel just ended), C{"waiting"} (for the next attempt, after a
        failure or a disconnection), C{"stopping"} (closing the tunnel
        gracefully) or C{"refused"} (stopped for good: the server refused
        the identifier as many times in a row as the client was told to
        take).
    @ivar detail: a sentence for people: the server, the failure, the delay.
    @ivar since: when the client entered the state, in the clock's seconds.
    @ivar forwards: once C{"connected"}, where each public address the
        server said leads (none from a server that does not say them).
    """

    name: StateName
    detail: str
    since: float
    forwards: tuple[Forward, ...] = ()


class TunnelClientService(Service):
    """
    Keeps a tunnel up through a L{TunnelEndpoint}, on a L{ClientService}:
    after a failed attempt (a refused identifier included) or the end of a
    tunnel it waits as C{retryPolicy} says (by default L{reconnectPolicy}:
    under a second, growing to 10 s); the growth starts over once a tunnel
    is established. A client told to give up after some refusals stops, in
    state C{"refused"}, when the server has refused its identifier that
    many times in a row. Every state change is
    logged and passed to the state observers. Stopping closes the tunnel
    gracefully (see L{TunnelClientProtocol.shutdown}).

    @ivar endpoint: the endpoint the tunnels are made with.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: TunnelEndpoint,
        retryPolicy: Callable[[int], float] | None = None,
        giveUpAfter: int | None = None,
        onRegistered: Callable[[Registered], object] | None = None,
    ) -> None:
        """
        @param endpoint: the endpoint to make tunnels with; its reactor is
            the service's clock.
        @param retryPolicy: the seconds to wait after the given number of
            failed attempts in a row (see L{backoffPolicy}).
        @param giveUpAfter: how many refusals of the identifier in a row
            make the client stop, or L{None} to try for ever.
        @param onRegistered: called with what the server registered for the
            settings' token, each time it does (to keep the identifier for
            the next start); from then on the client connects with that
            identifier (and asks for that subdomain should the server have
            forgotten it).
        """
        self.endpoint = endpoint
        self._clock = endpoint.reactor
        self._retryPolicy = reconnectPolicy() if retryPolicy is None else retryPolicy
        self._giveUpAfter = giveUpAfter
        self._onRegistered = onRegistered
        # What the server said when it closed the last tunnel, if anything.
        self._lastNotice: str | None = None
        self._refusals = 0
        # The least wait before the next attempt, once: set after a 409.
        self._leastNextDelay = 0.0
        self._refusal: str | None = None
        self._identifier = redactIdentifier(endpoint.settings.identifier)
        self._server = endpoint.settings.host or "the tunnel server"
        self._observers: list[Callable[[ClientState], object]] = []
        self._roundTripObservers: list[Callable[[float], object]] = []
        self._state = ClientState("stopped", "not started", self._clock.seconds())
        self._tunnel: TunnelClientProtocol | None = None
        self._lastProblem = ""
        self._stopping = False
        self._insideClientService = 0
        self._clientService = ClientService(
            _ObservedEndpoint(endpoint, self),
            _TunnelObserverFactory(self),
            retryPolicy=self._retryDelay,
            clock=self._clock,
        )

    @property
    def state(self) -> ClientState:
        """The current state."""
        return self._state

    def addStateObserver(self, observer: Callable[[ClientState], object]) -> None:
        """Call C{observer} with each new L{ClientState}."""
        self._observers.append(observer)

    def removeStateObserver(self, observer: Callable[[ClientState], object]) -> None:
        """Stop calling C{observer}."""
        self._observers.remove(observer)

    @property
    def roundTrip(self) -> float | None:
        """
        The seconds the server took to answer the tunnel's last keep-alive
        ping, while a tunnel is up and once it answered one.
        """
        return None if self._tunnel is None else self._tunnel.roundTrip

    def addRoundTripObserver(self, observer: Callable[[float], object]) -> None:
        """Call C{observer} with the round trip of each keep-alive ping answered."""
        self._roundTripObservers.append(observer)

    def _roundTripMeasured(self, seconds: float) -> None:
        for observer in list(self._roundTripObservers):
            observer(seconds)

    def startService(self) -> None:
        """Start connecting."""
        self._stopping = False
        super().startService()
        self._clientService.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop: cancel an attempt under way, or close the tunnel gracefully.

        @return: a L{Deferred} that fires once the connection is closed.
        """
        if not self.running:
            return succeed(None)
        super().stopService()
        self._stopping = True
        tunnel = self._tunnel
        if self._refusal is not None:
            self._setState("stopping", f"giving up: {self._refusal}")
        elif tunnel is None:
            self._setState("stopping", "no longer trying to connect")
        else:
            self._setState(
                "stopping",
                f"closing the tunnel; waiting up to {tunnel.settings.shutdownTimeout} s "
                f"for the open connections ({tunnel.openStreams})",
            )
        if self._insideClientService:
            # The ClientService is in the middle of a transition (a state
            # observer is stopping us): it cannot take a stop until it is done.
            stopped = deferLater(self._clock, 0, self._clientService.stopService)
        else:
            stopped = self._clientService.stopService()
        stopped.addCallback(lambda ignored: self._stopped())
        return stopped

    def _stopped(self) -> None:
        if self._refusal is None:
            self._setState("stopped", "stopped")
        else:
            self._setState("refused", self._refusal)

    # -- what the ClientService tells us -------------------------------------

    def _connecting(self) -> None:
        self._setState("connecting", f"connecting to {self._server}")

    def _connectFailed(self, reason: Failure) -> Failure:
        if self._stopping:
            return reason
        if reason.check(TunnelRefusedError):
            self._log.error(
                "Tunnel identifier {identifier} refused by {server}: {error}",
                server=self._server,
                identifier=self._identifier,
                error=str(reason.value),
            )
            self._lastProblem = f"the server refused identifier {self._identifier}"
            self._countRefusal(
                "check the token, and that the server registers hosts (--domain)"
                if self.endpoint.settings.token is not None and not self.endpoint.settings.identifier
                else "check the identifier, and that the server still has hosts bound to it",
                str(reason.value),
            )
        elif reason.check(TunnelInUseError):
            self._log.error(
                "Another client with identifier {identifier} is connected to {server}: "
                "{error}",
                server=self._server,
                identifier=self._identifier,
                error=str(reason.value),
            )
            self._lastProblem = (
                f"another client with identifier {self._identifier} holds the tunnel"
            )
            self._leastNextDelay = IN_USE_RETRY_DELAY
            if self._giveUpAfter is not None:
                # The server checked that the other client answers: no
                # point in asking again soon.
                self._giveUp(
                    f"{self._server} refused this client ({reason.value}): another client "
                    f"with identifier {self._identifier} is connected; stop one of them, "
                    "or give each its own identifier"
                )
        elif reason.check(TunnelUnsupportedError):
            self._lastProblem = _describe(reason)
            self._log.error("{problem}", problem=self._lastProblem)
            if self._giveUpAfter is not None:
                self._giveUp(f"{self._server}: {self._lastProblem}")
        else:
            self._lastProblem = f"connecting failed: {_describe(reason)}"
        return reason

    def _countRefusal(self, advice: str, error: str) -> None:
        """One more refusal in a row; give up with C{advice} if that makes enough."""
        self._refusals += 1
        if self._giveUpAfter is not None and self._refusals >= self._giveUpAfter:
            said = "" if self._lastNotice is None else (
                f" (when it closed the last tunnel, it said: {self._lastNotice})"
            )
            self._giveUp(
                f"{self._server} refused identifier {self._identifier} {self._refusals} "
                f"time{'s' if self._refusals > 1 else ''} in a row ({error}): {advice}{said}"
            )

    def _giveUp(self, why: str) -> None:
        """Stop for good, in state C{"refused"}, saying C{why}."""
        self._refusal = why
        self._log.error("{refusal}", refusal=why)
        self.stopService()

    def _connected(self, tunnel: TunnelClientProtocol) -> None:
        self._refusals = 0
        self._tunnel = tunnel
        tunnel.onRoundTrip = self._roundTripMeasured
        if tunnel.registered is not None:
            self._adopt(tunnel.registered)
        routes = self.endpoint.settings.routes
        forwards = tuple(
            Forward(address, routes.addressForPublic(address)) for address in tunnel.addresses
        )
        self._setState("connected", f"tunnel to {tunnel.serverName} is up", forwards)
        for forward in forwards:
            self._log.info("Forwarding {forward}", forward=str(forward))

    def _adopt(self, registered: Registered) -> None:
        """Connect with what the server registered from now on, and keep it."""
        self.endpoint.settings = attrs.evolve(
            self.endpoint.settings,
            identifier=registered.identifier,
            subdomain=registered.host.partition(".")[0],
        )
        self._identifier = redactIdentifier(registered.identifier)
        self._log.info(
            "{server} registered {host} for this client, as identifier {identifier}",
            server=self._server,
            host=registered.host,
            identifier=self._identifier,
        )
        if self._onRegistered is not None:
            try:
                self._onRegistered(registered)
            except Exception:
                self._log.failure("Keeping the registration of {host} failed", host=registered.host)

    def _disconnected(self, reason: Failure) -> None:
        notice = None if self._tunnel is None else self._tunnel.notice
        self._tunnel = None
        self._lastNotice = notice
        self._lastProblem = (
            f"the tunnel ended: {_describe(reason)}"
            if notice is None
            else f"the server closed the tunnel: {notice}"
        )
        self._setState("disconnected", self._lastProblem)

    def _retryDelay(self, failedAttempts: int) -> float:
        # After a 409 the other client answers: trying again soon would only
        # make the server ping it again for nothing.
        delay = max(self._retryPolicy(failedAttempts), self._leastNextDelay)
        self._leastNextDelay = 0.0
        with self._calledByClientService():
            self._setState(
                "waiting", f"{self._lastProblem}; trying again in {delay:.1f} s"
            )
        return delay

    @contextmanager
    def _calledByClientService(self) -> Iterator[None]:
        self._insideClientService += 1
        try:
            yield
        finally:
            self._insideClientService -= 1

    def _setState(self, name: StateName, detail: str, forwards: tuple[Forward, ...] = ()) -> None:
        self._state = state = ClientState(name, detail, self._clock.seconds(), forwards)
        self._log.info(
            "Tunnel client ({identifier}) {state}: {detail}",
            identifier=self._identifier,
            state=name,
            detail=detail,
        )
        for observer in list(self._observers):
            try:
                observer(state)
            except Exception:
                self._log.failure("A tunnel state observer failed")


def _describe(reason: Failure) -> str:
    return reason.getErrorMessage().rstrip(".")


@implementer(IStreamClientEndpoint)
class _ObservedEndpoint:
    """Tells the service about each attempt and each failed one."""

    def __init__(self, endpoint: TunnelEndpoint, service: TunnelClientService) -> None:
        self._endpoint = endpoint
        self._service = service

    def __repr__(self) -> str:
        return repr(self._endpoint)

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        with self._service._calledByClientService():
            self._service._connecting()
            return self._endpoint.connect(protocolFactory).addErrback(
                self._service._connectFailed
            )


class _TunnelObserverFactory(Factory):
    """Builds the protocols that watch the tunnels for the service."""

    noisy = False

    def __init__(self, service: TunnelClientService) -> None:
        self._service = service

    def buildProtocol(self, addr: object) -> _TunnelObserver:
        return _TunnelObserver(self._service)


class _TunnelObserver(Protocol):
    """Tells the service when a tunnel is up and when it ends."""

    def __init__(self, service: TunnelClientService) -> None:
        self._service = service

    def connectionMade(self) -> None:
        with self._service._calledByClientService():
            self._service._connected(self.transport)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        with self._service._calledByClientService():
            self._service._disconnected(reason)
