"""
In-memory peers for the client's tests: a tunnel server, an endpoint that
connects to it, and local services, all on one L{MemoryReactorClock}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from tunnel.client import LocalRoutes, PortRanges, TunnelEndpoint, TunnelSettings
from tunnel.mux import YamuxProtocol
from tunnel.core.control import (
    CONNECTED_RESPONSE,
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    ControlMessage,
    TransportProtocol,
)
from tunnel.test.streams import EchoStream
from tunnel.test.support import HalfCloseRecorder, RecordingFactory

IDENTIFIER = "secret-identifier-1234"

#: The routes of the tests' clients unless they say otherwise: the ports of
#: the tests' local services, dialled on 127.0.0.1.
TEST_ROUTES = LocalRoutes(dynamicPorts=PortRanges.fromStrings(["2222,3000-3001"]))

REFUSAL = (
    b"HTTP/1.1 403 Forbidden\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Content-Length: 19\r\n"
    b"\r\n"
    b"unknown identifier\n"
)


class FakeControl(Protocol):
    """
    The server's end of the control stream: answers the handshake and sends
    control messages.
    """

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        answered = len(self.received) >= len(HANDSHAKE_REQUEST)
        self.received += data
        if not answered and len(self.received) >= len(HANDSHAKE_REQUEST):
            self.transport.write(self.answer)

    def send(self, message: ControlMessage) -> None:
        self.transport.write(message.encode())


class ServerStream(HalfCloseRecorder):
    """
    The server's end of a stream the client opened for a control message.

    @ivar finished: fires with L{None} once the client half-closed it.
    """

    def __init__(self, server: FakeTunnelServer) -> None:
        super().__init__()
        self.server = server
        self.finished: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.server.streamOpened(self)

    def readConnectionLost(self) -> None:
        super().readConnectionLost()
        self.finished.callback(None)


class FakeTunnelServer(Protocol):
    """
    The server side of one tunnel connection: reads the control request,
    answers C{response}, and on C{200} runs the yamux server side. The first
    stream the client opens is the control stream; the others are recorded.

    @ivar requestHead: the control request as received.
    @ivar streams: the recorders of the streams the client opened for
        control messages, in order.
    """

    def __init__(
        self,
        clock: Any,
        response: bytes = CONNECTED_RESPONSE,
        handshakeAnswer: bytes = HANDSHAKE_RESPONSE,
    ) -> None:
        self.clock = clock
        self.response = response
        self.handshakeAnswer = handshakeAnswer
        self.requestHead = b""
        self.session: YamuxProtocol | None = None
        self.control: FakeControl | None = None
        self.streams: list[ServerStream] = []
        self.lost: Failure | None = None
        self._buffer = b""
        self._streamWaiters: list[Deferred[ServerStream]] = []

    def dataReceived(self, data: bytes) -> None:
        if self.session is not None:
            self.session.dataReceived(data)
            return
        self._buffer += data
        head, end, rest = self._buffer.partition(b"\r\n\r\n")
        if not end:
            return
        self.requestHead = head + end
        self.transport.write(self.response)
        if self.response.startswith(b"HTTP/1.1 200 "):
            self.session = YamuxProtocol(False, _ServerStreams(self), clock=self.clock)
            self.session.makeConnection(self.transport)
            if rest:
                self.session.dataReceived(rest)

    def connectionLost(self, reason: Failure) -> None:
        self.lost = reason
        if self.session is not None:
            self.session.connectionLost(reason)

    def request(
        self, transportProtocol: int = TransportProtocol.HTTP, localPort: int = 0
    ) -> None:
        """Ask the client for a stream."""
        assert self.control is not None
        self.control.send(ControlMessage(1, transportProtocol, localPort))

    def nextStream(self) -> Deferred[ServerStream]:
        """Fire with the next stream the client opens."""
        waiter: Deferred[ServerStream] = Deferred()
        self._streamWaiters.append(waiter)
        return waiter

    def streamOpened(self, stream: ServerStream) -> None:
        """Record a stream the client opened."""
        self.streams.append(stream)
        if self._streamWaiters:
            self._streamWaiters.pop(0).callback(stream)


class _ServerStreams(Factory):
    def __init__(self, server: FakeTunnelServer) -> None:
        self.server = server

    def buildProtocol(self, addr: Any) -> Protocol:
        if self.server.control is None:
            self.server.control = FakeControl(self.server.handshakeAnswer)
            return self.server.control
        return ServerStream(self.server)


@implementer(IStreamClientEndpoint)
class FakeServerEndpoint:
    """
    Connects in memory to a new L{FakeTunnelServer} per attempt, or refuses
    the connection while C{refusing} is set.

    @ivar servers: the servers connected to, in order.
    @ivar pumps: the pumps of their connections.
    """

    def __init__(self, reactor: MemoryReactorClock, makeServer: Callable[[], Protocol]) -> None:
        self.reactor = reactor
        self.makeServer = makeServer
        self.refusing = False
        self.servers: list[Any] = []
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Protocol]:
        if self.refusing:
            return fail(ConnectionRefusedError("no server here"))
        server = self.makeServer()
        client = factory.buildProtocol(iosim.FakeAddress())
        self.pumps.append(
            iosim.connect(
                server,
                iosim.makeFakeServer(server),
                client,
                iosim.makeFakeClient(client),
                greet=False,
                clock=self.reactor,
            )
        )
        self.servers.append(server)
        return succeed(client)


class World:
    """
    A tunnel client's endpoint, the in-memory server it connects to, and
    in-memory local services on the same reactor.

    @ivar reactor: the reactor and clock of everything.
    @ivar serverEndpoint: where the tunnel connects.
    @ivar endpoint: the tunnel endpoint.
    """

    def __init__(
        self,
        routes: LocalRoutes = TEST_ROUTES,
        response: bytes = CONNECTED_RESPONSE,
        handshakeAnswer: bytes = HANDSHAKE_RESPONSE,
        **settings: Any,
    ) -> None:
        self.reactor = MemoryReactorClock()
        self.response = response
        self.serverEndpoint = FakeServerEndpoint(
            self.reactor, lambda: FakeTunnelServer(self.reactor, self.response, handshakeAnswer)
        )
        self.endpoint = TunnelEndpoint(
            self.serverEndpoint,
            TunnelSettings(IDENTIFIER, routes=routes, **settings),
            self.reactor,
        )
        self._completer = iosim.ConnectionCompleter(self.reactor)

    @property
    def server(self) -> FakeTunnelServer:
        """The server of the latest connection."""
        return self.serverEndpoint.servers[-1]

    def listen(self, port: int, protocolClass: type[Protocol] = EchoStream) -> RecordingFactory:
        """Run a local service on 127.0.0.1:C{port}."""
        factory = RecordingFactory(protocolClass)
        self.reactor.listenTCP(port, factory)
        return factory

    def completeLocalConnection(self) -> None:
        """Let the oldest pending local connection succeed."""
        pump = self._completer.succeedOnce(greet=False)
        assert pump is not None, "no pending local connection to a listening port"
        self.serverEndpoint.pumps.append(pump)

    def failLocalConnection(self) -> None:
        """Let the oldest pending local connection fail."""
        self._completer.failOnce()

    def flush(self) -> None:
        """Move bytes until nothing moves."""
        for _ in range(1000):
            if not any([pump.flush() for pump in self.serverEndpoint.pumps]):
                return
        raise AssertionError("the connections never went quiet")

