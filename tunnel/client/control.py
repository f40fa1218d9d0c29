"""
The client's end of the control stream: the handshake, then the server's
control messages; and the streams the server opens itself, each announced
by a control message (the L{tunnel.core.control.SERVER_STREAMS} extension).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.client.errors import TunnelConnectError
from tunnel.core.control import (
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    Action,
    ControlLineReader,
    ControlMessage,
    ControlProtocolError,
    HandshakeReader,
)
from tunnel.sparselog import SparseCounter

#: The longest announcement line accepted on a stream the server opened. The
#: server writes a control message in its compact form (about 50 bytes):
#: this bounds what each stream may hold before it is handed over.
MAX_ANNOUNCEMENT = 1024


class ControlStream(Protocol):
    """
    The protocol of the control stream, the first stream the client opens.

    Once connected it writes the handshake request in one write (so in one
    Data frame), collects the server's answer until it is complete, and then
    hands every C{RequestClientSession} message to C{messageReceived}, and
    the text of every notice (L{Action.NOTICE}) to C{noticeReceived}.

    L{holdMessages} stops handing messages on, and reading the stream (so
    the server's window for it runs out), until L{releaseMessages}: what the
    client holds for a server that sends messages faster than the client
    serves them is bounded by the stream's window.

    @ivar ready: fires with L{None} once the server answered the handshake;
        fails with L{TunnelConnectError} if the answer is wrong or the stream
        ends first.
    @ivar ended: fires with L{None} once the stream is gone.
    """

    _log = Logger()

    def __init__(
        self,
        messageReceived: Callable[[ControlMessage], None],
        noticeReceived: Callable[[str], None] = lambda notice: None,
    ) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._messageReceived = messageReceived
        self._noticeReceived = noticeReceived
        self._handshake = HandshakeReader(HANDSHAKE_RESPONSE)
        self._reader = ControlLineReader()
        self._waiting: deque[ControlMessage] = deque()
        self._holding = False
        self._unknownActions = SparseCounter()

    @property
    def waiting(self) -> int:
        """How many messages were read and wait to be handed on."""
        return len(self._waiting)

    def connectionMade(self) -> None:
        """Send the handshake request."""
        self.transport.write(HANDSHAKE_REQUEST)

    def holdMessages(self) -> None:
        """Stop handing messages on, and reading the stream."""
        if not self._holding:
            self._holding = True
            self.transport.pauseProducing()

    def releaseMessages(self) -> None:
        """Hand on the messages read meanwhile, and read the stream again."""
        if not self._holding:
            return
        self._holding = False
        self._handOn()
        if not self._holding and self.connected:
            self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        """Check the handshake answer, then read control messages."""
        if not self.ready.called:
            data = self._readAnswer(data)
            if not data or not self.connected:
                return
        try:
            messages = self._reader.feed(data)
        except ControlProtocolError as e:
            self._log.error("Bad control message from the server: {error}", error=str(e))
            self.transport.abortConnection()
            return
        for message in messages:
            if message.action == Action.REQUEST_CLIENT_SESSION:
                self._waiting.append(message)
            elif message.action == Action.NOTICE:
                self._noticeReceived(message.notice)
            else:
                count = self._unknownActions.record(message.action)
                if count is not None:
                    self._log.warn(
                        "Ignoring a control message with unknown action {action} "
                        "({count} so far)",
                        action=message.action,
                        count=count,
                    )
        self._handOn()

    def _handOn(self) -> None:
        while self._waiting and not self._holding and self.connected:
            self._messageReceived(self._waiting.popleft())

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Fail L{ready} if the handshake was not done; fire L{ended}."""
        self.connected = False
        self._waiting.clear()
        if not self.ready.called:
            self.ready.errback(
                TunnelConnectError(
                    "the control stream ended before the handshake was answered: "
                    + reason.getErrorMessage()
                )
            )
        self.ended.callback(None)

    def _readAnswer(self, data: bytes) -> bytes:
        """
        Collect the handshake answer; fire or fail L{ready} once it is
        complete or known to be wrong.

        @return: the bytes that follow the answer.
        """
        try:
            rest = self._handshake.feed(data)
        except ControlProtocolError as e:
            self.ready.errback(
                TunnelConnectError(f"the server's answer to the handshake is wrong: {e}")
            )
            self.transport.loseConnection()
            return b""
        if rest is None:
            return b""
        self.ready.callback(None)
        return rest


class AnnouncedStream(Protocol):
    """
    A stream the server opened (with the L{tunnel.core.control.SERVER_STREAMS} extension): its
    first line is the control message that says what it is for. Once that
    is read, the stream is handed to the protocol C{serve} gives for the
    message, with the bytes that followed the line, and C{attached} is
    told of that protocol.

    A line that is not a control message, or longer than
    L{MAX_ANNOUNCEMENT}, resets the stream.
    """

    _log = Logger()

    def __init__(
        self,
        serve: Callable[[ControlMessage], Protocol],
        attached: Callable[[Protocol], None],
    ) -> None:
        self._serve = serve
        self._attached = attached
        self._buffer = bytearray()

    def dataReceived(self, data: bytes) -> None:
        """Read the announcement, then hand the stream over."""
        self._buffer += data
        if b"\n" not in data:
            # Only new bytes are searched: a trickled line costs no more
            # than its length.
            if len(self._buffer) > MAX_ANNOUNCEMENT:
                self._refuse("its announcement is too long")
            return
        line, _, rest = bytes(self._buffer).partition(b"\n")
        if len(line) > MAX_ANNOUNCEMENT:
            self._refuse("its announcement is too long")
            return
        try:
            message = ControlMessage.decode(line)
        except ControlProtocolError as e:
            self._refuse(str(e))
            return
        if message.action != Action.REQUEST_CLIENT_SESSION:
            self._refuse(f"its announcement has unknown action {message.action}")
            return
        protocol = self._serve(message)
        self.transport.attach(protocol)
        self._attached(protocol)
        if rest and protocol.connected:
            protocol.dataReceived(rest)

    def _refuse(self, why: str) -> None:
        self._log.error("Resetting a stream the server opened: {why}", why=why)
        self.transport.abortConnection()


class AnnouncedStreamFactory(Factory):
    """Builds an L{AnnouncedStream} for each stream the server opens."""

    def __init__(
        self,
        serve: Callable[[ControlMessage], Protocol],
        attached: Callable[[Protocol], None],
    ) -> None:
        self._serve = serve
        self._attached = attached

    def buildProtocol(self, addr: object) -> AnnouncedStream:
        """A new L{AnnouncedStream}."""
        return AnnouncedStream(self._serve, self._attached)
