"""
Tests for L{tunnel.config}: TOML configuration files for both commands.
"""

from __future__ import annotations

import sys

import treq
from twisted.internet import defer, reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.static import Data

from tunnel import cli
from tunnel.options import ClientOptions, ServerOptions
from tunnel.test.twistdprocess import spawnPython, spawnTwistd


class ConfigFileTests(SynchronousTestCase):
    """What a file stands for, and the mistakes in one."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_serverFile(self) -> None:
        """
        Keys are options; lists repeat an option; the command line wins for
        a single option and adds to a repeatable one.
        """
        path = self.write(
            'listen = ["tcp:8080:interface=127.0.0.1", "8443"]\n'
            'host = ["a.example=first-identifier", "b.example=second-identifier"]\n'
            "stream-timeout = 5\n"
        )
        options = ServerOptions()
        options.parseOptions(
            ["--config", path, "--stream-timeout", "7", "--host", "c.example=third-identifier"]
        )
        self.assertEqual(len(options["listen"]), 2)
        self.assertEqual(sorted(options["hosts"]), ["a.example", "b.example", "c.example"])
        self.assertEqual(options["stream-timeout"], 7.0)

    def test_clientFileWithSeveralRoutes(self) -> None:
        """One client file holds several local routes; C{--config=PATH} works too."""
        path = self.write(
            'server = "https://tunnel.example.com"\n'
            'identifier = "a-client-identifier"\n'
            'local = ["3000", "2222=127.0.0.1:22", "5432=127.0.0.1:5432"]\n'
            "give-up-after = 0\n"
        )
        options = ClientOptions()
        options.parseOptions([f"--config={path}"])
        routes = options["settings"].routes
        self.assertEqual(str(routes.fixed), "127.0.0.1:3000")
        self.assertEqual(sorted(routes.ports), [2222, 5432])
        self.assertEqual(options["serverAddress"].host, "tunnel.example.com:443")

    def test_mistakes(self) -> None:
        """Each mistake is a usage error that names the file and what is wrong."""
        cases = {
            'lisen = "8080"': "option --lisen not recognized",
            "listen = [": "is not valid TOML",
            'config = "other.toml"': "option --config not recognized",
            "listen = true": "takes a string or a number",
            "help = true": "option --help not recognized",
            "stream-timeout = [1, 2]": "stream-timeout takes one value, not a list",
        }
        for text, expected in cases.items():
            path = self.write(text)
            with self.assertRaises(usage.UsageError, msg=text) as raised:
                ServerOptions().parseOptions(["--config", path])
            self.assertIn(path, str(raised.exception))
            self.assertIn(expected, str(raised.exception))
        self.assertRaises(usage.UsageError, ServerOptions().parseOptions,
                          ["--config", self.mktemp()])
        path = self.write('listen = "8080"')
        self.assertRaises(usage.UsageError, ServerOptions().parseOptions,
                          ["--config", path, "--config", path])

    def test_didYouMean(self) -> None:
        """A misspelt key gets the console commands' "did you mean"."""
        path = self.write('lisen = "8080"')
        options = cli.SERVER.options()
        with self.assertRaises(usage.UsageError) as raised:
            options.parseOptions(["--config", path])
        message = cli.usageErrorMessage("tunnel-server", cli.SERVER, options, raised.exception)
        self.assertIn("(did you mean --listen?)", message)


class ConsoleTests(TestCase):
    """Both console commands run from configuration files alone."""

    @defer.inlineCallbacks
    def test_serverAndClientFromFiles(self):
        """A server and a client configured by files only set up the tunnel."""
        server = self.mktemp()
        with open(server, "w") as f:
            f.write('listen = "tcp:0:interface=127.0.0.1"\n'
                    'host = ["app.localhost=a-file-identifier-0123"]\n')
        process = spawnPython(reactor, [sys.executable, "-m", "tunnel", "server", "--config", server])
        self.addCleanup(process.stop)
        match = yield process.waitFor(r"TunnelSite starting on (\d+)")
        client = self.mktemp()
        with open(client, "w") as f:
            f.write(f'server = "http://127.0.0.1:{match.group(1)}"\n'
                    'identifier = "a-file-identifier-0123"\nlocal = ["3000"]\n')
        process = spawnPython(reactor, [sys.executable, "-m", "tunnel", "client", "--config", client])
        self.addCleanup(process.stop)
        yield process.waitFor(r"Forwarding  http://app\.localhost:\d+/  ->  127\.0\.0\.1:3000")


class TwistdTests(TestCase):
    """The twistd plugins from configuration files, with operator-set access rules."""

    timeout = 60

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    @defer.inlineCallbacks
    def test_accessRulesFromAServerFile(self):
        """
        A twistd server whose file guards one host by network and another
        by password, and a twistd client whose file serves both from two
        local services: each guard holds, and admitted requests get through.
        """
        pages = {}
        for name in ("open", "guarded"):
            page = Data(f"{name} page".encode(), "text/plain")
            page.isLeaf = True
            pages[name] = reactor.listenTCP(0, Site(page), interface="127.0.0.1")
            self.addCleanup(pages[name].stopListening)
        users = self.write("alice:s3cret\n")
        identifier = "a-twistd-file-identifier-0123"
        server = spawnTwistd(reactor, "tunnel-server", ["--config", self.write(
            'listen = "tcp:0:interface=127.0.0.1"\n'
            f'host = ["far.localhost={identifier}", "open.localhost:1={identifier}",\n'
            f'        "guarded.localhost={identifier}"]\n'
            'allow = ["far.localhost=10.0.0.0/8"]\n'
            f'basic-auth = ["guarded.localhost={users}"]\n'
        )])
        self.addCleanup(server.stop)
        port = (yield server.waitFor(r"TunnelSite starting on (\d+)")).group(1)
        client = spawnTwistd(reactor, "tunnel-client", ["--config", self.write(
            f'server = "http://127.0.0.1:{port}"\n'
            f'identifier = "{identifier}"\n'
            f'local = ["0=127.0.0.1:{pages["guarded"].getHost().port}", '
            f'"1=127.0.0.1:{pages["open"].getHost().port}"]\n'
        )])
        self.addCleanup(client.stop)
        yield client.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")

        @defer.inlineCallbacks
        def get(host: str, **headers: str):
            response = yield treq.get(f"http://127.0.0.1:{port}/", persistent=False,
                                      headers={"Host": host, **headers})
            return response.code, (yield treq.content(response))

        self.assertEqual((yield get("far.localhost"))[0], 403)
        self.assertEqual((yield get("open.localhost:1")), (200, b"open page"))
        self.assertEqual((yield get("guarded.localhost"))[0], 401)
        self.assertEqual(
            (yield get("guarded.localhost", Authorization="Basic YWxpY2U6czNjcmV0")),
            (200, b"guarded page"),
        )
