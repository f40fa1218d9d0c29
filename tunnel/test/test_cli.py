"""
Tests for L{tunnel.cli} and C{python -m tunnel}: how the console commands
and the twistd plugins say the mistakes people make, in memory and as real
processes on loopback.
"""

from __future__ import annotations

import errno
import io
import socket
import sys
from importlib import metadata

import treq
from twisted.application.service import Service
from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.static import Data

from tunnel import __main__ as tunnelMain
from tunnel import cli
from tunnel.client import Forward, LocalAddress
from tunnel.hostsfile import writeHostsFile
from tunnel.test.twistdprocess import TwistdProcess, spawnPython, spawnTwistd


def inUse(port: int) -> CannotListenError:
    """The error of a listener on C{port} of 127.0.0.1 that another program has."""
    return CannotListenError("127.0.0.1", port, OSError(errno.EADDRINUSE, "Address already in use"))


class RefusingService(Service):
    """A service whose listener cannot start."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def privilegedStartService(self) -> None:
        raise self.error


class UsageErrorTests(SynchronousTestCase):
    """Usage errors are two lines: what is wrong, and where the options are."""

    def message(self, command: cli.Command, argv: list[str]) -> str:
        options = command.options()
        with self.assertRaises(usage.UsageError) as raised:
            options.parseOptions(argv)
        return cli.usageErrorMessage(command.name, command, options, raised.exception)

    def test_misspeltOptionIsNamed(self) -> None:
        """A misspelt option gets the one it is closest to."""
        self.assertEqual(
            self.message(cli.CLIENT, ["--sever", "127.0.0.1:8080"]),
            "tunnel-client: option --sever not recognized (did you mean --server?)\n"
            "Run 'tunnel-client --help' to see every option.\n",
        )

    def test_wordForAnOptionIsNamed(self) -> None:
        """A word people use for an option gets that option: --port means --local."""
        self.assertIn("(did you mean --local?)", self.message(cli.CLIENT, ["--port", "3000"]))
        self.assertIn("(did you mean --listen?)", self.message(cli.SERVER, ["--port", "8080"]))

    def test_nothingCloseIsNoGuess(self) -> None:
        """An option like none of them gets no guess."""
        message = self.message(cli.SERVER, ["--zzzz"])
        self.assertNotIn("did you mean", message)
        self.assertEqual(len(message.splitlines()), 2)

    def test_otherErrorsAsTheyAre(self) -> None:
        """Errors from the options' checks are said as they are, on the first line."""
        message = self.message(cli.SERVER, ["--listen", "tcp:80800"])
        self.assertEqual(
            message.splitlines()[0],
            "tunnel-server: --listen 'tcp:80800': the port must be a number from 0 to 65535",
        )

    def test_pluginOptionsExitWithUsageStatus(self) -> None:
        """
        The twistd plugins' options say a usage error in the same two lines
        and end the process with L{cli.EXIT_USAGE}, not under twistd's help.
        """
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        options = cli.oneLineUsageErrors(cli.CLIENT, "twistd tunnel-client")()
        with self.assertRaises(SystemExit) as raised:
            options.parseOptions(["--port", "3000"])
        self.assertEqual(raised.exception.code, cli.EXIT_USAGE)
        self.assertEqual(
            stderr.getvalue(),
            "twistd tunnel-client: option --port not recognized (did you mean --local?)\n"
            "Run 'twistd tunnel-client --help' to see every option.\n",
        )

    def test_pluginOptionsParseAsBefore(self) -> None:
        """Good options parse as they do with the plain options class."""
        options = cli.oneLineUsageErrors(cli.SERVER, "twistd tunnel-server")()
        options.parseOptions(["--listen", "8080"])
        self.assertEqual(options["listen"], ["tcp:8080:backlog=1024"])


class StartupProblemTests(SynchronousTestCase):
    """A service that cannot start is said in one line."""

    def test_addressInUse(self) -> None:
        """A port in use is named, with what to do."""
        self.assertEqual(
            cli.startupProblem(RefusingService(inUse(8080))),
            "cannot listen on port 8080 of 127.0.0.1: Address already in use (another "
            "program listens there: stop it or choose another port)",
        )

    def test_privilegedPort(self) -> None:
        """A port the user may not bind says what it needs."""
        error = CannotListenError("", 80, OSError(errno.EACCES, "Permission denied"))
        self.assertEqual(
            cli.startupProblem(RefusingService(error)),
            "cannot listen on port 80: Permission denied (ports below 1024 need root or "
            "CAP_NET_BIND_SERVICE)",
        )

    def test_started(self) -> None:
        """A service that starts has no problem, and runs."""
        service = Service()
        self.assertIsNone(cli.startupProblem(service))
        self.assertTrue(service.running)

    def test_pluginServiceExits(self) -> None:
        """
        The twistd plugin's service ends the process with the one line,
        when twistd starts its listeners.
        """
        guarded = cli.OneLineStartupErrors("twistd tunnel-server", RefusingService(inUse(8080)))
        with self.assertRaises(SystemExit) as raised:
            guarded.privilegedStartService()
        self.assertEqual(
            raised.exception.code,
            "twistd tunnel-server: " + cli.startupProblem(RefusingService(inUse(8080))),
        )

    def test_pluginServiceStartsItsChild(self) -> None:
        """The twistd plugin's service starts and stops its child once."""
        child = Service()
        guarded = cli.OneLineStartupErrors("twistd tunnel-server", child)
        guarded.privilegedStartService()
        guarded.startService()
        self.assertTrue(child.running)
        self.assertTrue(guarded.running)
        guarded.stopService()
        self.assertFalse(child.running)


class ModuleMainTests(SynchronousTestCase):
    """C{python -m tunnel}."""

    def test_saysHowToRun(self) -> None:
        """Without a command it says how to run the server and the client."""
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        self.assertEqual(tunnelMain.main([]), cli.EXIT_STOPPED)
        self.assertIn("tunnel-server", stdout.getvalue())
        self.assertIn("tunnel-client --server", stdout.getvalue())

    def test_unknownCommand(self) -> None:
        """An unknown command is a usage error."""
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.assertEqual(tunnelMain.main(["sever"]), cli.EXIT_USAGE)
        self.assertIn("give server or client", stderr.getvalue())

    def test_consoleScripts(self) -> None:
        """
        The installed distribution, C{txtunnel} (the name C{tunnel} is another
        project's on PyPI), names the console commands and the Pythons it runs on.
        """
        distribution = metadata.distribution("txtunnel")
        scripts = {
            entry.name: entry.value
            for entry in distribution.entry_points
            if entry.group == "console_scripts"
        }
        self.assertEqual(
            scripts, {"tunnel-server": "tunnel.cli:server", "tunnel-client": "tunnel.cli:client"}
        )
        self.assertEqual(distribution.metadata["Requires-Python"], ">=3.10")


class ForwardsBlockTests(SynchronousTestCase):
    """What the console client prints when the tunnel is up."""

    def test_alignedWithUnroutedAddresses(self) -> None:
        """The local sides line up; an address no route takes says so."""
        block = cli.forwardsBlock([
            Forward("https://app.example/", LocalAddress("tcp:127.0.0.1:3000", "127.0.0.1:3000")),
            Forward("tcp://tunnel.example:2222", None),
        ])
        self.assertEqual(block, (
            "Forwarding  https://app.example/       ->  127.0.0.1:3000\n"
            "Forwarding  tcp://tunnel.example:2222  ->  nothing: no local route takes it\n"
        ))


class ProcessTests(TestCase):
    """The commands and plugins as real processes: what a person sees, and the exit status."""

    def command(self, *arguments: str) -> TwistdProcess:
        return spawnPython(reactor, [sys.executable, "-m", "tunnel", *arguments])

    @defer.inlineCallbacks
    def serve(self, *arguments: str):
        """
        Run a console server on a free port of 127.0.0.1 with C{arguments}
        until the test ends; fire with it and its port, once it listens.
        """
        server = self.command("server", "--listen", "tcp:0:interface=127.0.0.1", *arguments)
        self.addCleanup(server.stop)
        match = yield server.waitFor(r"TunnelSite starting on (\d+)")
        return server, match.group(1)

    def takenPort(self) -> int:
        """A port of 127.0.0.1 that this test listens on."""
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def assertEnds(self, process: TwistdProcess, status: int, lines: list[str]):
        """
        The process ends with C{status}, its last lines ending with C{lines}
        (twistd puts its log's prefix before them), and no traceback.
        """
        code = yield process.ended.addTimeout(30, reactor)
        last = process.output.splitlines()[-len(lines):]
        self.assertEqual(code, status, process.output)
        self.assertEqual(len(last), len(lines), process.output)
        for line, expected in zip(last, lines):
            self.assertTrue(line.endswith(expected), f"{line!r} does not end with {expected!r}")
        self.assertNotIn("Traceback", process.output)

    def test_usageError(self) -> None:
        """A usage error is two lines and exit status 2."""
        return self.assertEnds(self.command("client", "--server", "127.0.0.1:1", "--port", "3000"),
                               cli.EXIT_USAGE, [
            "tunnel-client: option --port not recognized (did you mean --local?)",
            "Run 'tunnel-client --help' to see every option.",
        ])

    def test_portInUse(self) -> None:
        """A --listen port in use is one line and exit status 1."""
        port = self.takenPort()
        return self.assertEnds(self.command("server", "--listen", f"tcp:{port}:interface=127.0.0.1"),
                               cli.EXIT_FAILED, [
            f"tunnel-server: cannot listen on port {port} of 127.0.0.1: Address already in "
            "use (another program listens there: stop it or choose another port)",
        ])

    def test_tcpListenerInUse(self) -> None:
        """A --tcp listener that cannot listen stops the server as --listen does."""
        port = self.takenPort()
        process = self.command("server", "--listen", "tcp:0:interface=127.0.0.1",
                               "--tcp", f"tcp:{port}:interface=127.0.0.1=tcp-identifier-0123")
        return self.assertEnds(process, cli.EXIT_FAILED, [
            f"tunnel-server: cannot listen on port {port} of 127.0.0.1: Address already in "
            "use (another program listens there: stop it or choose another port)",
        ])

    @defer.inlineCallbacks
    def test_stopsCleanly(self):
        """The server logs to the terminal while it runs and exits 0 on SIGTERM."""
        process = self.command("server", "--listen", "0", "--host", "a.example=a-identifier-0123")
        match = yield process.waitFor(r"TunnelSite starting on (\d+)")
        # Once it says so, its signal handlers are in place.
        yield process.waitFor(r"tunnel-server is running; Ctrl-C stops it")
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=5):
            pass
        code = yield process.stop().addTimeout(30, reactor)
        self.assertEqual(code, cli.EXIT_STOPPED)
        self.assertRegex(process.output, r"(?m)^\d\d:\d\d:\d\d \[")

    @defer.inlineCallbacks
    def test_clientGivesUpOnARefusedIdentifier(self):
        """
        The console client whose identifier the server refuses stops after
        three refusals in a row, says what to check, and exits 1.
        """
        server, port = yield self.serve("--host", "a.example=the-right-identifier-0123")
        client = self.command("client", "--server", f"127.0.0.1:{port}",
                              "--identifier", "a-wrong-identifier-4567", "--local", "1")
        code = yield client.ended.addTimeout(30, reactor)
        self.assertEqual(code, cli.EXIT_FAILED, client.output)
        last = client.output.splitlines()[-1]
        self.assertTrue(last.startswith("tunnel-client: "), last)
        self.assertIn("refused identifier a-wr", last)
        self.assertIn("3 times in a row", last)
        self.assertIn("check the identifier", last)
        self.assertNotIn("a-wrong-identifier-4567", client.output)

    @defer.inlineCallbacks
    def test_clientSaysWhereItIsReached(self):
        """
        Once the tunnel is up the console client prints, on standard output,
        each public address of its identifier and where it leads; then it
        logs a line per request.
        """
        page = Data(b"hello", "text/plain")
        page.isLeaf = True
        local = reactor.listenTCP(0, Site(page), interface="127.0.0.1")
        self.addCleanup(local.stopListening)
        identifier = "the-right-identifier-0123"
        server, port = yield self.serve("--host", f"app.localhost={identifier}",
                                        "--tcp", f"tcp:0:interface=127.0.0.1={identifier}")
        tcp = yield server.waitFor(r"TCPTunnelFactory starting on (\d+)")
        tcpPort = tcp.group(1)
        client = self.command("client", "--server", f"127.0.0.1:{port}",
                              "--identifier", identifier, "--local", str(local.getHost().port),
                              "--local", f"{tcpPort}=127.0.0.1:22")
        self.addCleanup(client.stop)
        yield client.waitFor(r"tcp://")
        response = yield treq.get(f"http://127.0.0.1:{port}/?x=1",
                                  headers={"Host": "app.localhost"}, persistent=False)
        self.assertEqual((yield treq.content(response)), b"hello")
        yield client.waitFor(r"GET /\?x=1 200 \d+ ms \d+ B in, \d+ B out")
        self.assertIn(
            f"Forwarding  http://app.localhost:{port}/  ->  127.0.0.1:{local.getHost().port}\n"
            f"Forwarding  tcp://127.0.0.1:{tcpPort}{' ' * (len(port) - len(tcpPort) + 6)}"
            "  ->  127.0.0.1:22\n",
            client.output,
        )

    @defer.inlineCallbacks
    def test_clientAsksForAccessRules(self):
        """
        A console client with --allow, --deny and --basic-auth gets its
        host guarded by the server: a denied address gets 403, an allowed
        one without the password 401, with it the page, without the
        password reaching the local service.
        """
        page = Data(b"guarded", "text/plain")
        page.isLeaf = True
        local = reactor.listenTCP(0, Site(page), interface="127.0.0.1")
        self.addCleanup(local.stopListening)
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:s3cret\n")
        identifier = "the-guarded-identifier-0123"
        server, port = yield self.serve("--host", f"app.localhost={identifier}")
        arguments = ("client", "--server", f"127.0.0.1:{port}", "--identifier", identifier,
                     "--local", str(local.getHost().port), "--basic-auth", users)
        denied = self.command(*arguments, "--allow", "127.0.0.0/8", "--deny", "127.0.0.1")
        self.addCleanup(denied.stop)
        yield denied.waitFor(r"Forwarding  http://app\.localhost")

        def get(**headers: str):
            return treq.get(f"http://127.0.0.1:{port}/", persistent=False,
                            headers={"Host": "app.localhost", **headers})

        response = yield get()
        self.assertEqual(response.code, 403)
        yield treq.content(response)
        yield denied.stop()
        allowed = self.command(*arguments, "--allow", "127.0.0.0/8")
        self.addCleanup(allowed.stop)
        yield allowed.waitFor(r"Forwarding  http://app\.localhost")
        response = yield get()
        self.assertEqual(response.code, 401)
        yield treq.content(response)
        response = yield get(Authorization="Basic YWxpY2U6czNjcmV0")
        self.assertEqual((yield treq.content(response)), b"guarded")
        self.assertNotIn("s3cret", allowed.output + server.output)

    @defer.inlineCallbacks
    def test_clientOfARemovedHostIsToldWhy(self):
        """
        A console client whose last host the operator removes (here from the
        hosts file, then SIGHUP) is told why at once, and ends after three
        refusals with a line that repeats it.
        """
        identifier = "the-removed-identifier-0123"
        hostsFile = self.mktemp()
        writeHostsFile(hostsFile, {"app.localhost": identifier})
        server, port = yield self.serve("--hosts-file", hostsFile)
        client = self.command("client", "--server", f"127.0.0.1:{port}",
                              "--identifier", identifier, "--local", "1")
        yield client.waitFor(r"Forwarding  http://app\.localhost")
        writeHostsFile(hostsFile, {})
        server.signal("HUP")
        yield client.waitFor(r"closes the tunnel: this identifier has no host or TCP listener")
        code = yield client.ended.addTimeout(30, reactor)
        self.assertEqual(code, cli.EXIT_FAILED, client.output)
        last = client.output.splitlines()[-1]
        self.assertIn("refused identifier the-", last)
        self.assertIn("when it closed the last tunnel, it said: this identifier has no host", last)

    @defer.inlineCallbacks
    def test_secondClientOfOneIdentifierStops(self):
        """
        A second console client with the identifier of a connected one is
        refused at once, says why and exits 1; the first keeps the tunnel.
        """
        identifier = "the-shared-identifier-0123"
        server, port = yield self.serve("--host", f"app.localhost={identifier}")
        arguments = ("client", "--server", f"127.0.0.1:{port}",
                     "--identifier", identifier, "--local", "1")
        first = self.command(*arguments)
        self.addCleanup(first.stop)
        yield first.waitFor(r"Forwarding  http://app.localhost")
        second = self.command(*arguments)
        code = yield second.ended.addTimeout(30, reactor)
        self.assertEqual(code, cli.EXIT_FAILED, second.output)
        last = second.output.splitlines()[-1]
        self.assertTrue(last.startswith("tunnel-client: "), last)
        self.assertIn("409 Conflict", last)
        self.assertIn("another client with identifier the-…", last)
        self.assertIn("stop one of them", last)
        self.assertNotIn("disconnected", first.output)

    @defer.inlineCallbacks
    def test_underATerminal(self):
        """
        Under a pseudo-terminal, as a person runs it, the console client
        shows its forwarding lines as soon as the tunnel is up (nothing
        waits in a buffer) and exits 0 on SIGTERM; a usage error is the same
        two lines and exit status 2.
        """
        identifier = "the-terminal-identifier-0123"
        server, port = yield self.serve("--host", f"app.localhost={identifier}")
        client = spawnPython(
            reactor,
            [sys.executable, "-m", "tunnel", "client", "--server", f"127.0.0.1:{port}",
             "--identifier", identifier, "--local", "3000"],
            usePTY=True,
        )
        yield client.waitFor(r"Forwarding  http://app\.localhost:\d+/  ->  127\.0\.0\.1:3000\r\n")
        code = yield client.stop().addTimeout(30, reactor)
        self.assertEqual(code, cli.EXIT_STOPPED, client.output)
        mistaken = spawnPython(reactor, [sys.executable, "-m", "tunnel", "client", "--sever", "x"],
                               usePTY=True)
        code = yield mistaken.ended.addTimeout(30, reactor)
        self.assertEqual(code, cli.EXIT_USAGE, mistaken.output)
        self.assertEqual(mistaken.output.splitlines(), [
            "tunnel-client: option --sever not recognized (did you mean --server?)",
            "Run 'tunnel-client --help' to see every option.",
        ])

    def test_pluginPortInUse(self) -> None:
        """C{twistd tunnel-server} says a port in use in one line too, and exits 1."""
        port = self.takenPort()
        process = spawnTwistd(reactor, "tunnel-server", ["--listen", f"tcp:{port}:interface=127.0.0.1"])
        return self.assertEnds(process, cli.EXIT_FAILED, [
            f"twistd tunnel-server: cannot listen on port {port} of 127.0.0.1: Address already "
            "in use (another program listens there: stop it or choose another port)",
        ])

    def test_pluginUsageError(self) -> None:
        """C{twistd tunnel-client} says a usage error in two lines, without twistd's help."""
        process = spawnTwistd(reactor, "tunnel-client", ["--sever", "127.0.0.1:1"])
        return self.assertEnds(process, cli.EXIT_USAGE, [
            "twistd tunnel-client: option --sever not recognized (did you mean --server?)",
            "Run 'twistd tunnel-client --help' to see every option.",
        ])
