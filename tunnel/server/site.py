"""
Request bodies as producers: streamed as they arrive in a L{TunnelSite}, or
read from the buffered body in an ordinary L{Site}.

twisted.web's own L{Request} reads the whole body (into memory, or a
temporary file past 100 KB) before the resource renders. In a
L{TunnelSite} the resource renders as soon as the headers are in, and the
body flows into the tunnel while it arrives, with back-pressure.
"""

from __future__ import annotations

from io import BytesIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConsumer
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.server import Request, Site
from zope.interface import implementer

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@implementer(IBodyProducer)
class StreamedBody:
    """
    The body of a L{StreamingRequest}, produced as the public client sends
    it.

    Until L{startProducing} the public connection is paused (what arrives
    meanwhile, at most a read's worth, is held); afterwards each chunk is
    written to the consumer at once, and the public connection is paused
    whenever the consumer pauses this producer.

    @ivar length: the body's length from its Content-Length, or
        L{UNKNOWN_LENGTH} for a chunked body.
    @ivar complete: whether the whole body has arrived.
    """

    def __init__(
        self, request: StreamingRequest, length: int | None, expectContinue: bool
    ) -> None:
        self.length = UNKNOWN_LENGTH if length is None else length
        self.complete = False
        self._request = request
        self._expectContinue = expectContinue
        self._held: list[bytes] = []
        self._consumer: IConsumer | None = None
        self._done: Deferred[None] | None = None
        self._lost: Failure | None = None
        self._stopped = False
        request.transport.pauseProducing()

    # -- from the request --------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """A chunk of the body arrived."""
        if self._stopped:
            return
        if self._consumer is None:
            self._held.append(data)
            self._request.transport.pauseProducing()
        else:
            self._consumer.write(data)

    def allDataReceived(self) -> None:
        """The whole body arrived."""
        self.complete = True
        if self._done is not None and not self._stopped:
            self._request.transport.resumeProducing()
            self._done.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        """The public connection was lost before the whole body arrived."""
        self._lost = reason
        if self._done is not None and not self._stopped:
            self._done.errback(reason)

    # -- IBodyProducer -----------------------------------------------------

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """
        Write the body to C{consumer} as it arrives. If the public client
        waits for C{100 Continue}, tell it to go on now.
        """
        self._consumer = consumer
        self._done = Deferred()
        if self._expectContinue and self._request.clientproto == b"HTTP/1.1":
            self._request.channel.write(CONTINUE)
        held, self._held = self._held, []
        for data in held:
            consumer.write(data)
        if self._lost is not None:
            self._done.errback(self._lost)
        else:
            self._request.transport.resumeProducing()
            if self.complete:
                self._done.callback(None)
        return self._done

    def pauseProducing(self) -> None:
        """
        The consumer is full: stop reading the public connection, unless
        the body is complete (what follows is the next request's).
        """
        if not self.complete and not self._stopped:
            self._request.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """The consumer can take more: read the public connection again."""
        if not self.complete and not self._stopped:
            self._request.transport.resumeProducing()

    def stopProducing(self) -> None:
        """Drop the rest of the body; the L{Deferred} will never fire."""
        self._stopped = True
        self._held = []
        self._request.transport.resumeProducing()


class StreamingRequest(Request):
    """
    A request that is rendered as soon as its headers are in, its body then
    passed on as it arrives through L{body}.

    A response that starts before the whole body arrived closes the
    connection once it is complete: the rest of the body is not read.

    @ivar body: the body, for a request that has one; else L{None}.
    """

    body: StreamedBody | None = None
    _renderingEarly = False

    def gotLength(self, length: int | None) -> None:
        """
        The headers are in. For a request with a body, render now; the
        body follows through L{body}. A C{100 Continue} the client waits
        for is sent when the body is asked for, not before.
        """
        if length == 0:
            super().gotLength(length)
            return
        self.content = BytesIO()
        expect = self.requestHeaders.getRawHeaders(b"expect", [])
        expectContinue = [value.lower() for value in expect] == [b"100-continue"]
        if expectContinue:
            # Keep the channel from answering it at once.
            self.requestHeaders.removeHeader(b"expect")
        self.body = StreamedBody(self, length, expectContinue)
        self._renderingEarly = True
        channel = self.channel
        self.requestReceived(channel._command, channel._path, channel._version)

    def handleContentChunk(self, data: bytes) -> None:
        """Pass a chunk of the body on."""
        if self.body is None:
            super().handleContentChunk(data)
        else:
            self.body.dataReceived(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """
        Render the request, unless it was rendered at its headers already:
        then the body is complete.
        """
        if self._renderingEarly:
            self._renderingEarly = False
            super().requestReceived(command, path, version)
        elif self.body is not None:
            self.body.allDataReceived()
        else:
            super().requestReceived(command, path, version)

    def write(self, data: bytes) -> None:
        """
        Write response data; a response that starts before the whole body
        arrived closes the connection once it is complete.
        """
        if not self.startedWriting and self.body is not None and not self.body.complete:
            self.setHeader(b"connection", b"close")
            self.channel.persistent = False
        super().write(data)

    def finish(self) -> None:
        """Finish the response; read no more of a body that did not all arrive."""
        if self.body is not None and not self.body.complete:
            # The channel would take the rest of the body for the next request.
            self.channel.dataReceived = lambda data: None
        super().finish()

    def connectionLost(self, reason: Failure) -> None:
        """The public connection is gone: so is the rest of the body."""
        super().connectionLost(reason)
        if self.body is not None and not self.body.complete:
            self.body.connectionLost(reason)


class TunnelSite(Site):
    """
    A L{Site} for a tunnel server's resource, whose requests stream their
    bodies (see L{StreamingRequest}). Every resource under it must read
    bodies with L{requestBody}; the tunnel server's resource does.
    """

    requestFactory = StreamingRequest


def requestBody(request: Request, cooperator: Cooperator) -> IBodyProducer | None:
    """
    The body of C{request} as a producer: streamed for a
    L{StreamingRequest}, else read from the body twisted.web buffered.

    @param cooperator: runs the reading of a buffered body.
    @return: the producer, or L{None} if the request has no body.
    """
    if isinstance(request, StreamingRequest) and request.body is not None:
        return request.body
    producer = FileBodyProducer(request.content, cooperator)
    return producer if producer.length else None
