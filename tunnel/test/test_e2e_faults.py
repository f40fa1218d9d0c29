"""
End to end, faults: C{twistd tunnel-server} and C{twistd tunnel-client} as
real processes on loopback, with the Go origin behind the client, and one
of them killed (C{SIGKILL}) or frozen (C{SIGSTOP}) in the middle of things,
or a local service that never answers.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import SkipTest

from tunnel.test.support import MiB, sleep, until, untilSteady
from tunnel.test.test_e2e_plugins import IDENTIFIER, Collector, PluginsTestCase
from tunnel.test.twistdprocess import TwistdProcess, processMetricsAvailable

#: How soon the public side must learn of a dead client.
PROMPTLY = 3.0

#: How much the server's resident memory may grow over a fault, in KiB.
RSS_MARGIN_KIB = 4 * 1024

#: The keep-alive of both sides in the half-open tests: a ping a second,
#: answered within a second.
FAST_KEEPALIVE = ["--keepalive-interval", "1", "--keepalive-timeout", "1"]


@defer.inlineCallbacks
def settledOpenFiles(process: TwistdProcess, expected: int, timeout: float = 10.0):
    """
    Wait until C{process} has C{expected} open files, at most C{timeout}
    seconds; fire with the count it has then.
    """
    deadline = reactor.seconds() + timeout
    while process.openFiles() != expected and reactor.seconds() < deadline:
        yield sleep(0.05)
    return process.openFiles()


class FaultTestCase(PluginsTestCase):
    """Tunnels whose server's resources are measured."""

    def setUp(self):
        reason = processMetricsAvailable()
        if reason is not None:
            raise SkipTest(reason)
        return super().setUp()

    def connect(self, protocol: Protocol) -> defer.Deferred[Protocol]:
        """Connect C{protocol} to the server's public port."""
        return connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), protocol)

    @defer.inlineCallbacks
    def fetch(self, path: str = "/", host: str = "demo.localhost:%(port)d"):
        """GET C{path} on a connection of its own; fire with the raw response."""
        collector = Collector()
        yield self.connect(collector)
        collector.transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % (path.encode(), (host % {"port": self.port}).encode())
        )
        response = yield collector.done.addTimeout(15, reactor)
        return response

    @defer.inlineCallbacks
    def baseline(self, warmUp: Callable[[], defer.Deferred[Any]]):
        """
        Run C{warmUp} twice (so that the server has allocated what such
        traffic needs), wait for its connections to close, and fire with
        the server's open files and resident memory.
        """
        for _ in range(2):
            yield warmUp()
        files = yield untilSteady(self.server.openFiles, 0.1)
        return files, self.server.residentKiB()

    @defer.inlineCallbacks
    def assertServerBackToBaseline(self, files: int, rss: int):
        """
        Once a new client is connected, the server has as many files open
        as at the baseline, no more resident memory than C{RSS_MARGIN_KIB}
        above it, and serves requests.
        """
        self.client = yield self.startClient()
        response = yield self.fetch()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response[:200])
        openFiles = yield settledOpenFiles(self.server, files)
        self.assertEqual(openFiles, files)
        grown = self.server.residentKiB() - rss
        self.assertLess(grown, RSS_MARGIN_KIB, f"the server's RSS grew by {grown} KiB")


class ClientDeathTests(FaultTestCase):
    """
    A client killed (C{SIGKILL}) in the middle of a transfer: the public
    side learns it at once, and the server keeps nothing of it.
    """

    @defer.inlineCallbacks
    def test_clientKilledMidDownload(self):
        """
        A client killed while a download runs: the public connection is
        closed within 3 s, short of the body; afterwards the server has no
        more files open than before and about the same memory.
        """
        size = 200 * MiB

        @defer.inlineCallbacks
        def download():
            collector = Collector()
            yield self.connect(collector)
            collector.transport.write(
                b"GET /bytes?n=%d HTTP/1.1\r\nHost: demo.localhost:%d\r\n"
                b"Connection: close\r\n\r\n" % (8 * MiB, self.port)
            )
            yield collector.done

        files, rss = yield self.baseline(download)
        collector = Collector()
        yield self.connect(collector)
        collector.transport.write(
            b"GET /bytes?n=%d HTTP/1.1\r\nHost: demo.localhost:%d\r\n\r\n" % (size, self.port)
        )
        yield collector.atLeast(4 * MiB)
        killed = reactor.seconds()
        yield self.client.kill()
        received = yield collector.done.addTimeout(PROMPTLY + 2, reactor)
        self.assertLess(reactor.seconds() - killed, PROMPTLY)
        self.assertTrue(received.startswith(b"HTTP/1.1 200 OK"))
        self.assertLess(len(received), size)
        yield self.assertServerBackToBaseline(files, rss)

    @defer.inlineCallbacks
    def test_clientKilledMidUpload(self):
        """
        A client killed while an upload runs: the public client gets a
        C{502} or its connection closed within 3 s; afterwards the server
        has no more files open than before and about the same memory.
        """
        size = 1024 * MiB
        chunk = b"u" * (256 * 1024)

        @defer.inlineCallbacks
        def upload(stopAt: int | None):
            """
            Upload to the origin's /sha256 256 KiB every 5 ms, the whole
            C{size}, or until killing the client after C{stopAt} bytes.
            """
            collector = Collector()
            yield self.connect(collector)
            length = size if stopAt is not None else 8 * MiB
            collector.transport.write(
                b"POST /sha256 HTTP/1.1\r\nHost: demo.localhost:%d\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % (self.port, length)
            )
            sent = [0]

            def send():
                if sent[0] >= length or not collector.transport.connected:
                    sender.stop()
                    return
                collector.transport.write(chunk)
                sent[0] += len(chunk)

            sender = LoopingCall(send)
            sending = sender.start(0.005)
            if stopAt is None:
                yield sending
                received = yield collector.done
                self.assertTrue(received.startswith(b"HTTP/1.1 200 OK"), received[:200])
                return
            yield until(lambda: sent[0] >= stopAt, 10, "the upload started")
            killed = reactor.seconds()
            yield self.client.kill()
            received = yield collector.done.addTimeout(PROMPTLY + 2, reactor)
            if sender.running:
                sender.stop()
            self.assertLess(reactor.seconds() - killed, PROMPTLY)
            self.assertLess(sent[0], size)
            self.assertTrue(
                received == b"" or received.startswith(b"HTTP/1.1 502 Bad Gateway"),
                received[:200],
            )

        files, rss = yield self.baseline(lambda: upload(None))
        yield upload(8 * MiB)
        yield self.assertServerBackToBaseline(files, rss)


class ServerDeathTests(FaultTestCase):
    """
    A server killed (C{SIGKILL}) with a download in flight: the public
    client sees its connection end, and once a new server runs on the same
    port the client reconnects by itself and requests work again.
    """

    @defer.inlineCallbacks
    def test_serverKilledAndRestarted(self):
        """
        The download in flight ends short; the client notices the lost
        connection, reconnects to the new server by itself, and a request
        through it is answered.
        """
        size = 200 * MiB
        collector = Collector()
        yield self.connect(collector)
        collector.transport.write(
            b"GET /bytes?n=%d HTTP/1.1\r\nHost: demo.localhost:%d\r\n\r\n" % (size, self.port)
        )
        yield collector.atLeast(4 * MiB)
        upBefore = self.client.output.count("is up")
        yield self.server.kill()
        received = yield collector.done.addTimeout(PROMPTLY + 2, reactor)
        self.assertLess(len(received), size)
        yield self.client.waitFor(r"\) waiting: ", 10)
        self.server = yield self.startServer(f"tcp:{self.port}:interface=127.0.0.1")
        yield until(
            lambda: self.client.output.count("is up") > upBefore, 30, "the client reconnected"
        )
        response = yield self.fetch()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response[:200])


class HalfOpenTests(FaultTestCase):
    """
    A peer that stops answering without closing its connection (a frozen
    process, or a half-open TCP connection): the other side's keep-alive
    notices, drops the session, and the tunnel comes back once the peer
    runs again.
    """

    serverArguments = FAST_KEEPALIVE
    clientArguments = FAST_KEEPALIVE

    @defer.inlineCallbacks
    def waitForNewTunnel(self, upBefore: int):
        """Wait for the client's next tunnel, then for requests to work through it."""
        yield until(
            lambda: self.client.output.count("is up") > upBefore, 15, "the client reconnected"
        )
        response = yield self.fetch()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response[:200])

    @defer.inlineCallbacks
    def test_frozenClientIsDroppedAndComesBack(self):
        """
        A frozen client (C{SIGSTOP}) misses the server's keep-alive: within
        the keep-alive interval and timeout the server drops its session
        and public requests get a C{502}. Thawed (C{SIGCONT}), the client
        reconnects by itself and requests work again.
        """
        upBefore = self.client.output.count("is up")
        stopped = reactor.seconds()
        self.client.signal("STOP")
        self.addCleanup(self.client.signal, "CONT")
        yield self.server.waitFor(r"keep-alive ping not answered in 1(\.0)? s", 10)
        yield self.server.waitFor(r"Client e2e-… disconnected", 5)
        self.assertLess(reactor.seconds() - stopped, 1 + 1 + 2)
        response = yield self.fetch()
        self.assertTrue(response.startswith(b"HTTP/1.1 502 Bad Gateway"), response[:200])
        self.assertIn(b"is not connected", response)
        self.client.signal("CONT")
        yield self.waitForNewTunnel(upBefore)

    @defer.inlineCallbacks
    def test_frozenServerIsNoticedByTheClient(self):
        """
        A frozen server (C{SIGSTOP}) misses the client's keep-alive: within
        the keep-alive interval and timeout the client drops the session
        and waits to reconnect. Thawed (C{SIGCONT}), the server takes the
        client's new tunnel and requests work again.
        """
        upBefore = self.client.output.count("is up")
        stopped = reactor.seconds()
        self.server.signal("STOP")
        self.addCleanup(self.server.signal, "CONT")
        yield self.client.waitFor(r"keep-alive ping not answered in 1(\.0)? s", 10)
        yield self.client.waitFor(r"\) waiting: ", 5)
        self.assertLess(reactor.seconds() - stopped, 1 + 1 + 2)
        self.server.signal("CONT")
        yield self.waitForNewTunnel(upBefore)


class Mute(Protocol):
    """A local service that accepts connections and never answers."""

    def connectionMade(self) -> None:
        self.factory.connected.append(self)
        self.lost = False

    def connectionLost(self, reason: Any) -> None:
        self.lost = True


class SlowLocalServiceTests(FaultTestCase):
    """
    A local service that accepts a request and never answers: the public
    request gets a C{504} after the server's response timeout (2 s here),
    and the tunnel goes on serving other requests meanwhile and after.
    """

    serverArguments = ["--response-timeout", "2"]
    mutePort = 7
    #: Public port 7 is exposed by the operator for this one host, so the
    #: server forwards its requests with local port 7.
    extraHosts = {f"demo.localhost:{mutePort}": IDENTIFIER}

    @defer.inlineCallbacks
    def setUp(self):
        factory = Factory.forProtocol(Mute)
        factory.connected = []
        self.mute = factory
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.clientArguments = [
            "--local", f"{self.mutePort}=127.0.0.1:{listening.getHost().port}"
        ]
        yield super().setUp()

    @defer.inlineCallbacks
    def test_localServiceThatNeverAnswersIs504(self):
        """
        The request gets a C{504} naming the timeout, after 2 s and not
        much more; a request to the origin made meanwhile is answered at
        once, and so is one made after; the local connection is closed.
        """
        started = reactor.seconds()
        slow = self.fetch("/", f"demo.localhost:{self.mutePort}")
        yield until(lambda: self.mute.connected, 5, "the local service was reached")
        meanwhile = yield self.fetch()
        self.assertTrue(meanwhile.startswith(b"HTTP/1.1 200 OK"), meanwhile[:200])
        self.assertFalse(slow.called)
        response = yield slow
        elapsed = reactor.seconds() - started
        self.assertTrue(response.startswith(b"HTTP/1.1 504 Gateway Timeout"), response[:200])
        self.assertIn(b"did not answer within 2 s", response)
        self.assertGreater(elapsed, 1.9)
        self.assertLess(elapsed, 2 + PROMPTLY)
        after = yield self.fetch()
        self.assertTrue(after.startswith(b"HTTP/1.1 200 OK"), after[:200])
        [local] = self.mute.connected
        yield until(lambda: local.lost, 5, "the local connection was closed")
