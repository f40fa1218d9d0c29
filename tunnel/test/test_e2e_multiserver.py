"""
One client, several servers: a console client given two C{--server}s
keeps a tunnel to each, the public reaches the local service through
either, and losing one server loses no request sent to the other.
"""

from __future__ import annotations

import json
import sys

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.static import Data

from tunnel import cli
from tunnel.test.twistdprocess import spawnPython

IDENTIFIER = "the-two-servers-identifier-0123"
HOST = "app.localhost"


class SeveralServersTests(TestCase):
    """A console client with two servers, as real processes on loopback."""

    def command(self, *arguments: str):
        process = spawnPython(reactor, [sys.executable, "-m", "tunnel", *arguments])
        self.addCleanup(process.kill)
        return process

    @defer.inlineCallbacks
    def serve(self):
        server = self.command("server", "--listen", "tcp:0:interface=127.0.0.1",
                              "--host", f"{HOST}={IDENTIFIER}")
        port = (yield server.waitFor(r"TunnelSite starting on (\d+)")).group(1)
        return server, port

    def get(self, port: str):
        return treq.get(f"http://127.0.0.1:{port}/", headers={"Host": HOST}, persistent=False)

    @defer.inlineCallbacks
    def test_eitherServerServes(self):
        """
        Both servers reach the local service; once one is killed, the other
        still does, the client keeps trying the lost one, and its inspector
        says one of two servers is up.
        """
        page = Data(b"through either", "text/plain")
        page.isLeaf = True
        local = reactor.listenTCP(0, Site(page), interface="127.0.0.1")
        self.addCleanup(local.stopListening)
        first, firstPort = yield self.serve()
        second, secondPort = yield self.serve()
        client = self.command("client", "--server", f"127.0.0.1:{firstPort}",
                              "--server", f"127.0.0.1:{secondPort}", "--identifier", IDENTIFIER,
                              "--local", str(local.getHost().port),
                              "--inspect", "tcp:0:interface=127.0.0.1")
        inspector = (yield client.waitFor(r"Inspecting requests at (http://\S+/)")).group(1)
        for port in (firstPort, secondPort):
            yield client.waitFor(rf"Forwarding  http://app\.localhost:{port}/")
        for port in (firstPort, secondPort):
            response = yield self.get(port)
            self.assertEqual((yield treq.content(response)), b"through either")

        yield first.kill()
        yield client.waitFor(r"127\.0\.0\.1:%s\) (disconnected|waiting)|the tunnel ended" % firstPort)
        for _ in range(3):
            response = yield self.get(secondPort)
            self.assertEqual((yield treq.content(response)), b"through either")
        response = yield treq.get(inspector + "api/status", persistent=False)
        status = json.loads((yield treq.content(response)))
        self.assertTrue(status["connected"])
        self.assertEqual(
            sorted((t["server"], t["connected"]) for t in status["tunnels"]),
            sorted([(f"127.0.0.1:{firstPort}", False), (f"127.0.0.1:{secondPort}", True)]),
        )
        self.assertEqual(status["server"], f"127.0.0.1:{secondPort}")
        self.assertFalse(client.ended.called)

    @defer.inlineCallbacks
    def test_endsOnlyWhenEveryServerRefuses(self):
        """
        A client refused by one server keeps serving through the other; one
        refused by both ends, saying each refusal.
        """
        page = Data(b"still here", "text/plain")
        page.isLeaf = True
        local = reactor.listenTCP(0, Site(page), interface="127.0.0.1")
        self.addCleanup(local.stopListening)
        knowing, knowingPort = yield self.serve()
        stranger = self.command("server", "--listen", "tcp:0:interface=127.0.0.1",
                                "--host", f"{HOST}=another-identifier-0123")
        strangerPort = (yield stranger.waitFor(r"TunnelSite starting on (\d+)")).group(1)

        def client(*ports: str):
            servers = [word for port in ports for word in ("--server", f"127.0.0.1:{port}")]
            return self.command("client", *servers, "--identifier", IDENTIFIER,
                                "--local", str(local.getHost().port), "--give-up-after", "1",
                                "--inspect", "none")

        half = client(knowingPort, strangerPort)
        yield half.waitFor(rf"Forwarding  http://app\.localhost:{knowingPort}/")
        yield half.waitFor(r"\) refused: ")
        response = yield self.get(knowingPort)
        self.assertEqual((yield treq.content(response)), b"still here")
        self.assertFalse(half.ended.called)

        yield knowing.kill()
        other = self.command("server", "--listen", "tcp:0:interface=127.0.0.1")
        otherPort = (yield other.waitFor(r"TunnelSite starting on (\d+)")).group(1)
        refused = client(strangerPort, otherPort)
        code = yield refused.ended.addTimeout(30, reactor)
        self.assertEqual(code, cli.EXIT_FAILED, refused.output)
        last = refused.output.splitlines()[-2:]
        self.assertEqual([line.startswith("tunnel-client: ") for line in last], [True, True])
        self.assertIn(strangerPort, last[0])
        self.assertIn(otherPort, last[1])
