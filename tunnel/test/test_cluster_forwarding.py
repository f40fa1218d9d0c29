"""
Tests for forwarding between the nodes of a cluster, in memory: a public
request at a node without its client's session reaches the client through
a node that has one.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.cluster.keys import ClusterKey
from tunnel.test.clustersupport import Cluster
from tunnel.test.serversupport import RawLocal
from tunnel.test.support import Recorder

IDENTIFIER = b"cluster-client-identifier"
#: The instance of the client process of most tests, with a session on
#: one or more nodes; another client has another.
INSTANCE = b"X-Tunnel-Instance: " + b"1" * 32 + b"\r\n"
OTHER = b"X-Tunnel-Instance: " + b"2" * 32 + b"\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
GET = b"GET /page HTTP/1.1\r\nHost: app.example\r\n\r\n"


class ClusterTestCase(SynchronousTestCase):
    """Three nodes in memory, routing one host to one identifier."""

    def setUp(self) -> None:
        self.cluster = Cluster("a", "b", "c")
        for harness in self.cluster.harnesses.values():
            harness.server.addHost("app.example", IDENTIFIER)
        self.locals: list[RawLocal] = []

    def connect(
        self,
        node: str,
        answer: bytes = OK,
        extraHeaders: bytes = b"",
        echo: bool = False,
        instance: bytes = INSTANCE,
    ):
        """Connect the client of L{IDENTIFIER} to C{node}; its streams get RawLocals."""

        def local(message: object) -> RawLocal:
            self.locals.append(RawLocal(answer, echo=echo))
            return self.locals[-1]

        client = self.cluster.harnesses[node].tunnelClient(
            IDENTIFIER, local, extraHeaders=extraHeaders + instance
        )
        self.cluster.flush()
        return client

    def send(self, node: str, data: bytes = GET) -> Recorder:
        public = Recorder()
        self.cluster.harnesses[node].connect(public)
        public.transport.write(data)
        self.cluster.flush()
        return public


class ForwardingTests(ClusterTestCase):
    """Requests through a node that holds no session of their client."""

    def test_requestReachesTheClientThroughTheNodeHoldingIt(self) -> None:
        """
        The client is connected to node b; a request at node a gets its
        answer, and the local service sees the request as a direct one
        would be, with the public client's address forwarded.
        """
        self.connect("b")
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 200 OK\r\n"), b"".join(public.chunks))
        self.assertTrue(b"".join(public.chunks).endswith(b"\r\n\r\nhello"))
        [local] = self.locals
        self.assertTrue(local.received.startswith(b"GET /page HTTP/1.1\r\n"))
        self.assertIn(b"X-Forwarded-For: 203.0.113.7\r\n", local.received)

    def test_theSessionIsClaimedUnderItsKeyNeverItsIdentifier(self) -> None:
        """The store holds the HMAC of the identifier, for the node that holds it."""
        self.connect("b")
        key = ClusterKey(b"a cluster secret of the tests").identifierKey(IDENTIFIER)
        self.assertEqual(
            self.cluster.store.claims,
            {key: {"b": '{"access": "", "instance": "' + "1" * 32 + '"}'}},
        )
        self.assertNotIn(IDENTIFIER.decode(), repr(self.cluster.store.claims))

    def test_aSessionThatEndsIsReleased(self) -> None:
        client = self.connect("b")
        client.transport.loseConnection()
        self.cluster.flush()
        self.assertEqual(list(self.cluster.store.claims.values()), [{}])

    def test_noNodeHoldingTheClientIsNotConnected(self) -> None:
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 502 "), b"".join(public.chunks))
        self.assertIn(b"is not connected", b"".join(public.chunks))

    def test_aLocalSessionIsUsedFirst(self) -> None:
        """A node with its own session of the client does not forward."""
        self.connect("a")
        self.connect("b")
        self.send("a")
        self.assertEqual(self.cluster.nodes["a"].links._links, {})

    def test_anUnreachableHolderGivesWayToTheNext(self) -> None:
        """
        With sessions on b and c, and b unreachable (killed, say), a request
        at a is served through c.
        """
        self.connect("b")
        self.connect("c")
        self.cluster.unreachable.add("b")
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 200 OK\r\n"), b"".join(public.chunks))

    def test_aHolderThatLostTheSessionGivesWayToTheNext(self) -> None:
        """
        A claim that outlived its session (the store not told yet) is
        answered "not connected" by its node; the next holder serves, and
        the holders are looked up anew next time.
        """
        self.connect("b")
        self.connect("c")
        key = self.cluster.key.identifierKey(IDENTIFIER)
        del self.cluster.nodes["b"]._local[key]
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 200 OK\r\n"), b"".join(public.chunks))
        self.assertNotIn(key, self.cluster.nodes["a"]._holders)

    def test_whatTheStoreSaidLastIsUsedWhileItIsAway(self) -> None:
        """
        With the store unreachable, a node forwards to the holders it was
        told of last; with none known it answers that the client is not
        connected.
        """
        self.connect("b")
        self.send("a")
        self.cluster.advance(5)
        self.cluster.store.available = False
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 200 OK\r\n"), b"".join(public.chunks))
        public = self.send("c")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 502 "), b"".join(public.chunks))

    def test_theClientsOwnAccessRuleHoldsOnEveryNode(self) -> None:
        """
        A client that admits only some networks is refused to others
        through every node: the rule travels with its claim.
        """
        self.connect(
            "b",
            extraHeaders=b"X-Tunnel-Features: access\r\nX-Tunnel-Allow: 10.0.0.0/8\r\n",
        )
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 403 "), b"".join(public.chunks))
        self.assertEqual(self.locals, [])

    def test_webSocketUpgradeIsPipedThroughTheHoldingNode(self) -> None:
        """
        An upgrade through node a: the 101 comes back, and then bytes flow
        both ways through both nodes.
        """
        self.connect(
            "b",
            answer=b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n",
            echo=True,
        )
        public = self.send(
            "a",
            b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: upgrade\r\n"
            b"Upgrade: websocket\r\n\r\n",
        )
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 101 "), b"".join(public.chunks))
        public.transport.write(b"ping through two nodes")
        self.cluster.flush()
        self.assertTrue(b"".join(public.chunks).endswith(b"\r\n\r\nping through two nodes"), b"".join(public.chunks))

    def test_aNodeWithoutTheSecretIsNotLinked(self) -> None:
        """A node whose secret differs cannot link; the request gets a 502."""
        self.connect("b")
        stranger = ClusterKey(b"some other secret entirely")
        self.cluster.nodes["a"].links._key = stranger
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 502 "), b"".join(public.chunks))
        self.assertEqual(self.locals, [])


class ConflictTests(ClusterTestCase):
    """One identifier, two client processes, on different nodes."""

    def test_aSecondClientOnAnotherNodeIsRefusedWhileTheFirstAnswers(self) -> None:
        """
        The first client answers the ping its node relays: the second gets
        the 409 of a conflict, and the first keeps serving.
        """
        self.connect("b")
        second = self.connect("c", instance=OTHER)
        self.assertIn(b" 409 ", second.answer)
        public = self.send("a")
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 200 OK\r\n"))

    def test_aSecondClientReplacesAFirstThatNoLongerAnswers(self) -> None:
        """A first client that does not answer the ping in time gives way."""
        first = self.connect("b")
        first.mux.dataReceived = lambda data: None
        second = self.connect("c", instance=OTHER)
        self.assertEqual(second.mux, None)
        self.cluster.advance(6)
        self.assertIn(b" 200 ", second.answer)

    def test_aClientWithoutAnInstanceIsAnotherClient(self) -> None:
        """A client that names no instance (a Go one) cannot share an identifier."""
        self.connect("b", instance=b"")
        second = self.connect("c", instance=b"")
        self.assertIn(b" 409 ", second.answer)

    def test_theSameClientMayHoldASessionOnEveryNode(self) -> None:
        self.connect("b")
        self.connect("c")
        self.connect("a")
        key = self.cluster.key.identifierKey(IDENTIFIER)
        self.assertEqual(sorted(self.cluster.store.claims[key]), ["a", "b", "c"])


def answered(harness, host: str = "app.example") -> float:
    """How many requests for C{host} the node of C{harness} answered."""
    value = harness.server.metrics.registry.get_sample_value(
        "tunnel_server_requests_total", {"host": host, "status": "2xx"}
    )
    return value or 0.0


class HandOffTests(ClusterTestCase):
    """A public connection handed to the node holding its client's session."""

    def test_aConnectionGoesToTheHoldingNodeWithItsRequests(self) -> None:
        """
        A GET at node a, with the client on b: b answers it and the next
        request on the same connection, as requests of its own, and the
        local service sees the public client's address once.
        """
        self.connect("b")
        public = self.send("a", GET + GET)
        self.assertEqual(b"".join(public.chunks).count(b"HTTP/1.1 200 OK\r\n"), 2)
        harnesses = self.cluster.harnesses
        self.assertEqual((answered(harnesses["a"]), answered(harnesses["b"])), (0, 2))
        self.assertEqual(len(self.locals), 2)
        self.assertEqual(self.locals[0].received.count(b"203.0.113.7"), 1)
        self.assertIn(b"X-Forwarded-For: 203.0.113.7\r\n", self.locals[1].received)

    def test_aRequestWithABodyIsForwardedInstead(self) -> None:
        """A request with a body is forwarded by the node it reached, which answers it."""
        self.connect("b")
        public = self.send(
            "a", b"POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 3\r\n\r\nabc"
        )
        self.assertTrue(b"".join(public.chunks).startswith(b"HTTP/1.1 200 OK\r\n"))
        harnesses = self.cluster.harnesses
        self.assertEqual((answered(harnesses["a"]), answered(harnesses["b"])), (1, 0))

    def test_aHandedConnectionIsNeverHandedFurther(self) -> None:
        """
        On a connection a handed to b, a request for a client on c is
        forwarded by b to c, request by request: the connection stays on b.
        """
        self.connect("b")
        for harness in self.cluster.harnesses.values():
            harness.server.addHost("other.example", b"another-identifier")
        self.cluster.harnesses["c"].tunnelClient(
            b"another-identifier", lambda message: RawLocal(OK), extraHeaders=OTHER
        )
        self.cluster.flush()
        public = self.send("a", GET + GET.replace(b"app.example", b"other.example"))
        self.assertEqual(b"".join(public.chunks).count(b"HTTP/1.1 200 OK\r\n"), 2)
        harnesses = self.cluster.harnesses
        self.assertEqual(answered(harnesses["b"], "other.example"), 1)
        self.assertEqual(answered(harnesses["c"], "other.example"), 0)

    def test_aTunnelClientCannotConnectOnAHandedConnection(self) -> None:
        self.connect("b")
        public = self.send(
            "a", GET + b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: x\r\n"
            b"X-KTunnel-Identifier: " + IDENTIFIER + b"\r\n\r\n"
        )
        self.assertIn(b"HTTP/1.1 400 ", b"".join(public.chunks))
