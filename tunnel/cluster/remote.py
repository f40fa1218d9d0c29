"""
A client's session held by other nodes, as the forwarding code uses a
session of its own node: L{RemoteSession.requestStream} opens a stream on
the link to a node that holds one, asks it for a stream to the client, and
once that node answers C{OK} the stream carries the client's stream.

The holders are tried in turn: one that cannot be reached, or that no
longer holds a session of the client, gives way to the next.
"""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from tunnel.cluster.directory import Holder
from tunnel.cluster.link import NodeLinks
from tunnel.cluster.relayline import (
    Answer,
    Open,
    Ping,
    Public,
    RelayLineError,
    Unavailable,
    parseAnswer,
    splitLine,
)
from tunnel.core.access import AccessRule
from tunnel.core.control import TransportProtocol
from tunnel.mux import SessionEndedError, YamuxProtocol
from tunnel.server.session import ClientNotReading, StreamTimeout, TooManyPendingStreams

#: The error a failed answer stands for, as a session of this node would
#: have failed the request.
ERRORS: dict[Unavailable, type[Exception]] = {
    Unavailable.STREAM_TIMEOUT: StreamTimeout,
    Unavailable.NOT_READING: ClientNotReading,
    Unavailable.TOO_MANY_PENDING: TooManyPendingStreams,
    Unavailable.ENDED: SessionEndedError,
}


class RemoteSession:
    """
    The session of a client that other nodes hold.

    @ivar key: the client's identifier key.
    @ivar holders: the nodes that hold one, to try in this order.
    @ivar access: whom the client asked its hosts to admit, as its claim
        says (see L{tunnel.server.session.ClientSession.access}).
    @ivar links: this node's links to the others.
    @ivar stale: called with C{key} when a holder turned out not to be
        one, so that whoever gave the holders looks them up anew.
    """

    ready = True

    def __init__(
        self,
        key: str,
        holders: Sequence[Holder],
        links: NodeLinks,
        access: AccessRule | None,
        stale: Callable[[str], None] = lambda key: None,
    ) -> None:
        self.key = key
        self.holders = tuple(holders)
        self.access = access
        self.links = links
        self.stale = stale

    def requestStream(
        self, transportProtocol: TransportProtocol, localPort: int, protocol: Protocol
    ) -> Deferred[Protocol]:
        """
        Get a stream to the client from a node that holds its session, and
        attach C{protocol} to it.

        @return: a L{Deferred} that fires with C{protocol} once it is
            connected, or fails as the holding node's session failed the
            request (L{StreamTimeout}, L{TooManyPendingStreams}...), or
            with L{SessionEndedError} once no holder has the client.
            Cancelling it gives up.
        """
        return _Attempt(self, Open(self.key, transportProtocol, localPort), protocol).start()

    def handOver(self, connection: Public, protocol: Protocol) -> Deferred[Protocol]:
        """
        Hand a public connection over to a node that holds the client's
        session: once one said C{OK}, C{protocol} is attached to a stream
        that node reads as a connection of its own public site.

        @return: a L{Deferred} firing with C{protocol}, or failing as
            L{requestStream} does.
        """
        return _Attempt(self, connection, protocol).start()

    def ping(self) -> Deferred[bool]:
        """
        Whether the node of the first holder says the client is there and
        answers a ping; C{False} if it cannot be asked.
        """

        def linked(link: YamuxProtocol) -> Deferred[Answer]:
            opening = _Opening(Ping(self.key).encode(), None)
            link.openStream(opening).addErrback(opening.notOpened)
            return opening.answered

        asking = self.links.link(self.holders[0].address).addCallback(linked)
        return asking.addCallbacks(lambda answer: answer.failure is None, lambda reason: False)


class _Attempt:
    """Asks each holder of a L{RemoteSession} in turn, until one gives a stream."""

    def __init__(self, session: RemoteSession, request: Open | Public, protocol: Protocol) -> None:
        self._session = session
        self._request = request
        self._protocol = protocol
        self._remaining = list(session.holders)
        self._step: Deferred[object] | None = None
        self._opening: _Opening | None = None
        self._result: Deferred[Protocol] = Deferred(self._cancel)
        self._why = "no node holds a session of this client"
        self._givenUp = False

    def start(self) -> Deferred[Protocol]:
        self._next()
        return self._result

    def _next(self) -> None:
        if self._givenUp:
            return
        if not self._remaining:
            self._result.errback(SessionEndedError(self._why))
            return
        holder = self._remaining.pop(0)
        self._step = self._session.links.link(holder.address)
        self._step.addCallbacks(self._linked, self._holderFailed)

    def _linked(self, link: YamuxProtocol) -> None:
        self._opening = _Opening(self._request.encode(), self._protocol)
        self._step = self._opening.answered
        self._step.addCallbacks(self._answered, self._holderFailed)
        link.openStream(self._opening).addErrback(self._opening.notOpened)

    def _answered(self, answer: Answer) -> None:
        if self._givenUp:
            return
        if answer.failure is None:
            self._result.callback(self._protocol)
        elif answer.failure is Unavailable.NOT_CONNECTED:
            self._session.stale(self._session.key)
            self._why = answer.message
            self._next()
        else:
            self._result.errback(ERRORS[answer.failure](answer.message))

    def _holderFailed(self, reason: Failure) -> None:
        """The holder cannot be reached, or its stream was lost: try the next."""
        if self._givenUp:
            return
        self._session.stale(self._session.key)
        self._why = reason.getErrorMessage()
        self._next()

    def _cancel(self, result: Deferred[Protocol]) -> None:
        self._givenUp = True
        if self._opening is not None:
            self._opening.abandon()
        if self._step is not None and not self._step.called:
            self._step.cancel()


class _Opening(Protocol):
    """
    A stream to another node while it asks for the client's stream: writes
    the C{OPEN} (or C{PING}), reads the answer; on C{OK} hands the stream to
    the requester's protocol (or, with none, closes it).

    @ivar answered: fires with the L{Answer}, or fails if the stream was
        lost first.
    """

    def __init__(self, line: bytes, protocol: Protocol | None) -> None:
        self.answered: Deferred[Answer] = Deferred()
        self._line = line
        self._protocol = protocol
        self._buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(self._line)

    def dataReceived(self, data: bytes) -> None:
        if self.answered.called:
            return
        self._buffer += data
        try:
            split = splitLine(self._buffer)
            if split is None:
                return
            line, rest = split
            answer = parseAnswer(line)
        except RelayLineError as e:
            self.transport.abortConnection()
            self.answered.errback(e)
            return
        if answer.failure is not None or self._protocol is None:
            self.answered.callback(answer)
            self.transport.loseConnection()
            return
        self.transport.attach(self._protocol)
        self.answered.callback(answer)
        if rest:
            self._protocol.dataReceived(rest)

    def notOpened(self, reason: Failure) -> None:
        """The link is gone: the stream was never opened."""
        if not self.answered.called:
            self.answered.errback(reason)

    def abandon(self) -> None:
        """Give up: reset the stream."""
        if self.transport is not None and not self.answered.called:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure) -> None:
        if not self.answered.called:
            self.answered.errback(reason)
