"""
The node holding a client's session: each stream another node opens on
its link names the client (C{OPEN}, see L{tunnel.cluster.relayline}); the
node asks that client's session for a stream, answers whether it got one,
and then pipes the two streams together, bytes untouched, with
back-pressure both ways. A C{PING} is answered once the client answered
a ping of its own. A C{PUBLIC} stream becomes a connection of this node's
public site, as if the public client had connected here (its address is
the one the line names): this node routes, checks and forwards its
requests, and answers them.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IPushProducer,
    ISSLTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from tunnel.cluster.relayline import (
    Answer,
    Ping,
    Public,
    RelayLineError,
    Unavailable,
    parseRequest,
    splitLine,
)
from tunnel.mux import StreamTransport
from tunnel.pipe import PipeEnd
from tunnel.server.resource import CONFLICT_PING_TIMEOUT
from tunnel.server.session import (
    ClientNotReading,
    ClientSession,
    StreamTimeout,
    TooManyPendingStreams,
)

#: Seconds a client has to answer the ping of a L{Ping}: as long as a
#: client connected to this node has when another connects with its
#: identifier.
PING_TIMEOUT = CONFLICT_PING_TIMEOUT

#: Why a stream could not be had, by the failure of the session's
#: L{ClientSession.requestStream} (the first that matches).
FAILURES = (
    (StreamTimeout, Unavailable.STREAM_TIMEOUT),
    (ClientNotReading, Unavailable.NOT_READING),
    (TooManyPendingStreams, Unavailable.TOO_MANY_PENDING),
)


class RelayFactory(Factory):
    """
    Builds the protocol of each stream other nodes open on their links to
    this one.

    @ivar sessionFor: the session this node holds for an identifier key,
        if any.
    @ivar siteFor: this node's public site, for the public connections
        other nodes hand over, if it has one.
    """

    def __init__(
        self,
        sessionFor: Callable[[str], ClientSession | None],
        siteFor: Callable[[], Factory | None] = lambda: None,
    ) -> None:
        self.sessionFor = sessionFor
        self.siteFor = siteFor

    def buildProtocol(self, addr: IAddress) -> Protocol:
        return _Relay(self.sessionFor, self.siteFor)


class _Relay(Protocol):
    """
    A stream from another node: reads its C{OPEN}, gets a stream from the
    client it names, answers, then hands itself over to a pipe.
    """

    _log = Logger()

    def __init__(
        self,
        sessionFor: Callable[[str], ClientSession | None],
        siteFor: Callable[[], Factory | None],
    ) -> None:
        self._sessionFor = sessionFor
        self._siteFor = siteFor
        self._buffer = b""
        self._opening: Deferred[object] | None = None
        self._lost = False

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        if self._opening is not None:
            return
        try:
            split = splitLine(self._buffer)
            if split is None:
                return
            line, self._buffer = split
            request = parseRequest(line)
        except RelayLineError as e:
            self._log.warn("A node broke the link protocol: {why}", why=str(e))
            self.transport.abortConnection()
            return
        session = self._sessionFor(request.key)
        if session is None or not session.ready:
            self._answer(Answer(Unavailable.NOT_CONNECTED, "no session of this client here"))
            return
        if isinstance(request, Ping):
            self._opening = session.protocol.ping(PING_TIMEOUT)
            self._opening.addCallbacks(lambda _: self._answer(Answer()), self._failed)
            return
        if isinstance(request, Public):
            self._takePublic(request)
            return
        client = PipeEnd()
        self._opening = session.requestStream(request.transportProtocol, request.port, client)
        self._opening.addCallbacks(self._opened, self._failed)

    def _takePublic(self, request: Public) -> None:
        site = self._siteFor()
        if site is None:
            self._answer(Answer(Unavailable.ENDED, "this node has no public site"))
            return
        kind = IPv6Address if ":" in request.peer else IPv4Address
        peer = kind("TCP", request.peer, request.peerPort)
        host = kind("TCP", "::" if kind is IPv6Address else "0.0.0.0", request.listenerPort)
        connection = site.buildProtocol(peer)
        channel = getattr(connection, "wrappedProtocol", None)
        if channel is not None:
            channel.relayed = True
        self.transport.write(Answer().encode())
        stream, held = self.transport, self._buffer
        self._buffer = b""
        stream.protocol = connection
        connection.makeConnection(RelayedTransport(stream, peer, host, request.secure))
        if held:
            connection.dataReceived(held)

    def _opened(self, client: Protocol) -> None:
        self.transport.write(Answer().encode())
        relayed, held = PipeEnd(), self._buffer
        self._buffer = b""
        self.transport.attach(relayed)
        if held:
            relayed.dataReceived(held)
        relayed.join(client)

    def _failed(self, reason: Failure) -> None:
        if self._lost or reason.check(CancelledError):
            return
        for error, why in FAILURES:
            if reason.check(error):
                break
        else:
            why = Unavailable.ENDED
        self._answer(Answer(why, reason.getErrorMessage()))

    def _answer(self, answer: Answer) -> None:
        self.transport.write(answer.encode())
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self._lost = True
        if self._opening is not None and not self._opening.called:
            self._opening.cancel()




@implementer(ITransport, IConsumer, IPushProducer)
class RelayedTransport:
    """
    The transport of a public connection another node handed over: its
    stream, but for the addresses, which are the public client's and the
    listener's it reached, and for TLS, which it came over if it did.
    """

    def __init__(self, stream: StreamTransport, peer: IAddress, host: IAddress, secure: bool) -> None:
        self._stream = stream
        self._peer = peer
        self._host = host
        if secure:
            alsoProvides(self, ISSLTransport)

    def getPeer(self) -> IAddress:
        """The public client's address."""
        return self._peer

    def getHost(self) -> IAddress:
        """The address of the listener it reached, on the node that accepted it."""
        return self._host

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)
