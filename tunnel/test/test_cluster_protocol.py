"""
Tests for what the nodes of a cluster say to each other, sans I/O: the
link handshake, the first lines of link streams, and the stored form of a
client's access rule.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.cluster.accesstext import decodeAccess, encodeAccess
from tunnel.cluster.claims import Claim, decodeClaim
from tunnel.cluster.handshake import (
    MAX_LINE,
    HandshakeError,
    LinkHandshake,
    Role,
    Stage,
)
from tunnel.cluster.keys import ClusterKey
from tunnel.cluster.relayline import (
    Answer,
    Open,
    Ping,
    RelayLineError,
    Unavailable,
    parseAnswer,
    parseRequest,
    splitLine,
)
from tunnel.core.access import AccessRule, parseCredentials, parseNetworks
from tunnel.core.control import TransportProtocol

KEY = ClusterKey(b"sixteen bytes at least")


def pair(dialerKey: ClusterKey = KEY, listenerKey: ClusterKey = KEY):
    dialer = LinkHandshake(Role.DIALER, dialerKey, "node-a", b"\x01" * 16)
    listener = LinkHandshake(Role.LISTENER, listenerKey, "node-b", b"\x02" * 16)
    return dialer, listener


class KeyTests(SynchronousTestCase):
    def test_shortSecretsAreRefused(self) -> None:
        self.assertRaises(ValueError, ClusterKey, b"too short")

    def test_identifierKeysAreStableAndSecretDependent(self) -> None:
        """The same identifier has the same key on every node, another under another secret."""
        self.assertEqual(
            KEY.identifierKey(b"id"), ClusterKey(b"sixteen bytes at least").identifierKey(b"id")
        )
        self.assertNotEqual(
            KEY.identifierKey(b"id"), ClusterKey(b"another secret, long").identifierKey(b"id")
        )
        self.assertRegex(KEY.identifierKey(b"id"), "^[0-9a-f]{64}$")


class HandshakeTests(SynchronousTestCase):
    def run3(self, dialer: LinkHandshake, listener: LinkHandshake, after: bytes = b""):
        hello = dialer.start()
        challenge, linkedListener = listener.receive(hello)
        self.assertIsNone(linkedListener)
        proof, linkedDialer = dialer.receive(challenge)
        nothing, linkedListener = listener.receive(proof + after)
        self.assertEqual(nothing, b"")
        return linkedDialer, linkedListener

    def test_nodesSharingTheSecretLink(self) -> None:
        """Both sides end linked, each knowing the other's name; what follows is kept."""
        dialer, listener = pair()
        linkedDialer, linkedListener = self.run3(dialer, listener, b"yamux bytes")
        self.assertEqual((linkedDialer.peer, linkedDialer.rest), ("node-b", b""))
        self.assertEqual((linkedListener.peer, linkedListener.rest), ("node-a", b"yamux bytes"))
        self.assertEqual((dialer.stage, listener.stage), (Stage.DONE, Stage.DONE))

    def test_bytesMayComeOneAtATime(self) -> None:
        dialer, listener = pair()
        hello = dialer.start()
        challenge = b""
        for index in range(len(hello)):
            out, linked = listener.receive(hello[index:index + 1])
            challenge += out
        self.assertTrue(challenge.startswith(b"TUNNEL-NODE/1 CHALLENGE node-b "))

    def test_aListenerWithoutTheSecretIsFoundOutBeforeTheDialerProves(self) -> None:
        dialer, listener = pair(listenerKey=ClusterKey(b"another secret, long"))
        challenge, _ = listener.receive(dialer.start())
        self.assertRaises(HandshakeError, dialer.receive, challenge)

    def test_aDialerWithoutTheSecretIsRefused(self) -> None:
        dialer, listener = pair(dialerKey=ClusterKey(b"another secret, long"))
        challenge, _ = listener.receive(dialer.start())
        # The dialer finds the listener out first; a forged proof fares no better.
        self.assertRaises(HandshakeError, dialer.receive, challenge)
        self.assertRaises(HandshakeError, listener.receive, b"TUNNEL-NODE/1 PROOF " + b"0" * 64 + b"\r\n")

    def test_theListenersProofCannotBeReflected(self) -> None:
        """A listener's proof, sent back as a dialer's, proves nothing."""
        dialer, listener = pair()
        challenge, _ = listener.receive(dialer.start())
        reflected = challenge.split(b" ")[-1]
        self.assertRaises(HandshakeError, listener.receive, b"TUNNEL-NODE/1 PROOF " + reflected)

    def test_malformedAndLongLinesAreRefused(self) -> None:
        for line in (
            b"GET / HTTP/1.1\r\n",
            b"TUNNEL-NODE/1 HELLO node-a short\r\n",
            b"TUNNEL-NODE/1 PROOF " + b"0" * 64 + b"\r\n",
            b"TUNNEL-NODE/1 HELLO bad\xffname " + b"0" * 32 + b"\r\n",
        ):
            _, listener = pair()
            self.assertRaises(HandshakeError, listener.receive, line)
        _, listener = pair()
        self.assertRaises(HandshakeError, listener.receive, b"x" * MAX_LINE)

    def test_aListenerSpokenTLSToSaysSoAtOnce(self) -> None:
        """
        The first byte of a TLS client's hello is enough for a plain
        listener to say that the dialling node speaks TLS: it need not wait
        for a line end that may never come before its handshake times out.
        """
        _, listener = pair()
        with self.assertRaises(HandshakeError) as raised:
            listener.receive(b"\x16")
        self.assertEqual(
            str(raised.exception),
            "the dialling node speaks TLS on its links (--cluster-tls), and this one does not",
        )

    def test_aDialerAnsweredByATLSAlertSaysSo(self) -> None:
        """A TLS listener that answers a plain hello with an alert is found out at once."""
        dialer, _ = pair()
        dialer.start()
        with self.assertRaises(HandshakeError) as raised:
            dialer.receive(b"\x15\x03\x01\x00\x02\x02\x46")
        self.assertIn("the node dialled speaks TLS on its links", str(raised.exception))

    def test_onlyTheFirstByteOfTheLinkIsTakenForTLS(self) -> None:
        """Later in a line, the same bytes are only a malformed line."""
        _, listener = pair()
        self.assertEqual(listener.receive(b"TUNNEL-NODE/1 HELLO \x16"), (b"", None))
        with self.assertRaises(HandshakeError) as raised:
            listener.receive(b"\r\n")
        self.assertIn("expected HELLO", str(raised.exception))


class RelayLineTests(SynchronousTestCase):
    def test_openRoundTrips(self) -> None:
        request = Open("ab" * 32, TransportProtocol.WEBSOCKET, 8080)
        line, rest = splitLine(request.encode() + b"after")
        self.assertEqual((parseRequest(line), rest), (request, b"after"))

    def test_pingRoundTrips(self) -> None:
        line, rest = splitLine(Ping("cd" * 32).encode())
        self.assertEqual((parseRequest(line), rest), (Ping("cd" * 32), b""))

    def test_answersRoundTrip(self) -> None:
        for answer in (Answer(), Answer(Unavailable.STREAM_TIMEOUT, "no stream in 10 s")):
            line, _ = splitLine(answer.encode())
            self.assertEqual(parseAnswer(line), answer)

    def test_aMessageCannotBreakItsLine(self) -> None:
        line, rest = splitLine(Answer(Unavailable.ENDED, "one\r\nOK\r\n" + "x" * 1000).encode())
        self.assertEqual(rest, b"")
        self.assertLessEqual(len(line), 510)

    def test_malformedLinesAreRefused(self) -> None:
        for line in (b"OPEN short 1 80", b"OPEN " + b"a" * 64 + b" 9 80",
                     b"OPEN " + b"a" * 64 + b" 1 70000", b"HELLO"):
            self.assertRaises(RelayLineError, parseRequest, line)
        self.assertRaises(RelayLineError, parseAnswer, b"MAYBE")
        self.assertRaises(RelayLineError, splitLine, b"x" * 600)
        self.assertIsNone(splitLine(b"OPEN partial"))


class ClaimTests(SynchronousTestCase):
    def test_claimsRoundTrip(self) -> None:
        for claim in (Claim(), Claim(AccessRule(allow=parseNetworks("10.0.0.0/8")), "ab" * 16)):
            self.assertEqual(decodeClaim(claim.encode()), claim)

    def test_garbageIsRefused(self) -> None:
        for text in ("", "[]", '{"access": ""}', '{"access": 1, "instance": ""}'):
            self.assertRaises(ValueError, decodeClaim, text)


class AccessTextTests(SynchronousTestCase):
    def test_rulesRoundTrip(self) -> None:
        rule = AccessRule(
            parseNetworks("10.0.0.0/8, 2001:db8::/32"),
            parseNetworks("10.1.0.0/16"),
            parseCredentials("user:secret", "test"),
        )
        text = encodeAccess(rule)
        self.assertNotIn("secret", text)
        self.assertEqual(decodeAccess(text), rule)
        self.assertEqual((encodeAccess(None), decodeAccess("")), ("", None))

    def test_garbageIsRefused(self) -> None:
        for text in ("[1]", '{"X-Tunnel-Allow": 5}', '{"X-Tunnel-Allow": "not a net"}', "{"):
            self.assertRaises(ValueError, decodeAccess, text)
