"""
A cluster end to end: a real C{redis-server} and three real C{twistd
tunnel-server} nodes on loopback, real console clients on different
nodes, every host reached through every node (HTTP, WebSocket, TCP), a
node killed with SIGKILL, and Redis restarted.
"""

from __future__ import annotations

import json
import random
import sys

import treq
import trustme
import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tunnel.test.redisserver import RedisServer
from tunnel.test.support import sleep
from tunnel.test.twistdprocess import spawnPython, spawnTwistd

SECRET = "the cluster secret of the end-to-end tests"
CLIENTS = {
    "one": "the-first-cluster-identifier-01",
    "two": "the-second-cluster-identifier-2",
}
#: The token of the one account, which may hold one self-service host.
TOKEN = "the-account-token-of-the-tests"


class LocalService(Protocol):
    """
    A local service behind a client, one per connection: a WebSocket-like
    upgrade is answered C{101} and then echoed; any other HTTP request is
    answered with its name and the body it carried; anything else (a TCP
    tunnel) is echoed.
    """

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.buffer = b""
        self.mode: str | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.mode == "echo":
            self.transport.write(data)
            return
        self.buffer += data
        if self.mode is None:
            if not self.buffer[:8].split(b" ")[0] in (b"GET", b"POST"):
                self.mode = "echo"
                self.transport.write(self.buffer)
                return
            if b"\r\n\r\n" not in self.buffer:
                return
            head, _, rest = self.buffer.partition(b"\r\n\r\n")
            if b"upgrade: websocket" in head.lower():
                self.mode = "echo"
                self.transport.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n" + rest
                )
                return
            self.mode = "http"
            self.head = head
        length = 0
        for line in self.head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = self.buffer.partition(b"\r\n\r\n")[2]
        if len(body) < length:
            return
        answer = self.name + b":" + body
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(answer), answer)
        )
        self.transport.loseConnection()


class Raw(Protocol):
    """A raw public client: records what it receives."""

    def __init__(self) -> None:
        self.received = b""
        self.waiters: list[tuple[bytes, defer.Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for waiter in list(self.waiters):
            if self.received.endswith(waiter[0]):
                self.waiters.remove(waiter)
                waiter[1].callback(None)

    def until(self, suffix: bytes) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        if self.received.endswith(suffix):
            waiting.callback(None)
        else:
            self.waiters.append((suffix, waiting))
        return waiting.addTimeout(10, reactor)


class ClusterNodes(TestCase):
    """Three nodes, one Redis, two clients: what the tests of a cluster use."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self):
        self.redis = RedisServer(reactor)
        yield self.redis.start()
        self.addCleanup(self.redis.stop)
        self.secret = self.mktemp()
        with open(self.secret, "w") as f:
            f.write(SECRET + "\n")
        self.token = self.mktemp()
        with open(self.token, "w") as f:
            f.write("the admin token of the tests\n")
        self.accounts = self.mktemp()
        with open(self.accounts, "w") as f:
            f.write(f"alice 1 {TOKEN}\n")
        self.locals = {}
        for name in CLIENTS:
            port = reactor.listenTCP(
                0, Factory.forProtocol(lambda n=name: LocalService(n.encode())),
                interface="127.0.0.1",
            )
            self.addCleanup(port.stopListening)
            self.locals[name] = port.getHost().port
        self.nodes = {}
        for name in ("n1", "n2", "n3"):
            yield self.startNode(name)

    @defer.inlineCallbacks
    def startNode(self, name: str):
        arguments = ["--listen", "tcp:0:interface=127.0.0.1",
                     "--metrics", "tcp:0:interface=127.0.0.1",
                     "--admin", "tcp:0:interface=127.0.0.1", "--admin-token-file", self.token,
                     "--redis", self.redis.url, "--cluster-secret-file", self.secret,
                     "--cluster-listen", "tcp:0:interface=127.0.0.1",
                     "--node-name", name, "--lease", "2", "--domain", "localhost",
                     *self.nodeArguments(name)]
        if name == "n1":
            # The others take the accounts n1 gives the cluster.
            arguments += ["--accounts-file", self.accounts]
        for client, identifier in CLIENTS.items():
            arguments += ["--host", f"{client}.localhost={identifier}",
                          "--tcp", f"tcp:0:interface=127.0.0.1={identifier}"]
        process = spawnTwistd(reactor, "tunnel-server", arguments)
        self.addCleanup(process.kill)
        public = (yield process.waitFor(r"TunnelSite starting on (\d+)")).group(1)
        metrics = (yield process.waitFor(r"MonitoringSite starting on (\d+)")).group(1)
        admin = (yield process.waitFor(r"AdminSite starting on (\d+)")).group(1)
        yield process.waitFor(r"other nodes link to 127\.0\.0\.1:\d+")
        tcp = yield process.waitFor(
            r"TCPTunnelFactory starting on (\d+)[\s\S]*TCPTunnelFactory starting on (\d+)"
        )
        yield process.waitFor(r"Joined the shared configuration")
        self.nodes[name] = {"process": process, "public": public, "metrics": metrics,
                            "admin": admin, "tcp": list(tcp.groups())}

    def nodeArguments(self, name: str) -> list[str]:
        """The arguments of node C{name} beyond those every node has."""
        return []

    @defer.inlineCallbacks
    def admin(self, node: str, method: str, path: str, body: object = None):
        response = yield treq.request(
            method,
            f"http://127.0.0.1:{self.nodes[node]['admin']}{path}",
            headers={"Authorization": "Bearer the admin token of the tests"},
            data=None if body is None else json.dumps(body).encode(),
            persistent=False,
        )
        return response.code, json.loads((yield treq.content(response)))

    @defer.inlineCallbacks
    def answers(self, node: str, client: str, code: int):
        """Wait (a few seconds at most) until C{client}'s host answers C{code} through C{node}."""
        for _ in range(100):
            got, body = yield self.get(node, client)
            if got == code:
                return body
            yield sleep(0.1)
        self.fail(f"{client} never answered {code} through {node}: {got} {body!r}; its log "
                  f"ends with:\n{self.nodes[node]['process'].output[-3000:]}")

    def client(self, name: str, *nodes: str, identifier: str | None = None):
        servers = [w for node in nodes for w in ("--server", f"127.0.0.1:{self.nodes[node]['public']}")]
        # Each node listens for the client's TCP tunnel on a port of its own
        # (they share one machine): every one of them leads to the service.
        local = f"127.0.0.1:{self.locals.get(name, self.locals['one'])}"
        tcp = []
        if name in CLIENTS:
            index = list(CLIENTS).index(name)
            tcp = [w for node in self.nodes.values()
                   for w in ("--local", f"{node['tcp'][index]}={local}")]
        process = spawnPython(reactor, [
            sys.executable, "-m", "tunnel", "client", *servers,
            "--identifier", identifier or CLIENTS[name], "--local", local, *tcp,
            "--inspect", "none",
        ])
        self.addCleanup(process.kill)
        return process

    @defer.inlineCallbacks
    def connected(self, name: str, *nodes: str, identifier: str | None = None):
        process = self.client(name, *nodes, identifier=identifier)
        for node in nodes:
            yield process.waitFor(rf"Forwarding  http://{name}\.localhost:{self.nodes[node]['public']}/")
        return process

    @defer.inlineCallbacks
    def get(self, node: str, client: str, body: bytes = b""):
        response = yield treq.request(
            "POST" if body else "GET",
            f"http://127.0.0.1:{self.nodes[node]['public']}/",
            headers={"Host": f"{client}.localhost"},
            data=body or None,
            persistent=False,
        )
        content = yield treq.content(response)
        return response.code, content

    @defer.inlineCallbacks
    def raw(self, port: str) -> Raw:
        protocol = Raw()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", int(port)), protocol)
        self.addCleanup(protocol.transport.loseConnection)
        return protocol

    def reachable(self, node: str, client: str):
        """Wait (a few seconds at most) until C{client}'s host answers through C{node}."""
        return self.answers(node, client, 200)


class ClusterTests(ClusterNodes):
    """Three nodes, one Redis, two clients."""

    @defer.inlineCallbacks
    def test_everyHostThroughEveryNode(self):
        """
        Client one is on n1, client two on n2: HTTP, WebSocket and TCP of
        each reach it through every node.
        """
        yield self.connected("one", "n1")
        yield self.connected("two", "n2")
        # A hang-up (systemctl reload, say) is taken in its stride.
        self.nodes["n1"]["process"].signal("HUP")
        for node in self.nodes:
            for client in CLIENTS:
                yield self.reachable(node, client)
                code, body = yield self.get(node, client, b"a body for " + node.encode())
                self.assertEqual((code, body), (200, client.encode() + b":a body for " + node.encode()))
        for node in self.nodes:
            for index, client in enumerate(CLIENTS):
                ws = yield self.raw(self.nodes[node]["public"])
                ws.transport.write(
                    b"GET /ws HTTP/1.1\r\nHost: %s.localhost\r\nConnection: Upgrade\r\n"
                    b"Upgrade: websocket\r\n\r\n" % (client.encode(),)
                )
                yield ws.until(b"\r\n\r\n")
                self.assertTrue(ws.received.startswith(b"HTTP/1.1 101 "), ws.received)
                ws.transport.write(b"frame through " + node.encode())
                yield ws.until(b"frame through " + node.encode())
                tcp = yield self.raw(self.nodes[node]["tcp"][index])
                tcp.transport.write(b"raw bytes to " + client.encode())
                yield tcp.until(b"raw bytes to " + client.encode())

    @defer.inlineCallbacks
    def test_aKilledNodeLosesNoTunnel(self):
        """
        Client one holds sessions on n1 and n2, client two on n3 only. n1 is
        killed with SIGKILL: through n2 and n3 both hosts keep answering,
        every request of the while.
        """
        yield self.connected("one", "n1", "n2")
        yield self.connected("two", "n3")
        for node in ("n2", "n3"):
            for client in CLIENTS:
                yield self.reachable(node, client)
        self.nodes["n1"]["process"].signal("KILL")
        yield self.nodes["n1"]["process"].ended
        for round in range(20):
            for node in ("n2", "n3"):
                for client in CLIENTS:
                    body = b"round %d" % (round,)
                    self.assertEqual((yield self.get(node, client, body)),
                                     (200, client.encode() + b":" + body))

    @defer.inlineCallbacks
    def test_redisRestartIsSurvived(self):
        """
        With Redis down, nodes serve the sessions they hold and /readyz says
        why they are not ready; once it is back, forwarding works again.
        """
        yield self.connected("one", "n1")
        yield self.reachable("n2", "one")
        yield self.redis.kill()
        code, body = yield self.get("n1", "one", b"direct")
        self.assertEqual((code, body), (200, b"one:direct"))
        for _ in range(100):
            response = yield treq.get(
                f"http://127.0.0.1:{self.nodes['n1']['metrics']}/readyz", persistent=False
            )
            text = yield treq.content(response)
            if response.code == 503:
                break
            yield sleep(0.1)
        self.assertEqual(response.code, 503, text)
        self.assertIn(b"redis", text)
        yield self.redis.start()
        yield self.reachable("n3", "one")
        response = yield treq.get(
            f"http://127.0.0.1:{self.nodes['n1']['metrics']}/readyz", persistent=False
        )
        self.assertEqual(response.code, 200, (yield treq.content(response)))

    @defer.inlineCallbacks
    def test_theAdminAPIOfAnyNodeChangesEveryNode(self):
        """
        A host registered through n2's admin API is served through every
        node to a client on n1; an access rule set on n3 holds on every
        node; a rotation on n1 refuses the old identifier everywhere; a
        host deleted on n2 is gone from every node. Redis never holds an
        identifier.
        """
        code, body = yield self.admin("n2", "POST", "/hosts", {"host": "new.localhost"})
        self.assertEqual(code, 201, body)
        identifier = body["identifier"]
        yield self.connected("new", "n1", identifier=identifier)
        for node in self.nodes:
            yield self.reachable(node, "new")
        code, body = yield self.admin(
            "n3", "PUT", "/hosts/new.localhost/access", {"deny": ["127.0.0.0/8"]}
        )
        self.assertEqual(code, 200, body)
        for node in self.nodes:
            yield self.answers(node, "new", 403)
        code, body = yield self.admin("n1", "DELETE", "/hosts/new.localhost/access")
        self.assertEqual(code, 200, body)
        for node in self.nodes:
            yield self.reachable(node, "new")
        keys = yield self.redisKeys()
        self.assertNotIn(identifier, keys)
        code, body = yield self.admin("n1", "POST", "/hosts/new.localhost/rotate")
        self.assertEqual(code, 200, body)
        for node in self.nodes:
            yield self.answers(node, "new", 502)
        code, body = yield self.admin("n2", "DELETE", "/hosts/new.localhost")
        self.assertEqual(code, 200, body)
        for node in self.nodes:
            yield self.answers(node, "new", 404)

    @defer.inlineCallbacks
    def sharedListeners(self, node: str, count: int):
        """Wait until C{node} has C{count} TCP listeners beyond its --tcp ones; their ports."""
        for _ in range(50):
            code, body = yield self.admin(node, "GET", "/tcp")
            ports = [each["port"] for each in body["listeners"]
                     if str(each["port"]) not in self.nodes[node]["tcp"]]
            if len(ports) == count:
                return ports
            yield sleep(0.1)
        self.fail(f"{node} has TCP listeners {body}, not {count} of the cluster's")

    @defer.inlineCallbacks
    def test_aTCPListenerAddedThroughOneNodeListensOnEvery(self):
        """
        A TCP listener added through n2's admin API listens on every node
        (each on a port of its own, the nodes sharing one machine) and
        tunnels to its client; deleted through n3, it stops on every node.
        """
        code, body = yield self.admin(
            "n2", "POST", "/tcp", {"listen": "tcp:0:interface=127.0.0.1", "sameAs": "one.localhost"}
        )
        self.assertEqual(code, 201, body)
        ports = {}
        for node in self.nodes:
            [ports[node]] = yield self.sharedListeners(node, 1)
        self.assertEqual(ports["n2"], body["port"])
        local = f"127.0.0.1:{self.locals['one']}"
        client = spawnPython(reactor, [
            sys.executable, "-m", "tunnel", "client", "--identifier", CLIENTS["one"],
            "--server", f"127.0.0.1:{self.nodes['n1']['public']}", "--inspect", "none",
            *(w for port in ports.values() for w in ("--local", f"{port}={local}")),
        ])
        self.addCleanup(client.kill)
        yield client.waitFor(rf"Forwarding  tcp://[^:]+:{ports['n1']}")
        tcp = yield self.raw(ports["n3"])
        tcp.transport.write(b"raw bytes through n3")
        yield tcp.until(b"raw bytes through n3")
        code, body = yield self.admin("n3", "DELETE", f"/tcp/{ports['n3']}")
        self.assertEqual(code, 200, body)
        for node in self.nodes:
            yield self.sharedListeners(node, 0)

    @defer.inlineCallbacks
    def test_selfServiceHostsAreTheClusters(self):
        """
        A client with an account's token registers a host through n2, a
        node without the accounts file: its host is served through every
        node, and the account's limit holds through another node. Redis
        holds neither the token nor the identifier.
        """
        servers = [("--server", f"127.0.0.1:{self.nodes[node]['public']}") for node in ("n2", "n3")]
        local = f"127.0.0.1:{self.locals['one']}"
        command = [sys.executable, "-m", "tunnel", "client", "--local", local,
                   "--inspect", "none", "--token", TOKEN]
        first = spawnPython(reactor, [*command, *servers[0], "--subdomain", "self"])
        self.addCleanup(first.kill)
        yield first.waitFor(rf"Forwarding  http://self\.localhost:{self.nodes['n2']['public']}/")
        for node in self.nodes:
            yield self.reachable(node, "self")
        second = spawnPython(reactor, [*command, *servers[1], "--subdomain", "more"])
        self.addCleanup(second.kill)
        yield second.waitFor(r"account alice holds 1 hosts, as many as it may")
        keys = yield self.redisKeys()
        self.assertNotIn(TOKEN, keys)
        for process in (first, second, *(node["process"] for node in self.nodes.values())):
            self.assertNotIn(TOKEN, process.output)
        yield self.answers("n3", "more", 404)

    @defer.inlineCallbacks
    def redisKeys(self):
        """Every key in Redis and every value of its hashes, as one text."""
        redis = yield txredisapi.Connection("127.0.0.1", self.redis.port, reconnect=False)
        self.addCleanup(redis.disconnect)
        keys = yield redis.keys("*")
        found = list(keys)
        for key in keys:
            if (yield redis.type(key)) == "hash":
                found.append(json.dumps((yield redis.hgetall(key))))
        return "\n".join(found)

    @defer.inlineCallbacks
    def test_soakThroughForwarding(self):
        """
        Hundreds of requests with bodies of every size, eight at a time,
        through the two nodes that forward to the client's: every answer
        carries exactly the body that was sent.
        """
        yield self.connected("one", "n1")
        for node in ("n2", "n3"):
            yield self.reachable(node, "one")
        generator = random.Random(12)
        sizes = [0, 1, 1500, 65535, 65536, 262145] + [generator.randrange(200_000) for _ in range(234)]

        @defer.inlineCallbacks
        def worker(jobs):
            for index, size in jobs:
                body = generator.randbytes(size) or b"."
                node = ("n2", "n3")[index % 2]
                code, answer = yield self.get(node, "one", body)
                self.assertEqual(code, 200)
                if answer != b"one:" + body:
                    self.fail(f"request {index} ({size} bytes through {node}) came back altered")

        jobs = iter(enumerate(sizes))
        yield defer.gatherResults([worker(jobs) for _ in range(8)], consumeErrors=True)


class LinkTLSTests(ClusterNodes):
    """
    Three nodes linked over TLS (C{--cluster-tls}, C{--cluster-ca}), each
    with a certificate for 127.0.0.1 from the test's authority.
    """

    @defer.inlineCallbacks
    def setUp(self):
        authority = trustme.CA()
        self.authorities = self.mktemp()
        authority.cert_pem.write_to_path(self.authorities)
        self.certificates = {}
        for name in ("n1", "n2", "n3"):
            self.certificates[name] = self.mktemp()
            issued = authority.issue_cert("127.0.0.1")
            issued.private_key_and_cert_chain_pem.write_to_path(self.certificates[name])
        yield super().setUp()

    def nodeArguments(self, name: str) -> list[str]:
        if name not in self.certificates:
            return []
        return ["--cluster-tls", self.certificates[name], "--cluster-ca", self.authorities]

    @defer.inlineCallbacks
    def test_everyHostThroughEveryNodeOverTLS(self):
        """
        Client one is on n1, client two on n2: a request with a body and a
        WebSocket reach each through every node, over TLS links. A fourth
        node without TLS cannot link to them, and says why.
        """
        yield self.connected("one", "n1")
        yield self.connected("two", "n2")
        for node in ("n1", "n2", "n3"):
            self.assertIn(
                "other nodes link to 127.0.0.1", self.nodes[node]["process"].output
            )
            for client in CLIENTS:
                yield self.reachable(node, client)
                code, body = yield self.get(node, client, b"a body for " + node.encode())
                self.assertEqual((code, body), (200, client.encode() + b":a body for " + node.encode()))
            ws = yield self.raw(self.nodes[node]["public"])
            ws.transport.write(
                b"GET /ws HTTP/1.1\r\nHost: two.localhost\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n"
            )
            yield ws.until(b"\r\n\r\n")
            self.assertTrue(ws.received.startswith(b"HTTP/1.1 101 "), ws.received)
            ws.transport.write(b"frame through " + node.encode())
            yield ws.until(b"frame through " + node.encode())
        yield self.nodes["n3"]["process"].waitFor(r"Linked to node n1 at 127\.0\.0\.1:\d+ over TLS")
        yield self.nodes["n3"]["process"].waitFor(r"Linked to node n2 at 127\.0\.0\.1:\d+ over TLS")
        self.assertNotIn("not valid for", self.nodes["n1"]["process"].output)
        yield self.startNode("plain")
        code, _ = yield self.get("plain", "one")
        self.assertEqual(code, 502)
        yield self.nodes["plain"]["process"].waitFor(
            r"No link to node at 127\.0\.0\.1:\d+: the node dialled closed the link without "
            r"answering \(does it speak TLS"
        )
        yield self.nodes["n1"]["process"].waitFor(
            r"Refused a node link from .*: TLS failed: the other side does not speak TLS"
        )
