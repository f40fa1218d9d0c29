"""
Tests for L{tunnel.server.reload}: the hosts file reloaded into a running
server, in memory and, on C{SIGHUP}, in a real server process.
"""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tunnel.hostsfile import writeHostsFile
from tunnel.server import HostStatus, TunnelServer
from tunnel.server.reload import HostsReloader
from tunnel.test.twistdprocess import spawnTwistd


class HostsReloaderTests(SynchronousTestCase):
    """What a reload changes, and what a bad file leaves alone."""

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.server = TunnelServer(Clock())
        writeHostsFile(self.path, {"a.example": "first-identifier", "b.example": "first-identifier"})
        for host in ("a.example", "b.example"):
            self.server.addHost(host, "first-identifier")
        self.server.addHost("fixed.example", "fixed-identifier")
        self.reloader = HostsReloader(
            self.server, self.path, {"fixed.example": "fixed-identifier"}
        )

    def test_fileIsAppliedWithTheCommandLineHosts(self) -> None:
        """
        Hosts gone from the file stop being routed, new ones are added, and
        the command line's hosts stay.
        """
        writeHostsFile(self.path, {"B.example": "first-identifier", "c.example": "other-one"})
        self.assertTrue(self.reloader.reload())
        self.assertEqual(
            self.server.hosts(),
            [HostStatus(name, False) for name in ("b.example", "c.example", "fixed.example")],
        )

    def test_badFileChangesNothing(self) -> None:
        """A file with a malformed line, or none at all, leaves the hosts as they were."""
        before = self.server.hosts()
        with open(self.path, "w") as f:
            f.write("a.example=first-identifier\nthis line has no equals sign\n")
        self.assertFalse(self.reloader.reload())
        self.assertEqual(self.server.hosts(), before)
        self.reloader.path = self.mktemp()
        self.assertFalse(self.reloader.reload())
        self.assertEqual(self.server.hosts(), before)


class HangUpTests(TestCase):
    """C{twistd tunnel-server --hosts-file} reloads the file on C{SIGHUP}."""

    def status(self, port: int, host: str) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return connection.recv(4096).split(b"\r\n", 1)[0]

    @defer.inlineCallbacks
    def test_hangUpReloads(self):
        """
        After C{SIGHUP} a host added to the file is routed (its client is
        not connected: 502) and a removed one is not (404).
        """
        path = self.mktemp()
        writeHostsFile(path, {"old.example": "an-identifier-0123"})
        process = spawnTwistd(
            reactor, "tunnel-server", ["--listen", "tcp:0:interface=127.0.0.1", "--hosts-file", path]
        )
        self.addCleanup(process.stop)
        match = yield process.waitFor(r"TunnelSite starting on (\d+)")
        port = int(match.group(1))
        self.assertIn(b" 502 ", self.status(port, "old.example"))
        writeHostsFile(path, {"new.example": "an-identifier-0123"})
        process.signal("HUP")
        yield process.waitFor(r"Reloaded the hosts file .*: 1 hosts; no longer routed: old.example")
        self.assertIn(b" 502 ", self.status(port, "new.example"))
        self.assertIn(b" 404 ", self.status(port, "old.example"))
        self.assertNotIn("an-identifier-0123", process.output)
