"""
The client's end of one tunnel connection: the C{CONNECT} exchange, the
yamux session that follows, the control stream and the streams the server
asks for.
"""

from __future__ import annotations

import secrets
from typing import Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IProtocol, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.client.address import joinHostPort
from tunnel.client.control import AnnouncedStreamFactory, ControlStream
from tunnel.client.local import DEFAULT_MAX_LOCAL_CONNECTIONS, LocalConnector, LocalRoutes
from tunnel.core.clientsession import (
    Action,
    ClientTunnel,
    SetupFailed,
    StartSession,
    State,
    Step,
)
from tunnel.core.access import AccessRule
from tunnel.core.control import (
    ACCESS,
    ADDRESSES,
    NOTICES,
    SERVER_STREAMS,
    ControlMessage,
    Registered,
    connectRequest,
    isSubdomain,
    redactIdentifier,
)
from tunnel.handover import handOver
from tunnel.mux import YamuxProtocol
from tunnel.yamux import SessionConfig

#: What a new stream is answered with while the client is shutting down.
SHUTTING_DOWN = "tunnel: the client is shutting down\n"


# What OpenSSL says when the peer answers a handshake in plain text.
_PLAIN_PEER_SIGNS = ("wrong version number", "packet length too long", "http request")


def describeLoss(reason: Failure) -> str:
    """
    Why a connection to the server was lost, for people; in particular, that
    the verification of the server's TLS certificate failed, and why.
    """
    if reason.check("service_identity.exceptions.VerificationError"):
        names = [
            getattr(getattr(error, "mismatched_id", None), "hostname", b"")
            for error in getattr(reason.value, "errors", [])
        ]
        wanted = ", ".join(
            name.decode("ascii", "replace") if isinstance(name, bytes) else str(name)
            for name in names
            if name
        )
        return (
            "TLS certificate verification failed: the server's certificate is not "
            f"valid for {wanted or 'the name dialled'}"
        )
    if reason.check("OpenSSL.SSL.Error"):
        try:
            text = "; ".join(entry[-1] for entry in reason.value.args[0] if entry[-1])
        except (IndexError, TypeError):
            text = str(reason.value)
        if "certificate verify failed" in text:
            return (
                "TLS certificate verification failed: the server's certificate is "
                f"not trusted ({text})"
            )
        if any(sign in text for sign in _PLAIN_PEER_SIGNS):
            return (
                f"TLS failed ({text}): the server's port does not speak TLS; connect "
                "with tcp:HOST:PORT (or http://HOST:PORT) instead"
            )
        return f"TLS failed: {text or 'unknown error'}"
    return reason.getErrorMessage()


def _positive(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be positive, not {value}")


def _headerValue(instance: object, attribute: attrs.Attribute, value: str | None) -> None:
    if value is None:
        return
    if not value or value != value.strip() or not all(" " <= c <= "~" for c in value):
        raise ValueError(
            f"{attribute.name} must be printable ASCII without surrounding spaces"
        )


@attrs.frozen
class TunnelSettings:
    """
    What a client tunnel connection needs to know.

    @ivar identifier: the secret identifier sent to the server; shown in
        logs and C{repr} only redacted.
    @ivar routes: where tunnelled connections go locally.
    @ivar host: the C{Host} header of the control request, also naming the
        server in logs; the server's address as the connection reports it
        when L{None}.
    @ivar setupTimeout: seconds from the connection to the server's answer
        to the handshake before the attempt is abandoned.
    @ivar shutdownTimeout: seconds a graceful close waits for open streams.
    @ivar sessionConfig: the yamux session's settings.
    @ivar offerServerStreams: whether to offer the server the extension in
        which it opens the streams itself (L{SERVER_STREAMS}); a server that
        does not know it (the Go one) ignores the offer.
    @ivar offerAddresses: whether to offer the extension in which the
        server says where the public reaches this client (L{ADDRESSES});
        ignored likewise.
    @ivar offerNotices: whether to offer the extension in which the server
        says why it closes the session (L{NOTICES}); ignored likewise.
    @ivar logRequests: whether to log a line per HTTP exchange (method,
        target, status, duration, bytes each way) when it ends.
    @ivar token: an account's token: should the server not know the
        identifier (which may then be empty), it registers a host under its
        base domain for this client and says the host and the new
        identifier on its C{200} (see L{TunnelClientProtocol.registered}).
    @ivar subdomain: the subdomain to ask for with C{token}; a random free
        one if L{None}.
    @ivar access: whom the client asks the server to admit to its hosts, on
        top of the operator's rules (L{ACCESS}); a server that does not take
        them fails the set-up (L{tunnel.client.errors.TunnelUnsupportedError}).
    @ivar instance: names this client process to the server (see
        L{tunnel.core.control.INSTANCE_HEADER}): random, and kept by
        C{attrs.evolve}, so that the tunnels of one client to several
        servers share it.
    @ivar maxLocalConnections: the most local connections (being dialled or
        open) at once; a tunnelled connection beyond it is refused without
        dialling (C{503} for HTTP and WebSocket, a closed stream for TCP).
        The client also keeps at most twice as many streams open at once,
        refusals included: beyond that it reads no more control messages
        until streams end, and refuses the streams the server opens.
    """

    identifier: str = attrs.field(repr=redactIdentifier)
    routes: LocalRoutes = attrs.field(factory=LocalRoutes)
    host: str | None = attrs.field(default=None, validator=_headerValue)
    setupTimeout: float = 30.0
    shutdownTimeout: float = 10.0
    sessionConfig: SessionConfig | None = None
    offerServerStreams: bool = True
    offerAddresses: bool = True
    offerNotices: bool = True
    logRequests: bool = False
    maxLocalConnections: int = attrs.field(
        default=DEFAULT_MAX_LOCAL_CONNECTIONS, validator=_positive
    )
    token: str | None = attrs.field(
        default=None, validator=_headerValue, repr=lambda token: "…" if token else "None"
    )
    subdomain: str | None = attrs.field(default=None)
    access: AccessRule | None = None
    instance: str = attrs.field(factory=lambda: secrets.token_hex(16), repr=False)

    @identifier.validator
    def _checkIdentifier(self, attribute: attrs.Attribute, value: str) -> None:
        if value or self.token is None:
            _headerValue(self, attribute, value)

    @subdomain.validator
    def _checkSubdomain(self, attribute: attrs.Attribute, value: str | None) -> None:
        if value is not None and not isSubdomain(value.encode("ascii", "replace")):
            raise ValueError(
                f"the subdomain {value!r} is not 1 to 63 letters, digits and '-' "
                "(not starting or ending with '-')"
            )

    @property
    def features(self) -> bytes:
        """The extensions the control request offers, comma-separated."""
        offers = (
            (SERVER_STREAMS, self.offerServerStreams),
            (ADDRESSES, self.offerAddresses),
            (NOTICES, self.offerNotices),
            (ACCESS, self.access is not None),
        )
        return b", ".join(feature for feature, offered in offers if offered)

    @property
    def maxStreams(self) -> int:
        """The most streams the client keeps open at once (see L{maxLocalConnections})."""
        return 2 * self.maxLocalConnections


class TunnelClientProtocol(Protocol):
    """
    The protocol of the client's connection to the tunnel server: the
    Twisted adapter of a L{ClientTunnel}, which decides every step.

    It sends the control request and reads the response head. Nothing else
    is written before the whole head was read: the Go server ignores bytes
    that arrive with the request. On C{200} the connection is handed over to
    a yamux session (client side), as the server hands it over on its side;
    the bytes that followed the head are the session's. The client opens the
    control stream, does the handshake, and then opens one stream per control
    message, connected to a local service by the L{LocalConnector}.

    Once the handshake is answered, C{wrappedProtocol} is connected with
    this object as its transport: L{loseConnection} closes the tunnel
    gracefully, L{abortConnection} at once; it loses its connection when the
    tunnel ends.

    @ivar wrappedProtocol: the protocol told about the tunnel.
    @ivar settings: the tunnel's settings.
    @ivar session: the yamux session, once the server said C{200}.
    @ivar established: fires with C{wrappedProtocol} once the tunnel is set
        up; fails with L{TunnelConnectError} (L{TunnelRefusedError} when the
        server refused the identifier) if it could not be. Cancelling it
        drops the connection.
    @ivar serverName: the C{Host} the control request named.
    @ivar addresses: where the public reaches this client, as the server
        said on its C{200}; none from a server that does not say (a Go one).
    @ivar registered: the host and new identifier the server registered
        for this client's token, if it did.
    @ivar notice: why the server closes the tunnel, once it said
        (L{tunnel.core.control.NOTICES}).
    @ivar roundTrip: the seconds the server took to answer the last
        keep-alive ping, once it answered one.
    @ivar onRoundTrip: called with each keep-alive ping's round trip.
    """

    _log = Logger()

    def __init__(
        self,
        wrappedProtocol: IProtocol,
        settings: TunnelSettings,
        connector: LocalConnector,
        clock: IReactorTime,
    ) -> None:
        self.wrappedProtocol = wrappedProtocol
        self.settings = settings
        self.session: YamuxProtocol | None = None
        self.established: Deferred[IProtocol] = Deferred(self._cancelSetup)
        self.serverName = settings.host or ""
        self.addresses: tuple[str, ...] = ()
        self._connector = connector
        self._clock = clock
        self.registered: Registered | None = None
        self.notice: str | None = None
        self.roundTrip: float | None = None
        self.onRoundTrip: Callable[[float], object] = lambda seconds: None
        self._tunnel = ClientTunnel(
            settings.maxStreams,
            settings.setupTimeout,
            registering=settings.token is not None,
            requiresAccess=settings.access is not None,
        )
        self._control: ControlStream | None = None
        self._setupTimer: IDelayedCall | None = None
        self._shutdownTimer: IDelayedCall | None = None
        self._shutdownTimeout = settings.shutdownTimeout
        self._closedWaiters: list[Deferred[None]] = []
        self._lossReason: Failure = Failure(ConnectionDone())

    @property
    def state(self) -> State:
        """Where the tunnel connection is."""
        return self._tunnel.state

    @property
    def openStreams(self) -> int:
        """How many tunnelled connections are open."""
        return self._tunnel.openStreams

    # -- the transport of wrappedProtocol -------------------------------------

    def shutdown(self, timeout: float | None = None) -> Deferred[None]:
        """
        Close the tunnel gracefully: send Go Away, answer new requests with
        C{503}, let the open streams finish for up to C{timeout} seconds
        (the settings' C{shutdownTimeout} by default), then close the
        connection.

        @return: a L{Deferred} that fires once the connection is closed.
        """
        if self._tunnel.state is State.ENDED:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        self._closedWaiters.append(closed)
        if timeout is not None:
            self._shutdownTimeout = timeout
        self._carryOut(self._tunnel.shutdown())
        return closed

    def loseConnection(self) -> None:
        """Close the tunnel gracefully (see L{shutdown})."""
        self.shutdown()

    def abortConnection(self) -> None:
        """Drop the connection at once, and every tunnelled connection."""
        self.transport.abortConnection()

    def getPeer(self) -> IAddress:
        """The server's address."""
        return self.transport.getPeer()

    def getHost(self) -> IAddress:
        """Our end of the connection to the server."""
        return self.transport.getHost()

    # -- Protocol ----------------------------------------------------------

    def connectionMade(self) -> None:
        """Send the control request."""
        if not self.serverName:
            peer = self.transport.getPeer()
            host = getattr(peer, "host", None)
            self.serverName = joinHostPort(host, peer.port) if host else "localhost"
        self._setupTimer = self._clock.callLater(
            self.settings.setupTimeout, self._setupTimedOut
        )
        self.transport.write(
            connectRequest(
                self.settings.identifier,
                self.serverName,
                self.settings.features,
                self.settings.token,
                self.settings.subdomain,
                self.settings.access,
                self.settings.instance,
            )
        )

    def dataReceived(self, data: bytes) -> None:
        """Read the server's answer to the control request."""
        self._carryOut(self._tunnel.receiveResponse(data))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """The connection is gone before the server said C{200}."""
        self._carryOut(self._lost(reason))

    def _lost(self, reason: Failure) -> tuple[Step, ...]:
        """Tell the core that the connection is gone; return what to do."""
        self._lossReason = reason
        return self._tunnel.connectionLost(describeLoss(reason))

    # -- carrying out what the core decides ------------------------------------

    def _carryOut(self, steps: tuple[Step, ...]) -> None:
        for step in steps:
            if isinstance(step, SetupFailed):
                self.established.errback(step.error)
            elif isinstance(step, StartSession):
                self._startSession(step)
            else:
                self._actions[step](self)

    def _stopSetupTimer(self) -> None:
        if self._setupTimer is not None and self._setupTimer.active():
            self._setupTimer.cancel()
        self._setupTimer = None

    def _stopTimers(self) -> None:
        self._stopSetupTimer()
        if self._shutdownTimer is not None and self._shutdownTimer.active():
            self._shutdownTimer.cancel()
        self._shutdownTimer = None

    def _connectProtocol(self) -> None:
        registered = self.registered
        self._log.info(
            "Tunnel to {server} established as {identifier}{registration}",
            server=self.serverName,
            identifier=redactIdentifier(
                self.settings.identifier if registered is None else registered.identifier
            ),
            registration="" if registered is None else f", registered for {registered.host}",
        )
        self.wrappedProtocol.makeConnection(self)
        self.established.callback(self.wrappedProtocol)

    def _goAway(self) -> None:
        assert self.session is not None
        self._log.info(
            "Closing the tunnel to {server}: waiting up to {timeout} s for "
            "the open connections ({count})",
            server=self.serverName,
            timeout=self._shutdownTimeout,
            count=self.openStreams,
        )
        self.session.goAway()
        self._shutdownTimer = self._clock.callLater(
            self._shutdownTimeout, self._shutdownTimedOut
        )

    def _close(self) -> None:
        """
        Close the connection once what is written is sent. The session is
        unregistered as the transport's producer first: a transport does not
        close while a producer is registered (a TLS one waits for it).
        """
        if self.session is not None:
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    def _abort(self) -> None:
        self.transport.abortConnection()

    def _holdMessages(self) -> None:
        assert self._control is not None
        self._control.holdMessages()

    def _releaseMessages(self) -> None:
        assert self._control is not None
        self._control.releaseMessages()

    def _disconnectProtocol(self) -> None:
        self.wrappedProtocol.connectionLost(self._lossReason)

    def _notifyClosed(self) -> None:
        waiters, self._closedWaiters = self._closedWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    _actions: dict[Action, Callable[[TunnelClientProtocol], None]] = {
        Action.STOP_SETUP_TIMER: _stopSetupTimer,
        Action.STOP_TIMERS: _stopTimers,
        Action.CONNECT_PROTOCOL: _connectProtocol,
        Action.GO_AWAY: _goAway,
        Action.CLOSE: _close,
        Action.ABORT: _abort,
        Action.HOLD_MESSAGES: _holdMessages,
        Action.RELEASE_MESSAGES: _releaseMessages,
        Action.DISCONNECT_PROTOCOL: _disconnectProtocol,
        Action.NOTIFY_CLOSED: _notifyClosed,
    }

    # -- setting up ----------------------------------------------------------

    def _noticeReceived(self, notice: str) -> None:
        self.notice = notice
        self._log.warn(
            "{server} closes the tunnel: {notice}", server=self.serverName, notice=notice
        )

    def _startSession(self, start: StartSession) -> None:
        self.addresses = start.addresses
        self.registered = start.registered
        streams = (
            AnnouncedStreamFactory(self._serve, self._counted) if start.serverStreams else None
        )
        config = self.settings.sessionConfig or SessionConfig()
        if start.serverStreams:
            # The server opens a stream for every request, and a burst of
            # them can arrive in one read: they are all taken once it is
            # read, so the accept backlog must not refuse any of them. The
            # streams it may have open are bounded as those the client
            # opens for control messages are.
            inbound = min(config.maxInboundStreams, self.settings.maxStreams)
            config = attrs.evolve(config, acceptBacklog=inbound, maxInboundStreams=inbound)
        session = self.session = _TunnelSession(self, streams, config, self._clock)
        handOver(self.transport, session, start.rest)
        control = self._control = ControlStream(self._messageReceived, self._noticeReceived)
        control.ready.addCallbacks(
            lambda ignored: self._carryOut(self._tunnel.handshakeAnswered()),
            lambda failure: self._carryOut(
                self._tunnel.handshakeFailed(failure.getErrorMessage())
            ),
        )
        control.ended.addCallback(self._controlEnded)
        # The control stream's end reports a refused or unanswered open.
        session.openStream(control).addErrback(lambda failure: None)

    def _setupTimedOut(self) -> None:
        self._setupTimer = None
        self._carryOut(self._tunnel.setupTimedOut())

    def _cancelSetup(self, established: Deferred[IProtocol]) -> None:
        self._carryOut(self._tunnel.cancelled())

    # -- serving -----------------------------------------------------------

    def _serve(self, message: ControlMessage) -> Protocol:
        """
        The protocol that serves the stream C{message} asks for: a
        forwarder, or a refusal while shutting down. Once it is connected,
        the stream counts as open until it ends.
        """
        if self._tunnel.refusesStreams:
            return self._connector.refusalFor(message, SHUTTING_DOWN)
        return self._connector.forwarderFor(message)

    def _counted(self, protocol: Protocol) -> None:
        # A stream that could not be opened at all never connected its protocol.
        if protocol.connected:
            self._carryOut(self._tunnel.streamOpened())
            protocol.ended.addCallback(self._streamEnded)

    def _messageReceived(self, message: ControlMessage) -> None:
        assert self.session is not None
        protocol = self._serve(message)
        opened = self.session.openStream(protocol)
        opened.addErrback(self._streamNotOpened, message)
        self._counted(protocol)

    def _streamNotOpened(self, reason: Failure, message: ControlMessage) -> None:
        self._log.warn(
            "Could not open a stream for {message}: {reason}",
            message=message,
            reason=reason.getErrorMessage(),
        )

    def _streamEnded(self, ignored: None) -> None:
        self._carryOut(self._tunnel.streamEnded())

    def _controlEnded(self, ignored: None) -> None:
        if self._tunnel.state in (State.READY, State.CLOSING):
            self._log.warn(
                "The server ended the control stream of the tunnel to {server}; "
                "closing the tunnel",
                server=self.serverName,
            )
        self._carryOut(self._tunnel.controlEnded())

    # -- closing -----------------------------------------------------------

    def _shutdownTimedOut(self) -> None:
        self._shutdownTimer = None
        self._log.warn(
            "Closing the tunnel to {server} with connections still open ({count})",
            server=self.serverName,
            count=self.openStreams,
        )
        self._carryOut(self._tunnel.shutdownTimedOut())


class _TunnelSession(YamuxProtocol):
    """
    The yamux client side of a L{TunnelClientProtocol}'s connection, to
    which the connection is handed over at the C{200}.
    """

    def __init__(
        self,
        tunnel: TunnelClientProtocol,
        streamFactory: AnnouncedStreamFactory | None,
        config: SessionConfig,
        clock: IReactorTime,
    ) -> None:
        super().__init__(True, streamFactory, config, clock)
        self._tunnel = tunnel

    def keepAliveAnswered(self, roundTrip: float) -> None:
        """Tell the tunnel how long the server took to answer."""
        self._tunnel.roundTrip = roundTrip
        self._tunnel.onRoundTrip(roundTrip)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """
        End the tunnel, then every stream, then tell whoever waits: the
        tunnel is told first so that the streams' ends no longer count for
        a graceful close.
        """
        steps = self._tunnel._lost(reason)
        super().connectionLost(reason)
        self._tunnel._carryOut(steps)
