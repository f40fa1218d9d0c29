"""
End to end, under load: C{twistd tunnel-server} and C{twistd tunnel-client}
as real processes on loopback, the Go origin behind the client
(L{LoopbackTunnel}), many public connections at once, and a short soak of
mixed traffic (the long one is C{python -m tunnel.test.soak}).
"""

from __future__ import annotations

import os
from typing import Any, Generator

from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase

from tunnel.test import exchanges
from tunnel.test.exchanges import Exchange, ExchangeError, digestLine, splitResponse
from tunnel.test.loopbacktunnel import LoopbackTunnel, Usage, unavailable
from tunnel.test.soak import MIX, RSS_TOLERANCE, SoakReport, openFilesNeeded, runSoak
from tunnel.test.support import goPattern, until
from tunnel.test.twistdprocess import ensureOpenFileLimit

log = Logger()

#: How many public connections are open at once through one client.
CONNECTIONS = 1000

#: The size of each of those connections' request bodies.
BODY_SIZE = 4096

#: The short soak: exchanges measured, mixed exchanges of the warm-up, and
#: exchanges at once.
SOAK_REQUESTS = 2500
SOAK_WARM_UP = 1500
SOAK_CONCURRENCY = 50


class ConcurrencyTests(TestCase):
    """
    Many public connections at once through one client. The server's public
    port has a backlog for such bursts (C{backlog=} in its C{--listen}
    endpoint): with Twisted's default of 50 the kernel, not the tunnel,
    would hold some connections back for seconds.
    """

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:
        # This process, the server, the client and the origin each hold a
        # socket for every connection.
        reason = unavailable() or ensureOpenFileLimit(CONNECTIONS + 512)
        if reason is not None:
            raise SkipTest(reason)
        workDirectory = self.mktemp()
        os.makedirs(workDirectory)
        self.tunnel = LoopbackTunnel(reactor, workDirectory, listenBacklog=CONNECTIONS)
        self.addCleanup(self.tunnel.stop)
        yield self.tunnel.start()

    @defer.inlineCallbacks
    def connectAll(self) -> Generator[Any, Any, list[Exchange]]:
        """Open L{CONNECTIONS} public connections at once; fire with them."""
        connections: list[Exchange] = yield defer.gatherResults(
            [self.tunnel.connect(Exchange()) for _ in range(CONNECTIONS)]
        )

        def abortAll() -> None:
            for connection in connections:
                connection.transport.abortConnection()

        self.addCleanup(abortAll)
        return connections

    @defer.inlineCallbacks
    def assertFilesBackTo(self, before: dict[str, Usage]) -> Generator[Any, Any, None]:
        """The server and the client come back to the open files of C{before}."""
        after = yield self.tunnel.settledUsage(before)
        self.assertEqual(
            {name: usage.openFiles for name, usage in after.items()},
            {name: usage.openFiles for name, usage in before.items()},
        )

    @defer.inlineCallbacks
    def test_1000ConcurrentRequestsThroughOneClient(self):
        """
        1,000 public connections, opened at once, send their requests at
        once, each a GET of its own size from the origin's C{/bytes}: each
        gets its own answer, byte for byte. Afterwards the server and the
        client have as many files open as before.
        """
        tunnel = self.tunnel
        before = yield tunnel.settledUsage()
        connections = yield self.connectAll()
        sizes = [1000 + i for i in range(CONNECTIONS)]
        for connection, size in zip(connections, sizes):
            connection.transport.write(
                tunnel.head(b"GET", b"/bytes?n=%d" % (size,), b"Connection: close\r\n")
            )
        responses = yield defer.gatherResults(
            [connection.done for connection in connections]
        ).addTimeout(60, reactor)

        wrong = []
        for i, (response, size) in enumerate(zip(responses, sizes)):
            try:
                _, body = splitResponse(response)
            except ExchangeError as e:
                wrong.append(f"#{i}: {e}")
                continue
            if body != goPattern(size):
                wrong.append(f"#{i}: a body of {len(body)} bytes for /bytes?n={size}")
        self.assertEqual(len(wrong), 0, f"{len(wrong)} wrong answers, the first: {wrong[:3]}")
        yield self.assertFilesBackTo(before)

    @defer.inlineCallbacks
    def test_1000RequestsInTheTunnelAtOnce(self):
        """
        1,000 public connections, each uploading a body of its own to the
        origin's C{/sha256}: with half of every body sent, the server holds
        all 1,000 public connections and the client all 1,000 local ones,
        so every request is in the tunnel at the same time; with the rest
        sent, each gets the digest of its own body. Afterwards the server
        and the client have as many files open as before.
        """
        tunnel = self.tunnel
        before = yield tunnel.settledUsage()
        connections = yield self.connectAll()
        bodies = [b"%d:" % (i,) + os.urandom(BODY_SIZE) for i in range(CONNECTIONS)]
        half = BODY_SIZE // 2
        for connection, body in zip(connections, bodies):
            connection.transport.write(tunnel.head(
                b"POST", b"/sha256",
                b"Content-Length: %d\r\nConnection: close\r\n" % (len(body),),
            ) + body[:half])

        now: dict[str, Usage] = {}

        def allInTheTunnel() -> bool:
            now.update(tunnel.usage())
            return all(
                now[name].openFiles >= before[name].openFiles + CONNECTIONS
                for name in ("server", "client")
            )

        yield until(
            allInTheTunnel, 30,
            lambda: f"{CONNECTIONS} requests in the tunnel at once (from {before}, at {now})",
            interval=0.05,
        )
        self.assertEqual(sum(connection.done.called for connection in connections), 0)
        for connection, body in zip(connections, bodies):
            connection.transport.write(body[half:])
        responses = yield defer.gatherResults(
            [connection.done for connection in connections]
        ).addTimeout(60, reactor)

        wrong = []
        for i, (response, body) in enumerate(zip(responses, bodies)):
            try:
                _, answer = splitResponse(response)
            except ExchangeError as e:
                wrong.append(f"#{i}: {e}")
                continue
            if answer != digestLine(body):
                wrong.append(f"#{i}: {answer!r} for the digest of {digestLine(body)!r}")
        self.assertEqual(len(wrong), 0, f"{len(wrong)} wrong answers, the first: {wrong[:3]}")
        yield self.assertFilesBackTo(before)


class SoakTests(TestCase):
    """
    A short soak (L{tunnel.test.soak}) of mixed traffic: small GETs, some on
    keep-alive connections, downloads and uploads up to 1 MiB checked byte
    for byte or by their SHA-256, WebSocket echoes.
    """

    timeout = 180

    def setUp(self) -> None:
        reason = unavailable() or ensureOpenFileLimit(openFilesNeeded(SOAK_CONCURRENCY))
        if reason is not None:
            raise SkipTest(reason)

    @defer.inlineCallbacks
    def test_mixedTrafficFailsNothingAndKeepsNothing(self):
        """
        2,500 exchanges of every kind, 50 at a time, after a warm-up: none
        fails, and at the end the server and the client have exactly the
        files open they had at the start, and their resident memory has not
        grown more than 5%.
        """
        workDirectory = self.mktemp()
        os.makedirs(workDirectory)
        report = yield runSoak(
            reactor, workDirectory, SOAK_REQUESTS, SOAK_WARM_UP, SOAK_CONCURRENCY
        )
        log.info("Soak: {summary}", summary=report.summary())
        self.assertEqual(report.failures, [])
        self.assertEqual(report.requests, SOAK_REQUESTS)
        self.assertEqual(sum(report.kinds.values()), SOAK_REQUESTS)
        self.assertEqual(sorted(report.kinds), sorted(MIX))
        self.assertEqual(sorted(report.start), ["client", "server"])
        for name, start in report.start.items():
            end = report.end[name]
            self.assertEqual(end.openFiles, start.openFiles, f"the {name}'s open files")
            self.assertLessEqual(
                end.residentKiB, start.residentKiB * (1 + RSS_TOLERANCE),
                f"the {name}'s RSS grew from {start.residentKiB} KiB to {end.residentKiB} KiB",
            )
        self.assertEqual(report.problems(), [])


class Impostor(Protocol):
    """
    A public port that answers every request with C{factory.answer} and
    closes the connection.
    """

    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received:
            self.transport.write(self.factory.answer)
            self.transport.loseConnection()


class FakeTunnel(LoopbackTunnel):
    """A L{LoopbackTunnel} whose public port is an L{Impostor}."""

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)


class CheckTests(TestCase):
    """The soak fails when it should: its checks catch wrong answers and leftovers."""

    def impostor(self, answer: bytes) -> LoopbackTunnel:
        """A tunnel whose public port answers every request with C{answer}."""
        factory = Factory.forProtocol(Impostor)
        factory.answer = answer  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return FakeTunnel(reactor, self.mktemp(), port=port.getHost().port)

    @defer.inlineCallbacks
    def test_answerOfAnotherRequestFailsTheExchange(self):
        """
        A GET answered with the body of another size, or with the right
        size altered, fails; the right answer passes.
        """
        def answer(body: bytes) -> bytes:
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

        pattern = goPattern(101)
        moved = yield exchanges.get(self.impostor(answer(pattern[:100])), 100)
        self.assertEqual(moved, 100)
        for wrong in (pattern[:101], pattern[:99] + b"x"):
            yield self.assertFailure(
                exchanges.get(self.impostor(answer(wrong)), 100), ExchangeError
            )

    @defer.inlineCallbacks
    def test_wrongStatusFailsTheExchange(self):
        """An error status fails an exchange, whatever its body."""
        tunnel = self.impostor(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
        yield self.assertFailure(exchanges.get(tunnel, 0), ExchangeError)

    def test_reportNamesFailuresFilesAndMemory(self):
        """
        A soak report finds fault with failed exchanges, with a process
        holding more or fewer files at the end than at the start, and with
        memory grown beyond the tolerance, not within it.
        """
        start = {"server": Usage(10, 100_000), "client": Usage(8, 100_000)}
        clean = SoakReport(5, start=start, end={
            "server": Usage(10, 104_000), "client": Usage(8, 90_000),
        })
        self.assertEqual(clean.problems(), [])
        failed = SoakReport(5, failures=["#3 get: boom"], start=start, end=start)
        leaky = SoakReport(5, start=start, end={
            "server": Usage(11, 100_000), "client": Usage(7, 106_000),
        })
        self.assertEqual(len(failed.problems()), 1)
        self.assertIn("#3 get: boom", failed.problems()[0])
        self.assertEqual(len(leaky.problems()), 3)
        self.assertEqual(len(leaky.problems(rssTolerance=0.10)), 2)
