"""
Self-service hosts: accounts, and the registration a control request with a
token gets, in memory.
"""

from __future__ import annotations

import re

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tunnel import tap

from tunnel.core.control import (
    CONNECTED_RESPONSE,
    Registered,
    connectRequest,
    connectedResponse,
    isSubdomain,
    readRegistered,
)
from tunnel.core.clientsession import ClientTunnel, StartSession
from tunnel.hostsfile import readHostsFile, writeHostsFile
from tunnel.options import ServerOptions
from tunnel.server.accounts import Accounts, AccountsFileError, readAccountsFile
from tunnel.server.reload import AccountsReloader
from tunnel.server.selfservice import accountOf
from tunnel.test.serversupport import Harness
from tunnel.test.support import Recorder

TOKEN = "alice-token-0123456789"
OTHER_TOKEN = "bob-token-0123456789ab"


class AccountsFileTests(SynchronousTestCase):
    """The accounts file."""

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_accountsAreFoundByToken(self) -> None:
        """Each line gives a name, a host limit and a token; comments are skipped."""
        accounts = readAccountsFile(
            self.write(f"# NAME MAX_HOSTS TOKEN\n\nalice 3 {TOKEN}\n  bob  0  {OTHER_TOKEN}\n")
        )
        self.assertEqual(len(accounts), 2)
        alice = accounts.find(TOKEN.encode())
        self.assertEqual((alice.name, alice.maxHosts), ("alice", 3))
        self.assertEqual(accounts.find(OTHER_TOKEN.encode()).maxHosts, 0)
        self.assertIsNone(accounts.find(b"nobody-0123456789abc"))
        self.assertNotIn(TOKEN, repr(alice))

    def test_malformedLinesNameTheFileAndLine(self) -> None:
        """A malformed line is an error naming the file, the line and what is wrong."""
        cases = {
            f"alice {TOKEN}\n": "expected NAME MAX_HOSTS TOKEN",
            f"alice many {TOKEN}\n": "expected NAME MAX_HOSTS TOKEN",
            "alice 3 short\n": "shorter than 16 characters",
            f"al/ice 3 {TOKEN}\n": "is not letters",
            f"alice 3 {TOKEN}\nalice 1 {OTHER_TOKEN}\n": "given twice",
            f"alice 3 {TOKEN}\nbob 1 {TOKEN}\n": "the token of another account",
        }
        for text, said in cases.items():
            path = self.write(text)
            error = self.assertRaises(AccountsFileError, readAccountsFile, path)
            self.assertIn(path, str(error))
            self.assertIn(said, str(error))
            self.assertNotIn(TOKEN, str(error))

    def test_missingFileIsAnError(self) -> None:
        """An accounts file that cannot be read says so."""
        error = self.assertRaises(AccountsFileError, readAccountsFile, self.mktemp())
        self.assertIn("cannot read accounts file", str(error))


class WireFormTests(SynchronousTestCase):
    """The headers of a registration, on the control request and its C{200}."""

    def test_requestCarriesTokenAndSubdomain(self) -> None:
        """A request with a token and no identifier sends no identifier header."""
        self.assertEqual(
            connectRequest("", "tunnel.example", b"addresses", "tok", "myapp"),
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: tunnel.example\r\n"
            b"X-Tunnel-Features: addresses\r\nX-Tunnel-Token: tok\r\n"
            b"X-Tunnel-Subdomain: myapp\r\n\r\n",
        )

    def test_responseWithoutRegistrationIsUnchanged(self) -> None:
        """Without a registration, the C{200} is the Go server's, byte for byte."""
        self.assertEqual(connectedResponse(), CONNECTED_RESPONSE)

    def test_registeredIsReadBack(self) -> None:
        """What the server writes, the client reads."""
        response = connectedResponse([], [], Registered("myapp.example", "alice~secret"))
        tunnel = ClientTunnel(10, 30.0, registering=True)
        [start] = tunnel.receiveResponse(response)
        self.assertIsInstance(start, StartSession)
        self.assertEqual(start.registered, Registered("myapp.example", "alice~secret"))

    def test_registrationIsIgnoredUnlessAskedFor(self) -> None:
        """
        A client that sent no token takes no identifier from the server:
        a hostile server cannot make it switch.
        """
        response = connectedResponse([], [], Registered("myapp.example", "alice~secret"))
        [start] = ClientTunnel(10, 30.0).receiveResponse(response)
        self.assertIsNone(start.registered)

    def test_malformedRegistrationsAreDropped(self) -> None:
        """Two values, control characters or a host that is no host are not taken."""
        self.assertIsNone(readRegistered([b"a.example", b"b.example"], [b"x"]))
        self.assertIsNone(readRegistered([b"a.example"], [b"x\x1b[2J"]))
        self.assertIsNone(readRegistered([b"a example"], [b"x"]))
        self.assertIsNone(readRegistered([b"a.example"], [b"x" * 257]))
        self.assertEqual(
            readRegistered([b"A.Example"], [b"id"]), Registered("a.example", "id")
        )

    def test_subdomainIsOneLabel(self) -> None:
        """A subdomain is one DNS label."""
        for good in (b"a", b"my-app", b"A1", b"x" * 63):
            self.assertTrue(isSubdomain(good), good)
        for bad in (b"", b"-a", b"a-", b"a.b", b"x" * 64, b"a_b", b"\xc3\xa9"):
            self.assertFalse(isSubdomain(bad), bad)


class RegistrationTests(SynchronousTestCase):
    """A tunnel server with self-service hosts, and control requests with tokens."""

    def setUp(self) -> None:
        self.harness = Harness()
        self.server = self.harness.server
        self.hostsFile = self.mktemp()
        writeHostsFile(self.hostsFile, {"taken.tunnel.example": "operator-identifier"})
        self.server.addHost("taken.tunnel.example", "operator-identifier")
        self.accounts = Accounts({"alice": (2, TOKEN), "bob": (0, OTHER_TOKEN)})
        self.server.enableSelfService("Tunnel.Example", self.accounts, self.hostsFile)

    def connect(self, *headers: bytes) -> bytes:
        """Send a CONNECT with these header lines; return the answer."""
        client = Recorder()
        self.harness.connect(client)
        client.transport.write(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: tunnel.example\r\n"
            + b"".join(header + b"\r\n" for header in headers)
            + b"\r\n"
        )
        self.harness.flush()
        return bytes(client.received)

    def registered(self, answer: bytes) -> Registered:
        head = answer.split(b"\n\n")[0].split(b"\n")
        self.assertEqual(head[0], b"HTTP/1.1 200 Connected to Tunnel")
        fields = dict(line.split(b": ", 1) for line in head[1:])
        registered = readRegistered([fields[b"X-Tunnel-Host"]], [fields[b"X-Tunnel-Identifier"]])
        self.assertIsNotNone(registered)
        return registered

    def test_subdomainAskedForIsRegistered(self) -> None:
        """
        A token with a free subdomain gets that host under the domain and a
        new identifier of its account, routed, saved, and said on the C{200}
        with its address.
        """
        answer = self.connect(
            b"X-Tunnel-Token: " + TOKEN.encode(),
            b"X-Tunnel-Subdomain: MyApp",
            b"X-Tunnel-Features: addresses",
        )
        registered = self.registered(answer)
        self.assertEqual(registered.host, "myapp.tunnel.example")
        self.assertEqual(accountOf(registered.identifier.encode()), "alice")
        self.assertGreater(len(registered.identifier), 40)
        self.assertIn(b"X-Tunnel-Addresses: http://myapp.tunnel.example:8080/\n", answer)
        self.assertEqual(
            self.server.identifierOf("myapp.tunnel.example"), registered.identifier.encode()
        )
        self.assertEqual(
            readHostsFile(self.hostsFile)["myapp.tunnel.example"], registered.identifier
        )

    def test_noSubdomainGetsARandomFreeOne(self) -> None:
        """Without a subdomain, the host is a random one, different each time."""
        first = self.registered(self.connect(b"X-Tunnel-Token: " + TOKEN.encode()))
        second = self.registered(self.connect(b"X-Tunnel-Token: " + TOKEN.encode()))
        for registered in (first, second):
            self.assertRegex(registered.host, r"^[a-z][a-z0-9]{9}\.tunnel\.example$")
        self.assertNotEqual(first.host, second.host)
        self.assertNotEqual(first.identifier, second.identifier)

    def test_knownIdentifierIsNotRegisteredAgain(self) -> None:
        """
        A client whose identifier the server knows connects with it, as any
        client does: its token is not looked at, nothing is registered.
        """
        registered = self.registered(
            self.connect(b"X-Tunnel-Token: " + TOKEN.encode(), b"X-Tunnel-Subdomain: myapp")
        )
        answer = self.connect(
            b"X-KTunnel-Identifier: " + registered.identifier.encode(),
            b"X-Tunnel-Token: " + TOKEN.encode(),
            b"X-Tunnel-Subdomain: myapp",
        )
        self.assertEqual(answer, CONNECTED_RESPONSE)

    def test_forgottenIdentifierGetsItsSubdomainBack(self) -> None:
        """
        An identifier the server no longer knows, with a token and its old
        subdomain, gets the subdomain again, under a new identifier.
        """
        answer = self.connect(
            b"X-KTunnel-Identifier: alice~forgotten",
            b"X-Tunnel-Token: " + TOKEN.encode(),
            b"X-Tunnel-Subdomain: myapp",
        )
        registered = self.registered(answer)
        self.assertEqual(registered.host, "myapp.tunnel.example")
        self.assertNotEqual(registered.identifier, "alice~forgotten")

    def test_takenSubdomainIsAConflict(self) -> None:
        """A subdomain that is some client's host already gets a 409 saying so."""
        answer = self.connect(b"X-Tunnel-Token: " + TOKEN.encode(), b"X-Tunnel-Subdomain: taken")
        self.assertTrue(answer.startswith(b"HTTP/1.1 409 "), answer)
        self.assertIn(b"taken.tunnel.example is taken", answer)
        self.assertEqual(self.server.identifierOf("taken.tunnel.example"), b"operator-identifier")

    def test_malformedSubdomainIsABadRequest(self) -> None:
        """A subdomain that is not one DNS label gets a 400."""
        for subdomain in (b"a.b", b"-x", b"x" * 64):
            answer = self.connect(
                b"X-Tunnel-Token: " + TOKEN.encode(), b"X-Tunnel-Subdomain: " + subdomain
            )
            self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)
        self.assertEqual([h.host for h in self.server.hosts()], ["taken.tunnel.example"])

    def test_accountLimitIsKept(self) -> None:
        """
        An account holds at most its limit of hosts; past it a 403 says so,
        and deleting one of them frees a place.
        """
        hosts = [
            self.registered(self.connect(b"X-Tunnel-Token: " + TOKEN.encode())).host
            for _ in range(2)
        ]
        answer = self.connect(b"X-Tunnel-Token: " + TOKEN.encode())
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertIn(b"account alice holds 2 hosts, as many as it may", answer)
        denied = self.connect(b"X-Tunnel-Token: " + OTHER_TOKEN.encode())
        self.assertIn(b"account bob holds 0 hosts", denied)
        self.server.deleteHost(hosts[0])
        self.registered(self.connect(b"X-Tunnel-Token: " + TOKEN.encode()))

    def test_limitHoldsAcrossRestarts(self) -> None:
        """
        Hosts read back from the hosts file count against their account:
        the account is part of their identifiers.
        """
        for _ in range(2):
            self.registered(self.connect(b"X-Tunnel-Token: " + TOKEN.encode()))
        restarted = Harness()
        for host, identifier in readHostsFile(self.hostsFile).items():
            restarted.server.addHost(host, identifier)
        restarted.server.enableSelfService("tunnel.example", self.accounts, self.hostsFile)
        self.harness = restarted
        answer = self.connect(b"X-Tunnel-Token: " + TOKEN.encode())
        self.assertIn(b"account alice holds 2 hosts", answer)

    def test_unknownTokenIsRefusedAndCounted(self) -> None:
        """
        An unknown token gets a 403, and counts as a failed attempt of its
        source: guessing tokens is as slow as guessing identifiers.
        """
        for attempt in range(10):
            answer = self.connect(b"X-Tunnel-Token: guess-%d-0123456789" % (attempt,))
            self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
            self.assertIn(b"unknown token", answer)
        answer = self.connect(b"X-Tunnel-Token: " + TOKEN.encode())
        self.assertTrue(answer.startswith(b"HTTP/1.1 429 "), answer)

    def test_serverWithoutSelfServiceSaysSo(self) -> None:
        """A token at a server that registers no hosts gets a 403 saying so."""
        self.harness = Harness()
        answer = self.connect(b"X-Tunnel-Token: " + TOKEN.encode())
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer)
        self.assertIn(b"does not register hosts for tokens", answer)

    def test_unsavableRegistrationIsNotMade(self) -> None:
        """A registration the hosts file cannot take is a 500, and nothing changes."""
        self.server.enableSelfService(
            "tunnel.example", self.accounts, self.mktemp() + "/missing/hosts"
        )
        answer = self.connect(b"X-Tunnel-Token: " + TOKEN.encode(), b"X-Tunnel-Subdomain: x")
        self.assertTrue(answer.startswith(b"HTTP/1.1 500 "), answer)
        self.assertEqual([h.host for h in self.server.hosts()], ["taken.tunnel.example"])

    def test_tokensAreNeverLogged(self) -> None:
        """Neither the token nor the new identifier appear whole in the logs."""
        from twisted.logger import globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        registered = self.registered(self.connect(b"X-Tunnel-Token: " + TOKEN.encode()))
        self.connect(b"X-Tunnel-Token: not-a-token-0123456789")
        from twisted.logger import formatEvent

        text = "\n".join(formatEvent(event) for event in events)
        self.assertIn(registered.host, text)
        self.assertNotIn(TOKEN, text)
        self.assertNotIn("not-a-token", text)
        self.assertIsNone(re.search(re.escape(registered.identifier), text))


class ServerOptionsTests(SynchronousTestCase):
    """C{--domain} and C{--accounts-file}."""

    def parse(self, *argv: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(list(argv))
        return options

    def test_domainAndAccountsMakeSelfService(self) -> None:
        """Both options give the server self-service hosts, saved to the hosts file."""
        accounts = self.mktemp()
        with open(accounts, "w") as f:
            f.write(f"alice 1 {TOKEN}\n")
        hostsFile = self.mktemp()
        options = self.parse(
            "--domain", "Tunnel.Example", "--accounts-file", accounts, "--hosts-file", hostsFile
        )
        self.assertEqual(options["domain"], "tunnel.example")
        top = tap.makeServerService(options)
        selfService = top.server.resource.selfService
        self.assertEqual(selfService.domain, "tunnel.example")
        registration = self.successResultOf(
            selfService.register(selfService.account(TOKEN.encode()), b"app")
        )
        self.assertEqual(readHostsFile(hostsFile), {"app.tunnel.example": registration.identifier})

    def test_mistakesAreUsageErrors(self) -> None:
        """One option without the other, a domain with a port, a bad file."""
        accounts = self.mktemp()
        with open(accounts, "w") as f:
            f.write("alice 1 short\n")
        cases = {
            ("--domain", "tunnel.example"): "--domain needs --accounts-file (or --redis",
            ("--accounts-file", accounts): "--accounts-file is only used with --domain",
            ("--domain", "tunnel.example:80", "--accounts-file", accounts): "has no port",
            ("--domain", "bad domain", "--accounts-file", accounts): "--domain: ",
            ("--domain", "tunnel.example", "--accounts-file", accounts): "shorter than 16",
        }
        for argv, said in cases.items():
            error = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(said, str(error))


class AccountsReloaderTests(SynchronousTestCase):
    """L{AccountsReloader}: the accounts file read again."""

    def test_reloadReplacesTheAccountsOrKeepsThem(self) -> None:
        """A good file replaces the accounts; a bad one changes nothing."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f"alice 1 {TOKEN}\n")
        harness = Harness()
        harness.server.enableSelfService("tunnel.example", readAccountsFile(path))
        selfService = harness.server.resource.selfService
        reloader = AccountsReloader(path, harness.server.setAccounts)
        with open(path, "w") as f:
            f.write(f"bob 1 {OTHER_TOKEN}\n")
        self.assertTrue(reloader.reload())
        self.assertIsNone(selfService.account(TOKEN.encode()))
        self.assertEqual(selfService.account(OTHER_TOKEN.encode()).name, "bob")
        with open(path, "w") as f:
            f.write("carol x short\n")
        self.assertFalse(reloader.reload())
        self.assertEqual(selfService.account(OTHER_TOKEN.encode()).name, "bob")
