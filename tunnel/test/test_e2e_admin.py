"""
End to end: the admin API of a real C{twistd tunnel-server}.
"""

from __future__ import annotations

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tunnel.hostsfile import readHostsFile
from tunnel.test.twistdprocess import spawnTwistd

TOKEN = "e2e-admin-token"


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
