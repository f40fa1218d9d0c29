"""
Stream protocols shared by the multiplexer's socket and interoperability
tests.
"""

from __future__ import annotations

import hashlib

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

CHUNK = 64 * 1024


@implementer(IHalfCloseableProtocol)
class EchoStream(Protocol):
    """Echoes everything and half-closes after the peer has."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol, IPushProducer)
class BulkStream(Protocol):
    """
    Sends a payload in chunks as fast as back-pressure allows, half-closes,
    and hashes what comes back.

    @ivar done: fires with (sha256 hex digest, size) of what was received
        once the stream is closed.
    @ivar peakBuffered: the most bytes the session ever held back for the
        stream while this protocol wrote.
    """

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.offset = 0
        self.paused = False
        self.received = hashlib.sha256()
        self.receivedSize = 0
        self.peakBuffered = 0
        self.reason: Failure | None = None
        self.done: defer.Deferred[tuple[str, int]] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        session = self.transport._mux.session
        while not self.paused and self.offset < len(self.payload):
            self.transport.write(self.payload[self.offset:self.offset + CHUNK])
            self.offset += CHUNK
            if session.hasStream(self.transport.streamID):
                self.peakBuffered = max(
                    self.peakBuffered, session.bufferedAmount(self.transport.streamID)
                )
        if self.offset >= len(self.payload) and self.transport.connected:
            self.transport.unregisterProducer()
            self.transport.loseWriteConnection()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True

    def dataReceived(self, data: bytes) -> None:
        self.received.update(data)
        self.receivedSize += len(data)

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.reason = reason
        self.done.callback((self.received.hexdigest(), self.receivedSize))


def digest(payload: bytes) -> tuple[str, int]:
    """The (sha256 hex digest, size) of a payload, as L{BulkStream.done} gives."""
    return hashlib.sha256(payload).hexdigest(), len(payload)


class TCPLikeTransport(StringTransport):
    """
    A L{StringTransport} whose streaming producer is paused as a TCP
    transport's is: on every write while it holds more than L{bufferSize}
    bytes the peer did not read, and resumed only once the peer read them
    all (L{drain}).

    @ivar pauses: how many times the producer was paused.
    """

    bufferSize = 64 * 1024

    def __init__(self, *arguments: object, **keywords: object) -> None:
        super().__init__(*arguments, **keywords)
        self.pauses = 0
        self.producerPaused = False

    @property
    def held(self) -> int:
        """How many written bytes the peer did not read."""
        return len(self.io.getbuffer())

    def write(self, data: bytes) -> None:
        super().write(data)
        self._maybePause()

    def writeSequence(self, data: list[bytes]) -> None:
        super().writeSequence(data)
        self._maybePause()

    def drain(self, size: int | None = None) -> bytes:
        """The peer reads C{size} bytes (all by default)."""
        value = self.value()
        taken, rest = (value, b"") if size is None else (value[:size], value[size:])
        self.clear()
        self.io.write(rest)
        if not rest and self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()
        return taken

    def _maybePause(self) -> None:
        if self.producer is not None and self.streaming and self.held > self.bufferSize:
            self.producerPaused = True
            self.pauses += 1
            self.producer.pauseProducing()


class StreamLikeTransport(StringTransport):
    """
    A L{StringTransport} that can be handed to another protocol as a
    stream's transport is (L{tunnel.mux.stream.StreamTransport.attach}).
    """

    def attach(self, protocol: Protocol) -> None:
        """Make C{protocol} the transport's protocol, and connect it."""
        self.protocol = protocol
        protocol.makeConnection(self)
