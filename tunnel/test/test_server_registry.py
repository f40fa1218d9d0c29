"""
Tests for L{tunnel.server.registry}: routing and identifier lookups (the
Host grammar itself is tested in L{tunnel.test.test_core_http}).
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tunnel.server.events import HostStatus, ListenerStatus
from tunnel.server.registry import Bindings, Registry


class RegistryTests(SynchronousTestCase):
    """Hosts and listeners lead to identifiers; identifiers are looked up safely."""

    def setUp(self) -> None:
        self.registry = Registry()

    def test_routeTriesHostWithPortThenHost(self) -> None:
        """
        A request's C{host:port} route wins over its host's; other ports
        fall back to the host; names are matched case-insensitively.
        """
        self.registry.addHost("App.Example", b"first")
        self.registry.addHost("app.example:8443", b"second")
        self.assertEqual(self.registry.route(b"APP.EXAMPLE:8443").host, "app.example:8443")
        self.assertEqual(self.registry.route(b"app.example:9000").host, "app.example")
        self.assertIsNone(self.registry.route(b"other.example"))
        self.assertIsNone(self.registry.route(b""))

    def test_malformedHostRoutesNowhere(self) -> None:
        """
        A Host header outside the grammar (a port that is not a number, one
        over 65535) leads nowhere, not to the host before the colon.
        """
        self.registry.addHost("app.example", b"first")
        self.assertIsNone(self.registry.route(b"app.example:http"))
        self.assertIsNone(self.registry.route(b"app.example:70000"))

    def test_routePortIsOneTheOperatorExposed(self) -> None:
        """
        A route's port is the Host's port when the full C{host:port} is a
        virtual host, or when it is the port of the listener that accepted
        the request; any other port the public wrote is 0, as is no port.
        """
        self.registry.addHost("app.example", b"first")
        self.registry.addHost("app.example:8443", b"second")
        self.registry.addHost("[::1]:81", b"third")
        for header, listener, port in (
            (b"app.example:8443", None, 8443),
            (b"app.example:8443", 80, 8443),
            (b"[::1]:81", 443, 81),
            (b"app.example:9000", None, 0),
            (b"app.example:9000", 8080, 0),
            (b"app.example:11211", 443, 0),
            (b"app.example:8080", 8080, 8080),
            (b"App.Example:443", 443, 443),
            (b"app.example", 80, 0),
            (b"app.example:", 80, 0),
        ):
            self.assertEqual(self.registry.route(header, listener).port, port, header)

    def test_knownIdentifiersAreRecognised(self) -> None:
        """
        Only identifiers with a host or a listener are known; near misses,
        prefixes and the empty identifier are not.
        """
        self.registry.addHost("a.example", b"the-identifier")
        self.assertTrue(self.registry.knows(b"the-identifier"))
        for wrong in (b"the-identifieR", b"the-identifie", b"the-identifier ", b""):
            self.assertFalse(self.registry.knows(wrong), wrong)

    def test_emptyNamesAreRefused(self) -> None:
        """Hosts and listeners cannot be given an empty identifier, nor hosts an empty name."""
        self.assertRaises(ValueError, self.registry.addHost, "a.example", b"")
        self.assertRaises(ValueError, self.registry.addHost, "", b"identifier")
        self.assertRaises(ValueError, self.registry.bindListener, b"", 2222)

    def test_addingAHostAgainMovesIt(self) -> None:
        """A host added for another identifier moves to it; the first is forgotten."""
        self.registry.addHost("a.example", b"first")
        self.registry.addHost("A.example", b"second")
        self.assertFalse(self.registry.knows(b"first"))
        self.assertTrue(self.registry.knows(b"second"))

    def test_deletingTheLastHostForgetsTheIdentifier(self) -> None:
        """An identifier without host or listener is no longer known."""
        self.registry.addHost("a.example", b"first")
        self.registry.addHost("b.example", b"first")
        self.registry.deleteHost("A.EXAMPLE")
        self.assertTrue(self.registry.knows(b"first"))
        self.registry.deleteHost("b.example")
        self.assertFalse(self.registry.knows(b"first"))
        self.assertRaises(KeyError, self.registry.deleteHost, "b.example")

    def test_listenerKeepsTheIdentifierKnown(self) -> None:
        """A bound listener keeps its identifier known until unbound."""
        self.registry.bindListener(b"tcp-only", 2222)
        self.assertTrue(self.registry.knows(b"tcp-only"))
        self.registry.unbindListener(b"tcp-only", 2222)
        self.assertFalse(self.registry.knows(b"tcp-only"))

    def test_bindings(self) -> None:
        """An identifier's bindings are its hosts and its listeners' ports, sorted."""
        self.registry.addHost("b.example", b"secret")
        self.registry.addHost("a.example:8080", b"secret")
        self.registry.bindListener(b"secret", 2223)
        self.registry.bindListener(b"secret", 2222)
        self.registry.addHost("c.example", b"other")
        self.assertEqual(
            self.registry.bindings(b"secret"),
            Bindings(("a.example:8080", "b.example"), (2222, 2223)),
        )
        self.assertRaises(KeyError, self.registry.bindings, b"unknown")

    def test_hostsNeverShowIdentifiers(self) -> None:
        """The host list shows names and connection state only."""
        self.registry.addHost("b.example", b"secret")
        self.registry.addHost("a.example", b"secret")
        self.assertEqual(
            self.registry.hosts(),
            [HostStatus("a.example", False), HostStatus("b.example", False)],
        )
        self.assertEqual([f.name for f in attrs.fields(HostStatus)], ["host", "connected"])

    def test_listenersShowAHostOfTheirIdentifier(self) -> None:
        """
        The listener list shows each listener's port, the first host of its
        identifier (or none) and connection state; never the identifier.
        """
        self.registry.addHost("b.example", b"secret")
        self.registry.addHost("a.example", b"secret")
        self.registry.bindListener(b"secret", 2223)
        self.registry.bindListener(b"lonely", 2222)
        self.assertEqual(
            self.registry.listeners(),
            [ListenerStatus(2222, None, False), ListenerStatus(2223, "a.example", False)],
        )
        self.assertEqual(
            [f.name for f in attrs.fields(ListenerStatus)], ["port", "host", "connected"]
        )
