"""
A two-way byte pipe between two transports, with back-pressure and
half-close: what a tunnelled TCP connection, a WebSocket after its upgrade,
and the client's connection to a local service all are.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel._directwrite import writeNow


@implementer(IHalfCloseableProtocol)
class PipeEnd(Protocol):
    """
    The protocol on one of the two transports a pipe joins.

    Until L{join} is called the end holds its transport paused (and keeps
    the few bytes that may arrive meanwhile). Once joined, bytes read on one
    transport are written to the other; each transport is registered as the
    producer of the other, so a slow side pauses the fast one; a half-close
    on one side is passed on as a half-close of the other; when one side is
    gone the other is closed once its buffered data is written.

    @ivar peer: the other end, once joined.
    @ivar ended: fires with L{None} once this end's connection is lost.
    @ivar lostReason: why this end's connection was lost, once it was.
    """

    def __init__(self) -> None:
        self.peer: PipeEnd | None = None
        self.ended: Deferred[None] = Deferred()
        self.lostReason: Failure | None = None
        self._held: list[bytes] = []
        self._readEnded = False
        self._producingForPeer = False

    def connectionMade(self) -> None:
        """Hold the transport paused until the pipe is joined."""
        if self.peer is None:
            self.transport.pauseProducing()

    def join(self, peer: PipeEnd) -> None:
        """
        Join this end (already connected) with another connected end, and
        start moving bytes both ways.
        """
        self.peer = peer
        peer.peer = self
        for end in (peer, self):
            end.peer.transport.registerProducer(end.transport, True)
            end._producingForPeer = True
        for end in (self, peer):
            end._release()

    def _release(self) -> None:
        held, self._held = self._held, []
        peerTransport = self.peer.transport
        for data in held:
            writeNow(peerTransport, data)
        if self.lostReason is not None:
            self._passOnLoss()
            return
        if self._readEnded:
            self._passOnHalfClose()
        if self.peer.lostReason is None:
            self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        """Pass the bytes to the other side, or hold them until joined."""
        if self.peer is None:
            self._held.append(data)
        else:
            writeNow(self.peer.transport, data)

    def readConnectionLost(self) -> None:
        """The other side will get no more bytes from us: half-close it."""
        self._readEnded = True
        if self.peer is not None:
            self._passOnHalfClose()

    def writeConnectionLost(self) -> None:
        """Our write side is closed; nothing to do."""

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Close the other side once it has written what it holds."""
        self.lostReason = reason
        if self.peer is not None:
            self._passOnLoss()
        self.ended.callback(None)

    def _passOnHalfClose(self) -> None:
        peerTransport = self.peer.transport
        # Our transport will produce nothing more. Left registered, a paused
        # producer makes a Twisted transport resume it, instead of
        # half-closing, once its buffer drains: the half-close would hang.
        self._stopProducingForPeer()
        loseWriteConnection = getattr(peerTransport, "loseWriteConnection", None)
        if loseWriteConnection is None:
            peerTransport.loseConnection()
        else:
            loseWriteConnection()

    def _passOnLoss(self) -> None:
        peer = self.peer
        if peer.lostReason is None:
            self._stopProducingForPeer()
            peer.transport.loseConnection()

    def _stopProducingForPeer(self) -> None:
        """Unregister our transport as the producer of the peer's, once."""
        if self._producingForPeer:
            self._producingForPeer = False
            self.peer.transport.unregisterProducer()
