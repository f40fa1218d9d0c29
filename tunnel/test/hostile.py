"""
Scripted hostile peers of the tunnel protocol, for end-to-end tests against
real C{twistd} processes: a tunnel client and a tunnel server that speak
the control request, yamux and the control stream byte by byte (with the
frame codec of L{tunnel.yamux.frames}, not the project's session code), and
misbehave on demand.

L{HostileTunnelClient} connects to a server's public port like a client
holding a valid identifier; a test then makes it stop reading its socket
while it acknowledges the server's streams and pings blindly, grant itself
a huge window, or answer with a response head trickled one byte per frame.
L{HostileTunnelServer} accepts a real client's control request and sends it
whatever control messages a test wants, as many as it wants.
"""

from __future__ import annotations

from typing import Callable, Iterable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from tunnel.core.control import (
    CONNECTED_RESPONSE,
    CONTROL_PATH,
    FEATURES_HEADER,
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    IDENTIFIER_HEADER,
    SERVER_STREAMS,
    ControlMessage,
)
from tunnel.test.support import Frame, FrameReader
from tunnel.yamux.frames import (
    INITIAL_WINDOW,
    MAX_UINT32,
    Flag,
    FrameType,
    encodeFrame,
)

#: The stream ID of the control stream, the first the client opens.
CONTROL_STREAM = 1

#: The largest window delta a peer may grant a fresh stream: its window is
#: then the most a 32-bit field holds, about 4 GiB.
HUGE_WINDOW_DELTA = MAX_UINT32 - INITIAL_WINDOW


# -- frames ----------------------------------------------------------------


def dataFrame(streamID: int, payload: bytes, flags: int = Flag.NONE) -> bytes:
    """A Data frame carrying C{payload}."""
    return encodeFrame(FrameType.DATA, flags, streamID, len(payload), payload)


def windowUpdate(streamID: int, delta: int = 0, flags: int = Flag.NONE) -> bytes:
    """A Window Update frame granting C{delta} more bytes."""
    return encodeFrame(FrameType.WINDOW_UPDATE, flags, streamID, delta)


def pingAnswer(opaque: int) -> bytes:
    """The answer (ACK) to the ping that carried C{opaque}."""
    return encodeFrame(FrameType.PING, Flag.ACK, 0, opaque)


def trickled(streamID: int, payload: bytes) -> bytes:
    """C{payload} as one Data frame per byte, 13 bytes on the wire for each."""
    return b"".join(dataFrame(streamID, payload[i:i + 1]) for i in range(len(payload)))


# -- what both peers keep of a stream ---------------------------------------


@attrs.define(eq=False)
class PeerStream:
    """
    A stream as a hostile peer sees it.

    @ivar received: the first C{keep} bytes that arrived on it.
    @ivar receivedBytes: how many bytes arrived on it in all.
    @ivar ended: whether the other side sent FIN.
    @ivar reset: whether the other side sent RST.
    @ivar answered: free for a test's script to mark the stream done with.
    """

    streamID: int
    keep: int = 64 * 1024
    received: bytearray = attrs.field(factory=bytearray)
    receivedBytes: int = 0
    ended: bool = False
    reset: bool = False
    answered: bool = False

    def take(self, payload: bytes) -> None:
        """Record bytes that arrived on the stream."""
        self.receivedBytes += len(payload)
        room = self.keep - len(self.received)
        if room > 0:
            self.received += payload[:room]


class _YamuxPeer(Protocol):
    """
    What both hostile peers share: a connection that starts with an HTTP
    head and then carries yamux frames, pings answered unless told not to,
    and helpers to write frames.

    @ivar streams: the streams the other side opened, by ID.
    @ivar bytesReceived: every byte that arrived, the HTTP head included.
    @ivar goAwayCode: the code of the Go Away received, if any.
    @ivar lost: fires with the reason (the exception) once the connection
        is gone.
    """

    answerPings = True

    def __init__(self) -> None:
        self.streams: dict[int, PeerStream] = {}
        self.bytesReceived = 0
        self.goAwayCode: int | None = None
        self.lost: defer.Deferred[BaseException] = defer.Deferred()
        self._head: bytearray | None = bytearray()
        self._frames = FrameReader()
        self._control = bytearray()

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write raw bytes, if still connected."""
        if self.transport is not None and self.connected:
            self.transport.write(data)

    def acknowledge(self, streamID: int, delta: int = 0) -> None:
        """Accept (ACK) a stream the other side opened, granting C{delta} more window."""
        self.write(windowUpdate(streamID, delta, Flag.ACK))

    def grant(self, streamID: int, delta: int) -> None:
        """Grant C{delta} more bytes of window on a stream."""
        self.write(windowUpdate(streamID, delta))

    def send(self, streamID: int, payload: bytes, fin: bool = False) -> None:
        """Send C{payload} on a stream in one Data frame, then FIN if C{fin}."""
        self.write(dataFrame(streamID, payload, Flag.FIN if fin else Flag.NONE))

    def sendTrickled(self, streamID: int, payload: bytes, fin: bool = False) -> None:
        """Send C{payload} one byte per Data frame (all in one write), then FIN if C{fin}."""
        self.write(trickled(streamID, payload) + (windowUpdate(streamID, 0, Flag.FIN) if fin else b""))

    def resetStream(self, streamID: int) -> None:
        """Reset (RST) a stream."""
        self.write(windowUpdate(streamID, 0, Flag.RST))

    def stopReading(self) -> None:
        """Read nothing more from the socket (the other side's writes back up)."""
        self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """Read from the socket again."""
        self.transport.resumeProducing()

    # -- reading -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        self.bytesReceived += len(data)
        if self._head is not None:
            self._head += data
            head = bytes(self._head)
            for end in (b"\r\n\r\n", b"\n\n"):
                at = head.find(end)
                if at >= 0:
                    break
            else:
                return
            self._head = None
            data = head[at + len(end):]
            if not self.headReceived(head[:at]):
                return
        for frame in self._frames.feed(data):
            self.frameReceived(frame)

    def headReceived(self, head: bytes) -> bool:
        """The HTTP head is in; return whether yamux follows."""
        raise NotImplementedError()

    def frameReceived(self, frame: Frame) -> None:
        """Handle one frame: pings, Go Away, the control stream, other streams."""
        if frame.frameType == FrameType.PING:
            if frame.flags & Flag.SYN and self.answerPings:
                self.write(pingAnswer(frame.length))
            return
        if frame.frameType == FrameType.GO_AWAY:
            self.goAwayCode = frame.length
            return
        if frame.streamID == CONTROL_STREAM:
            if frame.payload:
                self.controlDataReceived(frame.payload)
            return
        stream = self.streams.get(frame.streamID)
        if stream is None:
            if not frame.flags & Flag.SYN:
                return
            stream = self.streams[frame.streamID] = PeerStream(frame.streamID)
            self.streamOpened(stream)
        if frame.payload:
            stream.take(frame.payload)
        if frame.flags & Flag.FIN:
            stream.ended = True
        if frame.flags & Flag.RST:
            stream.reset = True
        self.streamDataReceived(stream)

    def controlDataReceived(self, data: bytes) -> None:
        """Bytes arrived on the control stream."""

    def streamOpened(self, stream: PeerStream) -> None:
        """The other side opened C{stream} (its SYN arrived)."""

    def streamDataReceived(self, stream: PeerStream) -> None:
        """Something arrived on C{stream} (data, FIN or RST)."""

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        # The exception, not the Failure: a Deferred fired with a Failure
        # takes its error path, unhandled unless a test waits for it.
        self.lost.callback(reason.value)


# -- the hostile client -----------------------------------------------------


class HostileTunnelClient(_YamuxPeer):
    """
    A tunnel client holding a valid identifier, scripted by a test.

    It sends the control request (offering the server-streams extension
    if C{serverStreams}), reads the C{200}, opens the control stream with
    the handshake, and fires L{ready} once the server answered it. From
    then on it answers pings and does what the test's hooks do with the
    streams the server opens (L{onStream}, L{onStreamData}); nothing by
    default, so that a stream the server opened is neither acknowledged
    nor read.

    @ivar ready: fires with the client once the handshake is answered;
        fails if the server refused the control request.
    @ivar serverStreams: whether the server accepted the extension (known
        once the C{200} is in).
    @ivar controlMessages: the control messages received (without the
        extension, each asks the client to open a stream).
    @ivar onStream: called with the client and each stream the server opens.
    @ivar onStreamData: called with the client and a stream whenever
        something arrives on it.
    """

    def __init__(
        self, identifier: str, serverStreams: bool = True, host: str = "tunnel.test"
    ) -> None:
        super().__init__()
        self.identifier = identifier
        self.host = host
        self.offerServerStreams = serverStreams
        self.serverStreams = False
        self.ready: defer.Deferred[HostileTunnelClient] = defer.Deferred()
        self.controlMessages: list[ControlMessage] = []
        self.onStream: Callable[[HostileTunnelClient, PeerStream], None] | None = None
        self.onStreamData: Callable[[HostileTunnelClient, PeerStream], None] | None = None
        self._nextStreamID = CONTROL_STREAM + 2
        self._blind: LoopingCall | None = None

    def connectionMade(self) -> None:
        features = (
            b"%s: %s\r\n" % (FEATURES_HEADER, SERVER_STREAMS) if self.offerServerStreams else b""
        )
        self.write(
            b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s: %s\r\n%s\r\n"
            % (CONTROL_PATH, self.host.encode(), IDENTIFIER_HEADER, self.identifier.encode(),
               features)
        )

    def headReceived(self, head: bytes) -> bool:
        if not head.startswith(b"HTTP/1.1 200"):
            self.ready.errback(RuntimeError(f"the server refused the tunnel: {head[:200]!r}"))
            self.transport.loseConnection()
            return False
        self.serverStreams = (
            b"%s: %s" % (FEATURES_HEADER.lower(), SERVER_STREAMS) in head.lower()
        )
        # The control stream: SYN, then the handshake in one Data frame.
        self.write(windowUpdate(CONTROL_STREAM, 0, Flag.SYN)
                   + dataFrame(CONTROL_STREAM, HANDSHAKE_REQUEST))
        return True

    def controlDataReceived(self, data: bytes) -> None:
        self._control += data
        if not self.ready.called:
            if len(self._control) < len(HANDSHAKE_RESPONSE):
                return
            if not self._control.startswith(HANDSHAKE_RESPONSE):
                self.ready.errback(RuntimeError(f"bad handshake answer {bytes(self._control)!r}"))
                return
            del self._control[:len(HANDSHAKE_RESPONSE)]
            self.ready.callback(self)
        while b"\n" in self._control:
            line, _, rest = bytes(self._control).partition(b"\n")
            self._control = bytearray(rest)
            if line.strip():
                self.controlMessages.append(ControlMessage.decode(line))

    def streamOpened(self, stream: PeerStream) -> None:
        if self.onStream is not None:
            self.onStream(self, stream)

    def streamDataReceived(self, stream: PeerStream) -> None:
        if self.onStreamData is not None:
            self.onStreamData(self, stream)

    def openStream(self, delta: int = 0) -> int:
        """
        Open a stream of our own (SYN), as a Go client does for a control
        message, granting the server C{delta} more window on it at once.
        """
        streamID = self._nextStreamID
        self._nextStreamID += 2
        self.write(windowUpdate(streamID, delta, Flag.SYN))
        return streamID

    def acknowledgeBlindly(
        self,
        streamsOpened: Callable[[], int],
        clock: IReactorTime,
        interval: float = 0.2,
    ) -> None:
        """
        Acknowledge, every C{interval} seconds and without reading a byte,
        the server-opened streams 2, 4, ... up to the C{streamsOpened()}th
        (the server numbers them so), and the server's pings 0, 1, ... up
        to one per second since this started and a few more (it numbers
        them so too): a client that does not read looks alive and willing.
        A stream or ping acknowledged twice, or too early, is ignored by
        the server.
        """
        started = clock.seconds()

        def acknowledge() -> None:
            if not self.connected:
                self.stopAcknowledging()
                return
            count = streamsOpened()
            pings = int(clock.seconds() - started) + 3
            self.write(
                b"".join(windowUpdate(2 * n, 0, Flag.ACK) for n in range(1, count + 1))
                + b"".join(pingAnswer(opaque) for opaque in range(pings))
            )

        self._blind = LoopingCall(acknowledge)
        self._blind.clock = clock
        self._blind.start(interval)

    def stopAcknowledging(self) -> None:
        """Stop L{acknowledgeBlindly}."""
        if self._blind is not None and self._blind.running:
            self._blind.stop()

    def connectionLost(self, reason: Failure) -> None:
        self.stopAcknowledging()
        if not self.ready.called:
            self.ready.errback(reason)
        super().connectionLost(reason)


# -- the hostile server -----------------------------------------------------


class HostileTunnelServer(_YamuxPeer):
    """
    A tunnel server scripted by a test: it accepts any control request with
    the plain C{200} (so the client does not use the server-streams
    extension, and asks for its streams on the control stream), answers the
    handshake, acknowledges every stream the client opens (unless
    L{acceptStreams} is false), and sends the control messages a test gives
    to L{sendControl}.

    @ivar ready: fires with the server once the handshake is answered.
    @ivar identifier: the identifier the client presented.
    """

    acceptStreams = True

    def __init__(self) -> None:
        super().__init__()
        self.ready: defer.Deferred[HostileTunnelServer] = defer.Deferred()
        self.identifier: bytes | None = None

    def headReceived(self, head: bytes) -> bool:
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        if not lines[0].startswith(b"CONNECT %s " % (CONTROL_PATH,)):
            self.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            self.transport.loseConnection()
            return False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == IDENTIFIER_HEADER.lower():
                self.identifier = value.strip()
        self.write(CONNECTED_RESPONSE)
        return True

    def frameReceived(self, frame: Frame) -> None:
        if frame.streamID == CONTROL_STREAM and frame.flags & Flag.SYN:
            self.acknowledge(CONTROL_STREAM)
        super().frameReceived(frame)

    def controlDataReceived(self, data: bytes) -> None:
        if self.ready.called:
            return
        self._control += data
        if len(self._control) >= len(HANDSHAKE_REQUEST):
            self.send(CONTROL_STREAM, HANDSHAKE_RESPONSE)
            self.ready.callback(self)

    def streamOpened(self, stream: PeerStream) -> None:
        if self.acceptStreams:
            self.acknowledge(stream.streamID)

    def sendControl(self, messages: Iterable[ControlMessage]) -> None:
        """Send control messages, each in a Data frame of its own, all in one write."""
        self.write(b"".join(dataFrame(CONTROL_STREAM, m.encode()) for m in messages))

    def connectionLost(self, reason: Failure) -> None:
        if not self.ready.called:
            self.ready.errback(reason)
        super().connectionLost(reason)


class HostileServerFactory(Factory):
    """
    Builds a L{HostileTunnelServer} per connection.

    @ivar connected: the servers built so far.
    @ivar firstReady: fires with the first server whose handshake is done.
    """

    noisy = False

    def __init__(self) -> None:
        self.connected: list[HostileTunnelServer] = []
        self.firstReady: defer.Deferred[HostileTunnelServer] = defer.Deferred()

    def buildProtocol(self, addr: object) -> HostileTunnelServer:
        server = HostileTunnelServer()
        server.factory = self
        self.connected.append(server)

        def ready(server: HostileTunnelServer) -> HostileTunnelServer:
            if not self.firstReady.called:
                self.firstReady.callback(server)
            return server

        server.ready.addCallback(ready).addErrback(lambda f: None)
        return server
