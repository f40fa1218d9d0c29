"""
Tests for TCP tunnels (L{tunnel.server.tcp} through
L{TunnelServer.bindTCP}), in memory.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.core.control import ControlMessage, TransportProtocol
from tunnel.server import ListenerStatus
from tunnel.test.serversupport import PUBLIC_PEER, Harness, RawLocal
from tunnel.test.support import Recorder

IDENTIFIER = b"tcp-identifier"
PORT = 2222


@implementer(IListeningPort)
class MemoryPort:
    """A listening port that only remembers whether it was stopped."""

    def __init__(self) -> None:
        self.stopped = False

    def stopListening(self) -> None:
        self.stopped = True

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", PORT)


@implementer(IStreamServerEndpoint)
class MemoryEndpoint:
    """An endpoint that keeps the factory it is given to listen with."""

    def __init__(self) -> None:
        self.factory: Factory | None = None
        self.port = MemoryPort()

    def listen(self, factory: Factory):
        self.factory = factory
        return succeed(self.port)


class TCPTunnelTests(SynchronousTestCase):
    """
    Each connection accepted on a bound listener becomes one stream asked
    for with transportProtocol TCP and the listener's port, piped raw.
    """

    def setUp(self) -> None:
        self.harness = Harness()
        self.endpoint = MemoryEndpoint()
        self.port = self.successResultOf(
            self.harness.server.bindTCP(self.endpoint, IDENTIFIER)
        )
        self.locals: list[RawLocal] = []

    def connectStream(self, message: ControlMessage) -> Protocol:
        local = RawLocal(b"banner\r\n\r\n", echo=True)
        self.locals.append(local)
        return local

    def accept(self) -> Recorder:
        """Connect a public client to the bound listener."""
        public = Recorder()
        server = self.endpoint.factory.buildProtocol(PUBLIC_PEER)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, self.port.getHost(), PUBLIC_PEER),
            public,
            iosim.FakeTransport(public, False, PUBLIC_PEER, self.port.getHost()),
            greet=False,
            clock=self.harness.clock,
        )
        self.harness.pumps.append(pump)
        self.harness.flush()
        return public

    def test_connectionIsPipedThroughAStream(self) -> None:
        """
        An accepted connection asks for a TCP stream with the listener's
        port, and bytes flow raw both ways.
        """
        client = self.harness.tunnelClient(IDENTIFIER, self.connectStream)
        public = self.accept()
        self.assertEqual(client.messages, [ControlMessage(1, TransportProtocol.TCP, PORT)])
        public.transport.write(b"hello\r\n\r\n")
        self.harness.flush()
        public.transport.write(b"echo me")
        self.harness.flush()
        self.assertEqual(self.locals[0].received, b"hello\r\n\r\necho me")
        self.assertEqual(public.received, b"banner\r\n\r\necho me")
        public.transport.loseConnection()
        self.harness.flush()
        self.assertIsNotNone(self.locals[0].lost)

    def test_connectionWithoutClientIsClosed(self) -> None:
        """Without a connected client, an accepted connection is closed."""
        public = self.accept()
        self.assertIsNotNone(public.lost)

    def test_connectionWithoutStreamInTimeIsClosed(self) -> None:
        """If the client opens no stream in time, the connection is closed."""
        self.harness.tunnelClient(IDENTIFIER, lambda message: None)
        public = self.accept()
        self.assertIsNone(public.lost)
        self.harness.advance(10)
        self.assertIsNotNone(public.lost)

    def test_connectionLostWhileWaitingGivesTheStreamUp(self) -> None:
        """
        A connection that closes before its stream arrives gives it up: the
        stream is closed when it arrives.
        """
        client = self.harness.tunnelClient(IDENTIFIER, lambda message: None)
        public = self.accept()
        public.transport.loseConnection()
        self.harness.flush()
        late = RawLocal()
        client.mux.openStream(late)
        self.harness.flush()
        self.assertIsNotNone(late.lost)

    def test_listenersAreListed(self) -> None:
        """
        tcpListeners lists the bound listeners and whether their client is
        connected, until they are unbound.
        """
        self.harness.server.addHost("a.example", IDENTIFIER)
        self.assertEqual(
            self.harness.server.tcpListeners(), [ListenerStatus(PORT, "a.example", False)]
        )
        self.harness.tunnelClient(IDENTIFIER, self.connectStream)
        self.assertEqual(
            self.harness.server.tcpListeners(), [ListenerStatus(PORT, "a.example", True)]
        )
        self.successResultOf(self.harness.server.unbindTCP(self.port))
        self.assertEqual(self.harness.server.tcpListeners(), [])

    def test_listenerKeepsTheIdentifierKnown(self) -> None:
        """
        An identifier with a listener and no host may connect; unbinding
        its last listener stops the port and disconnects the client.
        """
        client = self.harness.tunnelClient(IDENTIFIER, self.connectStream)
        self.assertTrue(client.handshaken.called)
        self.successResultOf(self.harness.server.unbindTCP(self.port))
        self.harness.flush()
        self.assertTrue(self.endpoint.port.stopped)
        self.assertIsNotNone(client.lost)
        self.assertEqual(self.harness.server.clients(), [])

    def test_emptyIdentifierIsRefusedBeforeListening(self) -> None:
        """
        Binding a listener to an empty identifier raises L{ValueError} at
        once, and the endpoint is never asked to listen.
        """
        endpoint = MemoryEndpoint()
        for empty in (b"", ""):
            self.assertRaises(ValueError, self.harness.server.bindTCP, endpoint, empty)
        self.assertIsNone(endpoint.factory)
