"""
The client's tunnel over the transports Twisted's client endpoints give:
TLS and UNIX sockets, against an in-process tunnel server on real sockets.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.python.filepath import FilePath
from twisted.test import __file__ as twistedTestsFile
from twisted.trial.unittest import TestCase

from tunnel.client import TunnelEndpoint, TunnelSettings, parseServerAddress
from tunnel.test.test_client_support import IDENTIFIER, FakeTunnelServer
from tunnel.test.test_mux import Recorder

CERTIFICATE = FilePath(twistedTestsFile).sibling("server.pem").path


class Banner(Protocol):
    """A local service that greets and closes."""

    def connectionMade(self) -> None:
        self.transport.write(b"banner\n")
        self.transport.loseConnection()


class TransportTests(TestCase):
    """A tunnel is set up and carries a connection over each transport."""

    timeout = 30

    @defer.inlineCallbacks
    def tunnelThrough(self, listen: str, connect: Callable[[Any], str]) -> Any:
        """
        Run a tunnel server listening on C{listen}, connect the client with
        the server address C{connect(port)}, and forward one connection to
        a local service.
        """
        servers: list[FakeTunnelServer] = []

        def buildServer() -> FakeTunnelServer:
            servers.append(FakeTunnelServer(reactor))
            return servers[-1]

        port = yield serverFromString(reactor, listen).listen(Factory.forProtocol(buildServer))
        self.addCleanup(port.stopListening)
        local = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(Banner)
        )
        self.addCleanup(local.stopListening)
        server = parseServerAddress(connect(port))
        endpoint = TunnelEndpoint(
            server.endpoint(reactor), TunnelSettings(IDENTIFIER, host=server.host), reactor
        )
        protocol = yield endpoint.connect(Factory.forProtocol(Recorder))
        [tunnelServer] = servers
        opened = tunnelServer.nextStream()
        tunnelServer.request(localPort=local.getHost().port)
        stream = yield opened
        yield stream.finished
        self.assertEqual(stream.data, b"banner\n")
        stream.transport.loseConnection()
        # Longer than the test's timeout: the close must not need the bound.
        yield protocol.transport.shutdown(timeout=60)
        self.assertIsNotNone(protocol.lost)
        return tunnelServer

    @defer.inlineCallbacks
    def test_tls(self) -> Any:
        """The tunnel works over TLS."""
        tunnelServer = yield self.tunnelThrough(
            f"ssl:0:interface=127.0.0.1:privateKey={CERTIFICATE}",
            lambda port: f"ssl:host=127.0.0.1:port={port.getHost().port}",
        )
        self.assertIn(b"\r\nHost: 127.0.0.1:", tunnelServer.requestHead)

    @defer.inlineCallbacks
    def test_unix(self) -> Any:
        """The tunnel works over a UNIX socket."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "tunnel.sock")
        tunnelServer = yield self.tunnelThrough(f"unix:{path}", lambda port: f"unix:{path}")
        self.assertIn(b"\r\nHost: localhost\r\n", tunnelServer.requestHead)
