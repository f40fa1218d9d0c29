"""
The local side of the client: which local service each tunnelled
connection goes to, and the stream protocols that connect to it.

A local address is written C{HOST:PORT}, a bare C{PORT} (on 127.0.0.1), or a
Twisted client endpoint description (C{tcp:...}, C{tls:...}, C{unix:...}).
The C{--local} option takes C{ADDR} (the fixed address of HTTP and
WebSocket connections) or C{PORT=ADDR} (the address of connections whose
control message carries that C{localPort}).
"""

from __future__ import annotations

from typing import Iterable, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.client.address import (
    isEndpointDescription,
    joinHostPort,
    parseHostPort,
    parsePort,
    tcpDescription,
)
from tunnel.pipe import PipeEnd
from tunnel.protocol import ControlMessage, TransportProtocol

#: The host of local services named by a port only.
DEFAULT_LOCAL_HOST = "127.0.0.1"

#: The port dialled for HTTP requests whose Host header had no port.
DEFAULT_HTTP_PORT = 80


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
    Which local address each tunnelled connection goes to.

    HTTP and WebSocket connections go to the fixed address if there is one,
    else to the address mapped to the message's C{localPort}, else to
    127.0.0.1 on that port (port 80 when it is 0). TCP connections go to the
    address mapped to their C{localPort}, else to 127.0.0.1 on that port.

    @ivar fixed: the address of every HTTP and WebSocket connection, if set.
    @ivar ports: addresses by C{localPort}.
    """

    fixed: LocalAddress | None = None
    ports: Mapping[int, LocalAddress] = attrs.field(factory=dict)

    @classmethod
    def fromStrings(cls, values: Iterable[str]) -> LocalRoutes:
        """
        Build the routes from C{--local} values (see L{parseLocalOption}).

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
        return cls(fixed, ports)

    def addressFor(self, message: ControlMessage) -> LocalAddress:
        """The local address of the connection a control message asks for."""
        port = message.localPort
        if message.transportProtocol != TransportProtocol.TCP and self.fixed is not None:
            return self.fixed
        if port in self.ports:
            return self.ports[port]
        return tcpLocalAddress(DEFAULT_LOCAL_HOST, port or DEFAULT_HTTP_PORT)


def serviceUnavailable(body: str) -> bytes:
    """A complete HTTP C{503} response with a plain text body."""
    payload = body.encode("utf-8")
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Connection: close\r\n"
        b"Content-Length: %d\r\n"
        b"\r\n%s" % (len(payload), payload)
    )


def _answerUnavailable(transport: ITransport, answersHTTP: bool, body: str) -> None:
    """
    End a stream whose connection cannot be served: with a C{503} answer for
    HTTP and WebSocket, with nothing for TCP.
    """
    if answersHTTP:
        transport.write(serviceUnavailable(body))
    transport.loseConnection()


class _LocalEndFactory(Factory):
    """Builds the local end of each pipe, without a log line per connection."""

    protocol = PipeEnd
    noisy = False


_localEnds = _LocalEndFactory()


class LocalForwarder(PipeEnd):
    """
    The stream end of one tunnelled connection: once the stream is
    connected it dials the local address and joins the stream with the
    local connection. If the local service cannot be reached, it answers
    C{503} (HTTP and WebSocket) or just closes the stream (TCP).

    @ivar address: the local address dialled.
    """

    _log = Logger()

    def __init__(
        self, endpoint: IStreamClientEndpoint, address: LocalAddress, answersHTTP: bool
    ) -> None:
        super().__init__()
        self.address = address
        self._endpoint = endpoint
        self._answersHTTP = answersHTTP
        self._dialing: Deferred[PipeEnd] | None = None

    def connectionMade(self) -> None:
        """Hold the stream paused and dial the local service."""
        super().connectionMade()
        self._dialing = self._endpoint.connect(_localEnds)
        self._dialing.addCallbacks(self._dialed, self._dialFailed)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Close the local connection, or give up dialing it."""
        dialing, self._dialing = self._dialing, None
        super().connectionLost(reason)
        if dialing is not None:
            dialing.cancel()

    def _dialed(self, local: PipeEnd) -> None:
        self._dialing = None
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
        _answerUnavailable(
            self.transport, self._answersHTTP, f"tunnel: no local server at {self.address}\n"
        )


class UnavailableStream(Protocol):
    """
    The stream end of a connection the client will not serve: it answers
    C{503} (HTTP and WebSocket) or nothing (TCP) and closes the stream.

    @ivar ended: fires with L{None} once the stream is gone.
    """

    def __init__(self, answersHTTP: bool, body: str) -> None:
        self.ended: Deferred[None] = Deferred()
        self._answersHTTP = answersHTTP
        self._body = body

    def connectionMade(self) -> None:
        """Answer and close."""
        _answerUnavailable(self.transport, self._answersHTTP, self._body)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Report that the stream is gone."""
        self.ended.callback(None)


class LocalConnector:
    """
    Builds the stream protocol of each tunnelled connection, dialling the
    address L{LocalRoutes} chooses.

    @ivar routes: the routing rules.
    """

    def __init__(self, routes: LocalRoutes, reactor: object) -> None:
        """
        @param reactor: the reactor to dial local services with.
        @raise ValueError: if a configured address is not a valid endpoint
            description.
        """
        self.routes = routes
        self._reactor = reactor
        self._endpoints: dict[LocalAddress, IStreamClientEndpoint] = {}
        for address in [routes.fixed, *routes.ports.values()]:
            if address is not None:
                self._endpointFor(address)

    def forwarderFor(self, message: ControlMessage) -> LocalForwarder:
        """The protocol of the stream a control message asks for."""
        address = self.routes.addressFor(message)
        return LocalForwarder(self._endpointFor(address), address, _answersHTTP(message))

    def refusalFor(self, message: ControlMessage, body: str) -> UnavailableStream:
        """
        The protocol of a stream a control message asks for that the client
        will not serve; C{body} explains why, to HTTP clients.
        """
        return UnavailableStream(_answersHTTP(message), body)

    def _endpointFor(self, address: LocalAddress) -> IStreamClientEndpoint:
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            endpoint = self._endpoints[address] = address.endpoint(self._reactor)
        return endpoint


def _answersHTTP(message: ControlMessage) -> bool:
    return message.transportProtocol != TransportProtocol.TCP
