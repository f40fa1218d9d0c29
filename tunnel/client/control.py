"""
The client's end of the control stream: the handshake, then the server's
control messages.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.client.errors import TunnelConnectError
from tunnel.protocol import (
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    Action,
    ControlLineReader,
    ControlMessage,
    ControlProtocolError,
)


class ControlStream(Protocol):
    """
    The protocol of the control stream, the first stream the client opens.

    Once connected it writes the handshake request in one write (so in one
    Data frame), collects the server's answer until it is complete, and then
    hands every C{RequestClientSession} message to C{messageReceived}.

    @ivar ready: fires with L{None} once the server answered the handshake;
        fails with L{TunnelConnectError} if the answer is wrong or the stream
        ends first.
    @ivar ended: fires with L{None} once the stream is gone.
    """

    _log = Logger()

    def __init__(self, messageReceived: Callable[[ControlMessage], None]) -> None:
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._messageReceived = messageReceived
        self._answer = b""
        self._reader = ControlLineReader()

    def connectionMade(self) -> None:
        """Send the handshake request."""
        self.transport.write(HANDSHAKE_REQUEST)

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
                self._messageReceived(message)
            else:
                self._log.warn(
                    "Ignoring a control message with unknown action {action}",
                    action=message.action,
                )

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """Fail L{ready} if the handshake was not done; fire L{ended}."""
        self.connected = False
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
        self._answer += data
        size = len(HANDSHAKE_RESPONSE)
        answer, rest = self._answer[:size], self._answer[size:]
        if not HANDSHAKE_RESPONSE.startswith(answer):
            self.ready.errback(
                TunnelConnectError(f"the server answered the handshake with {answer!r}")
            )
            self.transport.loseConnection()
            return b""
        if len(answer) < size:
            return b""
        self._answer = b""
        self.ready.callback(None)
        return rest
