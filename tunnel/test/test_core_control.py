"""
Tests for L{tunnel.core.control}: control messages, their framing and the handshake.
"""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

import tunnel
from tunnel.core.control import (
    ADDRESSES,
    CONNECTED_RESPONSE,
    MAX_ADDRESS_LENGTH,
    MAX_ADDRESSES,
    ControlLineReader,
    ControlMessage,
    ControlProtocolError,
    TransportProtocol,
    HANDSHAKE_REQUEST,
    HandshakeReader,
    connectedResponse,
    publicAddresses,
    readAddresses,
    redactIdentifier,
)


class ControlMessageTests(SynchronousTestCase):
    """Encoding and decoding of control messages."""

    def test_encodeIsByteExact(self) -> None:
        """The encoding is the Go encoder's, newline included."""
        self.assertEqual(
            ControlMessage(1, TransportProtocol.WEBSOCKET, 8080).encode(),
            b'{"action":1,"transportProtocol":3,"localPort":8080}\n',
        )

    def test_decodeRoundTrip(self) -> None:
        """A decoded message equals the one encoded."""
        message = ControlMessage(1, TransportProtocol.TCP, 2222)
        self.assertEqual(ControlMessage.decode(message.encode()), message)

    def test_decodeGoForm(self) -> None:
        """A line in the exact form Go writes decodes to its fields."""
        self.assertEqual(
            ControlMessage.decode(b'{"action":1,"transportProtocol":3,"localPort":65535}'),
            ControlMessage(1, TransportProtocol.WEBSOCKET, 65535),
        )

    def test_decodeAcceptsNumericStringPort(self) -> None:
        """A port written as a numeric string is accepted."""
        self.assertEqual(
            ControlMessage.decode(b'{"action":1,"transportProtocol":1,"localPort":"80"}'),
            ControlMessage(1, 1, 80),
        )

    def test_decodeRejectsMalformed(self) -> None:
        """Non-JSON, non-objects and non-integer fields are rejected."""
        for line in [b"nope", b"[1]", b'{"action":"x"}', b'{"localPort":1.5}',
                     b'{"localPort":70000}', b'{"action":true}',
                     b'{"action":1,"transportProtocol":1,"localPort":70000}']:
            self.assertRaises(ControlProtocolError, ControlMessage.decode, line)


class NoticeTests(SynchronousTestCase):
    """Notices: the last control message of a session, saying why it closes."""

    def test_roundTrip(self) -> None:
        """A notice is one JSON line that reads back as itself."""
        notice = ControlMessage.ofNotice("the server is stopping")
        line = notice.encode()
        self.assertEqual(line, b'{"action": 2, "notice": "the server is stopping"}\n')
        [read] = ControlLineReader().feed(line)
        self.assertEqual(read, notice)
        self.assertEqual(read.notice, "the server is stopping")

    def test_onlyPrintableAndShortIsKept(self) -> None:
        """Control characters are replaced and a long notice is cut."""
        [read] = ControlLineReader().feed(
            b'{"action": 2, "notice": "\\u001b[2Jgone\\u00e9' + b"x" * 400 + b'"}\n'
        )
        self.assertTrue(read.notice.startswith("?[2Jgone?x"))
        self.assertEqual(len(read.notice), 300)
        [other] = ControlLineReader().feed(b'{"action": 1, "notice": "ignored"}\n')
        self.assertEqual(other.notice, "")


class ControlLineReaderTests(SynchronousTestCase):
    """Splitting the control stream into messages."""

    def test_messagesSplitAnywhere(self) -> None:
        """Messages split across reads come out whole and in order."""
        data = ControlMessage(1, 1, 0).encode() + ControlMessage(1, 2, 9).encode()
        reader = ControlLineReader()
        messages = []
        for i in range(len(data)):
            messages += reader.feed(data[i:i + 1])
        self.assertEqual(messages, [ControlMessage(1, 1, 0), ControlMessage(1, 2, 9)])

    def test_overlongLineRejected(self) -> None:
        """A line longer than the limit is an error, not unbounded memory."""
        reader = ControlLineReader(maxLine=100)
        self.assertRaises(ControlProtocolError, reader.feed, b"x" * 101)

    def test_overlongLineRejectedWhenItEndsInTheSameRead(self) -> None:
        """
        A line longer than the limit is an error even when its end comes in
        the same read, and what it holds would be a valid message.
        """
        reader = ControlLineReader(maxLine=100)
        line = ControlMessage().encode()[:-1] + b" " * 100 + b"\n"
        self.assertEqual(ControlMessage.decode(line), ControlMessage())
        self.assertRaises(ControlProtocolError, reader.feed, line)

    def test_lineSentAByteAtATimeCostsLinearWork(self) -> None:
        """
        A client that sends an endless line a byte at a time costs the
        reader work in proportion to the line, not to its square: each
        byte is searched for a line end once, as it arrives, and the
        partial line grows in place, never copied.
        """

        class Searched(bytes):
            searched = 0

            def __contains__(self, item: object) -> bool:
                Searched.searched += len(self)
                return bytes.__contains__(self, item)

        size = 64 * 1024
        reader = ControlLineReader(maxLine=size)
        partial = reader._buffer
        for _ in range(size):
            self.assertEqual(reader.feed(Searched(b"x")), [])
            self.assertIs(reader._buffer, partial)
        self.assertEqual(Searched.searched, size)
        self.assertRaises(ControlProtocolError, reader.feed, b"x")


class RedactIdentifierTests(SynchronousTestCase):
    """Identifiers in logs."""

    def test_onlyPrefixShown(self) -> None:
        """Only the first four characters of an identifier are shown."""
        self.assertEqual(redactIdentifier("secret-identifier"), "secr…")
        self.assertEqual(redactIdentifier(b"abc"), "…")


class HandshakeReaderTests(SynchronousTestCase):
    """The handshake check, however the bytes are split."""

    def test_splitHandshakeThenMessages(self) -> None:
        """
        A handshake split anywhere completes once all of it came; the bytes
        after it are handed back.
        """
        for cut in range(1, len(HANDSHAKE_REQUEST)):
            reader = HandshakeReader(HANDSHAKE_REQUEST)
            self.assertIsNone(reader.feed(HANDSHAKE_REQUEST[:cut]))
            self.assertFalse(reader.complete)
            self.assertEqual(reader.feed(HANDSHAKE_REQUEST[cut:] + b"{}\n"), b"{}\n")
            self.assertTrue(reader.complete)
            self.assertEqual(reader.feed(b"more"), b"more")

    def test_wrongBytesRefusedAtOnce(self) -> None:
        """A byte that cannot begin the handshake is refused without waiting for more."""
        reader = HandshakeReader(HANDSHAKE_REQUEST)
        self.assertRaises(ControlProtocolError, reader.feed, b"GET / HTTP/1.1")


class NoInputOutputTests(SynchronousTestCase):
    """The cores import no framework: they can be driven by any event loop."""

    def test_coresImportNoTwisted(self) -> None:
        """
        Importing L{tunnel.core} and L{tunnel.yamux} in a fresh interpreter
        loads no module of Twisted.
        """
        script = (
            "import sys, tunnel.core.http, tunnel.core.control, tunnel.core.exchange\n"
            "import tunnel.core.serversession, tunnel.core.clientsession\n"
            "import tunnel.yamux\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))\n"
        )
        loaded = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(tunnel.__file__)),
            text=True,
        ).stdout
        self.assertEqual(loaded.strip(), "[]")


class AddressesTests(SynchronousTestCase):
    """The addresses extension: what the server says, what the client takes."""

    def test_connectedResponseWithoutExtensionsIsGoExact(self) -> None:
        """Without extensions the C{200} is the Go server's, byte for byte."""
        self.assertEqual(connectedResponse(), CONNECTED_RESPONSE)

    def test_connectedResponseWithAddresses(self) -> None:
        """Accepted extensions and the addresses take a header line each."""
        self.assertEqual(
            connectedResponse([ADDRESSES], [b"http://a.example/", b"tcp://s.example:2222"]),
            b"HTTP/1.1 200 Connected to Tunnel\nX-Tunnel-Features: addresses\n"
            b"X-Tunnel-Addresses: http://a.example/, tcp://s.example:2222\n\n",
        )

    def test_publicAddresses(self) -> None:
        """
        Hosts take the scheme and port of the control connection, without
        the scheme's default port; a host with its own port keeps it; TCP
        listeners are at the server's name.
        """
        self.assertEqual(
            publicAddresses(["a.example", "b.example:9000"], [2222], True, 443, "s.example"),
            [b"https://a.example/", b"https://b.example:9000/", b"tcp://s.example:2222"],
        )
        self.assertEqual(
            publicAddresses(["a.example"], [], False, 80, "s.example"), [b"http://a.example/"]
        )
        self.assertEqual(
            publicAddresses(["a.example"], [], False, 8080, "s"), [b"http://a.example:8080/"]
        )

    def test_readAddresses(self) -> None:
        """
        The client takes URLs of printable ASCII only: a hostile server
        cannot write control sequences to the user's terminal, nor a
        screenful of addresses.
        """
        self.assertEqual(
            readAddresses(
                [
                    b"https://a.example/, tcp://s.example:2222",
                    b"http://\x1b[2Jevil/, ftp://x/, http://a b/, ",
                    b"http://" + b"x" * (MAX_ADDRESS_LENGTH - len("http://") + 1),
                ]
            ),
            ("https://a.example/", "tcp://s.example:2222"),
        )
        many = b", ".join(b"http://h%d.example/" % (i,) for i in range(MAX_ADDRESSES + 10))
        self.assertEqual(len(readAddresses([many])), MAX_ADDRESSES)
