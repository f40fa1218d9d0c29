"""
The state of one yamux stream as the session core sees it: its two windows,
what is buffered for sending, and which sides have half-closed.
"""

from __future__ import annotations

from collections import deque


class StreamState:
    """
    One stream's flow-control windows and half-close state.

    The session owns these objects; they are not part of the public API.

    @ivar streamID: the stream's ID.
    @ivar inbound: whether the peer opened the stream.
    @ivar established: for a stream we opened, whether the peer acknowledged
        it; for a stream the peer opened, whether we accepted it.
    @ivar sendWindow: bytes we may still send before the peer grants more.
    @ivar recvWindow: bytes the peer may still send before we grant more.
    @ivar recvConsumed: bytes the application consumed that are not yet
        granted back to the peer.
    @ivar sendBuffer: data written but held back because the send window ran
        out, oldest first.
    @ivar sendBuffered: the total length of C{sendBuffer}.
    @ivar pausedBuffered: how much of it was written while the session's
        sending was paused, since it last resumed.
    @ivar finPending: a half-close was asked for while data was buffered; the
        FIN goes out once the buffer drains.
    @ivar localClosed: we sent FIN.
    @ivar remoteClosed: the peer sent FIN.
    """

    __slots__ = (
        "streamID",
        "inbound",
        "established",
        "sendWindow",
        "recvWindow",
        "recvConsumed",
        "sendBuffer",
        "sendBuffered",
        "pausedBuffered",
        "finPending",
        "localClosed",
        "remoteClosed",
    )

    def __init__(
        self, streamID: int, inbound: bool, sendWindow: int, recvWindow: int
    ) -> None:
        self.streamID = streamID
        self.inbound = inbound
        self.established = False
        self.sendWindow = sendWindow
        self.recvWindow = recvWindow
        self.recvConsumed = 0
        self.sendBuffer: deque[bytes | memoryview] = deque()
        self.sendBuffered = 0
        self.pausedBuffered = 0
        self.finPending = False
        self.localClosed = False
        self.remoteClosed = False

    @property
    def writable(self) -> bool:
        """Whether the application may still write to the stream."""
        return not (self.localClosed or self.finPending)

    def takeSendable(self) -> tuple[int, list[bytes]]:
        """
        Take as much buffered data as the send window allows, and charge it to
        the window.

        @return: the number of bytes taken and the pieces, in order, to send
            as one Data frame's payload.
        """
        budget = self.sendWindow
        buffer = self.sendBuffer
        pieces: list[bytes] = []
        taken = 0
        while buffer and taken < budget:
            piece = buffer[0]
            room = budget - taken
            if len(piece) <= room:
                buffer.popleft()
            else:
                # The rest stays behind as a view, not a copy.
                view = memoryview(piece)
                buffer[0] = view[room:]
                piece = view[:room]
            pieces.append(piece if type(piece) is bytes else bytes(piece))
            taken += len(piece)
        self.sendWindow -= taken
        self.sendBuffered -= taken
        return taken, pieces

    def describe(self) -> str:
        """A short description of the stream's state for log messages."""
        return (
            f"stream {self.streamID} ({'inbound' if self.inbound else 'outbound'}, "
            f"send window {self.sendWindow}, receive window {self.recvWindow}, "
            f"{self.sendBuffered} bytes buffered)"
        )
