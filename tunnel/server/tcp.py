"""
TCP tunnels: every connection accepted on a listener bound to a client
becomes one stream to that client, piped raw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.pipe import PipeEnd
from tunnel.core.control import TransportProtocol
from tunnel.server.session import ClientSession

if TYPE_CHECKING:
    from tunnel.cluster.remote import RemoteSession


class TCPTunnelFactory(Factory):
    """
    The factory of a listener bound to a client: each accepted connection
    is held paused while a stream is asked for (C{transportProtocol} TCP,
    C{localPort} the listener's port), then joined with it. Without a
    connected client or a stream in time, the connection is closed.

    @ivar sessionFor: gives the connected session of the listener's client,
        or L{None}.
    @ivar remoteFor: in a cluster, looks up the session of the listener's
        client that other nodes hold, for when this node holds none; else
        L{None}.
    """

    def __init__(
        self,
        sessionFor: Callable[[], ClientSession | None],
        remoteFor: Callable[[], Deferred[RemoteSession | None]] | None = None,
    ) -> None:
        self.sessionFor = sessionFor
        self.remoteFor = remoteFor

    def buildProtocol(self, addr: IAddress) -> _TunnelledConnection:
        """A pipe end that waits for its stream."""
        protocol = _TunnelledConnection()
        protocol.factory = self
        return protocol


class _TunnelledConnection(PipeEnd):
    """An accepted connection: one end of a pipe whose other end is a stream."""

    _log = Logger()
    factory: TCPTunnelFactory

    def connectionMade(self) -> None:
        super().connectionMade()
        session = self.factory.sessionFor()
        if (session is None or not session.ready) and self.factory.remoteFor is not None:
            self.factory.remoteFor().addCallback(self._tunnel)
        else:
            self._tunnel(session)

    def _tunnel(self, session: ClientSession | RemoteSession | None) -> None:
        port = self.transport.getHost().port
        if self.lostReason is not None:
            return
        if session is None or not session.ready:
            self._log.info(
                "Closing a connection to port {port}: its tunnel client is not connected",
                port=port,
            )
            self.transport.loseConnection()
            return
        streamRequest = session.requestStream(TransportProtocol.TCP, port, PipeEnd())
        self.ended.addCallback(lambda _: streamRequest.cancel())
        streamRequest.addCallbacks(self.join, self._noStream, errbackArgs=(port,))

    def _noStream(self, reason: Failure, port: int) -> None:
        if self.lostReason is None:
            self._log.info(
                "Closing a connection to port {port}: no stream from its client: {why}",
                port=port,
                why=reason.getErrorMessage(),
            )
            self.transport.loseConnection()
