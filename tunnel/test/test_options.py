"""
Tests for L{tunnel.options}: the twistd plugins' command lines.
"""

from __future__ import annotations

import json
import os

from treq.testing import StubTreq
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from tunnel import tap
from tunnel.hostsfile import writeHostsFile
from tunnel.client import parseLocalAddress
from tunnel.core.capture import DEFAULT_MAX_TOTAL_BYTES, CaptureLimits
from tunnel.options import IDENTIFIER_ENVIRONMENT, ClientOptions, ServerOptions, endpointPort
from tunnel.server.admin import AdminSite
from tunnel.server.limits import MAX_CONNECTIONS, connectionBudget
from tunnel.server.monitoring import MonitoringSite
from tunnel.server.site import TunnelSite
from tunnel.yamux import SessionConfig


def parsed(options: usage.Options, *argv: str) -> usage.Options:
    options.parseOptions(list(argv))
    return options


def servedSites(*argv: str) -> list[object]:
    """The factories the tunnel server's service built from C{argv} listen with."""
    top = tap.makeServerService(parsed(ServerOptions(), *argv))
    return [service.factory for service in top if hasattr(service, "factory")]


def publicSite(*argv: str) -> TunnelSite:
    """The one public site of the tunnel server built from C{argv}."""
    [site] = [site for site in servedSites(*argv) if isinstance(site, TunnelSite)]
    return site


class ServerOptionsTests(SynchronousTestCase):
    """C{twistd tunnel-server} options."""

    def test_access(self) -> None:
        """
        --allow and --deny add networks to a host's rule, which the server
        applies; a malformed network is a usage error.
        """
        options = parsed(ServerOptions(), "--host", "a.example=an-identifier",
                         "--allow", "A.example=10.0.0.0/8", "--allow", "a.example=192.0.2.7",
                         "--deny", "a.example=10.1.0.0/16")
        rule = options["access"]["a.example"]
        self.assertEqual([rule.permits(a) for a in ("10.2.0.1", "10.1.0.1", "192.0.2.7", "192.0.2.8")],
                         [True, False, True, False])
        for bad in ("a.example=10.0.0.1/8", "a.example", "not a host=10.0.0.0/8"):
            self.assertRaises(usage.UsageError, ServerOptions().parseOptions, ["--allow", bad])

    def test_basicAuth(self) -> None:
        """
        --basic-auth reads a host's USER:PASSWORD file; a missing or
        malformed file is a usage error that does not show its lines.
        """
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:s3cret\n")
        options = parsed(ServerOptions(), "--basic-auth", f"a.example={users}",
                         "--allow", "a.example=10.0.0.0/8")
        rule = options["access"]["a.example"]
        self.assertEqual((len(rule.credentials), len(rule.allow)), (1, 1))
        with open(users, "w") as f:
            f.write("alice s3cret\n")
        for bad in (f"a.example={users}", f"a.example={self.mktemp()}"):
            with self.assertRaises(usage.UsageError) as raised:
                ServerOptions().parseOptions(["--basic-auth", bad])
            self.assertNotIn("s3cret", str(raised.exception))

    def test_defaults(self) -> None:
        """Without options the server listens on tcp:8080, with no hosts and no admin."""
        options = parsed(ServerOptions())
        self.assertEqual(options["listen"], ["tcp:8080:backlog=1024"])
        self.assertEqual(options["hosts"], {})
        self.assertEqual(options["tcp"], [])
        self.assertIsNone(options["adminToken"])
        self.assertEqual(options["stream-timeout"], 10.0)
        self.assertEqual(options["max-failed-connects"], 10)
        self.assertEqual(options["failed-connect-window"], 60.0)
        self.assertEqual(options["response-timeout"], 60.0)
        self.assertEqual(options["yamuxConfig"], SessionConfig())

    def test_repeatedListenAndHosts(self) -> None:
        """
        --listen and --host repeat; hosts are lower-cased and split at the
        first '=' so identifiers may contain '='.
        """
        options = parsed(
            ServerOptions(),
            "--listen", "tcp:8080", "--listen", "tcp:8443:interface=127.0.0.1",
            "--host", "Demo.Example.com=c2VjcmV0==", "--host", "demo.example.com:8080=other",
        )
        self.assertEqual(
            options["listen"],
            ["tcp:8080:backlog=1024", "tcp:8443:interface=127.0.0.1:backlog=1024"],
        )
        self.assertEqual(
            options["hosts"],
            {"demo.example.com": "c2VjcmV0==", "demo.example.com:8080": "other"},
        )

    def test_listenBacklog(self) -> None:
        """
        Public endpoints that take a listen backlog get 1024 unless they
        give one; others are left alone.
        """
        options = parsed(
            ServerOptions(),
            "--listen", "tcp:8080:backlog=10", "--listen", "TCP6:8443",
            "--listen", "unix:/tmp/tunnel.sock", "--listen", "stdio:",
        )
        self.assertEqual(
            options["listen"],
            ["tcp:8080:backlog=10", "TCP6:8443:backlog=1024",
             "unix:/tmp/tunnel.sock:backlog=1024", "stdio:"],
        )

    def test_barePortsMeanTCP(self) -> None:
        """A bare port given to --listen, --tcp or --admin means tcp:PORT."""
        token = self.mktemp()
        with open(token, "w") as f:
            f.write("the-token\n")
        options = parsed(ServerOptions(), "--listen", "8080", "--tcp", "2222=ident",
                         "--admin", "8081", "--admin-token-file", token)
        self.assertEqual(options["listen"], ["tcp:8080:backlog=1024"])
        self.assertEqual(options["tcp"], [("tcp:2222", "ident")])
        self.assertEqual(options["admin"], "tcp:8081")
        options = parsed(ServerOptions(), "--listen", "tcp6:port=8443:interface=\\:\\:1")
        self.assertEqual(options["listen"], ["tcp6:port=8443:interface=\\:\\:1:backlog=1024"])

    def test_portOutOfRangeIsUsageError(self) -> None:
        """A port above 65535, positional or by keyword, is a usage error, not a crash at bind."""
        for argv in (["--listen", "tcp:80800"], ["--listen", "80800"],
                     ["--listen", "tcp6:port=70000:interface=\\:\\:1"], ["--tcp", "99999=id"]):
            error = self.assertRaises(usage.UsageError, ServerOptions().parseOptions, argv)
            self.assertIn("the port must be a number from 0 to 65535", str(error))
            self.assertNotIn("backlog", str(error))

    def test_endpointPort(self) -> None:
        """
        The port of an endpoint description is its first argument or its
        port=, for the types that have one; others have none.
        """
        for description, port in [
            ("tcp:8080", 8080), ("tcp:0:interface=127.0.0.1", 0),
            ("tcp6:port=8443:interface=\\:\\:1", 8443), ("SSL:443:privateKey=k", 443),
            ("unix:/run/tunnel.sock", None),
        ]:
            self.assertEqual(endpointPort(description), port, description)
        for description in ("tcp:65536", "tcp:http", "tcp:interface=127.0.0.1"):
            self.assertRaises(ValueError, endpointPort, description)

    def test_missingHostsFileIsUsageError(self) -> None:
        """
        A hosts file that does not exist (a typo) is a usage error, unless
        the admin API is there to create it.
        """
        path = self.mktemp()
        error = self.assertRaises(usage.UsageError, ServerOptions().parseOptions,
                                  ["--hosts-file", path])
        self.assertIn(f"hosts file {path} does not exist", str(error))
        token = self.mktemp()
        with open(token, "w") as f:
            f.write("the-token\n")
        options = parsed(ServerOptions(), "--hosts-file", path, "--admin", "tcp:8081",
                         "--admin-token-file", token)
        self.assertEqual(options["hosts"], {})

    def test_tcpSplitsAtLastEquals(self) -> None:
        """--tcp splits at the last '=', since endpoint strings contain '='."""
        options = parsed(ServerOptions(), "--tcp", "tcp:port=2222:interface=127.0.0.1=ident")
        self.assertEqual(options["tcp"], [("tcp:port=2222:interface=127.0.0.1", "ident")])

    def test_tcpNeedsAPort(self) -> None:
        """A --tcp endpoint without a port (a Unix socket) is a usage error at start."""
        error = self.assertRaises(
            usage.UsageError, ServerOptions().parseOptions,
            ["--tcp", f"unix:{self.mktemp()}=an-identifier-0123"],
        )
        self.assertIn("a TCP tunnel listens on a port", str(error))

    def test_malformedAssignmentsAreUsageErrors(self) -> None:
        """Assignments without both sides are one-line usage errors."""
        for argv in (["--host", "nohost"], ["--host", "=id"], ["--host", "bad host=id"],
                     ["--tcp", "tcp:2222"], ["--tcp", "tcp:2222="]):
            error = self.assertRaises(usage.UsageError, ServerOptions().parseOptions, argv)
            self.assertNotIn("\n", str(error))

    def test_hostsFileMergedWithCommandLine(self) -> None:
        """Hosts come from the hosts file too; the command line wins."""
        path = self.mktemp()
        writeHostsFile(path, {"a.example": "from-file", "b.example": "from-file"})
        options = parsed(ServerOptions(), "--hosts-file", path, "--host", "b.example=cli")
        self.assertEqual(options["hosts"], {"a.example": "from-file", "b.example": "cli"})

    def test_malformedHostsFileNamesTheLine(self) -> None:
        """A malformed hosts file is a usage error naming the file and line."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("# comment\n\nok.example=id\nbroken\n")
        error = self.assertRaises(
            usage.UsageError, ServerOptions().parseOptions, ["--hosts-file", path]
        )
        self.assertIn(f"{path}, line 4", str(error))

    def test_adminNeedsTokenFile(self) -> None:
        """--admin requires --admin-token-file, whose first line is the token."""
        self.assertRaises(usage.UsageError, ServerOptions().parseOptions, ["--admin", "tcp:8081"])
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("  the-token \n")
        options = parsed(ServerOptions(), "--admin", "tcp:8081", "--admin-token-file", path)
        self.assertEqual(options["adminToken"], "the-token")

    def test_emptyOrMissingTokenFileIsUsageError(self) -> None:
        """An empty or unreadable token file is a usage error."""
        empty = self.mktemp()
        open(empty, "w").close()
        for path in (empty, self.mktemp()):
            self.assertRaises(
                usage.UsageError,
                ServerOptions().parseOptions,
                ["--admin", "tcp:8081", "--admin-token-file", path],
            )

    def test_unusableEndpointIsUsageError(self) -> None:
        """An endpoint that cannot be used is a one-line usage error naming the option."""
        for argv in (["--listen", "bogus:1"], ["--tcp", "nope:2=id"],
                     ["--listen", "ssl:8443:privateKey=missing.pem"]):
            error = self.assertRaises(usage.UsageError, ServerOptions().parseOptions, argv)
            self.assertIn(argv[0], str(error))
            self.assertNotIn("\n", str(error))

    def test_failedConnectLimits(self) -> None:
        """
        --max-failed-connects and --failed-connect-window reach the server's
        limiter; --max-failed-connects 0 turns it off; bad values are usage
        errors.
        """
        from tunnel.tap import makeServerService

        options = parsed(
            ServerOptions(), "--max-failed-connects", "3", "--failed-connect-window", "30"
        )
        limiter = makeServerService(options).server.resource.limiter
        self.assertEqual((limiter.maxFailures, limiter.window), (3, 30.0))
        options = parsed(ServerOptions(), "--max-failed-connects", "0")
        self.assertIsNone(makeServerService(options).server.resource.limiter)
        for argv in (["--max-failed-connects", "-1"], ["--failed-connect-window", "0"]):
            self.assertRaises(usage.UsageError, ServerOptions().parseOptions, argv)

    def test_keepAliveReachesTheSessions(self) -> None:
        """
        --keepalive-interval and --keepalive-timeout set the yamux keep-alive
        of the clients' sessions; they must be positive.
        """
        from tunnel.tap import makeServerService

        options = parsed(
            ServerOptions(), "--keepalive-interval", "2", "--keepalive-timeout", "0.5"
        )
        settings = makeServerService(options).server.resource._settings
        self.assertEqual(
            (settings.yamux.keepAliveInterval, settings.yamux.keepAliveTimeout), (2.0, 0.5)
        )
        for argv in (["--keepalive-interval", "0"], ["--keepalive-timeout", "-1"]):
            error = self.assertRaises(usage.UsageError, ServerOptions().parseOptions, argv)
            self.assertIn(argv[0], str(error))

    def test_sessionBufferReachesTheSessions(self) -> None:
        """
        --max-session-buffer and --write-stall-timeout bound what a client's
        session holds for it while it reads nothing, and for how long; they
        default to the yamux settings' and must be positive.
        """
        from tunnel.tap import makeServerService

        settings = makeServerService(parsed(ServerOptions())).server.resource._settings
        self.assertEqual(
            (settings.yamux.maxSessionBuffer, settings.yamux.writeStallTimeout),
            (SessionConfig().maxSessionBuffer, SessionConfig().writeStallTimeout),
        )
        options = parsed(
            ServerOptions(), "--max-session-buffer", "65536", "--write-stall-timeout", "5"
        )
        settings = makeServerService(options).server.resource._settings
        self.assertEqual(
            (settings.yamux.maxSessionBuffer, settings.yamux.writeStallTimeout), (65536, 5.0)
        )
        for argv in (["--max-session-buffer", "0"], ["--write-stall-timeout", "-1"]):
            error = self.assertRaises(usage.UsageError, ServerOptions().parseOptions, argv)
            self.assertIn(argv[0], str(error))

    def test_accessLog(self) -> None:
        """--access-log gives the public site its log file; there is none by default."""
        self.assertIsNone(publicSite().logPath)
        path = os.path.abspath("access.log")
        self.assertEqual(publicSite("--access-log", "access.log").logPath, path)

    def test_connectionCapsReachTheSite(self) -> None:
        """
        --max-connections and --max-connections-per-source set the public
        site's caps; by default 10000 (fitted to the open-file limit) and
        256; 0 means no cap.
        """
        caps = publicSite().connections
        self.assertEqual(
            (caps.maxConnections, caps.maxPerSource), (connectionBudget(MAX_CONNECTIONS), 256)
        )
        caps = publicSite(
            "--max-connections", "50", "--max-connections-per-source", "5"
        ).connections
        self.assertEqual((caps.maxConnections, caps.maxPerSource), (50, 5))
        caps = publicSite(
            "--max-connections", "0", "--max-connections-per-source", "0"
        ).connections
        self.assertEqual((caps.maxConnections, caps.maxPerSource), (None, None))

    def test_connectionCapIsFittedToTheOpenFileLimit(self) -> None:
        """
        A --max-connections the open-file limit does not allow is lowered to
        what it allows, with a warning saying so.
        """
        self.patch(tap, "connectionBudget", lambda wanted: min(wanted, 100))
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertEqual(publicSite("--max-connections", "5000").connections.maxConnections, 100)
        self.assertEqual(publicSite("--max-connections", "50").connections.maxConnections, 50)
        warnings = [e for e in logged if "--max-connections lowered" in e.get("log_format", "")]
        self.assertEqual([(e["wanted"], e["fitted"]) for e in warnings], [(5000, 100)])

    def test_writeTimeoutReachesTheSite(self) -> None:
        """--write-timeout sets the public site's (60 s by default); 0 means none."""
        self.assertEqual(publicSite().writeTimeout, 60.0)
        self.assertEqual(publicSite("--write-timeout", "2.5").writeTimeout, 2.5)
        self.assertIsNone(publicSite("--write-timeout", "0").writeTimeout)

    def test_negativeConnectionLimitsAreUsageErrors(self) -> None:
        """The connection caps and the write timeout must not be negative."""
        for name in ("--max-connections", "--max-connections-per-source", "--write-timeout"):
            error = self.assertRaises(
                usage.UsageError, ServerOptions().parseOptions, [name, "-1"]
            )
            self.assertIn(name, str(error))

    def test_adminIsServedByAnAdminSite(self) -> None:
        """
        The admin API is served by an L{AdminSite}, which answers a request
        without the token before reading its body.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("the-token\n")
        sites = servedSites("--admin", "tcp:8081", "--admin-token-file", path)
        self.assertEqual([type(site) for site in sites], [TunnelSite, AdminSite])

    def test_metricsAreServedByAMonitoringSite(self) -> None:
        """
        --metrics serves the server's monitoring on its own site (a bare
        port means tcp:PORT); there is none by default.
        """
        self.assertEqual([type(site) for site in servedSites()], [TunnelSite])
        options = parsed(ServerOptions(), "--metrics", "9100")
        self.assertEqual(options["metrics"], "tcp:9100")
        sites = servedSites("--metrics", "tcp:9100:interface=127.0.0.1")
        self.assertEqual([type(site) for site in sites], [TunnelSite, MonitoringSite])

    def test_badMetricsEndpointIsAUsageError(self) -> None:
        """An endpoint --metrics cannot listen on is a usage error naming the option."""
        for endpoint in ("nonsense:9100", "tcp:99999"):
            error = self.assertRaises(
                usage.UsageError, ServerOptions().parseOptions, ["--metrics", endpoint]
            )
            self.assertTrue(str(error).startswith(f"--metrics {endpoint!r}: "), str(error))

    def test_readyOnceThePublicListenersListen(self) -> None:
        """
        The server's /readyz is a 503 until its public listeners listen;
        its hosts are loaded from the start.
        """
        reactor = MemoryReactor()
        top = tap.makeServerService(
            parsed(ServerOptions(), "--listen", "tcp:0", "--listen", "tcp:0",
                   "--metrics", "tcp:9100"),
            reactor,
        )
        [site] = [service.factory for service in top
                  if isinstance(getattr(service, "factory", None), MonitoringSite)]
        treq = StubTreq(site.resource)

        def readiness() -> tuple[int, object]:
            response = self.successResultOf(treq.get("http://monitoring.invalid/readyz"))
            return response.code, json.loads(self.successResultOf(response.content()))

        self.assertEqual(
            readiness(),
            (503, {"status": "not ready",
                   "problems": {"listeners": "2 of 2 public listeners do not listen yet"}}),
        )
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(readiness(), (200, {"status": "ready"}))

    def test_metricsFromTheConfigurationFile(self) -> None:
        """metrics is set in the TOML file as on the command line."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('metrics = "tcp:9100:interface=127.0.0.1"\n')
        options = parsed(ServerOptions(), "--config", path)
        self.assertEqual(options["metrics"], "tcp:9100:interface=127.0.0.1")

    def test_responseTimeout(self) -> None:
        """
        --response-timeout reaches the server (60 s by default); 0 turns it
        off; a negative value is a usage error.
        """
        from tunnel.tap import makeServerService

        def timeout(*argv: str) -> float | None:
            options = parsed(ServerOptions(), *argv)
            return makeServerService(options).server.resource._settings.responseTimeout

        self.assertEqual(timeout(), 60.0)
        self.assertEqual(timeout("--response-timeout", "5"), 5.0)
        self.assertIsNone(timeout("--response-timeout", "0"))
        self.assertRaises(
            usage.UsageError, ServerOptions().parseOptions, ["--response-timeout", "-1"]
        )

    def test_nonPositiveStreamTimeoutRejected(self) -> None:
        """--stream-timeout must be positive."""
        self.assertRaises(
            usage.UsageError, ServerOptions().parseOptions, ["--stream-timeout", "0"]
        )


class ClientOptionsTests(SynchronousTestCase):
    """C{twistd tunnel-client} options."""

    def setUp(self) -> None:
        saved = os.environ.pop(IDENTIFIER_ENVIRONMENT, None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, IDENTIFIER_ENVIRONMENT, saved)

    def test_bareHostPortMeansTCP(self) -> None:
        """A bare HOST:PORT server is a tcp: endpoint; endpoint strings pass through."""
        options = parsed(ClientOptions(), "--server", "tunnel.example.com:8080", "--identifier", "x")
        self.assertEqual(
            options["serverAddress"].description, "tcp:host=tunnel.example.com:port=8080"
        )
        options = parsed(ClientOptions(), "--server", "tls:tunnel.example.com:443", "--identifier", "x")
        self.assertEqual(options["serverAddress"].description, "tls:tunnel.example.com:443")

    def test_malformedServerIsUsageError(self) -> None:
        """A server that is neither HOST:PORT nor an endpoint is a usage error."""
        error = self.assertRaises(
            usage.UsageError, ClientOptions().parseOptions,
            ["--server", "no port here", "--identifier", "x"],
        )
        self.assertIn("--server", str(error))

    def test_giveUpAfter(self) -> None:
        """
        --give-up-after reaches the client service; 0, the plugin's
        default, means it keeps trying; a negative count is a usage error.
        """
        def giveUpAfter(*argv: str) -> int | None:
            options = parsed(ClientOptions(), "--server", "127.0.0.1:8080", "--identifier", "x", *argv)
            return tap.makeClientService(options)._giveUpAfter

        self.assertEqual([giveUpAfter(), giveUpAfter("--give-up-after", "2")], [None, 2])
        self.assertRaises(usage.UsageError, ClientOptions().parseOptions,
                          ["--server", "127.0.0.1:8080", "--identifier", "x", "--give-up-after", "-1"])

    def test_logRequests(self) -> None:
        """
        --log-requests yes turns the line per request on; the plugin's
        default is no; another word is a usage error.
        """
        def logRequests(*argv: str) -> bool:
            options = parsed(ClientOptions(), "--server", "127.0.0.1:8080", "--identifier", "x", *argv)
            return options["settings"].logRequests

        self.assertEqual([logRequests(), logRequests("--log-requests", "yes")], [False, True])
        self.assertRaises(usage.UsageError, ClientOptions().parseOptions,
                          ["--server", "127.0.0.1:8080", "--identifier", "x", "--log-requests", "on"])

    def test_severalServers(self) -> None:
        """
        --server may be repeated: the client gets one tunnel service per
        server, sharing one local side, each naming its own server in its
        control request; the same server twice, or a token with several,
        is a usage error.
        """
        options = parsed(ClientOptions(), "--server", "a.example:8080", "--server",
                         "https://b.example", "--identifier", "x", "--local", "3000")
        self.assertEqual([a.host for a in options["serverAddresses"]],
                         ["a.example:8080", "b.example:443"])
        service = tap.makeClientService(options)
        clients = tap.clientServicesOf(service)
        self.assertEqual([c.endpoint.settings.host for c in clients],
                         ["a.example:8080", "b.example:443"])
        self.assertIs(clients[0].endpoint.connector, clients[1].endpoint.connector)
        for argv, words in [
            (["--server", "a.example:1", "--server", "a.example:1", "--identifier", "x"],
             "given twice"),
            (["--server", "a.example:1", "--server", "b.example:1", "--token", "t"],
             "a token takes one --server"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parsed(ClientOptions(), *argv)
            self.assertIn(words, str(caught.exception))

    def test_inspect(self) -> None:
        """
        The inspector is off under the plugin unless --inspect names an
        endpoint; its bounds have defaults and are checked, each mistake
        naming its option.
        """
        def inspect(*argv: str) -> usage.Options:
            return parsed(ClientOptions(), "--server", "127.0.0.1:8080", "--identifier", "x", *argv)

        self.assertEqual((inspect()["inspect"], inspect()["inspectLimits"]), (None, None))
        options = inspect("--inspect", "tcp:4041:interface=127.0.0.1", "--inspect-requests", "20",
                          "--inspect-body-bytes", "1000")
        self.assertEqual(options["inspect"], "tcp:4041:interface=127.0.0.1")
        self.assertEqual(options["inspectLimits"], CaptureLimits(20, 1000, DEFAULT_MAX_TOTAL_BYTES))
        self.assertIsNone(inspect("--inspect", "None")["inspectLimits"])
        for argv, words in [
            (["--inspect", "tcp:notaport"], "--inspect 'tcp:notaport'"),
            (["--inspect", "tcp:0", "--inspect-requests", "0"], "--inspect-requests must be positive"),
            (["--inspect", "tcp:0", "--inspect-body-bytes", "-1"], "--inspect-body-bytes must not"),
            (["--inspect", "tcp:0", "--inspect-total-bytes", "1000"], "--inspect-total-bytes: the most"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                inspect(*argv)
            self.assertIn(words, str(caught.exception))

    def test_serverURL(self) -> None:
        """--server takes the server's http:// or https:// URL."""
        options = parsed(ClientOptions(), "--server", "http://127.0.0.1:8080", "--identifier", "x")
        self.assertEqual(options["serverAddress"].description, "tcp:host=127.0.0.1:port=8080")

    def test_unusableServerEndpointSaysWhatToChange(self) -> None:
        """
        A TLS endpoint whose trust roots are a file, or whose certificate is
        missing, is a one-line usage error that says what to change.
        """
        caFile = self.mktemp()
        with open(caFile, "w") as f:
            f.write("not a directory\n")
        cases = [
            (f"tls:tunnel.example.com:443:trustRoots={caFile}", "must name a directory"),
            ("tls:tunnel.example.com:443:certificate=/nonexistent.pem",
             "cannot read /nonexistent.pem"),
        ]
        for server, said in cases:
            error = self.assertRaises(usage.UsageError, ClientOptions().parseOptions,
                                      ["--server", server, "--identifier", "x"])
            self.assertIn(said, str(error))
            self.assertIn("--server", str(error))
            self.assertNotIn("\n", str(error))

    def test_serverRequired(self) -> None:
        """--server is required."""
        self.assertRaises(usage.UsageError, ClientOptions().parseOptions, ["--identifier", "x"])

    def test_identifierFromFileOrEnvironment(self) -> None:
        """
        The identifier comes from --identifier, --identifier-file or the
        environment, in that order; none at all is a usage error.
        """
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("from-file\n")
        options = parsed(ClientOptions(), "--server", "h:1", "--identifier-file", path)
        self.assertEqual(options["identifier"], "from-file")
        os.environ[IDENTIFIER_ENVIRONMENT] = "from-env"
        self.addCleanup(os.environ.pop, IDENTIFIER_ENVIRONMENT, None)
        self.assertEqual(parsed(ClientOptions(), "--server", "h:1")["identifier"], "from-env")
        self.assertEqual(
            parsed(ClientOptions(), "--server", "h:1", "--identifier", "cli")["identifier"], "cli"
        )
        del os.environ[IDENTIFIER_ENVIRONMENT]
        self.assertRaises(usage.UsageError, ClientOptions().parseOptions, ["--server", "h:1"])

    def test_identifierAndFileConflict(self) -> None:
        """--identifier and --identifier-file together are a usage error."""
        self.assertRaises(
            usage.UsageError,
            ClientOptions().parseOptions,
            ["--server", "h:1", "--identifier", "a", "--identifier-file", "f"],
        )

    def test_localAddresses(self) -> None:
        """--local ADDR sets the fixed address; --local PORT=ADDR maps a port."""
        options = parsed(
            ClientOptions(), "--server", "h:1", "--identifier", "x",
            "--local", "127.0.0.1:3000", "--local", "8080=unix:path=/tmp/app.sock",
            "--local", "2222=localhost:22",
        )
        routes = options["routes"]
        self.assertEqual(routes.fixed, parseLocalAddress("127.0.0.1:3000"))
        self.assertEqual(
            routes.ports,
            {8080: parseLocalAddress("unix:path=/tmp/app.sock"),
             2222: parseLocalAddress("localhost:22")},
        )

    def test_unprintableIdentifierIsUsageError(self) -> None:
        """An identifier that cannot go into an HTTP header is a usage error."""
        for identifier in ("sécret", "with space inside\x00"):
            error = self.assertRaises(
                usage.UsageError, ClientOptions().parseOptions,
                ["--server", "h:1", "--identifier", identifier],
            )
            self.assertIn("identifier", str(error))

    def test_settingsCarryIdentifierRoutesAndStopTimeout(self) -> None:
        """The parsed options carry the tunnel settings the service is built with."""
        options = parsed(ClientOptions(), "--server", "tunnel.example.com:443",
                         "--identifier", "id", "--local", "3000", "--stop-timeout", "2")
        settings = options["settings"]
        self.assertEqual(settings.identifier, "id")
        self.assertEqual(settings.routes.fixed, parseLocalAddress("3000"))
        self.assertEqual(settings.host, "tunnel.example.com:443")
        self.assertEqual(settings.shutdownTimeout, 2.0)

    def test_keepAliveReachesTheSession(self) -> None:
        """
        --keepalive-interval and --keepalive-timeout set the yamux keep-alive
        of the client's session (30 s and 10 s by default, as the Go
        library); they must be positive.
        """
        options = parsed(ClientOptions(), "--server", "h:1", "--identifier", "x")
        self.assertEqual(options["settings"].sessionConfig, SessionConfig())
        options = parsed(ClientOptions(), "--server", "h:1", "--identifier", "x",
                         "--keepalive-interval", "2", "--keepalive-timeout", "0.5")
        config = options["settings"].sessionConfig
        self.assertEqual((config.keepAliveInterval, config.keepAliveTimeout), (2.0, 0.5))
        for argv in (["--keepalive-interval", "0"], ["--keepalive-timeout", "-1"]):
            error = self.assertRaises(
                usage.UsageError, ClientOptions().parseOptions,
                ["--server", "h:1", "--identifier", "x", *argv],
            )
            self.assertIn(argv[0], str(error))

    def test_writeStallTimeoutReachesTheSession(self) -> None:
        """--write-stall-timeout reaches the client's session too."""
        options = parsed(ClientOptions(), "--server", "h:1", "--identifier", "x",
                         "--write-stall-timeout", "5")
        self.assertEqual(options["settings"].sessionConfig.writeStallTimeout, 5.0)

    def test_twoFixedLocalAddressesAreUsageError(self) -> None:
        """Only one fixed local address may be given."""
        self.assertRaises(
            usage.UsageError, ClientOptions().parseOptions,
            ["--server", "h:1", "--identifier", "x", "--local", "3000", "--local", "4000"],
        )
