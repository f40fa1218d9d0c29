"""
The local side of the client: which local service each tunnelled
connection goes to, and the stream protocols that connect to it.

A local address is written C{HOST:PORT}, a bare C{PORT} (on 127.0.0.1), or a
Twisted client endpoint description (C{tcp:...}, C{tls:...}, C{unix:...}).
The C{--local} option takes C{ADDR} (the fixed address of HTTP and
WebSocket connections) or C{PORT=ADDR} (the address of connections whose
control message carries that C{localPort}); C{--local-ports} lists the
ports that may be dialled on 127.0.0.1 as they come.

The C{localPort} of a control message is a request, never an order: the
client dials only what its user configured, and refuses any other port.
The number of local connections open at once is bounded too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.client.address import (
    PortRanges,
    isEndpointDescription,
    joinHostPort,
    parseHostPort,
    parsePort,
    tcpDescription,
)
from tunnel.client.metrics import ClientMetrics
from tunnel.core.capture import CapturedExchange, CaptureStore, ExchangeRecorder, Kind
from tunnel.core.control import ControlMessage, TransportProtocol
from tunnel.core.http import errorResponse
from tunnel.core.requestlog import summarise
from tunnel.pipe import PipeEnd
from tunnel.sparselog import SparseCounter

#: The host of local services named by a port only.
DEFAULT_LOCAL_HOST = "127.0.0.1"

#: The port dialled for HTTP requests whose Host header had no port.
DEFAULT_HTTP_PORT = 80

#: Why the client answers a tunnelled connection itself, as its metrics
#: and inspector name it: the local service cannot be reached, ...
NO_LOCAL_SERVICE = "no_local_service"
#: ... the most local connections are open, ...
TOO_MANY_LOCAL_CONNECTIONS = "too_many_local_connections"
#: ... or the routes do not expose the port asked for.
PORT_NOT_EXPOSED = "port_not_exposed"

#: The most local connections (being dialled or open) a client has at once,
#: unless told otherwise.
DEFAULT_MAX_LOCAL_CONNECTIONS = 1024


@attrs.frozen
class LocalAddress:
    """
    Where a local service listens.

    @ivar description: the Twisted client endpoint description to dial.
    @ivar label: how to name the address to people (in logs and in the
        C{503} answer), e.g. C{127.0.0.1:3000}.
    """

    description: str
    label: str

    def __str__(self) -> str:
        return self.label

    def endpoint(self, reactor: object) -> IStreamClientEndpoint:
        """
        The endpoint that dials this address.

        @raise ValueError: if the description is not a valid one.
        """
        return clientFromString(reactor, self.description)


def tcpLocalAddress(host: str, port: int) -> LocalAddress:
    """The local address of a TCP service."""
    return LocalAddress(tcpDescription(host, port), joinHostPort(host, port))


def parseLocalAddress(text: str) -> LocalAddress:
    """
    Read a local address: a Twisted client endpoint description, C{HOST:PORT},
    or a bare C{PORT} on 127.0.0.1.

    @raise ValueError: if C{text} is none of these.
    """
    if isEndpointDescription(text):
        return LocalAddress(text, text)
    if ":" not in text:
        return tcpLocalAddress(DEFAULT_LOCAL_HOST, parsePort(text))
    return tcpLocalAddress(*parseHostPort(text))


def parseLocalOption(text: str) -> tuple[int | None, LocalAddress]:
    """
    Read one C{--local} value: C{PORT=ADDR} or C{ADDR}.

    @return: the C{localPort} the address is for (L{None} for a fixed
        address) and the address.
    @raise ValueError: if C{text} is not of either form.
    """
    port, equals, address = text.partition("=")
    if equals and port.isascii() and port.isdigit():
        return parsePort(port), parseLocalAddress(address)
    return None, parseLocalAddress(text)


@attrs.frozen
class LocalRoutes:
    """
    Which local address each tunnelled connection goes to; the client dials
    nothing else.

    An HTTP or WebSocket connection goes to the fixed address if there is
    one; else to the address mapped to the message's C{localPort}; else to
    127.0.0.1 at that port if it is one of C{dynamicPorts}; else, for
    C{localPort} 0 (a Host without port) or 80, to the address mapped to
    port 80 or 127.0.0.1:80. A TCP connection goes to the address mapped to
    its C{localPort}, else to 127.0.0.1 at that port if it is one of
    C{dynamicPorts}. Any other connection is refused.

    @ivar fixed: the address of every HTTP and WebSocket connection, if set.
    @ivar ports: addresses by C{localPort}.
    @ivar dynamicPorts: the ports dialled on 127.0.0.1 at the port the
        message names.
    """

    fixed: LocalAddress | None = None
    ports: Mapping[int, LocalAddress] = attrs.field(factory=dict)
    dynamicPorts: PortRanges = attrs.field(factory=PortRanges)

    @classmethod
    def fromStrings(cls, values: Iterable[str], dynamicPorts: Iterable[str] = ()) -> LocalRoutes:
        """
        Build the routes from C{--local} values (see L{parseLocalOption})
        and C{--local-ports} values (see L{PortRanges.fromStrings}).

        @raise ValueError: if a value is malformed, if more than one fixed
            address is given, or if a port is mapped twice.
        """
        fixed: LocalAddress | None = None
        ports: dict[int, LocalAddress] = {}
        for value in values:
            port, address = parseLocalOption(value)
            if port is None:
                if fixed is not None:
                    raise ValueError(
                        f"only one fixed local address may be given: {fixed} and {address}"
                    )
                fixed = address
            elif port in ports:
                raise ValueError(f"local port {port} is mapped twice")
            else:
                ports[port] = address
        return cls(fixed, ports, PortRanges.fromStrings(dynamicPorts))

    def addressFor(self, message: ControlMessage) -> LocalAddress | None:
        """
        The local address of the connection a control message asks for, or
        L{None} if the routes do not expose its C{localPort}.
        """
        port = message.localPort
        answersHTTP = _answersHTTP(message)
        if answersHTTP and self.fixed is not None:
            return self.fixed
        if port in self.ports:
            return self.ports[port]
        if port in self.dynamicPorts:
            return tcpLocalAddress(DEFAULT_LOCAL_HOST, port)
        if answersHTTP and port in (0, DEFAULT_HTTP_PORT):
            default = self.ports.get(DEFAULT_HTTP_PORT)
            return default or tcpLocalAddress(DEFAULT_LOCAL_HOST, DEFAULT_HTTP_PORT)
        return None

    def addressForPublic(self, address: str) -> LocalAddress | None:
        """
        The local address that what arrives at a public address (a URL the
        server said, see L{tunnel.core.control.ADDRESSES}) goes to, or
        L{None} if the routes do not expose it. A URL's port is the
        C{localPort} its requests come with; none is 0.
        """
        parts = urlsplit(address)
        try:
            port = parts.port or 0
        except ValueError:
            return None
        protocol = TransportProtocol.TCP if parts.scheme == "tcp" else TransportProtocol.HTTP
        return self.addressFor(ControlMessage(transportProtocol=protocol, localPort=port))


def serviceUnavailable(body: str) -> bytes:
    """A complete HTTP C{503} response with a plain text body."""
    return errorResponse(503, body.encode("utf-8"))


def noLocalServer(address: object) -> bytes:
    """The C{503} answer to a connection whose local service at C{address} cannot be reached."""
    return serviceUnavailable(f"tunnel: no local server at {address}\n")


def badGateway(body: str) -> bytes:
    """A complete HTTP C{502} response with a plain text body."""
    return errorResponse(502, body.encode("utf-8"))


def _answerUnavailable(transport: ITransport, answersHTTP: bool, response: bytes) -> None:
    """
    End a stream whose connection cannot be served: with C{response} for
    HTTP and WebSocket, with nothing for TCP.
    """
    if answersHTTP:
        transport.write(response)
    transport.loseConnection()


class LocalConnectionLimit:
    """
    Counts the local connections being dialled or open, against a maximum:
    a server that asks for thousands of connections at once gets no more
    than C{maximum} of them. Refusals are logged sparingly (the 1st, 10th,
    100th...).

    @ivar maximum: the most local connections at once.
    @ivar live: how many there are now.
    """

    _log = Logger()

    def __init__(self, maximum: int = DEFAULT_MAX_LOCAL_CONNECTIONS) -> None:
        if maximum < 1:
            raise ValueError(f"the most local connections must be positive, not {maximum}")
        self.maximum = maximum
        self.live = 0
        self._refused = SparseCounter()

    def acquire(self) -> bool:
        """Count one more local connection, unless the maximum is reached."""
        if self.live < self.maximum:
            self.live += 1
            return True
        count = self._refused.record()
        if count is not None:
            self._log.warn(
                "Refusing a tunnelled connection: {live} local connections are open, "
                "the most allowed ({count} refused so far)",
                live=self.live,
                count=count,
            )
        return False

    def release(self) -> None:
        """Count one local connection less."""
        self.live -= 1


class _LocalEndFactory(Factory):
    """Builds the local end of each pipe, without a log line per connection."""

    protocol = PipeEnd
    noisy = False


_localEnds = _LocalEndFactory()


class _WatchedEnd(PipeEnd):
    """The local end of a pipe, showing the response's bytes to a recorder."""

    def __init__(self, watcher: ExchangeRecorder) -> None:
        super().__init__()
        self._watcher = watcher

    def dataReceived(self, data: bytes) -> None:
        """Show the bytes to the recorder, and pass them on."""
        self._watcher.responseData(data)
        super().dataReceived(data)


class _WatchedEnds(_LocalEndFactory):
    """Builds the local end of a watched exchange's pipe."""

    def __init__(self, watcher: ExchangeRecorder) -> None:
        self._watcher = watcher

    def buildProtocol(self, addr: object) -> _WatchedEnd:
        end = _WatchedEnd(self._watcher)
        end.factory = self
        return end


class LocalForwarder(PipeEnd):
    """
    The stream end of one tunnelled connection: once the stream is
    connected it dials the local address and joins the stream with the
    local connection. If the local service cannot be reached, it answers
    C{503} (HTTP and WebSocket) or just closes the stream (TCP); so it does,
    without dialling, when the L{LocalConnectionLimit} is reached.

    The connection counts against the limit from the dial until both the
    stream and the local connection are closed.

    With a C{watcher} (an L{ExchangeRecorder}) the bytes going by are shown
    to it, and once both the stream and the local connection are gone
    C{exchangeEnded} is called with it.

    @ivar address: the local address dialled.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        address: LocalAddress,
        answersHTTP: bool,
        limit: LocalConnectionLimit | None = None,
        watcher: ExchangeRecorder | None = None,
        exchangeEnded: Callable[[ExchangeRecorder], None] = lambda watcher: None,
    ) -> None:
        super().__init__()
        self.address = address
        self._endpoint = endpoint
        self._answersHTTP = answersHTTP
        self._limit = LocalConnectionLimit() if limit is None else limit
        self._counted = False
        self._dialing: Deferred[PipeEnd] | None = None
        self._watcher = watcher
        self._exchangeEnded = exchangeEnded

    def connectionMade(self) -> None:
        """Hold the stream paused and dial the local service."""
        super().connectionMade()
        if not self._limit.acquire():
            self._answerUnavailable(
                TOO_MANY_LOCAL_CONNECTIONS,
                serviceUnavailable(
                    f"tunnel: this client has too many local connections open "
                    f"({self._limit.maximum})\n"
                ),
            )
            return
        self._counted = True
        ends = _localEnds if self._watcher is None else _WatchedEnds(self._watcher)
        self._dialing = self._endpoint.connect(ends)
        self._dialing.addCallbacks(self._dialed, self._dialFailed)

    def dataReceived(self, data: bytes) -> None:
        """Show the request's bytes to the recorder, and pass them on."""
        if self._watcher is not None:
            self._watcher.requestData(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Close the local connection, or give up dialing it."""
        dialing, self._dialing = self._dialing, None
        super().connectionLost(reason)
        if dialing is not None:
            dialing.cancel()
        self._releaseIfDone()

    def _dialed(self, local: PipeEnd) -> None:
        self._dialing = None
        local.ended.addCallback(self._releaseIfDone)
        self.join(local)

    def _dialFailed(self, reason: Failure) -> None:
        self._dialing = None
        if self.lostReason is not None:
            return
        self._log.warn(
            "No local server at {address}: {reason}",
            address=self.address.label,
            reason=reason.getErrorMessage(),
        )
        self._answerUnavailable(NO_LOCAL_SERVICE, noLocalServer(self.address))

    def _answerUnavailable(self, refusal: str, response: bytes) -> None:
        if self._watcher is not None:
            self._watcher.exchange.refusal = refusal
            self._watcher.responseData(response)
        _answerUnavailable(self.transport, self._answersHTTP, response)

    def _releaseIfDone(self, ignored: object = None) -> None:
        """
        Once the stream and the local connection are gone, stop counting
        against the limit and say that the exchange ended.
        """
        if self.lostReason is None or self._dialing is not None:
            return
        local = self.peer
        if local is not None and local.lostReason is None:
            return
        if self._counted:
            self._counted = False
            self._limit.release()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self._exchangeEnded(watcher)


class UnavailableStream(Protocol):
    """
    The stream end of a connection the client will not serve: it answers
    C{response} (HTTP and WebSocket) or nothing (TCP) and closes the stream.

    @ivar ended: fires with L{None} once the stream is gone.
    """

    def __init__(self, answersHTTP: bool, response: bytes) -> None:
        self.ended: Deferred[None] = Deferred()
        self._answersHTTP = answersHTTP
        self._response = response

    def connectionMade(self) -> None:
        """Answer and close."""
        _answerUnavailable(self.transport, self._answersHTTP, self._response)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Report that the stream is gone."""
        self.ended.callback(None)


class LocalConnector:
    """
    Builds the stream protocol of each tunnelled connection: a forwarder
    dialling the address L{LocalRoutes} chooses, or a refusal.

    A port the routes do not expose is refused with a C{502} (HTTP and
    WebSocket) or a closed stream (TCP), without dialling; each refused
    port is logged sparingly (its 1st, 10th, 100th... refusal).

    With C{logRequests}, each HTTP exchange is logged in a line when it
    ends (L{tunnel.core.requestlog}): method, target, status, duration and
    bytes each way. With a C{capture} store, every connection is recorded
    into it (L{tunnel.core.capture}); with C{metrics}, counted there.

    @ivar routes: the routing rules.
    @ivar limit: the bound on local connections at once.
    @ivar capture: the store the connections are recorded into, if any.
    """

    _log = Logger()

    def __init__(
        self,
        routes: LocalRoutes,
        reactor: Any,
        maxConnections: int = DEFAULT_MAX_LOCAL_CONNECTIONS,
        logRequests: bool = False,
        capture: CaptureStore | None = None,
        metrics: ClientMetrics | None = None,
    ) -> None:
        """
        @param reactor: the reactor to dial local services with, and the
            clock of the request log.
        @param maxConnections: the most local connections at once.
        @param logRequests: whether to log a line per HTTP exchange.
        @param capture: the store to record every connection into.
        @param metrics: where to count the connections and refusals.
        @raise ValueError: if a configured address is not a valid endpoint
            description, or C{maxConnections} is not positive.
        """
        self.routes = routes
        self.limit = LocalConnectionLimit(maxConnections)
        self.capture = capture
        self._reactor = reactor
        self._logRequests = logRequests
        self._metrics = metrics
        self._endpoints: dict[LocalAddress, IStreamClientEndpoint] = {}
        self._refusedPorts = SparseCounter()
        for address in [routes.fixed, *routes.ports.values()]:
            if address is not None:
                self.endpointFor(address)
        if metrics is not None:
            metrics.watchLocalConnections(self.limit)

    def forwarderFor(self, message: ControlMessage) -> Protocol:
        """
        The protocol of the stream a control message asks for: a
        L{LocalForwarder}, or an L{UnavailableStream} if the routes do not
        expose the message's port.
        """
        address = self.routes.addressFor(message)
        if address is None:
            return self._refusePort(message)
        answersHTTP = _answersHTTP(message)
        return LocalForwarder(
            self.endpointFor(address),
            address,
            answersHTTP,
            self.limit,
            self.recorder(Kind.HTTP if answersHTTP else Kind.TCP, address),
            self.exchangeEnded,
        )

    def recorder(
        self, kind: Kind, address: LocalAddress, replayOf: int | None = None
    ) -> ExchangeRecorder | None:
        """
        The recorder of a new connection to C{address}, or L{None} if
        nothing watches connections.
        """
        if self.capture is not None:
            return self.capture.record(kind, address, replayOf)
        if self._metrics is not None or (self._logRequests and kind is Kind.HTTP):
            return ExchangeRecorder(CapturedExchange(0, kind, self._reactor.seconds(), address))
        return None

    def exchangeEnded(self, recorder: ExchangeRecorder) -> None:
        """A watched connection ended: log it and count it."""
        now = self._reactor.seconds()
        recorder.end(now)
        exchange = recorder.exchange
        if self._logRequests and exchange.kind is not Kind.TCP:
            line = str(summarise(exchange, now))
            if exchange.replayOf is not None:
                line += f" (replay of #{exchange.replayOf})"
            self._log.info("{exchange}", exchange=line)
        if self._metrics is not None:
            self._metrics.exchangeEnded(exchange)

    def refusalFor(self, message: ControlMessage, body: str) -> UnavailableStream:
        """
        The protocol of a stream a control message asks for that the client
        will not serve; C{body} explains why, to HTTP clients, in a C{503}.
        """
        return UnavailableStream(_answersHTTP(message), serviceUnavailable(body))

    def _refusePort(self, message: ControlMessage) -> UnavailableStream:
        port = message.localPort
        if self._metrics is not None:
            self._metrics.refused(PORT_NOT_EXPOSED)
        count = self._refusedPorts.record(port)
        if count is not None:
            self._log.warn(
                "Refusing a tunnelled connection for local port {port}: the local "
                "routes do not expose it ({count} refused for this port so far)",
                port=port,
                count=count,
            )
        return UnavailableStream(
            _answersHTTP(message),
            badGateway(f"tunnel: this client does not expose local port {port}\n"),
        )

    def endpointFor(self, address: LocalAddress) -> IStreamClientEndpoint:
        """The endpoint that dials C{address}, made once."""
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            endpoint = self._endpoints[address] = address.endpoint(self._reactor)
        return endpoint


def _answersHTTP(message: ControlMessage) -> bool:
    return message.transportProtocol != TransportProtocol.TCP
