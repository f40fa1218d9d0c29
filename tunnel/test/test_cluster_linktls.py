"""
Tests for TLS on the links between the nodes of a cluster (C{--cluster-tls},
C{--cluster-ca}): in memory, three nodes forwarding over TLS links, and
nodes whose certificate or lack of TLS gets them refused giving way to the
next holder; then two real link ends over TLS on loopback sockets.
"""

from __future__ import annotations

from typing import Any

import trustme
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from tunnel.cluster.keys import ClusterKey
from tunnel.cluster.link import LinkError, LinkListenerFactory, NodeLinks
from tunnel.cluster.tls import LinkTLS
from tunnel.test.clustersupport import SECRET, Cluster, nodeCertificate
from tunnel.test.test_cluster_forwarding import IDENTIFIER, ClusterTestCase


class LoggedTestMixin:
    """Keeps what is logged during a test, formatted, in C{self.logged}."""

    def captureLogs(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def assertLogged(self, text: str) -> str:
        """Assert that a line containing C{text} was logged, and return it."""
        for line in self.logged:
            if text in line:
                return line
        self.fail(f"nothing logged contains {text!r}: {self.logged}")


class TLSForwardingTests(LoggedTestMixin, ClusterTestCase):
    """
    Nodes a, b and c in memory, each with a certificate of one authority
    for its address, linked over TLS.
    """

    def setUp(self) -> None:
        self.authority = trustme.CA()
        self.captureLogs()
        self.tls = {name: nodeCertificate(self.authority, name) for name in "abc"}
        super().setUp()
        self.cluster = self.rebuilt()

    def answered(self, public: Any) -> bytes:
        return b"".join(public.chunks)

    def test_aRequestIsForwardedOverTLS(self) -> None:
        """
        A request at a for the client on b reaches it over a TLS link:
        b's certificate is the one a sees, and nothing of the request, the
        response or the link's handshake crosses the link in clear.
        """
        self.connect("b")
        public = self.send("a")
        self.assertTrue(self.answered(public).startswith(b"HTTP/1.1 200 OK\r\n"), self.logged)
        link = self.cluster.link("a", "b")
        self.assertEqual(
            Certificate(link.transport.getPeerCertificate()).digest(),
            self.tls["b"].certificate.digest(),
        )
        wire = b"".join(self.cluster.wire)
        self.assertGreater(len(wire), 0)
        for clear in (b"GET /page", b"app.example", b"hello", b"TUNNEL-NODE/1", b"OPEN "):
            self.assertNotIn(clear, wire)
        self.assertLogged("Linked to node b at b.nodes.test:7946 over TLS")
        self.assertLogged("Node a linked from")

    def test_plainLinksCrossInClear(self) -> None:
        """
        Without TLS, the same request crosses the link as it is: what the
        test above finds missing from the wire would be there.
        """
        self.cluster = Cluster("a", "b", "c")
        for harness in self.cluster.harnesses.values():
            harness.server.addHost("app.example", IDENTIFIER)
        self.connect("b")
        self.send("a")
        wire = b"".join(self.cluster.wire)
        for clear in (b"GET /page", b"hello", b"TUNNEL-NODE/1"):
            self.assertIn(clear, wire)

    def test_aNodeWithACertificateOfAnotherAuthorityGivesWayToTheNext(self) -> None:
        """
        With the client on b and c, and b's certificate from an authority
        a does not trust, a cannot link to b: it says why, and the request
        is served through c.
        """
        self.tls["b"] = nodeCertificate(trustme.CA(), "b")
        self.cluster = self.rebuilt()
        self.connect("b")
        self.connect("c")
        public = self.send("a")
        self.assertTrue(self.answered(public).startswith(b"HTTP/1.1 200 OK\r\n"), public.chunks)
        self.assertIsNone(self.cluster.link("a", "b"))
        self.assertIsNotNone(self.cluster.link("a", "c"))
        line = self.assertLogged("No link to node at b.nodes.test:7946")
        self.assertIn("not signed by an authority of --cluster-ca", line)

    def test_aDiallingNodeWithACertificateOfAnotherAuthorityIsRefused(self) -> None:
        """
        The listener asks the dialling node for its certificate, and
        refuses one no authority it trusts signed: a node with another
        authority's certificate that trusts the right one links to no one.
        """
        stranger = trustme.CA()
        self.tls["a"] = LinkTLS(
            nodeCertificate(stranger, "a").certificate,
            (Certificate.loadPEM(self.authority.cert_pem.bytes()),),
        )
        self.cluster = self.rebuilt()
        self.connect("b")
        public = self.send("a")
        self.assertTrue(self.answered(public).startswith(b"HTTP/1.1 502 "), public.chunks)
        self.assertEqual(self.locals, [])
        self.assertIsNone(self.cluster.link("a", "b"))
        line = self.assertLogged("Refused a node link from")
        self.assertIn("TLS failed", line)

    def test_aPlainNodeGivesWayToTheNext(self) -> None:
        """
        b has no TLS: a, which has, cannot link to it, and says why
        (b said at once that it was spoken TLS to); c serves.
        """
        del self.tls["b"]
        self.cluster = self.rebuilt()
        self.connect("b")
        self.connect("c")
        public = self.send("a")
        self.assertTrue(self.answered(public).startswith(b"HTTP/1.1 200 OK\r\n"), public.chunks)
        self.assertIsNone(self.cluster.link("a", "b"))
        self.assertLogged("Refused a node link from")
        self.assertLogged("the dialling node speaks TLS on its links (--cluster-tls), and this one does not")
        self.assertLogged("without --cluster-tls?")

    def test_aPlainNodeCannotLinkToATLSNode(self) -> None:
        """
        b has no TLS, and a request at b for the client on a gets a 502:
        a's TLS refuses what b sends, and b says that a may speak TLS.
        """
        del self.tls["b"]
        self.cluster = self.rebuilt()
        self.connect("a")
        public = self.send("b")
        self.assertTrue(self.answered(public).startswith(b"HTTP/1.1 502 "), public.chunks)
        self.assertEqual(self.locals, [])
        line = self.assertLogged("No link to node at a.nodes.test:7946")
        self.assertIn("closed the link without answering (does it speak TLS", line)
        self.assertLogged("the other side does not speak TLS (is it a node without --cluster-tls?)")

    def rebuilt(self) -> Cluster:
        cluster = Cluster("a", "b", "c", tls=self.tls)
        for harness in cluster.harnesses.values():
            harness.server.addHost("app.example", IDENTIFIER)
        return cluster


class _Echo(Protocol):
    """A stream at the listening end: sends back what it reads."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class _Collect(Protocol):
    """A stream at the dialling end: fires C{done} once C{size} bytes came back."""

    def __init__(self, size: int) -> None:
        self.received = b""
        self.size = size
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.size and not self.done.called:
            self.done.callback(self.received)


def linkTLS(issuer: trustme.CA, trusted: trustme.CA, *hosts: str) -> LinkTLS:
    """A node's certificate for C{hosts} from C{issuer}, trusting C{trusted}."""
    pem = issuer.issue_cert(*hosts).private_key_and_cert_chain_pem.bytes()
    return LinkTLS(PrivateCertificate.loadPEM(pem), (Certificate.loadPEM(trusted.cert_pem.bytes()),))


class LoopbackTLSTests(LoggedTestMixin, TestCase):
    """
    A link listener and a dialling node, over real TLS sockets on
    127.0.0.1, with certificates made by the test: the link carries a
    stream, and a certificate of another authority or a side without TLS
    is refused at once, each side saying why.
    """

    timeout = 15

    def setUp(self) -> None:
        self.captureLogs()
        self.authority = trustme.CA()
        self.key = ClusterKey(SECRET)

    def listen(self, tls: LinkTLS | None) -> str:
        """Listen for links on 127.0.0.1, over TLS with C{tls}; the link address."""
        factory: Factory = LinkListenerFactory(
            self.key, "listener", Factory.forProtocol(_Echo), reactor, tls=tls is not None
        )
        if tls is not None:
            factory = tls.listening(factory, reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"127.0.0.1:{port.getHost().port}"

    def dialler(self, tls: LinkTLS | None) -> NodeLinks:
        links = NodeLinks(self.key, "dialler", reactor, tls=tls, timeout=5.0)
        self.addCleanup(links.close)
        return links

    @inlineCallbacks
    def refused(self, listener: LinkTLS | None, dialler: LinkTLS | None):
        """Dial a listener with C{dialler}: the L{LinkError}'s text, soon."""
        address = self.listen(listener)
        started = reactor.seconds()
        [failure] = yield self.dialler(dialler).link(address).addCallbacks(
            lambda session: self.fail(f"linked: {session}"), lambda failure: [failure]
        )
        failure.trap(LinkError)
        # Said at once, not when the handshake times out.
        self.assertLess(reactor.seconds() - started, 4.0)
        # The listener logs its side once the connection is gone.
        for _ in range(50):
            if any("Refused a node link" in line for line in self.logged):
                break
            yield deferLater(reactor, 0.02)
        return failure.getErrorMessage()

    @inlineCallbacks
    def test_aStreamCrossesATLSLink(self):
        """
        Both nodes have a certificate of the authority: the dialler checks
        the listener's for 127.0.0.1 and links, and a stream of 256 KiB is
        echoed through the link.
        """
        listener = linkTLS(self.authority, self.authority, "127.0.0.1")
        address = self.listen(listener)
        session = yield self.dialler(linkTLS(self.authority, self.authority, "dialler")).link(
            address
        )
        self.assertEqual(
            Certificate(session.transport.getPeerCertificate()).digest(),
            listener.certificate.digest(),
        )
        payload = bytes(range(256)) * 1024
        stream = _Collect(len(payload))
        yield session.openStream(stream)
        stream.transport.write(payload)
        echoed = yield stream.done
        self.assertEqual(echoed, payload)
        self.assertLogged(f"Linked to node listener at {address} over TLS")
        self.assertLogged("Node dialler linked from")

    @inlineCallbacks
    def test_aListenerWithACertificateOfAnotherAuthorityIsRefused(self):
        why = yield self.refused(
            linkTLS(trustme.CA(), self.authority, "127.0.0.1"),
            linkTLS(self.authority, self.authority, "dialler"),
        )
        self.assertIn("TLS failed: the other node's certificate is not signed by an authority "
                      "of --cluster-ca", why)
        self.assertIn("certificate verify failed", why)

    @inlineCallbacks
    def test_aListenerWithACertificateForAnotherHostIsRefused(self):
        why = yield self.refused(
            linkTLS(self.authority, self.authority, "10.0.0.12", "edge-2.example"),
            linkTLS(self.authority, self.authority, "dialler"),
        )
        self.assertIn(
            "TLS failed: the other node's certificate is not valid for the host of its address",
            why,
        )

    @inlineCallbacks
    def test_aDiallerWithACertificateOfAnotherAuthorityIsRefused(self):
        """
        The listener asks for the dialling node's certificate and refuses
        one of an authority it does not trust, though the dialler trusts
        the listener's.
        """
        why = yield self.refused(
            linkTLS(self.authority, self.authority, "127.0.0.1"),
            linkTLS(trustme.CA(), self.authority, "dialler"),
        )
        self.assertIn("the other node does not trust this node's certificate", why)
        line = self.assertLogged("Refused a node link from")
        self.assertIn("TLS failed: the other node's certificate is not signed by an authority "
                      "of --cluster-ca", line)

    @inlineCallbacks
    def test_aPlainDiallerIsRefusedByATLSListener(self):
        """
        The listener's TLS closes a connection that does not speak it,
        without a word: the dialler says what that may mean.
        """
        why = yield self.refused(linkTLS(self.authority, self.authority, "127.0.0.1"), None)
        self.assertIn("the node dialled closed the link without answering (does it speak TLS on "
                      "its links, with --cluster-tls, and this node not?)", why)
        line = self.assertLogged("Refused a node link from")
        self.assertIn("the other side does not speak TLS (is it a node without --cluster-tls?)",
                      line)

    @inlineCallbacks
    def test_aTLSDiallerIsRefusedByAPlainListener(self):
        why = yield self.refused(None, linkTLS(self.authority, self.authority, "dialler"))
        self.assertIn("the connection was lost before TLS was set up (is the other side a node "
                      "without --cluster-tls?)", why)
        self.assertLogged(
            "the dialling node speaks TLS on its links (--cluster-tls), and this one does not"
        )
