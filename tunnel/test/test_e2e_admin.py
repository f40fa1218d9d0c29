"""
End to end: the admin API of a real C{twistd tunnel-server}.
"""

from __future__ import annotations

import os

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.wire import Echo
from twisted.trial.unittest import TestCase

from tunnel.hostsfile import readHostsFile
from tunnel.test.twistdprocess import spawnTwistd

TOKEN = "e2e-admin-token"


class Collector(Protocol):
    """Collects what it receives; C{atLeast} fires once enough arrived."""

    def __init__(self) -> None:
        self.data = b""
        self._waiting: tuple[int, defer.Deferred[bytes]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self._waiting is not None and len(self.data) >= self._waiting[0]:
            done, self._waiting = self._waiting[1], None
            done.callback(self.data)

    def atLeast(self, size: int) -> defer.Deferred[bytes]:
        """Fire with the data once there are C{size} bytes of it (10 s at most)."""
        waiting: defer.Deferred[bytes] = defer.Deferred()
        self._waiting = (size, waiting)
        self.dataReceived(b"")
        return waiting.addTimeout(10, reactor)


class AdminPluginTests(TestCase):
    """Registering hosts through the admin API of a running server."""

    timeout = 60

    def setUp(self) -> None:
        self.hostsFile = self.mktemp()
        self.tokenFile = self.mktemp()
        with open(self.tokenFile, "w") as f:
            f.write(TOKEN + "\n")

    @defer.inlineCallbacks
    def startServer(self, adminPort: int = 0):
        server = spawnTwistd(reactor, "tunnel-server", [
            "--listen", "tcp:0:interface=127.0.0.1", "--hosts-file", self.hostsFile,
            "--admin", f"tcp:{adminPort}:interface=127.0.0.1",
            "--admin-token-file", self.tokenFile,
        ])
        self.addCleanup(server.kill)
        match = yield server.waitFor(r"(?<!Tunnel)Site starting on (\d+)")
        return server, int(match.group(1))

    def admin(self, port: int, method: str, path: str, token: str = TOKEN, **kw):
        return treq.request(
            method, f"http://127.0.0.1:{port}{path}",
            headers={"Authorization": [f"Bearer {token}"]}, persistent=False, **kw,
        )

    @defer.inlineCallbacks
    def test_registrationSurvivesRestart(self):
        """
        A host registered through the admin API gets a fresh identifier, is
        saved to the hosts file, and is still there after a restart; a
        request without the token gets 401.
        """
        server, port = yield self.startServer()
        refused = yield self.admin(port, "GET", "/hosts", token="wrong")
        self.assertEqual(refused.code, 401)
        yield refused.content()
        response = yield self.admin(port, "POST", "/hosts", json={"host": "new.localhost"})
        created = yield response.json()
        self.assertEqual(response.code, 201)
        self.assertEqual(readHostsFile(self.hostsFile), {"new.localhost": created["identifier"]})
        yield server.stop()

        server, port = yield self.startServer(port)
        response = yield self.admin(port, "GET", "/hosts")
        self.assertEqual(
            (yield response.json()), {"hosts": [{"host": "new.localhost", "connected": False}]}
        )
        self.assertNotIn(created["identifier"], server.output)

    @defer.inlineCallbacks
    def test_tcpListenerAddedAtRunTime(self):
        """
        A TCP listener added through the admin API for a registered host
        tunnels connections to that host's client, which maps the
        listener's port to a local echo; once deleted, the port refuses
        connections.
        """
        server, port = yield self.startServer()
        match = yield server.waitFor(r"TunnelSite starting on (\d+)")
        publicPort = int(match.group(1))
        response = yield self.admin(port, "POST", "/hosts", json={"host": "tcp.localhost"})
        identifier = (yield response.json())["identifier"]
        response = yield self.admin(port, "POST", "/tcp", json={
            "listen": "tcp:0:interface=127.0.0.1", "sameAs": "tcp.localhost",
        })
        added = yield response.json()
        self.assertEqual(response.code, 201, added)
        tcpPort = added["port"]
        self.assertNotEqual(tcpPort, 0)
        self.assertEqual(
            (added["listen"], added["host"]), ("tcp:0:interface=127.0.0.1", "tcp.localhost")
        )

        echo = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        client = spawnTwistd(
            reactor, "tunnel-client",
            ["--server", f"127.0.0.1:{publicPort}",
             "--local", f"{tcpPort}=127.0.0.1:{echo.getHost().port}"],
            {"TUNNEL_IDENTIFIER": identifier},
        )
        self.addCleanup(client.kill)
        yield client.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")
        response = yield self.admin(port, "GET", "/tcp")
        self.assertEqual(
            (yield response.json()),
            {"listeners": [{"port": tcpPort, "host": "tcp.localhost", "connected": True}]},
        )

        collector = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", tcpPort), collector)
        payload = os.urandom(256 * 1024)
        collector.transport.write(payload)
        echoed = yield collector.atLeast(len(payload))
        self.assertEqual(echoed, payload)
        collector.transport.loseConnection()

        response = yield self.admin(port, "DELETE", f"/tcp/{tcpPort}")
        self.assertEqual((response.code, (yield response.json())), (200, {"deleted": tcpPort}))
        yield self.assertFailure(
            connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", tcpPort), Protocol()),
            ConnectionRefusedError,
        )
        response = yield self.admin(port, "GET", "/tcp")
        self.assertEqual((yield response.json()), {"listeners": []})
        self.assertNotIn(identifier, server.output)
        self.assertEqual(readHostsFile(self.hostsFile), {"tcp.localhost": identifier})
