"""
Tests for L{tunnel.workers.sockets}: listeners bound once and adopted,
as the workers of C{--workers} adopt them, over TCP and TLS, on real
loopback sockets in this process.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP6ClientEndpoint, clientFromString, connectProtocol
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.python.filepath import FilePath
from twisted.test import __file__ as twistedTestsFile
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tunnel.test.support import Recorder, until
from tunnel.workers.sockets import adoptingEndpoint, bindShared, sharingProblem, socketFamily

CERTIFICATE = FilePath(twistedTestsFile).sibling("server.pem").path


class Greeting(Protocol):
    """Says which listener accepted the connection, and closes it."""

    def __init__(self, name: bytes) -> None:
        self.name = name

    def connectionMade(self) -> None:
        self.transport.write(self.name)
        self.transport.loseConnection()


class SharingProblemTests(SynchronousTestCase):
    def test_tcpTcp6AndSslAreShared(self) -> None:
        """The endpoints that are one TCP socket can be shared, whatever their case."""
        for description in ("tcp:8080", "TCP6:port=80:interface=\\:\\:1",
                            "ssl:443:privateKey=key.pem"):
            self.assertIsNone(sharingProblem(description))

    def test_othersAreNot(self) -> None:
        """A UNIX socket, systemd's or any other is refused, saying which types are shared."""
        self.assertEqual(
            sharingProblem("unix:/run/tunnel.sock"),
            "a unix: endpoint cannot be shared by workers: they share tcp:, tcp6: and ssl: "
            "listeners only",
        )
        self.assertIsNotNone(sharingProblem("systemd:domain=INET:index=0"))
        self.assertRaises(ValueError, bindShared, "unix:/run/tunnel.sock")
        self.assertRaises(ValueError, adoptingEndpoint, reactor, "unix:/run/tunnel.sock", 3)


class BindAndAdoptTests(TestCase):
    """A socket L{bindShared} bound, adopted twice as two workers would adopt it."""

    def bind(self, description: str) -> socket.socket:
        bound = bindShared(description)
        self.addCleanup(bound.close)
        return bound

    @defer.inlineCallbacks
    def adoptTwice(self, description: str, bound: socket.socket):
        """Two listeners on duplicates of C{bound}, as two workers have; fire with them."""
        ports = []
        for name in (b"first", b"second"):
            fileno = os.dup(bound.fileno())
            self.addCleanup(os.close, fileno)
            port = yield adoptingEndpoint(reactor, description, fileno).listen(
                Factory.forProtocol(lambda name=name: Greeting(name))
            )
            self.addCleanup(port.stopListening)
            ports.append(port)
        return ports

    @defer.inlineCallbacks
    def greeting(self, client: str | TCP6ClientEndpoint) -> bytes:
        recorder = Recorder()
        if isinstance(client, str):
            client = clientFromString(reactor, client)
        yield connectProtocol(client, recorder)
        yield until(lambda: recorder.lost is not None, what="the connection closed")
        return recorder.received

    @defer.inlineCallbacks
    def test_tcp(self) -> None:
        """
        Port 0 is bound once: both adopted listeners are on its port, and
        connections to it are served by them.
        """
        description = "tcp:0:interface=127.0.0.1:backlog=64"
        bound = self.bind(description)
        port = bound.getsockname()[1]
        self.assertNotEqual(port, 0)
        self.assertFalse(bound.getblocking())
        listeners = yield self.adoptTwice(description, bound)
        self.assertEqual([listener.getHost().port for listener in listeners], [port, port])
        for _ in range(5):
            self.assertIn((yield self.greeting(f"tcp:127.0.0.1:{port}")), (b"first", b"second"))

    @defer.inlineCallbacks
    def test_oneStopsListeningTheOtherServes(self) -> None:
        """A worker that stops listening leaves the socket listening for the others."""
        description = "tcp:0:interface=127.0.0.1"
        bound = self.bind(description)
        first, second = yield self.adoptTwice(description, bound)
        yield first.stopListening()
        for _ in range(3):
            received = yield self.greeting(f"tcp:127.0.0.1:{bound.getsockname()[1]}")
            self.assertEqual(received, b"second")

    @defer.inlineCallbacks
    def test_tls(self) -> None:
        """An C{ssl:} listener is adopted, then speaks TLS with the endpoint's certificate."""
        description = f"ssl:0:interface=127.0.0.1:privateKey={CERTIFICATE}"
        bound = self.bind(description)
        listeners = yield self.adoptTwice(description, bound)
        port = listeners[0].getHost().port
        received = yield self.greeting(f"ssl:127.0.0.1:{port}")
        self.assertIn(received, (b"first", b"second"))

    @defer.inlineCallbacks
    def test_tcp6(self) -> None:
        """A C{tcp6:} listener is an IPv6 socket, adopted as one."""
        if not socket.has_ipv6:
            raise SkipTest("no IPv6")
        description = "tcp6:0:interface=\\:\\:1"
        try:
            bound = self.bind(description)
        except CannotListenError as e:
            raise SkipTest(f"no IPv6 loopback: {e}")
        self.assertEqual(socketFamily(bound.fileno()), socket.AF_INET6)
        listeners = yield self.adoptTwice(description, bound)
        port = listeners[0].getHost().port
        received = yield self.greeting(TCP6ClientEndpoint(reactor, "::1", port))
        self.assertIn(received, (b"first", b"second"))

    def test_aPortInUseIsSaidAsTwistedSaysIt(self) -> None:
        """
        A port another socket listens on cannot be bound: L{CannotListenError},
        as Twisted's own ports say it.
        """
        taken = self.bind("tcp:0:interface=127.0.0.1")
        port = taken.getsockname()[1]
        with self.assertRaises(CannotListenError) as raised:
            bindShared(f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual((raised.exception.interface, raised.exception.port), ("127.0.0.1", port))
