"""
Self-service hosts end to end: a real server with a base domain and an
accounts file, and real clients with a token, as console commands and as
twistd plugins, over loopback.
"""

from __future__ import annotations

import json
import sys

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.static import Data

from tunnel.hostsfile import readHostsFile
from tunnel.test.twistdprocess import TwistdProcess, spawnPython, spawnTwistd

TOKEN = "alice-token-0123456789abcdef"


class SelfServiceTests(TestCase):
    """A client with a token gets a host of its own, and keeps it."""

    timeout = 120

    def setUp(self) -> None:
        page = Data(b"hello from alice", "text/plain")
        page.isLeaf = True
        self.local = reactor.listenTCP(0, Site(page), interface="127.0.0.1")
        self.addCleanup(self.local.stopListening)
        self.accountsFile = self.mktemp()
        with open(self.accountsFile, "w") as f:
            f.write(f"# NAME MAX_HOSTS TOKEN\nalice 2 {TOKEN}\n")
        self.hostsFile = self.mktemp()
        self.stateFile = self.mktemp()

    def command(self, *arguments: str) -> TwistdProcess:
        process = spawnPython(reactor, [sys.executable, "-m", "tunnel", *arguments])
        self.addCleanup(process.kill)
        return process

    @defer.inlineCallbacks
    def serve(self, listen: str = "tcp:0:interface=127.0.0.1"):
        """A console server with self-service hosts; fire with it and its port."""
        server = self.command(
            "server", "--listen", listen, "--domain", "tunnel.localhost",
            "--accounts-file", self.accountsFile, "--hosts-file", self.hostsFile,
        )
        match = yield server.waitFor(r"TunnelSite starting on (\d+)")
        return server, match.group(1)

    def client(self, port: str, *arguments: str) -> TwistdProcess:
        """A console client of the server on C{port}, with its state file."""
        return self.command(
            "client", "--server", f"127.0.0.1:{port}", "--local", str(self.local.getHost().port),
            "--state-file", self.stateFile, *arguments,
        )

    @defer.inlineCallbacks
    def assertServes(self, port: str, host: str):
        response = yield treq.get(
            f"http://127.0.0.1:{port}/", headers={"Host": host}, persistent=False
        )
        self.assertEqual((yield treq.content(response)), b"hello from alice")

    def kept(self) -> dict:
        with open(self.stateFile) as f:
            return json.load(f)["registrations"]

    @defer.inlineCallbacks
    def test_consoleClientKeepsItsHost(self):
        """
        The console client with a token and a subdomain prints its new host,
        serves it, and keeps the identifier in the state file; started again,
        it gets the same host without a new registration, even from a server
        restarted on its hosts file.
        """
        server, port = yield self.serve()
        client = self.client(port, "--token", TOKEN, "--subdomain", "myapp")
        forwarding = f"Forwarding  http://myapp.tunnel.localhost:{port}/  ->  127.0.0.1:"
        yield client.waitFor(forwarding)
        yield self.assertServes(port, "myapp.tunnel.localhost")
        kept = self.kept()
        self.assertEqual(list(kept), [f"127.0.0.1:{port} myapp"])
        identifier = kept[f"127.0.0.1:{port} myapp"]["identifier"]
        self.assertTrue(identifier.startswith("alice~"))
        self.assertEqual(readHostsFile(self.hostsFile), {"myapp.tunnel.localhost": identifier})
        self.assertNotIn(identifier, client.output + server.output)
        self.assertNotIn(TOKEN, client.output + server.output)
        yield client.stop()

        again = self.client(port, "--token", TOKEN, "--subdomain", "myapp")
        yield again.waitFor(forwarding)
        yield again.stop()
        self.assertEqual(server.output.count("Registered host myapp.tunnel.localhost"), 1)

        yield server.stop()
        restarted, samePort = yield self.serve(f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(samePort, port)
        third = self.client(port, "--token", TOKEN, "--subdomain", "myapp")
        yield third.waitFor(forwarding)
        yield self.assertServes(port, "myapp.tunnel.localhost")
        self.assertNotIn("Registered host", restarted.output)
        self.assertEqual(self.kept()[f"127.0.0.1:{port} myapp"]["identifier"], identifier)

    @defer.inlineCallbacks
    def test_randomHostUnderTwistd(self):
        """
        The twistd client with a token and no subdomain gets a random host,
        keeps it in its state file, and comes back to it after a restart.
        """
        server = spawnTwistd(reactor, "tunnel-server", [
            "--listen", "tcp:0:interface=127.0.0.1", "--domain", "tunnel.localhost",
            "--accounts-file", self.accountsFile, "--hosts-file", self.hostsFile,
        ])
        self.addCleanup(server.kill)
        port = (yield server.waitFor(r"TunnelSite starting on (\d+)")).group(1)
        arguments = ["--server", f"127.0.0.1:{port}", "--local", str(self.local.getHost().port),
                     "--state-file", self.stateFile]
        client = spawnTwistd(reactor, "tunnel-client", arguments, {"TUNNEL_TOKEN": TOKEN})
        self.addCleanup(client.kill)
        match = yield client.waitFor(r"registered ([a-z][a-z0-9]{9}\.tunnel\.localhost) for")
        host = match.group(1)
        yield client.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")
        yield self.assertServes(port, host)
        self.assertEqual(self.kept()[f"127.0.0.1:{port} *"]["host"], host)
        yield client.stop()
        again = spawnTwistd(reactor, "tunnel-client", arguments, {"TUNNEL_TOKEN": TOKEN})
        self.addCleanup(again.kill)
        yield again.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")
        yield self.assertServes(port, host)
        self.assertEqual(list(readHostsFile(self.hostsFile)), [host])

    @defer.inlineCallbacks
    def test_wrongTokenEndsTheConsoleClient(self):
        """A token the server does not know ends the console client, saying what to check."""
        server, port = yield self.serve()
        client = self.client(port, "--token", "not-the-token-0123456789")
        code = yield client.ended.addTimeout(60, reactor)
        self.assertEqual(code, 1, client.output)
        last = client.output.splitlines()[-1]
        self.assertIn("unknown token", last)
        self.assertIn("check the token", last)
        self.assertNotIn("not-the-token-0123456789", client.output)

    @defer.inlineCallbacks
    def test_accountsFileIsReloadedOnHangUp(self):
        """An account added to the file works after SIGHUP, without a restart."""
        server, port = yield self.serve()
        with open(self.accountsFile, "a") as f:
            f.write("bob 1 bob-token-0123456789abcdef\n")
        # Once it says so, its signal handlers are in place.
        yield server.waitFor(r"tunnel-server is running")
        server.signal("HUP")
        yield server.waitFor(r"Reloaded the accounts file .*: 2 accounts")
        client = self.client(port, "--token", "bob-token-0123456789abcdef", "--subdomain", "bob")
        yield client.waitFor(f"Forwarding  http://bob.tunnel.localhost:{port}/")
        yield self.assertServes(port, "bob.tunnel.localhost")
