"""
Support for the server's tests: a minimal tunnel client built on our own
multiplexer, and an in-memory harness around a L{TunnelServer}'s site.
"""

from __future__ import annotations

from typing import Any, Callable, Generator

import trustme
from twisted.internet.address import IPv4Address
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTCP,
    ISSLTransport,
)
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web._newclient import HTTP11ClientProtocol, Request as ClientRequest
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import directlyProvides, implementer

from tunnel.mux import YamuxProtocol
from tunnel.pipe import PipeEnd
from tunnel.core.control import (
    CONTROL_PATH,
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    IDENTIFIER_HEADER,
    ControlLineReader,
    ControlMessage,
)
from tunnel.server import TunnelServer
from tunnel.test.support import Recorder, pattern, sleep

PUBLIC_PEER = IPv4Address("TCP", "203.0.113.7", 50000)
SERVER_HOST = IPv4Address("TCP", "127.0.0.1", 8080)

#: Gives the protocol to attach to the stream opened for a control message,
#: or L{None} to open no stream.
StreamConnector = Callable[[ControlMessage], "Protocol | None"]


class TunnelClient(Protocol):
    """
    A minimal tunnel client: sends the control request, reads the answer,
    then runs the yamux client side, opens the control stream, does the
    handshake, and for every control message opens a stream, in order,
    attached to a protocol from C{connectStream}.

    @ivar answer: the server's answer to the control request, up to and
        including its empty line.
    @ivar mux: the yamux client session, once the server accepted.
    @ivar messages: the control messages received.
    @ivar control: the client side of the control stream, once opened.
    @ivar handshaken: fires once the server answered the handshake.
    @ivar goAwayCodes: the codes of the Go Away frames the server sent.
    @ivar lost: why the connection was lost, once it was.
    """

    def __init__(
        self,
        identifier: bytes,
        connectStream: StreamConnector,
        clock: Any,
        handshake: bytes = HANDSHAKE_REQUEST,
        extraHeaders: bytes = b"",
    ) -> None:
        self.identifier = identifier
        self.extraHeaders = extraHeaders
        self.connectStream = connectStream
        self.clock = clock
        self.handshake = handshake
        self.answer = b""
        self.mux: YamuxProtocol | None = None
        self.messages: list[ControlMessage] = []
        self.handshaken: Deferred[None] = Deferred()
        self.control: _ClientControl | None = None
        self.goAwayCodes: list[int] = []
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.transport.write(
            b"CONNECT %s HTTP/1.1\r\nHost: tunnel\r\n%s: %s\r\n%s\r\n"
            % (CONTROL_PATH, IDENTIFIER_HEADER, self.identifier, self.extraHeaders)
        )

    def dataReceived(self, data: bytes) -> None:
        if self.mux is not None:
            self.mux.dataReceived(data)
            return
        self.answer += data
        for end in (b"\r\n\r\n", b"\n\n"):
            if end in self.answer:
                self.answer, _, rest = self.answer.partition(end)
                self.answer += end
                break
        else:
            return
        if not self.answer.startswith(b"HTTP/1.1 200 "):
            return
        assert rest == b"", f"the server sent {rest!r} after its answer"
        self.mux = YamuxProtocol(isClient=True, clock=self.clock)
        self.mux.goAwayReceived = self.goAwayCodes.append
        self.mux.makeConnection(self.transport)
        self.control = _ClientControl(self)
        self.mux.openStream(self.control)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = reason
        if self.mux is not None:
            self.mux.connectionLost(reason)

    def controlMessage(self, message: ControlMessage) -> None:
        """Open a stream for C{message}, unless C{connectStream} gives none."""
        self.messages.append(message)
        protocol = self.connectStream(message)
        if protocol is not None:
            self.mux.openStream(protocol)


class _ClientControl(Protocol):
    """The client side of the control stream."""

    def __init__(self, client: TunnelClient) -> None:
        self.client = client
        self.received = b""
        self.reader: ControlLineReader | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.client.handshake)

    def dataReceived(self, data: bytes) -> None:
        if self.reader is None:
            self.received += data
            if len(self.received) < len(HANDSHAKE_RESPONSE):
                return
            assert self.received[: len(HANDSHAKE_RESPONSE)] == HANDSHAKE_RESPONSE
            data = self.received[len(HANDSHAKE_RESPONSE) :]
            self.reader = ControlLineReader()
            self.client.handshaken.callback(None)
        for message in self.reader.feed(data):
            self.client.controlMessage(message)


@inlineCallbacks
def settle() -> Generator[Deferred[None], None, None]:
    """
    Wait (up to five seconds) until no TCP connection is left open, so that
    a test that closed its connections leaves a clean reactor.
    """
    for _ in range(250):
        if not [
            selectable
            for selectable in reactor.getReaders() + reactor.getWriters()
            if isinstance(selectable, tcp.Connection)
        ]:
            return
        yield sleep(0.02)


def dialLocal(tcpReactor: IReactorTCP, portFor: Callable[[ControlMessage], int]) -> StreamConnector:
    """
    Connect each stream to a local TCP port on 127.0.0.1, as a real client
    does: a pipe between the stream and the local connection.
    """

    def connect(message: ControlMessage) -> Protocol:
        stream = PipeEnd()
        endpoint = TCP4ClientEndpoint(tcpReactor, "127.0.0.1", portFor(message))
        dialing = endpoint.connect(Factory.forProtocol(PipeEnd))
        dialing.addCallbacks(stream.join, lambda f: stream.transport.loseConnection())
        return stream

    return connect


def tlsOptions() -> tuple[object, object]:
    """Server and client TLS options from a fresh test CA."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    server = PrivateCertificate.loadPEM(
        issued.private_key_and_cert_chain_pem.bytes()
    ).options()
    client = optionsForClientTLS(
        "localhost", Certificate.loadPEM(ca.cert_pem.bytes())
    )
    return server, client


class Harness:
    """
    A L{TunnelServer}'s site with in-memory connections to it, all pumped
    together with one clock.

    @ivar server: the tunnel server.
    @ivar clock: the server's clock, also run by the pumps.
    """

    def __init__(
        self, siteLimits: dict[str, Any] | None = None, **serverArguments: Any
    ) -> None:
        """
        @param siteLimits: the arguments of the server's C{site}.
        @param serverArguments: the arguments of the L{TunnelServer}.
        """
        self.clock = Clock()
        self.server = TunnelServer(reactor=self.clock, **serverArguments)
        self.site = self.server.site(**(siteLimits or {}))
        self.pumps: list[iosim.IOPump] = []

    def connect(
        self,
        protocol: Protocol,
        secure: bool = False,
        tls: tuple[Any, Any] | None = None,
        peer: IAddress = PUBLIC_PEER,
    ) -> iosim.IOPump:
        """
        Connect C{protocol} to the site as a public client, in memory.

        @param secure: make the server's transport look like TLS.
        @param tls: server and client TLS options, to run real TLS.
        @param peer: the public client's address.
        """
        server = self.site.buildProtocol(peer)
        if tls is not None:
            serverOptions, clientOptions = tls
            server = TLSMemoryBIOFactory(
                serverOptions, False, OneShotFactory(server), self.clock
            ).buildProtocol(peer)
            protocol = TLSMemoryBIOFactory(
                clientOptions, True, OneShotFactory(protocol), self.clock
            ).buildProtocol(SERVER_HOST)
        serverTransport = iosim.FakeTransport(server, True, SERVER_HOST, peer)
        # As a TCP transport, it takes a producer to pause when it is full.
        directlyProvides(serverTransport, IPushProducer, *([ISSLTransport] if secure else []))
        pump = iosim.connect(
            server,
            serverTransport,
            protocol,
            iosim.FakeTransport(protocol, False, peer, SERVER_HOST),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        return pump

    def send(self, data: bytes, peer: IAddress = PUBLIC_PEER) -> Recorder:
        """
        Connect a raw public client, send C{data} and pump; the client
        records what comes back.
        """
        public = Recorder()
        self.connect(public, peer=peer)
        public.transport.write(data)
        self.flush()
        return public

    def flush(self) -> None:
        """Pump every connection until nothing moves."""
        while any([pump.flush() for pump in self.pumps]):
            pass

    def advance(self, seconds: float) -> None:
        """Let time pass on the server's clock, then pump."""
        self.clock.advance(seconds)
        self.flush()

    def tunnelClient(
        self,
        identifier: bytes,
        connectStream: StreamConnector,
        tls: tuple[Any, Any] | None = None,
        **arguments: Any,
    ) -> TunnelClient:
        """Connect a L{TunnelClient} and pump until it is done connecting."""
        client = TunnelClient(identifier, connectStream, self.clock, **arguments)
        self.connect(client, tls=tls)
        self.flush()
        return client

    def httpClient(
        self, secure: bool = False, tls: tuple[Any, Any] | None = None
    ) -> HTTP11ClientProtocol:
        """Connect a public HTTP/1.1 client."""
        client = HTTP11ClientProtocol()
        self.connect(client, secure, tls)
        return client

    def request(
        self,
        client: HTTP11ClientProtocol,
        method: bytes,
        uri: bytes,
        headers: dict[bytes, list[bytes]],
        body: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Send a request on a public client and pump."""
        d = client.request(ClientRequest(method, uri, Headers(headers), body, persistent=True))
        self.flush()
        return d


@implementer(IHalfCloseableProtocol)
class RawLocal(Protocol):
    """
    A raw local service on a stream: records what it receives, answers its
    first read with C{answer} (then closes if C{close}), and with C{echo}
    echoes what follows the first empty line.
    """

    def __init__(self, answer: bytes = b"", echo: bool = False, close: bool = False) -> None:
        self.received = b""
        self.answer = answer
        self.echo = echo
        self.close = close
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        first = not self.received
        self.received += data
        if first and self.answer:
            self.transport.write(self.answer)
            if self.close:
                self.transport.loseConnection()
        elif self.echo and b"\r\n\r\n" in self.received and not first:
            self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = reason


@implementer(IBodyProducer)
class PatternBody:
    """
    A request body of L{pattern}, produced as fast as back-pressure
    allows.

    @ivar sent: how many bytes were written so far.
    @ivar pauses: how many times it was paused.
    """

    def __init__(self, size: int, events: list[str]) -> None:
        self.length = size
        self.sent = 0
        self.pauses = 0
        self.events = events
        self.paused = False

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self.consumer = consumer
        self.done: Deferred[None] = Deferred()
        self.resumeProducing()
        return self.done

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < self.length:
            chunk = pattern(min(64 * 1024, self.length - self.sent), offset=self.sent)
            self.sent += len(chunk)
            self.consumer.write(chunk)
        if self.sent >= self.length and not self.done.called:
            self.events.append("the public client sent everything")
            self.done.callback(None)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def stopProducing(self) -> None:
        self.paused = True


class OneShotFactory(Factory):
    """Builds one given protocol."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.protocol


@implementer(IHalfCloseableProtocol)
class HalfClosingClient(Protocol):
    """Collects what comes back until the peer closes."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(None)
