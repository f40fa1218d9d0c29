"""
Tests for L{tunnel.protocol}: control messages and their framing.
"""

from twisted.trial.unittest import SynchronousTestCase

from tunnel.protocol import (
    ControlLineReader,
    ControlMessage,
    ControlProtocolError,
    TransportProtocol,
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

    def test_decodeAcceptsNumericStringPort(self) -> None:
        """A port written as a numeric string is accepted."""
        self.assertEqual(
            ControlMessage.decode(b'{"action":1,"transportProtocol":1,"localPort":"80"}'),
            ControlMessage(1, 1, 80),
        )

    def test_decodeRejectsMalformed(self) -> None:
        """Non-JSON, non-objects and non-integer fields are rejected."""
        for line in [b"nope", b"[1]", b'{"action":"x"}', b'{"localPort":1.5}',
                     b'{"localPort":70000}', b'{"action":true}']:
            self.assertRaises(ControlProtocolError, ControlMessage.decode, line)


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


class RedactIdentifierTests(SynchronousTestCase):
    """Identifiers in logs."""

    def test_onlyPrefixShown(self) -> None:
        """Only the first four characters of an identifier are shown."""
        self.assertEqual(redactIdentifier("secret-identifier"), "secr…")
        self.assertEqual(redactIdentifier(b"abc"), "…")
