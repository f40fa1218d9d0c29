"""
A whole tunnel on loopback, as a user runs it: the Go origin
(C{tunnel/test/go/origin}), C{twistd tunnel-server} and C{twistd
tunnel-client} as real processes on 127.0.0.1, the client exposing the
origin on one virtual host. The load tests and the soak send public traffic
through it and measure what the two twistd processes hold.
"""

from __future__ import annotations

import os
from typing import Any, Generator

import attrs
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from tunnel.hostsfile import writeHostsFile
from tunnel.test.gopeer import GoPeerProcess, buildGoPeer, goAvailable, spawnGoPeer
from tunnel.test.twistdprocess import TwistdProcess, processMetricsAvailable, spawnTwistd

#: The virtual host the client serves.
HOST = "load.localhost"

#: The client's identifier.
IDENTIFIER = "load-identifier-0123456789"

#: How much of each process's log to keep: a long run logs every request.
KEPT_OUTPUT = 64 * 1024


def unavailable() -> str | None:
    """
    L{None} if a L{LoopbackTunnel} can run and be measured here, otherwise
    why not, fit for a C{SkipTest} message.
    """
    return goAvailable() or processMetricsAvailable()


@attrs.frozen
class Usage:
    """
    What a process holds.

    @ivar openFiles: its open file descriptors.
    @ivar residentKiB: its resident memory (VmRSS), in KiB.
    """

    openFiles: int
    residentKiB: int

    @classmethod
    def of(cls, process: TwistdProcess) -> Usage:
        """Measure C{process} now."""
        return cls(process.openFiles(), process.residentKiB())


@attrs.define
class LoopbackTunnel:
    """
    The origin, the server and the client, once L{start}ed.

    @ivar reactor: the reactor the processes and connections run on.
    @ivar workDirectory: an existing directory for the server's hosts file.
    @ivar listenBacklog: the backlog of the server's public port, or
        L{None} for Twisted's default (50). A burst of more connections
        than that overflows the kernel's queue of connections waiting to be
        accepted, and the connections it drops are only retried seconds
        later.
    @ivar origin: the Go origin, once started.
    @ivar server: the C{twistd tunnel-server} process, once started.
    @ivar client: the C{twistd tunnel-client} process, once started.
    @ivar port: the server's public port, once started.
    """

    reactor: Any
    workDirectory: str
    listenBacklog: int | None = None
    origin: GoPeerProcess | None = None
    server: TwistdProcess | None = None
    client: TwistdProcess | None = None
    port: int = 0

    @defer.inlineCallbacks
    def start(self) -> Generator[Any, Any, None]:
        """
        Start the origin, the server and the client; fire once the tunnel
        is up. Call L{stop} afterwards even if this fails.
        """
        self.origin = spawnGoPeer(self.reactor, buildGoPeer("origin"), ["-listen", "127.0.0.1:0"])
        host, originPort = yield self.origin.listening
        hostsFile = os.path.join(self.workDirectory, "hosts")
        writeHostsFile(hostsFile, {HOST: IDENTIFIER})
        listen = "tcp:0:interface=127.0.0.1"
        if self.listenBacklog is not None:
            listen += f":backlog={self.listenBacklog}"
        # Every public connection comes from 127.0.0.1 here, standing for
        # many users: no cap per source address.
        self.server = spawnTwistd(self.reactor, "tunnel-server", [
            "--listen", listen, "--hosts-file", hostsFile, "--max-connections-per-source", "0",
        ])
        self.server.maxOutput = KEPT_OUTPUT
        match = yield self.server.waitFor(r"TunnelSite starting on (\d+)")
        self.port = int(match.group(1))
        self.client = spawnTwistd(
            self.reactor,
            "tunnel-client",
            ["--server", f"127.0.0.1:{self.port}", "--local", f"{host}:{originPort}"],
            {"TUNNEL_IDENTIFIER": IDENTIFIER},
        )
        self.client.maxOutput = KEPT_OUTPUT
        yield self.client.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")

    @defer.inlineCallbacks
    def stop(self) -> Generator[Any, Any, None]:
        """Kill every process that was started; fire once they have ended."""
        for process in (self.client, self.server):
            if process is not None:
                yield process.kill()
        if self.origin is not None:
            yield self.origin.kill()

    def connect(self, protocol: Protocol) -> defer.Deferred[Any]:
        """Connect C{protocol} to the server's public port; fire with it."""
        endpoint = TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port)
        return connectProtocol(endpoint, protocol)

    def head(self, method: bytes, path: bytes, headers: bytes = b"") -> bytes:
        """
        A request head for the client's host; C{headers} are more header
        lines, each ending with CRLF.
        """
        return b"%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (
            method, path, HOST.encode(), self.port, headers
        )

    def usage(self) -> dict[str, Usage]:
        """What the server and the client hold now, by C{"server"} and C{"client"}."""
        assert self.server is not None and self.client is not None
        return {"server": Usage.of(self.server), "client": Usage.of(self.client)}

    @defer.inlineCallbacks
    def settledUsage(
        self, expected: dict[str, Usage] | None = None, timeout: float = 10.0
    ) -> Generator[Any, Any, dict[str, Usage]]:
        """
        Wait until the processes' open files hold still for half a second,
        or, given the C{expected} usage, until they have as many files
        open as that; fire with their usage then, or after C{timeout}
        seconds with their usage at that time.
        """
        deadline = self.reactor.seconds() + timeout
        last = self.usage()
        steady = 0
        while self.reactor.seconds() < deadline:
            if expected is not None and all(
                last[name].openFiles == expected[name].openFiles for name in expected
            ):
                break
            if expected is None and steady >= 5:
                break
            yield task.deferLater(self.reactor, 0.1, lambda: None)
            now = self.usage()
            same = all(now[name].openFiles == last[name].openFiles for name in now)
            steady = steady + 1 if same else 0
            last = now
        return last
