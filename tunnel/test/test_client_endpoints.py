"""
The client's tunnel over the transports Twisted's client endpoints give:
TLS and UNIX sockets, against an in-process tunnel server on real sockets;
and the verification of the server's certificate with C{tls:}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

import trustme
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.python.filepath import FilePath
from twisted.test import __file__ as twistedTestsFile
from twisted.trial.unittest import TestCase

from tunnel.client import (
    ClientState,
    LocalRoutes,
    TunnelClientService,
    TunnelEndpoint,
    TunnelSettings,
    parseServerAddress,
)
from tunnel.server import TunnelServer
from tunnel.test.support import Recorder, until
from tunnel.test.test_client_support import IDENTIFIER, FakeTunnelServer

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
        routes = LocalRoutes.fromStrings([], [str(local.getHost().port)])
        endpoint = TunnelEndpoint(
            server.endpoint(reactor),
            TunnelSettings(IDENTIFIER, routes=routes, host=server.host),
            reactor,
        )
        protocol = yield endpoint.connect(Factory.forProtocol(Recorder))
        [tunnelServer] = servers
        opened = tunnelServer.nextStream()
        tunnelServer.request(localPort=local.getHost().port)
        stream = yield opened
        yield stream.finished
        self.assertEqual(stream.received, b"banner\n")
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


class VerifiedTLSTests(TestCase):
    """
    A client given a C{tls:} server address verifies the server's
    certificate and name (Twisted's C{tls:} endpoint does), against the CA
    certificates of its C{trustRoots} directory: it connects to a tunnel
    server with the right certificate and refuses any other, saying why.
    """

    timeout = 30

    def setUp(self) -> None:
        self.ca = trustme.CA()
        self.directory = FilePath(self.mktemp())
        self.directory.makedirs()
        self.trustRoots = self.directory.child("ca")
        self.trustRoots.makedirs()
        self.ca.cert_pem.write_to_path(self.trustRoots.child("ca.pem").path)

    @defer.inlineCallbacks
    def serve(self, ca: trustme.CA, name: str) -> Any:
        """
        Serve a tunnel server over C{ssl:} on 127.0.0.1 with a certificate
        for C{name} issued by C{ca}; fire with the server and its port.
        """
        certificate = self.directory.child(f"{name}.pem")
        ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(certificate.path)
        server = TunnelServer(reactor)
        server.addHost("app.example", IDENTIFIER)
        self.addCleanup(server.close)
        description = f"ssl:0:interface=127.0.0.1:privateKey={certificate.path}"
        port = yield serverFromString(reactor, description).listen(server.site())
        self.addCleanup(port.stopListening)
        return server, port.getHost().port

    @defer.inlineCallbacks
    def runClient(self, port: int) -> Any:
        """
        Run a client service on C{tls:localhost:PORT:trustRoots=DIR} until
        it is connected or has failed once; fire with its last state.
        """
        address = parseServerAddress(
            f"tls:localhost:{port}:trustRoots={self.trustRoots.path}"
        )
        service = TunnelClientService(
            TunnelEndpoint(
                address.endpoint(reactor), TunnelSettings(IDENTIFIER, host=address.host), reactor
            )
        )
        settled: defer.Deferred[ClientState] = defer.Deferred()
        seen: list[ClientState] = []

        def observe(state: ClientState) -> None:
            if state.name in ("connected", "waiting") and not seen:
                seen.append(state)
                # Not from inside the service's state change.
                reactor.callLater(0, settled.callback, state)

        service.addStateObserver(observe)
        service.startService()
        self.addCleanup(service.stopService)
        state = yield settled
        return state

    @defer.inlineCallbacks
    def test_plainPortSaysSoAtOnce(self) -> Any:
        """
        A C{tls:} client at a server's plain port fails its first attempt
        at once (the server answers the TLS handshake in plain text) and
        says to connect without TLS.
        """
        server = TunnelServer(reactor)
        server.addHost("app.example", IDENTIFIER)
        self.addCleanup(server.close)
        # Without a header timeout a held handshake would never end.
        site = server.site(headerTimeout=None)
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        state = yield self.runClient(port.getHost().port)
        self.assertEqual(state.name, "waiting")
        self.assertIn("the server's port does not speak TLS; connect with tcp:", state.detail)

    @defer.inlineCallbacks
    def test_rightNameConnects(self) -> Any:
        """A certificate for the name dialled, from a trusted CA, is accepted."""
        server, port = yield self.serve(self.ca, "localhost")
        state = yield self.runClient(port)
        self.assertEqual(state.name, "connected")
        yield until(lambda: len(server.clients()) == 1)

    @defer.inlineCallbacks
    def test_otherNameIsRefused(self) -> Any:
        """
        A certificate from the trusted CA for another name is refused: the
        client never reaches the server's tunnel, and its state says the
        certificate's verification failed.
        """
        server, port = yield self.serve(self.ca, "other.example")
        state = yield self.runClient(port)
        self.assertEqual(state.name, "waiting")
        self.assertIn(
            "TLS certificate verification failed: the server's certificate is not "
            "valid for localhost",
            state.detail,
        )
        self.assertEqual(server.clients(), [])

    @defer.inlineCallbacks
    def test_untrustedCertificateIsRefused(self) -> Any:
        """
        A certificate for the right name from a CA the client does not trust
        is refused, saying so.
        """
        server, port = yield self.serve(trustme.CA(), "localhost")
        state = yield self.runClient(port)
        self.assertEqual(state.name, "waiting")
        self.assertIn(
            "TLS certificate verification failed: the server's certificate is not trusted",
            state.detail,
        )
        self.assertEqual(server.clients(), [])
