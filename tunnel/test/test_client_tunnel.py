"""
Tests for a whole client tunnel in memory: L{tunnel.client.TunnelEndpoint}
against an in-memory tunnel server, forwarding to in-memory local services
(L{tunnel.client.local}), and the graceful close.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tunnel.client import LocalRoutes, TunnelClientProtocol, TunnelRefusedError
from tunnel.client.local import serviceUnavailable
from tunnel.core.control import HANDSHAKE_REQUEST, IDENTIFIER_HEADER, TransportProtocol
from tunnel.test.support import Recorder
from tunnel.test.test_client_support import IDENTIFIER, REFUSAL, World
from tunnel.test.test_mux import deferredResult

HTTP = TransportProtocol.HTTP
TCP = TransportProtocol.TCP

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Responder(Protocol):
    """A local service that answers the first bytes and closes."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(RESPONSE)
        self.transport.loseConnection()


def connect(world: World) -> tuple[Recorder, TunnelClientProtocol]:
    """Set up a tunnel; return the connected protocol and the tunnel."""
    connecting = deferredResult(world.endpoint.connect(Factory.forProtocol(Recorder)))
    world.flush()
    [protocol] = connecting
    return protocol, protocol.transport


class EndpointTests(SynchronousTestCase):
    """L{TunnelEndpoint.connect}."""

    def test_firesAfterHandshake(self) -> None:
        """
        C{connect} fires once the server answered the handshake, with the
        protocol built by the factory, whose transport is the tunnel.
        """
        world = World()
        connecting = deferredResult(world.endpoint.connect(Factory.forProtocol(Recorder)))
        self.assertEqual(connecting, [])
        world.flush()
        [protocol] = connecting
        self.assertIsInstance(protocol.transport, TunnelClientProtocol)
        self.assertTrue(protocol.made)
        self.assertIn(
            IDENTIFIER_HEADER + b": " + IDENTIFIER.encode(), world.server.requestHead
        )
        self.assertEqual(world.server.control.received, HANDSHAKE_REQUEST)

    def test_failsWhenRefused(self) -> None:
        """
        C{connect} fails with L{TunnelRefusedError} when the server refuses
        the identifier; no protocol is connected.
        """
        world = World(response=REFUSAL)
        factory = Factory.forProtocol(Recorder)
        connecting = deferredResult(world.endpoint.connect(factory))
        world.flush()
        [failure] = connecting
        failure.trap(TunnelRefusedError)
        self.assertIsNotNone(world.server.lost)

    def test_reprRedactsIdentifier(self) -> None:
        """The endpoint's repr does not show the identifier."""
        self.assertNotIn(IDENTIFIER, repr(World().endpoint))


class ForwardingTests(SynchronousTestCase):
    """Each control message becomes one stream piped to a local service."""

    def test_eachMessageOpensOneStream(self) -> None:
        """One new client stream per control message, in order."""
        world = World()
        connect(world)
        world.server.request(HTTP, 3000)
        world.server.request(HTTP, 3001)
        world.flush()
        self.assertEqual([s.transport.streamID for s in world.server.streams], [3, 5])
        self.assertEqual(
            [client[:2] for client in world.reactor.tcpClients],
            [("127.0.0.1", 3000), ("127.0.0.1", 3001)],
        )

    def test_bytesBothWays(self) -> None:
        """
        Bytes the server writes on the stream, even before the local
        connection is up, reach the local service, and its answer comes back;
        its close closes the stream.
        """
        world = World()
        connect(world)
        local = world.listen(3000, Responder)
        world.server.request(HTTP, 3000)
        world.flush()
        [stream] = world.server.streams
        stream.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        world.flush()
        world.completeLocalConnection()
        world.flush()
        self.assertEqual(len(local.built), 1)
        self.assertEqual(stream.received, RESPONSE)
        self.assertTrue(stream.readEnded)

    def test_localAddressChoice(self) -> None:
        """
        The routes choose the address dialled: the fixed address for HTTP,
        the port map for TCP, 127.0.0.1 port 80 for a Host without port.
        """
        world = World(LocalRoutes.fromStrings(["localhost:4000", "2222=127.0.0.1:22"]))
        connect(world)
        world.server.request(HTTP, 3000)
        world.server.request(TCP, 2222)
        world.flush()
        self.assertEqual(
            [client[:2] for client in world.reactor.tcpClients],
            [("localhost", 4000), ("127.0.0.1", 22)],
        )
        world = World()
        connect(world)
        world.server.request(HTTP, 0)
        world.flush()
        self.assertEqual(world.reactor.tcpClients[0][:2], ("127.0.0.1", 80))

    def test_unavailableWhenLocalServerDown(self) -> None:
        """
        When the local service cannot be reached, an HTTP stream is answered
        with a C{503} that says so, and closed.
        """
        world = World()
        connect(world)
        world.server.request(HTTP, 3000)
        world.flush()
        world.failLocalConnection()
        world.flush()
        [stream] = world.server.streams
        self.assertEqual(
            stream.received,
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Content-Length: 42\r\n"
            b"Connection: close\r\n"
            b"\r\n"
            b"tunnel: no local server at 127.0.0.1:3000\n",
        )
        self.assertTrue(stream.readEnded)

    def test_tcpClosedWhenLocalServerDown(self) -> None:
        """A TCP stream whose local service cannot be reached is just closed."""
        world = World()
        connect(world)
        world.server.request(TCP, 2222)
        world.flush()
        world.failLocalConnection()
        world.flush()
        [stream] = world.server.streams
        self.assertEqual(stream.received, b"")
        self.assertTrue(stream.readEnded)

    def test_dialCancelledWhenStreamReset(self) -> None:
        """A stream reset while the local service is dialled stops the dial."""
        world = World()
        connect(world)
        world.server.request(HTTP, 3000)
        world.flush()
        world.server.streams[0].transport.abortConnection()
        world.flush()
        self.assertTrue(world.reactor.connectors[0].stoppedConnecting)

    def test_streamNotOpened(self) -> None:
        """
        A control message after the server's Go Away cannot be served: it is
        logged, and not counted as an open connection.
        """
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        world = World()
        protocol, tunnel = connect(world)
        world.server.session.goAway()
        world.server.request(HTTP, 3000)
        world.flush()
        self.assertEqual(world.server.streams, [])
        self.assertEqual(tunnel.openStreams, 0)
        self.assertIn(
            "Could not open a stream",
            " ".join(formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn),
        )
        closed = deferredResult(tunnel.shutdown())
        world.flush()
        self.assertEqual(closed, [None])

    def test_controlStreamEndClosesTunnel(self) -> None:
        """When the server ends the control stream the tunnel is closed."""
        world = World()
        protocol, tunnel = connect(world)
        world.server.control.transport.loseConnection()
        world.flush()
        self.assertIsNotNone(protocol.lost)
        self.assertIsNotNone(world.server.lost)


class ShutdownTests(SynchronousTestCase):
    """Closing a tunnel gracefully."""

    def openStream(self, world: World) -> None:
        world.listen(3000, Responder)
        world.server.request(HTTP, 3000)
        world.flush()
        world.completeLocalConnection()
        world.flush()

    def test_waitsForOpenStream(self) -> None:
        """
        C{loseConnection} sends Go Away and keeps the connection while a
        stream is open; it closes once the stream is done.
        """
        world = World()
        protocol, tunnel = connect(world)
        self.openStream(world)
        closed = deferredResult(tunnel.shutdown())
        world.flush()
        self.assertTrue(world.server.session.session.remoteGoAway)
        self.assertEqual((closed, protocol.lost, world.server.lost), ([], None, None))
        [stream] = world.server.streams
        stream.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        world.flush()
        self.assertEqual(stream.received, RESPONSE)
        self.assertEqual(closed, [None])
        self.assertIsNotNone(protocol.lost)
        self.assertIsNotNone(world.server.lost)

    def test_closesAfterBound(self) -> None:
        """Streams still open when the bound is reached are cut."""
        world = World(shutdownTimeout=5.0)
        protocol, tunnel = connect(world)
        self.openStream(world)
        tunnel.loseConnection()
        world.reactor.advance(4.9)
        world.flush()
        self.assertIsNone(protocol.lost)
        world.reactor.advance(0.1)
        world.flush()
        self.assertIsNotNone(protocol.lost)

    def test_idleClosesAtOnce(self) -> None:
        """Without open streams the connection closes at once."""
        world = World()
        protocol, tunnel = connect(world)
        closed = deferredResult(tunnel.shutdown())
        world.flush()
        self.assertEqual(closed, [None])
        self.assertTrue(world.server.session.session.remoteGoAway)

    def test_newRequestsAnsweredUnavailable(self) -> None:
        """
        Requests that arrive while the tunnel closes get a C{503} at once,
        and do not hold the close up.
        """
        world = World()
        protocol, tunnel = connect(world)
        self.openStream(world)
        tunnel.loseConnection()
        world.server.request(HTTP, 3000)
        world.flush()
        late = world.server.streams[1]
        self.assertEqual(late.received, serviceUnavailable("tunnel: the client is shutting down\n"))
        self.assertTrue(late.readEnded)
        self.assertEqual(len(world.reactor.tcpClients), 0)
        world.server.streams[0].transport.write(b"GET / HTTP/1.1\r\n\r\n")
        world.flush()
        self.assertIsNotNone(protocol.lost)
