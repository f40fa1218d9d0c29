"""
End to end, hostile peers: C{twistd tunnel-server} and C{twistd
tunnel-client} as real processes on loopback, attacked by the public, by a
tenant's client that holds a valid identifier (L{HostileTunnelClient},
speaking yamux byte by byte), and by a server (L{HostileTunnelServer}).

Each test checks what the attacker reached, and where it matters that the
other tenant (the honest client of L{PluginsTestCase}, the Go origin behind
it, on C{demo.localhost}) kept being served promptly, and the server's
resident memory and open files against a baseline. The hostile tenant is
the client of C{silent.localhost}.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from tunnel.core.control import ControlMessage, TransportProtocol, redactIdentifier
from tunnel.test.hostile import (
    HUGE_WINDOW_DELTA,
    HostileServerFactory,
    HostileTunnelClient,
    PeerStream,
)
from tunnel.test.support import MiB, sleep, until, untilSteady
from tunnel.test.test_e2e_faults import FaultTestCase
from tunnel.test.test_e2e_plugins import SILENT_IDENTIFIER, Collector
from tunnel.test.twistdprocess import (
    ensureOpenFileLimit,
    processMetricsAvailable,
    spawnTwistd,
)

log = Logger()

#: The host of the hostile tenant, bound to L{SILENT_IDENTIFIER}.
HOSTILE_HOST = "silent.localhost"

#: How the server's logs name the hostile tenant.
HOSTILE_LABEL = redactIdentifier(SILENT_IDENTIFIER)

#: How much the server's resident memory may grow over an attack, in KiB.
RSS_BOUND_KIB = 64 * 1024

#: What the server may hold for each public connection it accepted, over
#: L{RSS_BOUND_KIB}, in KiB: its request's state, its head and one socket
#: read (64 KiB at most) of its body, taken before the connection is paused.
#: Measured at about 40 KiB; what a tenant makes the server queue comes on
#: top of that.
PER_CONNECTION_KIB = 48

#: The slowest answer the honest tenant may get during an attack, in seconds.
HONEST_LATENCY_BOUND = 1.0

#: How long the honest tenant's request may take before a test gives up on it.
HONEST_GIVE_UP = 20.0

#: Seconds a client stuck at its memory cap keeps its session (made short
#: for the tests).
STALL_TIMEOUT = 3

#: The cap on what the server holds for one client's session, in bytes
#: (made small for the tests).
SESSION_MEMORY_CAP = 8 * MiB

#: The cap on a client's concurrent local connections (made small for the
#: tests).
LOCAL_CONNECTION_CAP = 64


#: The server's settings for a tenant that fills its session and stops.
STALL_ARGUMENTS = [
    "--write-stall-timeout", str(STALL_TIMEOUT),
    "--max-session-buffer", str(SESSION_MEMORY_CAP),
    # The attack comes from one address here, from many in the wild: all
    # of its connections must reach the session.
    "--max-connections-per-source", "0",
]

#: The client's settings for a server that asks for a flood of streams.
LOCAL_CAP_ARGUMENTS = ["--max-local-connections", str(LOCAL_CONNECTION_CAP)]


# -- measurements -----------------------------------------------------------


def cpuSeconds(pid: int) -> float:
    """The CPU time (user and system) a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # Fields 14 and 15 of stat(5), counted after the command's ")".
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakSampler:
    """Samples a value every C{interval} seconds and keeps its peak."""

    def __init__(self, measure: Callable[[], int], interval: float = 0.05) -> None:
        self._measure = measure
        self.peak = measure()
        self._call = LoopingCall(self.sample)
        self._call.start(interval, now=False)

    def sample(self) -> None:
        try:
            self.peak = max(self.peak, self._measure())
        except OSError:
            pass

    def stop(self) -> int:
        """Stop sampling; return the peak."""
        if self._call.running:
            self._call.stop()
        self.sample()
        return self.peak


def percentile(values: list[float], fraction: float) -> float:
    """The C{fraction} percentile of C{values} (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- local services ---------------------------------------------------------


class Recorded(Protocol):
    """
    A connection to a L{RecordingFactory}: counted, its bytes kept, and
    each line answered as a memcached-like service would (C{stats} with a
    C{STAT}, anything else with C{ERROR}) unless the factory is mute.
    """

    def connectionMade(self) -> None:
        self.factory.opened(self)
        self.received = b""
        self._pending = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.factory.received += data
        if self.factory.mute:
            return
        self._pending += data
        while b"\n" in self._pending:
            line, _, self._pending = self._pending.partition(b"\n")
            self.transport.write(
                b"STAT pid 4242\r\nEND\r\n" if line.strip() == b"stats" else b"ERROR\r\n"
            )

    def connectionLost(self, reason: Any) -> None:
        self.factory.closed(self)


class RecordingFactory(Factory):
    """
    A local service that counts its connections (in all, at once, at most
    at once) and keeps what they sent.
    """

    protocol = Recorded
    noisy = False

    def __init__(self, mute: bool = False) -> None:
        self.mute = mute
        self.total = 0
        self.current = 0
        self.peak = 0
        self.received = b""
        self.connections: list[Recorded] = []

    def opened(self, connection: Recorded) -> None:
        self.total += 1
        self.current += 1
        self.peak = max(self.peak, self.current)
        self.connections.append(connection)

    def closed(self, connection: Recorded) -> None:
        self.current -= 1


class RefusesUpgrades(Protocol):
    """
    A local service that answers every request head it reads (an upgrade
    request too) with a C{200} and a two-byte body, and keeps the heads.
    """

    def connectionMade(self) -> None:
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\r\n\r\n" in self._buffer:
            head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
            self.factory.heads.append(head)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def headerValues(head: bytes, name: bytes) -> list[bytes]:
    """The values of the header lines C{name} (lower-case) of a request head."""
    values = []
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            values.append(value.strip())
    return values


@defer.inlineCallbacks
def listen(factory: Factory):
    """Listen with C{factory} on a free port of 127.0.0.1; fire with the port."""
    port = yield TCP4ServerEndpoint(reactor, 0, backlog=5000, interface="127.0.0.1").listen(factory)
    return port


# -- public clients ---------------------------------------------------------


@implementer(IPushProducer)
class Uploader(Protocol):
    """
    A public client that POSTs a body of C{size} bytes as fast as its
    connection takes it, writing only while its transport is not paused
    (so that what the server does not read stays in the kernel, not here).
    """

    chunk = b"u" * (256 * 1024)

    def __init__(self, head: bytes, size: int) -> None:
        self._head = head
        self.size = size
        self.sent = 0
        self.data = b""
        self._paused = False
        self._stopped = False

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.transport.write(self._head)
        self._pump()

    def _pump(self) -> None:
        while not self._paused and not self._stopped and self.sent < self.size:
            piece = self.chunk[: self.size - self.sent]
            self.sent += len(piece)
            self.transport.write(piece)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        reactor.callLater(0, self._pump)

    def stopProducing(self) -> None:
        self._stopped = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any) -> None:
        self._stopped = True


def status(response: bytes) -> bytes:
    """The status line of a raw response, or C{b""}."""
    return response.partition(b"\r\n")[0]


# -- the two tenants ----------------------------------------------------------


class TwoTenantsTestCase(FaultTestCase):
    """
    A server with two tenants: the honest client (C{demo.localhost}) and a
    hostile one (C{silent.localhost}), either a scripted
    L{HostileTunnelClient} or a real client of the test's own settings.
    """

    timeout = 90

    @defer.inlineCallbacks
    def connectHostile(self, serverStreams: bool = True):
        """Connect a L{HostileTunnelClient}; fire with it once its handshake is answered."""
        hostile = HostileTunnelClient(SILENT_IDENTIFIER, serverStreams)
        yield self.connect(hostile)
        self.addCleanup(lambda: hostile.transport.abortConnection())
        yield hostile.ready.addTimeout(10, reactor)
        yield self.server.waitFor(rf"Client {re.escape(HOSTILE_LABEL)} is connected", 10)
        return hostile

    @defer.inlineCallbacks
    def startHostileTenantClient(self, arguments: list[str]):
        """A real C{twistd tunnel-client} for the hostile tenant's host."""
        client = spawnTwistd(
            reactor, "tunnel-client",
            ["--server", f"127.0.0.1:{self.port}", *arguments],
            {"TUNNEL_IDENTIFIER": SILENT_IDENTIFIER},
        )
        self.addCleanup(client.kill)
        yield client.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")
        return client

    @defer.inlineCallbacks
    def honestLatencies(self, done: Callable[[], bool], atMost: float, pause: float = 0.05,
                        atLeast: float = 0.0):
        """
        Fetch from the honest tenant, one request after the other, for
        C{atLeast} seconds and then until C{done()} or C{atMost} seconds
        have passed (at least once); each must be answered C{200}. Fire
        with their latencies.
        """
        latencies: list[float] = []
        started = reactor.seconds()
        deadline = started + atMost

        def goOn() -> bool:
            now = reactor.seconds()
            return now < started + atLeast or (not done() and now < deadline)

        while not latencies or goOn():
            sent = reactor.seconds()
            response = yield self.fetchWithin(HONEST_GIVE_UP)
            latencies.append(reactor.seconds() - sent)
            if response is None:
                break
            self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response[:200])
            yield sleep(pause)
        return latencies

    @defer.inlineCallbacks
    def fetchWithin(self, timeout: float, host: str = "demo.localhost:%(port)d"):
        """L{fetch}, firing with L{None} if there is no answer within C{timeout} s."""
        collector = Collector()
        yield self.connect(collector)
        self.addCleanup(collector.transport.abortConnection)
        collector.transport.write(
            b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % ((host % {"port": self.port}).encode(),)
        )
        yield self.waitForPublic(collector, lambda data: False, timeout)
        return collector.data if collector.done.called else None

    def assertHonestPrompt(self, latencies: list[float], what: str) -> None:
        """The honest tenant's slowest answer (its p99) is within the bound."""
        p99 = percentile(latencies, 0.99)
        log.info("honest tenant during {what}: {n} requests, p99 {p99:.3f} s, max {max:.3f} s",
                 what=what, n=len(latencies), p99=p99, max=max(latencies))
        self.assertLess(
            p99, HONEST_LATENCY_BOUND,
            f"during {what} the honest tenant waited up to {max(latencies):.2f} s "
            f"(p99 {p99:.2f} s, {len(latencies)} requests)",
        )

    @defer.inlineCallbacks
    def waitForPublic(self, collector: Collector, condition: Callable[[bytes], bool],
                      timeout: float):
        """Wait until C{condition(data)} holds or the connection closed, at most C{timeout} s."""
        deadline = reactor.seconds() + timeout
        while (not collector.done.called and not condition(collector.data)
               and reactor.seconds() < deadline):
            yield sleep(0.05)
        return collector.data


class LocalPortTests(TwoTenantsTestCase):
    """
    A client run without C{--local}: the public cannot choose which port of
    the client's machine the client dials by writing it into C{Host}.
    """

    @defer.inlineCallbacks
    def test_hostPortDoesNotReachLoopbackService(self):
        """
        A public request for C{silent.localhost:PORT}, plain and with
        C{Connection: Upgrade} followed by a memcached command, does not
        reach the service listening on 127.0.0.1:PORT of the client's
        machine; the public gets an error status. The other tenant is
        served meanwhile.
        """
        recorder = RecordingFactory()
        port = yield listen(recorder)
        self.addCleanup(port.stopListening)
        target = port.getHost().port
        yield self.startHostileTenantClient([])

        plainPublic = Collector()
        yield self.connect(plainPublic)
        plainPublic.transport.write(
            b"GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
            % (HOSTILE_HOST.encode(), target)
        )
        self.addCleanup(plainPublic.transport.abortConnection)
        plain = yield self.waitForPublic(plainPublic, lambda data: b"\r\n\r\n" in data, 5)
        upgrade = Collector()
        yield self.connect(upgrade)
        upgrade.transport.write(
            b"GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n"
            b"stats\r\n" % (HOSTILE_HOST.encode(), target)
        )
        self.addCleanup(upgrade.transport.abortConnection)
        piped = yield self.waitForPublic(upgrade, lambda data: b"END\r\n" in data, 5)
        honest = yield self.fetch()
        log.info("finding 1: {n} connections reached 127.0.0.1:{port}, which got {got!r}; "
                 "the public got {plain!r} and {piped!r}",
                 n=recorder.total, port=target, got=recorder.received[:300],
                 plain=plain[:100], piped=piped[:300])
        self.assertEqual(
            (recorder.total, recorder.received), (0, b""),
            f"the public reached 127.0.0.1:{target}; it answered {piped[:300]!r}",
        )
        self.assertRegex(status(plain), rb"^HTTP/1\.1 [45]\d\d ")
        self.assertRegex(status(piped), rb"^HTTP/1\.1 [45]\d\d ")
        self.assertNotIn(b"STAT pid", piped)
        self.assertTrue(honest.startswith(b"HTTP/1.1 200 OK"), honest[:200])


class RefusedUpgradeTests(TwoTenantsTestCase):
    """
    A local service that answers an upgrade request with C{200}: the public
    connection stays HTTP, every later request on it parsed and checked.
    """

    @defer.inlineCallbacks
    def test_requestsAfterARefusedUpgradeAreParsed(self):
        """
        After the upgrade request's C{200}, a request with a forged
        C{X-Forwarded-For} reaches the local service (if the server keeps
        the connection) with the server's own entry last, and a request for
        the control path on that connection never reaches it.
        """
        local = Factory.forProtocol(RefusesUpgrades)
        local.heads = []
        port = yield listen(local)
        self.addCleanup(port.stopListening)
        yield self.startHostileTenantClient(["--local", f"127.0.0.1:{port.getHost().port}"])
        public = Collector()
        yield self.connect(public)
        self.addCleanup(public.transport.abortConnection)
        public.transport.write(
            b"GET /chat HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            % (HOSTILE_HOST.encode(),)
        )
        first = yield self.waitForPublic(public, lambda data: data.endswith(b"\r\n\r\nok"), 5)
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK"), first[:200])
        upgradeHeads = len(local.heads)
        public.transport.write(
            b"GET /second HTTP/1.1\r\nHost: %s\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
            b"GET /_controlPath/ HTTP/1.1\r\nHost: %s\r\n\r\n"
            % (HOSTILE_HOST.encode(), HOSTILE_HOST.encode())
        )
        after = yield self.waitForPublic(
            public, lambda data: data.count(b"HTTP/1.1 ") >= 3, 5
        )
        yield sleep(0.3)
        later = local.heads[upgradeHeads:]
        log.info("finding 2: after the refused upgrade the local service got {heads!r}; "
                 "the public got {after!r}", heads=later, after=after[:600])
        for head in later:
            self.assertNotIn(b"_controlPath", head, f"the control path reached the service: {later!r}")
            forwardedFor = b",".join(headerValues(head, b"x-forwarded-for")).split(b",")
            self.assertEqual(
                forwardedFor[-1].strip(), b"127.0.0.1",
                f"a request reached the service unparsed: {head!r}",
            )
        self.assertTrue(
            later or public.done.called,
            "the connection neither carried the next request nor was closed",
        )


class MemoryTests(TwoTenantsTestCase):
    """
    A tenant's client that makes the server hold data for it: the server's
    memory stays bounded, the client loses its session once it is stuck,
    and the other tenant is served meanwhile.
    """

    @defer.inlineCallbacks
    def setUp(self):
        self.serverArguments = STALL_ARGUMENTS
        reason = ensureOpenFileLimit(4096)
        if reason is not None:
            raise SkipTest(reason)
        yield super().setUp()

    @defer.inlineCallbacks
    def assertStuckSessionClosed(self):
        """
        The server closes the stuck session once its stall timeout is
        past, and logs why; fire with the log line.
        """
        match = yield self.server.waitFor(
            rf"Client {re.escape(HOSTILE_LABEL)} disconnected: [^\n]*", STALL_TIMEOUT + 15
        )
        return match.group(0)

    @defer.inlineCallbacks
    def test_clientThatStopsReadingCannotTakeTheServersMemory(self):
        """
        A client that stops reading, acknowledging streams and pings
        blindly, while 1,500 public requests with 255 KiB bodies go to its
        host: the server's RSS grows less than 64 MiB over what it may hold
        for each public connection (L{PER_CONNECTION_KIB}), the other tenant is
        answered within 1 s, and the stuck session is closed with a log
        line; the server's open files come back to the baseline.
        """
        hostile = yield self.connectHostile()
        files, rss = yield self.baseline(self.fetch)
        hostile.stopReading()
        sent = [0]
        hostile.acknowledgeBlindly(lambda: sent[0], reactor)
        sampler = PeakSampler(self.server.residentKiB)
        self.addCleanup(sampler.stop)
        body = b"b" * (255 * 1024)
        head = (b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
                % (HOSTILE_HOST.encode(), len(body)))
        publics: list[Collector] = []

        def abortPublics() -> None:
            for public in publics:
                if public.transport is not None:
                    public.transport.abortConnection()

        self.addCleanup(abortPublics)
        started = reactor.seconds()
        for batch in range(15):
            connected = yield defer.gatherResults(
                [self.connect(Collector()) for _ in range(100)]
            )
            for public in connected:
                public.transport.write(head)
                public.transport.write(body)
                sent[0] += 1
            publics += connected
            yield sleep(0.05)
        latencies = yield self.honestLatencies(lambda: False, 3)
        peak = sampler.stop()
        grown = peak - rss
        answered = [public.data for public in publics if public.data]
        log.info("finding 3 (not reading): {n} requests in {s:.1f} s, server RSS {before} KiB "
                 "-> peak {peak} KiB (+{grown} KiB); {a} answered while the session was "
                 "stuck, e.g. {example!r}",
                 n=sent[0], s=reactor.seconds() - started, before=rss, peak=peak, grown=grown,
                 a=len(answered), example=answered[0][-200:] if answered else b"")
        # Requests the session cannot take are refused, never served.
        for response in answered:
            self.assertRegex(status(response), rb"^HTTP/1\.1 5\d\d ")
        self.assertLess(
            grown, RSS_BOUND_KIB + sent[0] * PER_CONNECTION_KIB,
            f"the server's RSS grew by {grown // 1024} MiB ({rss // 1024} -> "
            f"{peak // 1024} MiB) for {sent[0]} requests to a client that does not read",
        )
        self.assertHonestPrompt(latencies, "the not-reading attack")
        closed = yield self.assertStuckSessionClosed()
        log.info("finding 3 (not reading): {line}", line=closed)
        abortPublics()
        openFiles = yield untilSteady(self.server.openFiles, 0.1)
        self.assertLessEqual(openFiles, files)

    @defer.inlineCallbacks
    def test_hugeWindowCannotTakeTheServersMemory(self):
        """
        A client (without the server-streams extension) that stops reading
        and opens the streams of two public uploads with a ~4 GiB window
        each, the second once the server's connection to it is backed up:
        the server's RSS grows less than 64 MiB while the public pushes up
        to 512 MiB for 3 s, the other tenant is answered within 1 s, and
        the stuck session is closed with a log line.
        """
        hostile = yield self.connectHostile(serverStreams=False)
        files, rss = yield self.baseline(self.fetch)
        hostile.stopReading()
        sampler = PeakSampler(self.server.residentKiB)
        self.addCleanup(sampler.stop)

        @defer.inlineCallbacks
        def upload(size: int):
            uploader = Uploader(
                b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
                % (HOSTILE_HOST.encode(), size),
                size,
            )
            yield self.connect(uploader)
            self.addCleanup(uploader.transport.abortConnection)
            # The server has asked for a stream by now: open it, window and all.
            yield sleep(0.3)
            hostile.openStream(HUGE_WINDOW_DELTA)
            return uploader

        filler = yield upload(64 * MiB)
        previous = -1
        while filler.sent != previous:
            previous = filler.sent
            yield sleep(0.3)
        size = 512 * MiB
        uploader = yield upload(size)
        started = reactor.seconds()
        latencies = yield self.honestLatencies(lambda: uploader.sent >= size, 3)
        peak = sampler.stop()
        grown = peak - rss
        log.info("finding 3 (huge window): {filled} bytes of a first upload until the session "
                 "backed up, then {sent} bytes uploaded in {s:.1f} s; server RSS "
                 "{before} KiB -> peak {peak} KiB (+{grown} KiB)",
                 filled=filler.sent, sent=uploader.sent, s=reactor.seconds() - started,
                 before=rss, peak=peak, grown=grown)
        self.assertLess(
            grown, RSS_BOUND_KIB,
            f"the server's RSS grew by {grown // 1024} MiB ({rss // 1024} -> "
            f"{peak // 1024} MiB) while {uploader.sent // MiB} MiB were uploaded to a "
            f"client with a huge window",
        )
        self.assertHonestPrompt(latencies, "the huge-window attack")
        closed = yield self.assertStuckSessionClosed()
        log.info("finding 3 (huge window): {line}", line=closed)


class TrickledHeadTests(TwoTenantsTestCase):
    """
    A tenant's client that answers with a response head one byte per
    yamux frame: the server's work stays linear, and the other tenant is
    served meanwhile.
    """

    #: The size of the trickled head, just under the server's 64 KiB limit.
    HEAD_SIZE = 64000

    #: The server CPU seconds the trickled head may cost (about 64,000
    #: frames of 13 bytes).
    CPU_BOUND = 4.0

    def trickledHead(self) -> bytes:
        """A valid response head of L{HEAD_SIZE} bytes, body C{ok} not counted."""
        start, end = b"HTTP/1.1 200 OK\r\n", b"Content-Length: 2\r\n\r\n"
        room = self.HEAD_SIZE - len(start) - len(end)
        line = b"X-Pad-%03d: " + b"p" * 987 + b"\r\n"
        lines = [line % (i,) for i in range(room // len(line % (0,)))]
        filler = room - sum(map(len, lines))
        lines.append(b"X-Fill: " + b"f" * (filler - 10) + b"\r\n")
        head = start + b"".join(lines) + end
        assert len(head) == self.HEAD_SIZE, len(head)
        return head

    @defer.inlineCallbacks
    def test_headTrickledBytePerFrameCostsLinearWork(self):
        """
        A 64,000-byte response head sent one byte per frame: the public
        request gets it, the server spends less than 4 s of CPU on it, and
        meanwhile the other tenant's requests are answered within 1 s
        (p99).
        """
        hostile = yield self.connectHostile()
        payload = self.trickledHead() + b"ok"

        def answerTrickled(client: HostileTunnelClient, stream: PeerStream) -> None:
            if not stream.answered and b"\r\n\r\n" in stream.received:
                stream.answered = True
                client.sendTrickled(stream.streamID, payload, fin=True)

        hostile.onStream = lambda client, stream: client.acknowledge(stream.streamID)
        hostile.onStreamData = answerTrickled
        yield self.fetch()
        cpuBefore = cpuSeconds(self.server.pid)
        started = reactor.seconds()
        trickledFetch = self.fetchWithin(40, HOSTILE_HOST)
        responses: list[bytes | None] = []
        trickledFetch.addBoth(responses.append)
        latencies = yield self.honestLatencies(lambda: bool(responses), 40, atLeast=2)
        yield until(lambda: bool(responses), 5, "the trickled response")
        cpu = cpuSeconds(self.server.pid) - cpuBefore
        elapsed = reactor.seconds() - started
        [response] = responses
        log.info("finding 4: {size}-byte head one byte per frame: {elapsed:.1f} s, "
                 "server CPU {cpu:.2f} s, honest max {max:.2f} s over {n} requests",
                 size=self.HEAD_SIZE, elapsed=elapsed, cpu=cpu, max=max(latencies),
                 n=len(latencies))
        self.assertIsInstance(response, bytes)
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK"), response[:200])
        self.assertLess(cpu, self.CPU_BOUND, f"the server spent {cpu:.1f} s of CPU on the head")
        self.assertHonestPrompt(latencies, "the trickled head")


# -- a hostile server ---------------------------------------------------------


class HostileServerTests(TestCase):
    """
    C{twistd tunnel-client} connected to a L{HostileTunnelServer}: the
    server cannot make it dial what its user did not configure, nor open
    local connections without bound.
    """

    timeout = 60

    #: The public port the client's one TCP route is for.
    ROUTED_PORT = 8000

    @defer.inlineCallbacks
    def setUp(self):
        reason = processMetricsAvailable() or ensureOpenFileLimit(12000)
        if reason is not None:
            raise SkipTest(reason)
        self.hostile = HostileServerFactory()
        port = yield listen(self.hostile)
        self.addCleanup(port.stopListening)
        self.serverPort = port.getHost().port

    @defer.inlineCallbacks
    def startClient(self, arguments: list[str]):
        """Start a client of the hostile server; fire with it and the server's protocol."""
        client = spawnTwistd(
            reactor, "tunnel-client",
            ["--server", f"127.0.0.1:{self.serverPort}", *arguments],
            {"TUNNEL_IDENTIFIER": "hostile-server-test-identifier"},
        )
        self.addCleanup(client.kill)
        server = yield self.hostile.firstReady.addTimeout(15, reactor)
        self.addCleanup(lambda: server.transport.abortConnection())
        yield client.waitFor(r"tunnel to 127\.0\.0\.1:\d+ is up")
        return client, server

    @defer.inlineCallbacks
    def test_controlMessagesCannotPickLocalPorts(self):
        """
        TCP, HTTP and WebSocket control messages naming a port the client
        has no route for make no connection to the service listening there;
        the routed port is dialled.
        """
        recorder, routed = RecordingFactory(), RecordingFactory(mute=True)
        recorderPort = yield listen(recorder)
        routedPort = yield listen(routed)
        self.addCleanup(recorderPort.stopListening)
        self.addCleanup(routedPort.stopListening)
        target = recorderPort.getHost().port
        client, server = yield self.startClient(
            ["--local", f"{self.ROUTED_PORT}=127.0.0.1:{routedPort.getHost().port}"]
        )
        server.sendControl(
            [ControlMessage(transportProtocol=kind, localPort=target)
             for kind in (TransportProtocol.TCP, TransportProtocol.HTTP,
                          TransportProtocol.WEBSOCKET)]
            + [ControlMessage(transportProtocol=TransportProtocol.TCP,
                              localPort=self.ROUTED_PORT)]
        )
        yield until(lambda: routed.total, 10, "the routed port was dialled")
        yield sleep(0.5)
        log.info("finding 5 (ports): {n} connections reached the unrouted port {port}",
                 n=recorder.total, port=target)
        self.assertEqual(recorder.total, 0, f"the server made the client dial 127.0.0.1:{target}")

    @defer.inlineCallbacks
    def test_burstOfControlMessagesIsBounded(self):
        """
        4,800 control messages at once: the client has at most its cap of
        local connections open at a time, and its open files stay within
        that cap of where they were.
        """
        local = RecordingFactory(mute=True)
        localPort = yield listen(local)
        self.addCleanup(localPort.stopListening)

        def closeLocal() -> None:
            for connection in local.connections:
                connection.transport.abortConnection()

        self.addCleanup(closeLocal)
        client, server = yield self.startClient(
            ["--local", f"127.0.0.1:{localPort.getHost().port}",
             *LOCAL_CAP_ARGUMENTS]
        )
        files = yield untilSteady(client.openFiles, 0.1)
        sampler = PeakSampler(client.openFiles)
        self.addCleanup(sampler.stop)
        count = 4800
        server.sendControl([ControlMessage(localPort=0)] * count)
        yield until(lambda: len(server.streams) >= count or local.total >= count, 20,
                    "the client took the messages")
        previous = -1
        while local.total != previous:
            previous = local.total
            yield sleep(0.5)
        peakFiles = sampler.stop()
        log.info("finding 5 (burst): {streams} streams opened, {total} local connections, "
                 "at most {peak} at once; client files {files} -> peak {peakFiles}",
                 streams=len(server.streams), total=local.total, peak=local.peak,
                 files=files, peakFiles=peakFiles)
        self.assertLessEqual(
            local.peak, LOCAL_CONNECTION_CAP,
            f"{count} control messages opened {local.peak} local connections at once",
        )
        self.assertLessEqual(peakFiles, files + LOCAL_CONNECTION_CAP + 16)
