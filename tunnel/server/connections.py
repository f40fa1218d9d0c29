"""
A public connection of a tunnel server as the server holds it: counted in
its L{ConnectionLimit} from the moment it is accepted until it is lost,
whichever protocol carries it by then, and cut when its peer stops reading
for too long.

L{PublicConnection} sits between the transport and the protocol: it is the
protocol's transport, and the transport's protocol. A take-over
(L{tunnel._hijack.takeOverConnection}) swaps the protocol behind it, not
it, so that it sees the end of a connection taken from twisted.web (a
tunnel session, an upgraded pipe) as it sees the end of any other.
"""

from __future__ import annotations

import enum
from typing import Any, Callable

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IDelayedCall,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from tunnel._directwrite import writeNow, writeSequenceNow
from tunnel.server.limits import ConnectionSlot

#: Seconds by default a public connection may leave its send buffer full
#: (its peer reading nothing) before it is cut.
WRITE_TIMEOUT = 60.0


class _Writing(enum.Enum):
    #: The transport takes what is written.
    FLOWING = "flowing"
    #: The transport's send buffer is full: it paused its producer, and the
    #: write timer runs.
    STALLED = "stalled"


@implementer(IPushProducer)
class _WatchedProducer:
    """
    Stands for a protocol's producer with the real transport, to tell the
    connection when the transport pauses and resumes it.
    """

    def __init__(self, connection: PublicConnection, producer: IPushProducer) -> None:
        self._connection = connection
        self._producer = producer

    def pauseProducing(self) -> None:
        """The send buffer is full."""
        self._connection._stalled()
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        """The send buffer drained."""
        self._connection._flowing()
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        """The connection is gone."""
        self._producer.stopProducing()


@implementer(IProtocol)
class PublicConnection:
    """
    Wraps the protocol of one public connection, and is its transport.

    Counting: the connection's L{ConnectionSlot} is released when the
    connection is lost, whoever carries it then; when a take-over gives the
    connection to another protocol, C{takenOver} is called with the
    connection and that protocol (to count a tunnel session apart, see
    L{ConnectionSlot.becameSession}, and leave its writes to its own stall
    timeout, see L{stopWatchingWrites}).

    Write timeout: when the transport pauses the protocol's producer (its
    send buffer is full: the peer reads nothing, or too slowly), a timer of
    C{writeTimeout} seconds starts; when the transport resumes it (the
    buffer drained), the timer stops. A connection whose buffer does not
    drain in time is aborted, so that the request behind it stops too: a
    peer must read at least a send buffer's worth (64 KiB for TCP) per
    C{writeTimeout}. A protocol that stops producing for the transport
    while the buffer is full is no longer watched, unless it closes the
    connection: then the close, which waits for the buffer to drain, must
    happen within the timeout too.

    @ivar wrappedProtocol: the protocol the connection is for; a take-over
        sets it.
    @ivar transport: the real transport, once connected.
    """

    _log = Logger()

    def __init__(
        self,
        protocol: IProtocol,
        slot: ConnectionSlot | None,
        clock: IReactorTime,
        writeTimeout: float | None = WRITE_TIMEOUT,
        takenOver: Callable[[PublicConnection, IProtocol], None] | None = None,
    ) -> None:
        """
        @param protocol: the protocol to wrap.
        @param slot: the connection's place in a L{ConnectionLimit}, or
            L{None} for a connection nobody counts.
        @param clock: runs the write timer.
        @param writeTimeout: seconds the send buffer may stay full, or
            L{None} for no limit.
        @param takenOver: called with this connection and the new protocol
            when a take-over gives the connection to another protocol.
        """
        self._protocol = protocol
        self._slot = slot
        self._clock = clock
        self._writeTimeout = writeTimeout
        self._takenOver = takenOver
        self._writing = _Writing.FLOWING
        self._writeTimer: IDelayedCall | None = None
        self._producer: IPushProducer | None = None
        self._closing = False
        self.transport: Any = None

    @property
    def wrappedProtocol(self) -> IProtocol:
        """The protocol the connection is for."""
        return self._protocol

    @wrappedProtocol.setter
    def wrappedProtocol(self, protocol: IProtocol) -> None:
        self._protocol = protocol
        if self._takenOver is not None:
            self._takenOver(self, protocol)

    @property
    def slot(self) -> ConnectionSlot | None:
        """The connection's place in a L{ConnectionLimit}, if it has one."""
        return self._slot

    def stopWatchingWrites(self) -> None:
        """
        No write timeout for this connection any more: the protocol that
        now carries it bounds how long its peer may read nothing (a tunnel
        session has its own write stall timeout, which this one must not cut
        short).
        """
        self._writeTimeout = None
        self._stopWriteTimer()

    def __conform__(self, interface: Any) -> Any:
        """
        Half-closes go straight to the wrapped protocol, if it takes them
        (a transport adapts its protocol to L{IHalfCloseableProtocol} to
        know).
        """
        if interface is IHalfCloseableProtocol:
            return IHalfCloseableProtocol(self._protocol, None)
        return None

    # -- IProtocol, towards the transport ----------------------------------

    def makeConnection(self, transport: ITransport) -> None:
        """Connect the wrapped protocol, with this connection as its transport."""
        directlyProvides(self, providedBy(transport))
        self.transport = transport
        self._protocol.makeConnection(self)

    def connectionMade(self) -> None:
        """Nothing to do: L{makeConnection} connects the wrapped protocol."""

    def dataReceived(self, data: bytes) -> None:
        """Pass the bytes on."""
        self._protocol.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        """Release the connection's place, and tell the wrapped protocol."""
        self._stopWriteTimer()
        if self._slot is not None:
            self._slot.release()
        self._protocol.connectionLost(reason)

    def logPrefix(self) -> str:
        """The wrapped protocol's log prefix."""
        logPrefix = getattr(self._protocol, "logPrefix", None)
        return logPrefix() if logPrefix is not None else type(self._protocol).__name__

    # -- ITransport, towards the protocol ----------------------------------

    def write(self, data: bytes) -> None:
        """Write to the transport (at once, if its socket is idle)."""
        writeNow(self.transport, data)

    def writeSequence(self, data: list[bytes]) -> None:
        """Write to the transport (at once, if its socket is idle)."""
        writeSequenceNow(self.transport, data)

    def loseConnection(self) -> None:
        """Close once the send buffer drained (within the write timeout)."""
        self._closing = True
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        """Close at once."""
        self._closing = True
        self.transport.abortConnection()

    def getPeer(self) -> Any:
        """The peer's address."""
        return self.transport.getPeer()

    def getHost(self) -> Any:
        """The local address."""
        return self.transport.getHost()

    def pauseProducing(self) -> None:
        """Stop reading the transport."""
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """Read the transport again."""
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """Stop reading the transport for good."""
        self.transport.stopProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register C{producer} with the transport; a push producer through a
        stand-in that tells this connection when the transport pauses it.
        """
        if streaming:
            self._producer = producer
            producer = _WatchedProducer(self, producer)
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Unregister the producer."""
        self._producer = None
        self.transport.unregisterProducer()

    def __getattr__(self, name: str) -> Any:
        # Everything else a transport has (TCP and TLS options, disconnecting...).
        if name.startswith("__") or self.__dict__.get("transport") is None:
            raise AttributeError(name)
        return getattr(self.transport, name)

    # -- the write timer ---------------------------------------------------

    def _stalled(self) -> None:
        if self._writing is _Writing.STALLED:
            return
        self._writing = _Writing.STALLED
        if self._writeTimeout is not None:
            self._writeTimer = self._clock.callLater(self._writeTimeout, self._writeTimedOut)

    def _flowing(self) -> None:
        if self._writing is _Writing.FLOWING:
            return
        self._writing = _Writing.FLOWING
        self._stopWriteTimer()

    def _stopWriteTimer(self) -> None:
        if self._writeTimer is not None:
            if self._writeTimer.active():
                self._writeTimer.cancel()
            self._writeTimer = None

    def _writeTimedOut(self) -> None:
        self._writeTimer = None
        self._writing = _Writing.FLOWING
        if self._producer is None and not self._closing:
            # Nobody waits for the buffer to drain any more.
            return
        self._log.info(
            "Closing the connection of {peer}: it read nothing of what it was sent "
            "for {timeout} s",
            peer=self.transport.getPeer(),
            timeout=self._writeTimeout,
        )
        self.transport.abortConnection()
