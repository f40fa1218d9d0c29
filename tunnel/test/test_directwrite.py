"""
Tests for L{tunnel._directwrite}: writes straight to an idle socket, in
order with whatever the transport has queued.
"""

from __future__ import annotations

import socket

from twisted.internet.protocol import Protocol
from twisted.internet.tcp import Connection
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import TestCase

from tunnel._directwrite import writeNow, writeSequenceNow
from tunnel.test.support import pattern


class DirectWriteTests(TestCase):
    """
    L{writeNow} and L{writeSequenceNow} on a TCP transport over one end of
    a socket pair, whose other end the test reads.
    """

    def setUp(self) -> None:
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        self.peer.setblocking(False)
        self.addCleanup(ours.close)
        self.addCleanup(self.peer.close)
        self.reactor = MemoryReactor()
        self.transport = Connection(ours, Protocol(), self.reactor)
        self.transport.connected = True

    def received(self) -> bytes:
        """Everything the peer can read now."""
        chunks = []
        while True:
            try:
                chunk = self.peer.recv(1 << 20)
            except BlockingIOError:
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def queued(self) -> int:
        """The bytes the transport holds for a later turn of the reactor."""
        return len(self.transport.dataBuffer) - self.transport.offset + (
            self.transport._tempDataLen
        )

    def drain(self) -> bytes:
        """Let the transport write what it queued, reading it all."""
        data = []
        while self.queued():
            self.transport.doWrite()
            data.append(self.received())
        return b"".join(data)

    def fillSocket(self) -> bytes:
        """Send until the socket takes no more; return what was sent."""
        sent = []
        block = b"f" * 65536
        while True:
            try:
                count = self.transport.socket.send(block)
            except BlockingIOError:
                return b"".join(sent)
            sent.append(block[:count])

    def test_idleWriteGoesOutAtOnce(self) -> None:
        """
        On an idle socket the bytes are sent before the call returns,
        without the transport asking the reactor to write.
        """
        writeNow(self.transport, b"hello")
        self.assertEqual(self.received(), b"hello")
        self.assertEqual(self.queued(), 0)
        self.assertNotIn(self.transport, self.reactor.getWriters())

    def test_idleSequenceGoesOutAtOnce(self) -> None:
        """L{writeSequenceNow} sends every buffer at once, in order."""
        writeSequenceNow(self.transport, [b"one ", b"two ", b"three"])
        self.assertEqual(self.received(), b"one two three")
        self.assertEqual(self.queued(), 0)

    def test_queuedBytesKeepTheirPlace(self) -> None:
        """
        Bytes written while others are queued are queued after them: they
        do not overtake them.
        """
        self.transport.write(b"first ")
        writeNow(self.transport, b"second ")
        writeSequenceNow(self.transport, [b"third"])
        self.assertEqual(self.received(), b"")
        self.assertEqual(self.drain(), b"first second third")

    def test_partialSendQueuesTheRest(self) -> None:
        """
        What a full socket does not take is queued, and goes out after what
        it took once the socket drains.
        """
        filled = self.fillSocket()
        payload = pattern(256 * 1024)
        writeNow(self.transport, payload)
        self.assertEqual(self.queued(), len(payload))
        self.assertEqual(self.received() + self.drain(), filled + payload)

    def test_partialSequenceSplitsABuffer(self) -> None:
        """
        A sequence the socket takes only part of is queued from the first
        byte it did not take, even in the middle of a buffer.
        """
        self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        buffers = [bytes([n]) * 50_000 for n in range(1, 9)]
        writeSequenceNow(self.transport, buffers)
        self.assertGreater(self.queued(), 0)
        self.assertLess(self.queued(), sum(map(len, buffers)))
        self.assertEqual(self.received() + self.drain(), b"".join(buffers))

    def test_lostConnectionIsLeftToTheTransport(self) -> None:
        """
        A write to a socket whose peer is gone raises nothing: it is queued,
        and the transport finds out as it would have.
        """
        self.peer.close()
        writeNow(self.transport, b"lost")
        writeSequenceNow(self.transport, [b"lost", b"too"])
        self.assertEqual(self.queued(), len(b"lostlosttoo"))
        self.assertIsNotNone(self.transport.doWrite())

    def test_disconnectingTransportQueues(self) -> None:
        """A transport being closed writes as it always does: queued."""
        self.transport.disconnecting = True
        writeNow(self.transport, b"late")
        self.assertEqual(self.received(), b"")
        self.assertEqual(self.queued(), 4)

    def test_otherTransportsWriteAsUsual(self) -> None:
        """Any transport but a plain TCP connection gets an ordinary write."""
        transport = StringTransport()
        writeNow(transport, b"a")
        writeSequenceNow(transport, [b"b", b"c"])
        self.assertEqual(transport.value(), b"abc")
