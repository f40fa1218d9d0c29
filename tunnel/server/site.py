"""
The public side of a tunnel server: a L{TunnelSite}, whose connections
(L{TunnelChannel}) bound what a public client may make the server hold, and
whose requests stream their bodies.

Request bodies as producers: streamed as they arrive in a L{TunnelSite}, or
read from the buffered body in an ordinary L{Site}.

twisted.web's own L{Request} reads the whole body (into memory, or a
temporary file past 100 KB) before the resource renders. In a
L{TunnelSite} the resource renders as soon as the headers are in, and the
body flows into the tunnel while it arrives, with back-pressure.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IProtocol,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer
from twisted.web.http import HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAccessLogFormatter, IBodyProducer
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from zope.interface import implementer

from tunnel._hijack import requestLine
from tunnel.core.http import MAX_LENGTH_DIGITS, errorResponse
from tunnel.mux import YamuxProtocol
from tunnel.server.accesslog import accessLogFormatter
from tunnel.server.connections import WRITE_TIMEOUT, PublicConnection
from tunnel.server.limits import (
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_SOURCE,
    ConnectionLimit,
    TooManyConnections,
)
from tunnel.server.metrics import ServerMetrics
from tunnel.server.outcome import Refusal, outcomeOf
from tunnel.sparselog import isSparseCount

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: The most bytes a request head (request line and header lines, without
#: their line ends) may take by default.
MAX_HEADER_BYTES = 64 * 1024
#: The most header lines a request may have by default.
MAX_HEADERS = 500
#: Seconds a public client has by default to send a whole request head once
#: it started it.
HEADER_TIMEOUT = 30.0
#: Seconds a public connection may stay idle by default (between requests,
#: or while a request body does not move).
IDLE_TIMEOUT = 60.0

@implementer(IBodyProducer)
class StreamedBody:
    """
    The body of a L{StreamingRequest}, produced as the public client sends
    it.

    Until L{startProducing} the public connection is paused (what arrives
    meanwhile, at most a read's worth, is held); afterwards each chunk is
    written to the consumer at once, and the public connection is paused
    whenever the consumer pauses this producer, and read again only when it
    resumes it: a consumer that paused the body before it started (the
    tunnel's connection to the client is full) keeps it paused.

    While the tunnel holds the body back (see L{heldBack}) the public client
    sends nothing, through no fault of its own: its connection's idle timer
    must not count that time (L{TunnelChannel} sees to it), and it starts
    over when the body flows again.

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
        self._consumerPaused = False
        request.transport.pauseProducing()

    @property
    def heldBack(self) -> bool:
        """
        Whether the tunnel holds the rest of the body back: nobody asked for
        it yet (the stream is not there), or its consumer paused it (the
        stream's window is used up: the local service does not read).
        """
        return (
            not self.complete
            and not self._stopped
            and (self._consumer is None or self._consumerPaused)
        )

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
        Write the body to C{consumer} as it arrives, reading the public
        connection again unless the consumer paused this producer (before,
        or while it took what was held). If the public client waits for
        C{100 Continue}, tell it to go on now.
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
            # A complete body holds nothing back: what follows is the next
            # request's.
            if self.complete or not self._consumerPaused:
                self._release()
            if self.complete:
                self._done.callback(None)
        return self._done

    def pauseProducing(self) -> None:
        """
        The consumer is full: stop reading the public connection, unless
        the body is complete (what follows is the next request's).
        """
        if not self.complete and not self._stopped:
            self._consumerPaused = True
            self._request.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """The consumer can take more: read the public connection again."""
        self._consumerPaused = False
        if not self.complete and not self._stopped:
            self._release()

    def _release(self) -> None:
        """
        Read the public connection again, and give its client a whole idle
        timeout from now: the time the body was held back was not its.
        """
        self._request.transport.resumeProducing()
        self._request.channel.resetTimeout()

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
    @ivar arrivedAt: when its first line arrived, on its site's clock.
    @ivar receivedLength: how many bytes of its body arrived so far.
    """

    body: StreamedBody | None = None
    receivedLength = 0
    _renderingEarly = False

    def __init__(self, channel: HTTPChannel, *arguments: Any, **keywords: Any) -> None:
        super().__init__(channel, *arguments, **keywords)
        self.arrivedAt = channel.site.reactor.seconds()

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
        self.requestReceived(*requestLine(self.channel))

    def handleContentChunk(self, data: bytes) -> None:
        """Pass a chunk of the body on."""
        self.receivedLength += len(data)
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
        # The head goes with the body's first bytes, or alone if none came.
        self.channel.releaseHead()

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


# The first bytes of a TLS handshake record (a ClientHello), of any TLS version.
_TLS_HANDSHAKE_RECORD = b"\x16\x03"


class TunnelChannel(HTTPChannel):
    """
    An HTTP/1.x connection of a L{TunnelSite}, with explicit limits on
    request heads, since it faces the public internet:

      - a request head larger than L{totalHeadersSize} bytes gets a C{431}
        (a request line that long alone, a C{414}), and the connection is
        closed: twisted.web would answer a bare C{400}, or close the
        connection without a word when one line is too long;
      - so does a request with more than L{maxHeaders} header lines;
      - a request head not complete within L{headerTimeout} seconds of its
        first byte gets a C{408} and the connection is closed: twisted.web's
        idle timeout (C{timeOut}) starts over with every byte, so that a
        client trickling its headers would hold the connection forever.

    A connection taken over (the control path, an upgrade) is past its
    request head: neither limit applies to it any more, and the take-over
    stops the idle timeout.

    A request body the tunnel holds back (L{StreamedBody.heldBack}: the
    local service does not read it, or its stream is not there yet) does
    not make the connection idle: back-pressure pauses the connection, so
    nothing arrives, and twisted.web's idle timeout, which in a plain
    L{Site} is stopped once the whole body is in, would cut the upload.
    How long the local service may hold it is the tunnel server's response
    timeout.

    @ivar headerTimeout: seconds from the first byte of a request head to
        its end, or L{None} for no limit.
    @ivar relayed: whether another node of a cluster accepted the
        connection and handed it to this one (L{tunnel.cluster.handoff}).
    """

    relayed = False

    headerTimeout: float | None = HEADER_TIMEOUT
    totalHeadersSize = MAX_HEADER_BYTES
    MAX_LENGTH = MAX_HEADER_BYTES
    maxHeaders = MAX_HEADERS
    _headerTimer: IDelayedCall | None = None
    _heldHead = b""
    _log = Logger()

    def dataReceived(self, data: bytes) -> None:
        """
        Read C{data}; if it leaves a request head incomplete, start the
        header timer (a head that arrives whole in one read, as most do,
        costs no timer).

        A TLS handshake on a plain port (a client told C{tls:} for a port
        without TLS) is answered at once, in plain text, instead of held
        until the header timeout: no request line starts with a TLS record.
        """
        if (
            data.startswith(_TLS_HANDSHAKE_RECORD)
            and self.line_mode
            and not self._buffer
            and not self._receivedHeaderSize
            and not ISSLTransport.providedBy(self.transport)
        ):
            self._refuse(400, b"this port speaks plain HTTP, not TLS: connect without TLS")
            return
        super().dataReceived(data)
        if (
            self._headerTimer is None
            and self.headerTimeout is not None
            and self.transport is not None
            and self.line_mode
            and (self._receivedHeaderSize or self._buffer)
        ):
            self._headerTimer = self.callLater(self.headerTimeout, self._headerTimedOut)

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        """
        Make a response head in one piece, not as forty small ones, and hold
        it: it goes out with the first bytes of the body, in one write
        (L{releaseHead} writes it alone if the response has none).
        """
        lines = [b"%s %s %s\r\n" % (version, code, reason)]
        for name, values in headers.getAllRawHeaders():
            lines.extend(b"%s: %s\r\n" % (name, value) for value in values)
        lines.append(b"\r\n")
        self._heldHead = b"".join(lines)

    def releaseHead(self) -> None:
        """Write the response head held by L{writeHeaders}, if there is one."""
        head, self._heldHead = self._heldHead, b""
        if head:
            self.transport.write(head)

    def write(self, data: bytes) -> None:
        """Write response bytes, after the held head if there is one."""
        if self._heldHead:
            data, self._heldHead = self._heldHead + data, b""
        self.transport.write(data)

    def writeSequence(self, iovec: list[bytes]) -> None:
        """Write response bytes, after the held head if there is one."""
        if self._heldHead:
            iovec, self._heldHead = [self._heldHead, *iovec], b""
        self.transport.writeSequence(iovec)

    def lineReceived(self, line: bytes) -> None:
        """Refuse a request head that grows past L{totalHeadersSize}."""
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._headTooLarge()
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse a line longer than the whole request head may be."""
        if self._receivedHeaderSize:
            self._headTooLarge()
        else:
            self._refuse(414, b"the request line is longer than %d bytes" % (self.MAX_LENGTH,))

    def headerReceived(self, line: bytes) -> bool:
        """
        Refuse a request with more than L{maxHeaders} header lines, or with
        a Content-Length too long to be a length (twisted.web would take
        thousands of digits to C{int}, which raises past 4300 of them).
        """
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuse(431, b"the request has more than %d headers" % (self.maxHeaders,))
            return False
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length" and len(value.strip(b" \t")) > MAX_LENGTH_DIGITS:
            self._refuse(400, b"the request's Content-Length is longer than %d digits"
                         % (MAX_LENGTH_DIGITS,))
            return False
        return super().headerReceived(line)

    def allHeadersReceived(self) -> None:
        """The request head is complete in time."""
        self._stopHeaderTimer()
        super().allHeadersReceived()

    def timeoutConnection(self) -> None:
        """
        Close the idle connection, unless the tunnel holds back the body of
        the request it carries: then wait another idle timeout.
        """
        body = getattr(self.requests[-1], "body", None) if self.requests else None
        if body is not None and body.heldBack:
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()

    def connectionLost(self, reason: Failure) -> None:
        """Forget the header timer."""
        self._stopHeaderTimer()
        super().connectionLost(reason)

    def _stopHeaderTimer(self) -> None:
        if self._headerTimer is not None:
            if self._headerTimer.active():
                self._headerTimer.cancel()
            self._headerTimer = None

    def _headerTimedOut(self) -> None:
        self._headerTimer = None
        self._log.info(
            "Closing the connection of {peer}: no complete request head within {timeout} s",
            peer=self.transport.getPeer(),
            timeout=self.headerTimeout,
        )
        self._refuse(408, b"the request head took longer than %g s" % (self.headerTimeout,))
        # As twisted.web's idle timeout does: a client that does not read
        # is dropped after a while.
        self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def _headTooLarge(self) -> None:
        self._refuse(431, b"the request head is larger than %d bytes" % (self.totalHeadersSize,))

    def _refuse(self, code: int, message: bytes) -> None:
        """Answer C{code} with a short text, then close the connection."""
        self.transport.write(errorResponse(code, message + b"\n"))
        self.loseConnection()


class ConnectionRefusal(Protocol):
    """
    A connection beyond a L{TunnelSite}'s caps: answered C{503} at once,
    its request not read, then closed.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        """Refuse and close."""
        self.transport.pauseProducing()
        self.transport.write(errorResponse(503, self.reason.encode("utf-8") + b"\n"))
        self.transport.loseConnection()


class TunnelSite(Site):
    """
    A L{Site} for a tunnel server's resource, whose requests stream their
    bodies (see L{StreamingRequest}) and whose connections are
    L{TunnelChannel}s with explicit limits. Every resource under it must
    read bodies with L{requestBody}; the tunnel server's resource does.

    It speaks HTTP/1.x only: the control path and upgrades take over the
    raw connection.

    Requests are logged only to a file given as C{logPath}, in the combined
    log format followed by the virtual host and who answered (see
    L{tunnel.server.accesslog}): a busy tunnel would otherwise spend a good
    part of its time writing a log line per request into the main log.

    @ivar headerTimeout: seconds a public client has to send a whole
        request head once it started it (C{408} after that).
    @ivar maxHeaderBytes: the most bytes a request head may take (C{431}
        beyond).
    @ivar maxHeaders: the most header lines a request may have (C{431}
        beyond).
    @ivar connections: the L{ConnectionLimit} of its connections: one
        beyond either of its caps (in all, and per source address) is
        answered C{503} at once, its request unread, and closed. Every
        connection counts from its acceptance until it is lost, whether
        twisted.web still carries it or it was taken over (an upgraded
        pipe, a tunnel session). A connection that carries a tunnel session
        counts for its source only: a public flood cannot push established
        tunnels out, nor can tunnels take the public's places.
    @ivar writeTimeout: seconds a connection's send buffer may stay full,
        its peer reading nothing, before it is aborted (see
        L{PublicConnection}); L{None} for no limit. A tunnel session's
        connection is bounded by the session's own write stall timeout
        instead.
    @ivar metrics: the L{ServerMetrics} its answered requests are counted
        in, and the connections it refuses.
    """

    requestFactory = StreamingRequest
    protocol = TunnelChannel  # type: ignore[assignment]
    _log = Logger()

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime | None = None,
        idleTimeout: float | None = IDLE_TIMEOUT,
        headerTimeout: float | None = HEADER_TIMEOUT,
        maxHeaderBytes: int = MAX_HEADER_BYTES,
        maxHeaders: int = MAX_HEADERS,
        maxConnections: int | None = MAX_CONNECTIONS,
        maxConnectionsPerSource: int | None = MAX_CONNECTIONS_PER_SOURCE,
        writeTimeout: float | None = WRITE_TIMEOUT,
        metrics: ServerMetrics | None = None,
        logFormatter: IAccessLogFormatter = accessLogFormatter,
        **siteArguments: Any,
    ) -> None:
        """
        @param resource: the root resource.
        @param reactor: the reactor, for timeouts; the global one by
            default.
        @param idleTimeout: seconds a connection may stay idle, between
            requests or while a request body does not move; L{None} for
            none.
        @param headerTimeout: see L{headerTimeout}; L{None} for none.
        @param maxHeaderBytes: see L{maxHeaderBytes}.
        @param maxHeaders: see L{maxHeaders}.
        @param maxConnections: the most connections open at once, or
            L{None} for no limit.
        @param maxConnectionsPerSource: the most connections one source
            address (an IPv6 /64) may have open at once, or L{None} for no
            limit (behind a reverse proxy, every connection has the proxy's
            address).
        @param writeTimeout: see L{writeTimeout}.
        @param metrics: see L{metrics}; new ones (that nothing exposes) by
            default.
        @param logFormatter: makes the access log's lines.
        @param siteArguments: more arguments of L{Site}, such as
            C{logPath}.
        @raise ValueError: if a connection cap is not positive.
        """
        super().__init__(
            resource,
            timeout=idleTimeout,
            reactor=reactor,
            logFormatter=logFormatter,
            **siteArguments,
        )
        self.metrics = ServerMetrics() if metrics is None else metrics
        self.headerTimeout = headerTimeout
        self.maxHeaderBytes = maxHeaderBytes
        self.maxHeaders = maxHeaders
        self.connections = ConnectionLimit(maxConnections, maxConnectionsPerSource)
        self.writeTimeout = writeTimeout

    def log(self, request: StreamingRequest) -> None:  # type: ignore[override]
        """
        Count the answered C{request} in the metrics, and write a line for
        it to the access log file, if there is one.
        """
        self.metrics.requestAnswered(
            outcomeOf(request),
            request.code,
            self.reactor.seconds() - request.arrivedAt,
            request.receivedLength,
            request.sentLength,
        )
        if self.logPath is not None:
            super().log(request)

    def buildProtocol(self, addr: IAddress) -> IProtocol:
        """
        A L{TunnelChannel} with the site's limits, counted and watched by a
        L{PublicConnection}; or, beyond the caps, a L{ConnectionRefusal}.
        """
        try:
            slot = self.connections.admit(addr)
        except TooManyConnections as e:
            self.metrics.refused(Refusal.TOO_MANY_CONNECTIONS)
            refused = self.connections.refused
            if isSparseCount(refused):
                self._log.warn(
                    "Refused a connection from {peer}: {reason} "
                    "({count} connections refused so far)",
                    peer=addr,
                    reason=str(e),
                    count=refused,
                )
            return ConnectionRefusal(str(e))
        channel = super().buildProtocol(addr)
        channel.headerTimeout = self.headerTimeout
        channel.totalHeadersSize = channel.MAX_LENGTH = self.maxHeaderBytes
        channel.maxHeaders = self.maxHeaders
        return PublicConnection(
            channel, slot, self.reactor, self.writeTimeout, _tunnelSessionsApart
        )


#: Seconds a connection to a L{PrivateSite} may stay idle by default.
PRIVATE_IDLE_TIMEOUT = 60.0


class PrivateSite(Site):
    """
    A L{Site} for the resource of a private endpoint (the admin API, the
    metrics): its requests are rendered as soon as their head is in (they
    are L{StreamingRequest}s), so that its resource may refuse one before
    any of its body is read; its connections limit request heads as a
    tunnel server's public ones do (L{TunnelChannel}).
    """

    requestFactory = StreamingRequest
    protocol = TunnelChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        idleTimeout: float | None = PRIVATE_IDLE_TIMEOUT,
        **arguments: Any,
    ) -> None:
        """
        @param resource: the root resource.
        @param idleTimeout: seconds a connection may stay idle.
        @param arguments: more arguments of L{Site}.
        """
        super().__init__(resource, timeout=idleTimeout, **arguments)


def _tunnelSessionsApart(connection: PublicConnection, protocol: IProtocol) -> None:
    """
    A connection taken over by a tunnel session counts for its source only,
    and its session's own write stall timeout (the yamux settings'
    C{writeStallTimeout}) bounds how long its client may read nothing, not
    the site's write timeout.
    """
    if isinstance(protocol, YamuxProtocol):
        if connection.slot is not None:
            connection.slot.becameSession()
        connection.stopWatchingWrites()


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
