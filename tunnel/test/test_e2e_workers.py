"""
C{--workers} end to end: a real C{redis-server}, a real C{twistd -n
tunnel-server --workers 2} and a real console client. Public requests
through the one shared port land on both workers, the one without the
client's session forwarding them to the other; a SIGHUP reaches both; a
worker killed with SIGKILL is started again and the host keeps answering;
a worker failing at start again and again stops the server with a clear
message and a failed status.
"""

from __future__ import annotations

import os
import re
import socket
import sys

import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from tunnel.cluster.node import HOLDERS_CACHE_SECONDS
from tunnel.test import test_e2e_cluster as cluster
from tunnel.test.redisserver import RedisServer, freeLoopbackPort
from tunnel.test.support import sleep, until
from tunnel.test.twistdprocess import TwistdProcess, spawnPython, spawnTwistd

IDENTIFIER = "the-identifier-of-the-workers-01"
SECRET = "the cluster secret of the workers' tests"
#: The node name the tests give; the workers are wk-w0 and wk-w1.
NAME = "wk"


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one series of a Prometheus exposition, 0 if it is not there."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def nth(pattern: str, count: int) -> str:
    """A pattern matching the C{count}th occurrence of C{pattern}, its groups those of that one."""
    skipped = re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)
    return r"(?s)" + (r"(?:" + skipped + r".*?)") * (count - 1) + pattern


def alive(pid: int) -> bool:
    """Whether process C{pid} runs (a zombie no longer does)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WorkersTests(TestCase):
    """Two workers behind one port, one Redis, one client."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = RedisServer(reactor)
        yield self.redis.start()
        self.addCleanup(self.redis.stop)
        self.secret = self.mktemp()
        with open(self.secret, "w") as f:
            f.write(SECRET + "\n")
        self.hostsFile = self.mktemp()
        with open(self.hostsFile, "w") as f:
            f.write(f"one.localhost={IDENTIFIER}\n")
        port = reactor.listenTCP(
            0, Factory.forProtocol(lambda: cluster.LocalService(b"one")), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.local = port.getHost().port

    def arguments(self, *extra: str) -> list[str]:
        return ["--workers", "2", "--listen", "tcp:0:interface=127.0.0.1",
                "--metrics", "tcp:0:interface=127.0.0.1",
                "--redis", self.redis.url, "--cluster-secret-file", self.secret,
                "--node-name", NAME, "--lease", "2",
                "--hosts-file", self.hostsFile,
                "--tcp", f"tcp:0:interface=127.0.0.1={IDENTIFIER}", *extra]

    @defer.inlineCallbacks
    def startServer(self):
        """Start the supervisor; fire once both workers serve."""
        process = spawnTwistd(reactor, "tunnel-server", self.arguments(
            "--cluster-listen", "tcp:0:interface=127.0.0.1"))
        self.addCleanup(self.ended, process)
        self.server = process
        shared = yield process.waitFor(
            r"Listening on 127\.0\.0\.1 port (\d+) for 2 workers[\s\S]*"
            r"Listening on 127\.0\.0\.1 port (\d+) for 2 workers"
        )
        self.public, self.tcp = shared.groups()
        for index in (0, 1):
            yield process.waitFor(rf"Worker {index} serves")
        self.metrics = {}
        for index in (0, 1):
            yield self.learnMetrics(index, 1)

    @defer.inlineCallbacks
    def learnMetrics(self, index: int, start: int):
        """Learn where worker C{index} serves its metrics, the C{start}th time it started."""
        found = yield self.server.waitFor(
            nth(rf"\[w{index} [^\]]*\] MonitoringSite starting on (\d+)", start)
        )
        self.metrics[index] = found.group(1)

    @defer.inlineCallbacks
    def ended(self, process: TwistdProcess):
        """Stop the supervisor (which stops its workers), killing it if it takes too long."""
        process.signal("TERM")
        timer = reactor.callLater(20, process.signal, "KILL")
        yield process.ended
        if timer.active():
            timer.cancel()

    def pid(self, index: int, start: int = 1) -> int:
        found = re.search(nth(rf"Started worker {index} \(pid (\d+)\)", start), self.server.output)
        return int(found.group(1))

    def client(self) -> TwistdProcess:
        process = spawnPython(reactor, [
            sys.executable, "-m", "tunnel", "client", "--server", f"127.0.0.1:{self.public}",
            "--identifier", IDENTIFIER, "--local", f"127.0.0.1:{self.local}",
            "--local", f"{self.tcp}=127.0.0.1:{self.local}", "--inspect", "none",
        ])
        self.addCleanup(process.kill)
        return process

    @defer.inlineCallbacks
    def get(self, body: bytes = b"", host: str = "one.localhost"):
        response = yield treq.request(
            "POST" if body else "GET", f"http://127.0.0.1:{self.public}/",
            headers={"Host": host}, data=body or None, persistent=False,
        )
        return response.code, (yield treq.content(response))

    @defer.inlineCallbacks
    def reachable(self, host: str = "one.localhost", seconds: float = 20.0):
        """Wait until the host answers 200 through the shared port."""
        code, body = None, b""
        for _ in range(int(seconds * 10)):
            code, body = yield self.get(host=host)
            if code == 200:
                return
            yield sleep(0.1)
        self.fail(f"{host} never answered: {code} {body!r}")

    @defer.inlineCallbacks
    def manyRequests(self, count: int, concurrency: int = 10):
        """C{count} requests, C{concurrency} at a time, each on a new connection: all answered."""
        for start in range(0, count, concurrency):
            bodies = [b"request %d" % (n,) for n in range(start, min(count, start + concurrency))]
            answers = yield defer.gatherResults([self.get(body) for body in bodies])
            self.assertEqual(answers, [(200, b"one:" + body) for body in bodies])

    @defer.inlineCallbacks
    def scrape(self, index: int, path: str = "/metrics"):
        response = yield treq.get(
            f"http://127.0.0.1:{self.metrics[index]}{path}", persistent=False
        )
        return response.code, (yield treq.content(response)).decode("utf-8")

    @defer.inlineCallbacks
    def served(self):
        """What each worker counts: (requests answered 2xx, connected clients)."""
        counts = []
        for index in (0, 1):
            _, text = yield self.scrape(index)
            counts.append((
                metric(text, "tunnel_server_requests_total", 'host="one.localhost",status="2xx"'),
                metric(text, "tunnel_server_connected_clients"),
            ))
        return counts

    @defer.inlineCallbacks
    def test_requestsThroughTheSharedPortReachBothWorkers(self):
        """
        Many requests through the one public port are all answered; both
        workers answered some (the one without the client's session by
        forwarding them to the other, over a link); both are ready; TCP
        goes through the shared TCP tunnel port; a SIGHUP to the
        supervisor reloads the hosts file in both; a SIGTERM stops all.
        """
        yield self.startServer()
        client = self.client()
        yield client.waitFor(rf"Forwarding  http://one\.localhost:{self.public}/")
        yield self.reachable()
        yield self.manyRequests(200)
        [(answered0, clients0), (answered1, clients1)] = yield self.served()
        self.assertEqual(sorted([clients0, clients1]), [0, 1])
        self.assertGreater(answered0, 0)
        self.assertGreater(answered1, 0)
        self.assertGreaterEqual(answered0 + answered1, 200)
        holder = 0 if clients0 else 1
        other = 1 - holder
        self.assertRegex(
            self.server.output, rf"\[w{other} [^\]]*\] Linked to node {NAME}-w{holder} at "
        )
        for index in (0, 1):
            code, text = yield self.scrape(index, "/readyz")
            self.assertEqual(code, 200, text)
        for n in range(10):
            raw = cluster.Raw()
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", int(self.tcp)), raw)
            raw.transport.write(b"raw bytes %d" % (n,))
            yield raw.until(b"raw bytes %d" % (n,))
            raw.transport.loseConnection()

        with open(self.hostsFile, "a") as f:
            f.write(f"two.localhost={IDENTIFIER}\n")
        self.server.signal("HUP")
        # Each worker adds the new host to the shared configuration, which
        # both follow within half a second.
        for index in (0, 1):
            yield self.server.waitFor(
                rf"\[w{index} [^\]]*\] Added the new hosts of \S+ to the shared configuration"
            )
        # Until both workers follow: requests land on either.
        answered = 0
        for _ in range(100):
            answered = answered + 1 if (yield self.get(b"again", "two.localhost"))[0] == 200 else 0
            if answered == 20:
                break
            yield sleep(0.05)
        for _ in range(10):
            self.assertEqual((yield self.get(b"again", "two.localhost")), (200, b"one:again"))

        pids = [self.pid(0), self.pid(1)]
        self.server.signal("TERM")
        # twistd ends by the signal that stopped it, once it has stopped.
        self.assertIn((yield self.server.ended), (0, None), self.server.output[-3000:])
        self.assertIn("Server Shut Down.", self.server.output)
        self.assertEqual([alive(pid) for pid in pids], [False, False])

    @defer.inlineCallbacks
    def test_workersEndWithTheirSupervisor(self):
        """
        A supervisor killed with SIGKILL takes its workers with it: they see
        it gone, and stop.
        """
        yield self.startServer()
        pids = [self.pid(0), self.pid(1)]
        self.server.signal("KILL")
        yield self.server.ended
        yield until(lambda: not any(alive(pid) for pid in pids), 15.0, "the workers stopped")

    @defer.inlineCallbacks
    def test_aKilledWorkerIsStartedAgain(self):
        """
        The worker holding the client's session is killed with SIGKILL: the
        supervisor says so and starts it again; the client connects again
        and every request is answered once it has; the new worker is ready.
        """
        yield self.startServer()
        client = self.client()
        yield client.waitFor(rf"Forwarding  http://one\.localhost:{self.public}/")
        yield self.reachable()
        [(_, clients0), _] = yield self.served()
        holder = 0 if clients0 else 1
        os.kill(self.pid(holder), 9)
        yield self.server.waitFor(
            rf"Worker {holder} \(pid {self.pid(holder)}\) was killed by SIGKILL after "
            r"serving [\d.]+ s; restarting it in"
        )
        yield self.server.waitFor(nth(rf"Worker {holder} serves", 2))
        self.assertNotEqual(self.pid(holder, 2), self.pid(holder, 1))
        yield self.reachable()
        # The other worker may have looked the client up while it was away:
        # it says so for HOLDERS_CACHE_SECONDS, as a node of a cluster does.
        yield sleep(HOLDERS_CACHE_SECONDS)
        yield self.manyRequests(50)
        yield self.learnMetrics(holder, 2)
        code, text = yield self.scrape(holder, "/readyz")
        self.assertEqual(code, 200, text)

    @defer.inlineCallbacks
    def test_aWorkerFailingAtStartStopsTheServer(self):
        """
        Worker 1 cannot listen for the other nodes (its port, the
        configured one + 1, is taken): after five failures at start in a
        row the supervisor stops worker 0 and exits with status 1, saying
        why.
        """
        while True:
            port = freeLoopbackPort()
            taken = socket.socket()
            try:
                taken.bind(("127.0.0.1", port + 1))
            except OSError:
                taken.close()
                continue
            taken.listen(1)
            break
        self.addCleanup(taken.close)
        process = spawnTwistd(reactor, "tunnel-server", self.arguments(
            "--cluster-listen", f"tcp:{port}:interface=127.0.0.1"))
        self.addCleanup(self.ended, process)
        self.assertEqual((yield process.ended), 1, process.output[-3000:])
        self.assertIn(
            "worker 1 failed at start 5 times in a row (last: exited with status 1 (cannot "
            f"listen on port {port + 1} of 127.0.0.1: Address already in use",
            process.output,
        )
        self.assertRegex(process.output, r"Worker 0 \(pid \d+\) stopped")
