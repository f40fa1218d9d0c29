"""
A yamux stream as a Twisted transport.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import (
    IProtocol,
    IConsumer,
    IHalfCloseableProtocol,
    IProducer,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.mux.address import StreamAddress
from tunnel.mux.lifecycle import (
    DISCONNECTING,
    FINAL,
    HOLDING_END,
    WRITABLE,
    StreamEvent,
    StreamLifecycle,
    advance,
)

if TYPE_CHECKING:
    from tunnel.mux.protocol import YamuxProtocol


class _ProducerState(enum.Enum):
    """What producer is registered on a stream, and whether the stream paused it."""

    #: No producer is registered.
    NONE = "none"
    #: A streaming producer, producing.
    STREAMING = "streaming"
    #: A streaming producer the stream paused: its writes cannot be sent.
    PAUSED = "paused"
    #: A pull producer, asked for more each time all it wrote was sent.
    PULL = "pull"


#: The states of a registered streaming producer.
_STREAMING = (_ProducerState.STREAMING, _ProducerState.PAUSED)


@implementer(ITransport, IConsumer, IPushProducer)
class StreamTransport:
    """
    The transport of the protocol attached to one yamux stream.

    It is an L{ITransport} (with C{loseWriteConnection} for half-closes), an
    L{IConsumer} (a producer registered on it is paused while the peer's
    window is used up, or while the session's own connection is paused; what
    is written meanwhile is held back in the session, whatever window the
    peer granted, and pauses the producer again) and
    an L{IPushProducer} (pausing it stops delivery, and so stops the stream
    from granting the peer more window).

    Where the stream is in its life is one L{StreamLifecycle}, moved along
    the table of L{tunnel.mux.lifecycle}.

    @ivar streamID: the stream's ID.
    @ivar protocol: the protocol attached to the stream.
    """

    _log = Logger()

    def __init__(
        self, multiplexer: YamuxProtocol, streamID: int, protocol: Protocol
    ) -> None:
        self._mux = multiplexer
        self.streamID = streamID
        self.protocol = protocol
        self._lifecycle = StreamLifecycle.OPEN
        # Why the stream closed, while that waits in CLOSE_HELD.
        self._heldClose: Failure | None = None
        self._readPaused = False
        self._received: list[bytes] = []
        self._producer: IProducer | None = None
        self._producerState = _ProducerState.NONE
        self._windowBlocked = False
        self._pullScheduled = False

    def __repr__(self) -> str:
        return f"<StreamTransport {self._mux.describe()} stream {self.streamID}>"

    @property
    def lifecycle(self) -> StreamLifecycle:
        """Where the stream is in its life."""
        return self._lifecycle

    @property
    def connected(self) -> bool:
        """Whether the protocol has not yet lost its connection."""
        return self._lifecycle not in FINAL

    @property
    def disconnecting(self) -> bool:
        """Whether C{loseConnection} was called."""
        return self._lifecycle in DISCONNECTING

    # -- ITransport --------------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Send bytes on the stream. Writes after the write side was closed are
        ignored, as on a TCP transport.
        """
        if self._lifecycle not in WRITABLE:
            return
        if not isinstance(data, bytes):
            data = bytes(data)
        self._mux._streamWrite(self, data)

    def writeSequence(self, data: list[bytes]) -> None:
        """Send several pieces of bytes on the stream, as one write."""
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """
        Close the stream once the buffered data is sent: send FIN, then tell
        the protocol its connection is done. Data the peer sends after that
        is discarded.
        """
        if self.disconnecting or not self.connected:
            return
        writable = self._lifecycle in WRITABLE
        self._change(StreamEvent.CLOSE)
        self._received.clear()
        if writable:
            self._mux._streamClose(self)
        if self.connected and not self._mux._streamBuffered(self):
            self._connectionLost(Failure(ConnectionDone("stream closed")))

    def loseWriteConnection(self) -> None:
        """
        Half-close the stream: send FIN once the buffered data is sent, and go
        on reading until the peer half-closes too.
        """
        if self._lifecycle not in WRITABLE:
            return
        self._change(StreamEvent.CLOSE_WRITE)
        self._mux._streamClose(self)

    def abortConnection(self) -> None:
        """Reset the stream at once (RST), dropping any buffered data."""
        if not self.connected:
            return
        self._mux._streamReset(self)
        self._connectionLost(Failure(ConnectionAborted("stream reset")))

    def getPeer(self) -> StreamAddress:
        """The peer's end: the session's peer address and the stream ID."""
        return StreamAddress(self._mux.transport.getPeer(), self.streamID)

    def getHost(self) -> StreamAddress:
        """Our end: the session's host address and the stream ID."""
        return StreamAddress(self._mux.transport.getHost(), self.streamID)

    def attach(self, protocol: IProtocol) -> None:
        """
        Hand the stream to C{protocol}: from now on it gets the stream's
        bytes and its end, starting with C{makeConnection}. This is how a
        protocol that stood for another on the stream (one that reads an
        announcement, or waits for its requester) gives it over.
        """
        self.protocol = protocol
        protocol.makeConnection(self)

    # -- IConsumer ---------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        Register a producer that writes to the stream. A streaming producer
        is paused while writes cannot be sent; a pull producer is asked for
        more each time everything it wrote was sent.
        """
        if self._producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}: {self._producer!r} is registered"
            )
        if not self.connected:
            producer.stopProducing()
            return
        self._producer = producer
        self._producerState = _ProducerState.STREAMING if streaming else _ProducerState.PULL
        self._mux._streamProducing(self, streaming)
        if streaming:
            self._updateProducer()
        else:
            self._schedulePull()

    def unregisterProducer(self) -> None:
        """Forget the registered producer."""
        self._producer = None
        self._producerState = _ProducerState.NONE
        self._mux._streamProducing(self, False)

    # -- IPushProducer (towards the attached protocol) ---------------------

    def pauseProducing(self) -> None:
        """
        Stop delivering received data to the protocol. The stream stops
        granting window, so the peer stops sending once the window is used.
        """
        self._readPaused = True

    def resumeProducing(self) -> None:
        """Deliver what was held back and grant window again."""
        if not self._readPaused:
            return
        self._readPaused = False
        while self._received and not self._readPaused and self.connected:
            data = self._received.pop(0)
            self._deliver(data)
        if self._lifecycle in HOLDING_END and not self._received and not self._readPaused:
            heldClose, self._heldClose = self._heldClose, None
            self._peerEnded()
            if heldClose is not None and self.connected:
                self._connectionLost(heldClose)

    def stopProducing(self) -> None:
        """Close the stream, as a TCP transport does."""
        self.loseConnection()

    # -- events from the multiplexer ---------------------------------------

    def _dataReceived(self, data: bytes) -> None:
        if not self.connected or self.disconnecting:
            self._mux._streamConsumed(self, len(data))
        elif self._readPaused:
            self._received.append(data)
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        try:
            self.protocol.dataReceived(data)
        except BaseException:
            self._log.failure(
                "Protocol {protocol!r} on {stream!r} raised in dataReceived; "
                "resetting the stream",
                protocol=self.protocol,
                stream=self,
            )
            self.abortConnection()
            return
        self._mux._streamConsumed(self, len(data))

    def _ended(self) -> None:
        if not self.connected or self.disconnecting:
            return
        if self._readPaused and self._received:
            self._change(StreamEvent.END_HELD_BACK)
        else:
            self._peerEnded()

    def _peerEnded(self) -> None:
        self._change(StreamEvent.END_DELIVERED)
        halfCloseable = IHalfCloseableProtocol(self.protocol, None)
        if halfCloseable is None:
            self.loseConnection()
            return
        try:
            halfCloseable.readConnectionLost()
        except BaseException:
            self._log.failure(
                "Protocol {protocol!r} on {stream!r} raised in readConnectionLost",
                protocol=self.protocol,
                stream=self,
            )
            self.abortConnection()

    def _drained(self) -> None:
        self._windowBlocked = False
        if not self.connected:
            return
        if self.disconnecting:
            self._connectionLost(Failure(ConnectionDone("stream closed")))
            return
        self._updateProducer()
        self._schedulePull()

    def _blocked(self) -> None:
        # Pause on every write that could not be sent (no window, or the
        # session's connection is paused), even if the producer is paused
        # already: producers that resume themselves must be told again, as
        # Twisted's own transports do.
        self._windowBlocked = True
        if self._producerState in _STREAMING:
            self._producerState = _ProducerState.PAUSED
            self._producer.pauseProducing()

    def _closed(self, reason: Failure) -> None:
        """
        The stream is closed both ways: the protocol loses its connection,
        once it has had the data and the end held back while it paused.
        """
        if self._lifecycle in HOLDING_END:
            self._heldClose = reason
            self._change(StreamEvent.CLOSE_HELD_BACK)
        else:
            self._connectionLost(reason)

    def _connectionLost(self, reason: Failure) -> None:
        if not self.connected:
            return
        # An end held back for a paused reader is moot now: resuming must
        # not report it after connectionLost.
        self._change(StreamEvent.CONNECTION_LOST)
        self._received.clear()
        producer, self._producer = self._producer, None
        self._producerState = _ProducerState.NONE
        self._mux._streamProducing(self, False)
        if producer is not None:
            try:
                producer.stopProducing()
            except BaseException:
                self._log.failure("Producer {producer!r} raised in stopProducing",
                                  producer=producer)
        self._mux._streamDetached(self)
        try:
            self.protocol.connectionLost(reason)
        except BaseException:
            self._log.failure(
                "Protocol {protocol!r} on {stream!r} raised in connectionLost",
                protocol=self.protocol,
                stream=self,
            )

    # -- helpers -----------------------------------------------------------

    def _change(self, event: StreamEvent) -> None:
        """Move the stream's lifecycle along C{event}."""
        self._lifecycle = advance(self._lifecycle, event)

    def _updateProducer(self) -> None:
        """Pause or resume the streaming producer to match the stream's state."""
        if self._producerState not in _STREAMING:
            return
        shouldPause = self._windowBlocked or self._mux._transportPaused
        state = _ProducerState.PAUSED if shouldPause else _ProducerState.STREAMING
        if state is self._producerState:
            return
        self._producerState = state
        if shouldPause:
            self._producer.pauseProducing()
        else:
            self._producer.resumeProducing()

    def _schedulePull(self) -> None:
        if (
            self._producerState is not _ProducerState.PULL
            or self._pullScheduled
            or self._windowBlocked
        ):
            return
        self._pullScheduled = True
        self._mux._clock.callLater(0, self._pull)

    def _pull(self) -> None:
        self._pullScheduled = False
        if self._producerState is _ProducerState.PULL and self.connected:
            self._producer.resumeProducing()
