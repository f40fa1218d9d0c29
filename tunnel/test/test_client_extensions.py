"""
The client's side of self-service hosts (its state file, its options, how
its service takes a registration) and of the access rules it asks for.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tunnel import tap
from tunnel.client.statefile import (
    StateFile,
    StateFileError,
    defaultStatePath,
    registrationKey,
)
from tunnel.core.clientsession import (
    ClientTunnel,
    SetupFailed,
    StartSession,
    TunnelUnsupportedError,
)
from tunnel.core.control import (
    CONNECTED_RESPONSE,
    Registered,
    connectedResponse,
    connectRequest,
)
from tunnel.options import SECRET_ENVIRONMENT, ClientOptions

TOKEN = "alice-token-0123456789"


class StateFileTests(SynchronousTestCase):
    """L{StateFile}."""

    def test_keptRegistrationIsReadBack(self) -> None:
        """
        A registration kept under a key is read back under it, in a file
        (and directory) only its owner may read; other keys keep theirs.
        """
        path = os.path.join(self.mktemp(), "state", "clients.json")
        state = StateFile(path)
        self.assertIsNone(state.registration("a"))
        state.keep("a", Registered("a.example", "alice~1"))
        state.keep("b", Registered("b.example", "alice~2"))
        state.keep("a", Registered("a.example", "alice~3"))
        self.assertEqual(state.registration("a"), Registered("a.example", "alice~3"))
        self.assertEqual(state.registration("b"), Registered("b.example", "alice~2"))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode), 0o700)
        self.assertEqual(os.listdir(os.path.dirname(path)), ["clients.json"])

    def test_malformedFileIsAnError(self) -> None:
        """A file that is not the state file's JSON says so, and is not overwritten."""
        path = self.mktemp()
        for content in ("not json", "[]", '{"registrations": {"a": 3}}'):
            with open(path, "w") as f:
                f.write(content)
            state = StateFile(path)
            self.assertRaises(StateFileError, state.registration, "a")
            if "registrations" not in content:
                self.assertRaises(StateFileError, state.keep, "b", Registered("b.example", "x"))
            with open(path) as f:
                self.assertEqual(f.read(), content)

    def test_defaultPath(self) -> None:
        """systemd's state directory first, then XDG's, then ~/.local/state."""
        self.assertEqual(
            defaultStatePath({"STATE_DIRECTORY": "/var/lib/tunnel-client:/x", "HOME": "/h"}),
            "/var/lib/tunnel-client/clients.json",
        )
        self.assertEqual(
            defaultStatePath({"XDG_STATE_HOME": "/h/state"}), "/h/state/tunnel/clients.json"
        )
        self.assertTrue(defaultStatePath({}).endswith("/.local/state/tunnel/clients.json"))

    def test_keyNamesServerAndSubdomain(self) -> None:
        """Each server and subdomain asked for has its own registration."""
        self.assertEqual(registrationKey("t.example:443", "myapp"), "t.example:443 myapp")
        self.assertEqual(registrationKey("t.example:443", None), "t.example:443 *")


class TokenOptionsTests(SynchronousTestCase):
    """The client's token options."""

    def setUp(self) -> None:
        for name in SECRET_ENVIRONMENT.values():
            saved = os.environ.pop(name, None)
            if saved is not None:
                self.addCleanup(os.environ.__setitem__, name, saved)
        self.stateFile = self.mktemp()

    def parse(self, *argv: str) -> ClientOptions:
        options = ClientOptions()
        options.parseOptions(["--server", "t.example:443", "--state-file", self.stateFile, *argv])
        return options

    def test_firstStartHasNoIdentifier(self) -> None:
        """With a token and an empty state file, the client asks for its subdomain."""
        settings = self.parse("--token", TOKEN, "--subdomain", "MyApp")["settings"]
        self.assertEqual(
            (settings.identifier, settings.token, settings.subdomain), ("", TOKEN, "myapp")
        )
        self.assertNotIn(TOKEN, repr(settings))

    def test_keptIdentifierAndHostAreUsed(self) -> None:
        """
        A kept registration gives the identifier; without --subdomain, the
        subdomain of the kept host is asked for, should the server have
        forgotten it.
        """
        StateFile(self.stateFile).keep(
            "t.example:443 *", Registered("x1y2.t.example", "alice~kept")
        )
        settings = self.parse("--token", TOKEN)["settings"]
        self.assertEqual((settings.identifier, settings.subdomain), ("alice~kept", "x1y2"))
        other = self.parse("--token", TOKEN, "--subdomain", "other")["settings"]
        self.assertEqual((other.identifier, other.subdomain), ("", "other"))

    def test_tokenFromFileOrEnvironment(self) -> None:
        """The token comes from --token-file or TUNNEL_TOKEN as well."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
        self.assertEqual(self.parse("--token-file", path)["settings"].token, TOKEN)
        os.environ["TUNNEL_TOKEN"] = TOKEN
        self.addCleanup(os.environ.pop, "TUNNEL_TOKEN")
        self.assertEqual(self.parse()["settings"].token, TOKEN)

    def test_mistakesAreUsageErrors(self) -> None:
        """Mixing an identifier and a token, or a bad subdomain, is a usage error."""
        cases = {
            ("--token", TOKEN, "--identifier", "x"): "give an identifier or a token, not both",
            ("--identifier", "x", "--subdomain", "a"): "used with a token only",
            ("--token", TOKEN, "--subdomain", "a.b"): "is not 1 to 63 letters",
            (): "--subdomain and --state-file are used with a token only",
        }
        for argv, said in cases.items():
            error = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(said, str(error))
        error = self.assertRaises(
            usage.UsageError, ClientOptions().parseOptions, ["--server", "t.example:443"]
        )
        self.assertIn("or an account's --token", str(error))

    def test_malformedStateFileIsAUsageError(self) -> None:
        """A state file that cannot be read stops the client at once."""
        with open(self.stateFile, "w") as f:
            f.write("{")
        error = self.assertRaises(usage.UsageError, self.parse, "--token", TOKEN)
        self.assertIn("is not JSON", str(error))

    def test_serviceKeepsWhatIsRegistered(self) -> None:
        """
        The client service built from the options keeps a registration in
        the state file, and connects with its identifier from then on.
        """
        service = tap.makeClientService(self.parse("--token", TOKEN, "--subdomain", "myapp"))
        service._adopt(Registered("myapp.t.example", "alice~new"))
        self.assertEqual(service.endpoint.settings.identifier, "alice~new")
        self.assertEqual(service.endpoint.settings.subdomain, "myapp")
        with open(self.stateFile) as f:
            self.assertEqual(
                json.load(f)["registrations"],
                {"t.example:443 myapp": {"host": "myapp.t.example", "identifier": "alice~new"}},
            )


class AccessOptionsTests(SynchronousTestCase):
    """The access rules a client asks for: options, request, and a server that ignores them."""

    def parse(self, *argv: str) -> ClientOptions:
        options = ClientOptions()
        options.parseOptions(["--server", "t.example:443", "--identifier", "x", *argv])
        return options

    def test_optionsMakeOneRule(self) -> None:
        """--allow, --deny and --basic-auth add to one rule the control request carries."""
        users = self.mktemp()
        with open(users, "w") as f:
            f.write("alice:s3cret\n")
        settings = self.parse(
            "--allow", "10.0.0.0/8", "--allow", "192.0.2.1", "--deny", "10.1.0.0/16",
            "--basic-auth", users,
        )["settings"]
        self.assertEqual([str(n) for n in settings.access.allow], ["10.0.0.0/8", "192.0.2.1/32"])
        request = connectRequest("x", "t", settings.features, access=settings.access)
        self.assertIn(b"X-Tunnel-Features: server-streams, addresses, notices, access\r\n", request)
        self.assertIn(b"X-Tunnel-Allow: 10.0.0.0/8, 192.0.2.1/32\r\n", request)
        self.assertIn(b"X-Tunnel-Deny: 10.1.0.0/16\r\n", request)
        digest = hashlib.sha256(b"alice:s3cret").hexdigest().encode()
        self.assertIn(b"X-Tunnel-Credentials: " + digest + b"\r\n", request)
        self.assertNotIn(b"s3cret", request)
        self.assertIsNone(self.parse()["settings"].access)

    def test_badValuesAreUsageErrors(self) -> None:
        """A network that is none, or an unreadable file, is a usage error naming the option."""
        for argv, said in {
            ("--allow", "10.0.0.1/8"): "--allow: ",
            ("--deny", "x"): "--deny: ",
            ("--basic-auth", self.mktemp()): "--basic-auth: cannot read",
        }.items():
            error = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(said, str(error))

    def test_serverThatIgnoresTheRulesIsNotServed(self) -> None:
        """
        A C{200} that does not accept the access extension (a Go server's)
        fails the set-up: serving would expose the hosts to everyone.
        """
        tunnel = ClientTunnel(10, 30.0, requiresAccess=True)
        steps = tunnel.receiveResponse(CONNECTED_RESPONSE)
        [failed] = [step for step in steps if isinstance(step, SetupFailed)]
        self.assertIsInstance(failed.error, TunnelUnsupportedError)
        self.assertIn("does not take the access rules", str(failed.error))
        accepting = ClientTunnel(10, 30.0, requiresAccess=True)
        [start] = accepting.receiveResponse(connectedResponse([b"access"]))
        self.assertIsInstance(start, StartSession)
