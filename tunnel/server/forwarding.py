"""
Forwarding one public request over one tunnel stream: plain HTTP (the
request written into the stream, the response parsed and relayed, bodies
streamed both ways with back-pressure), or an HTTP upgrade (the request
written with its upgrade headers; raw bytes piped both ways once the local
service answered C{101}, any other answer relayed as plain HTTP).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Protocol
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from tunnel._hijack import takeOverConnection
from tunnel.core.control import TransportProtocol
from tunnel.core.exchange import Action, Answer, Event, Exchange, Step
from tunnel.core.http import (
    ChunkedEncoder,
    IResponseReceiver,
    ResponseError,
    ResponseHead,
    ResponseParser,
    contentLength,
    splitTokens,
)
from tunnel.mux import SessionEndedError
from tunnel.pipe import PipeEnd
from tunnel.server.metrics import ServerMetrics
from tunnel.server.outcome import Refusal, markLocal, refuse
from tunnel.server.registry import Route
from tunnel.server.session import ClientSession, StreamTimeout, TooManyPendingStreams
from tunnel.server.site import requestBody

#: Headers that concern one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Headers of the public request that this hop consumes: the body is framed
# anew, and a 100-continue was answered here.
_CONSUMED = frozenset({b"content-length", b"expect"})

# What an upgrade request keeps of the hop-by-hop headers: the upgrade.
_UPGRADE = frozenset({b"connection", b"upgrade"})

# Headers twisted.web sets by default that the local service decides on.
_DEFAULTS = (b"server", b"date")


def hasBody(request: Request) -> bool:
    """Whether C{request}'s headers announce a body."""
    headers = request.requestHeaders
    return headers.hasHeader(b"transfer-encoding") or headers.getRawHeaders(
        b"content-length", [b"0"]
    ) != [b"0"]


def isUpgrade(request: Request) -> bool:
    """
    Whether C{request} asks to switch protocols (C{Connection: upgrade} and
    an C{Upgrade} header) and has no body.
    """
    headers = request.requestHeaders
    return (
        headers.hasHeader(b"upgrade")
        and b"upgrade" in splitTokens(headers.getRawHeaders(b"connection", []))
        and not hasBody(request)
    )


def _clientHost(address: IAddress) -> bytes:
    host = getattr(address, "host", None)
    return (str(address) if host is None else host).encode("ascii", "replace")


#: The forwarding headers this hop sets, whatever the public request says.
_FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})


def requestHead(
    request: Request, dropped: frozenset[bytes], framing: tuple[bytes, ...] = ()
) -> bytes:
    """
    The request head to send to the local service: C{request}'s line and
    headers but the C{dropped} ones (lower-case names), with
    C{X-Forwarded-For} appended to, C{X-Forwarded-Proto} and
    C{X-Forwarded-Host} set, then the C{framing} header lines (without
    their line ends). C{Host} is kept.
    """
    lines = [b"%s %s HTTP/1.1\r\n" % (request.method, request.uri)]
    forwardedFor = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        lower = name.lower()
        if lower in _FORWARDING:
            if lower == b"x-forwarded-for":
                forwardedFor.extend(values)
        elif lower not in dropped:
            lines.extend(b"%s: %s\r\n" % (name, value) for value in values)
    forwardedFor.append(_clientHost(request.getClientAddress()))
    lines.append(b"X-Forwarded-For: %s\r\n" % (b", ".join(forwardedFor),))
    lines.append(
        b"X-Forwarded-Proto: %s\r\n" % (b"https" if request.isSecure() else b"http",)
    )
    host = request.getHeader(b"host")
    if host is not None:
        lines.append(b"X-Forwarded-Host: %s\r\n" % (host,))
    lines.extend(b"%s\r\n" % (line,) for line in framing)
    lines.append(b"\r\n")
    return b"".join(lines)


def copyResponseHead(head: ResponseHead, request: Request) -> None:
    """
    Give C{request} the status, reason and end-to-end headers of C{head}
    (its Content-Length, which the parser checked, as one value), and none
    of twisted.web's defaults.
    """
    request.setResponseCode(head.code, head.phrase or None)
    request.defaultContentType = None
    headers = request.responseHeaders
    for name in _DEFAULTS:
        headers.removeHeader(name)
    dropped = HOP_BY_HOP.union(head.tokens(b"connection"), {b"content-length"})
    for name, value in head.headers:
        if name.lower() not in dropped:
            headers.addRawHeader(name, value)
    length = contentLength(head)
    if length is not None:
        headers.setRawHeaders(b"content-length", [b"%d" % (length,)])


def switchingHead(head: ResponseHead) -> bytes:
    """
    The C{101} head C{head} as it goes to the public client: the status
    line, then every header as the local service sent it (C{Connection} and
    C{Upgrade} are the point of it).
    """
    lines = [b"HTTP/1.1 101 %s\r\n" % (head.phrase or b"Switching Protocols",)]
    lines.extend(b"%s: %s\r\n" % (name, value) for name, value in head.headers)
    lines.append(b"\r\n")
    return b"".join(lines)


@implementer(IResponseReceiver)
class Forwarding:
    """
    Forwards one public request to the client of its host, as the
    L{Exchange} decides: asks the client's session for a stream, forwards
    over it, relays the response, and answers the public request with an
    error when the exchange says so.

    Subclasses say what to attach to the stream and how to write the
    request into it.
    """

    _log = Logger()
    transportProtocol = TransportProtocol.HTTP

    def __init__(
        self,
        request: Request,
        route: Route,
        session: ClientSession,
        cooperator: Cooperator,
        clock: IReactorTime,
        metrics: ServerMetrics,
        responseTimeout: float | None = None,
    ) -> None:
        """
        @param cooperator: runs the request body's producer.
        @param clock: runs the response timeout, and times the stream's
            opening.
        @param metrics: is told how long the stream took to open.
        @param responseTimeout: seconds, or L{None} for no limit.
        """
        self.request = request
        self.route = route
        self.exchange = Exchange()
        self._session = session
        self._cooperator = cooperator
        self._clock = clock
        self._metrics = metrics
        self._askedAt = 0.0
        self._responseTimeout = responseTimeout
        self._responseTimer: IDelayedCall | None = None
        self._stream = self.streamProtocol()
        self._streamRequest: Deferred[Protocol] | None = None

    def start(self) -> None:
        """Ask for the stream; forward once it is there."""
        self._askedAt = self._clock.seconds()
        self._streamRequest = self._session.requestStream(
            self.transportProtocol, self.route.port, self._stream
        )
        self.request.notifyFinish().addErrback(lambda reason: self.tell(Event.PUBLIC_LOST))
        self._streamRequest.addCallback(lambda protocol: self.tell(Event.STREAM_OPENED))
        self._streamRequest.addErrback(self._streamFailed)

    def streamProtocol(self) -> _StreamClient:
        """The protocol to attach to the stream."""
        raise NotImplementedError

    def sendRequest(self, transport: ITransport) -> None:
        """
        Write the request into the stream's C{transport}, and tell the
        exchange when it is all written.
        """
        raise NotImplementedError

    def tell(self, event: Event, reason: Failure | None = None) -> None:
        """
        Tell the exchange what happened, and carry out what it says.

        @param reason: why, for the log, if the event is a failure.
        """
        for step in self.exchange.receive(event):
            self._logStep(step, reason)
            if isinstance(step, Answer):
                host = self.request.getHeader(b"host")
                refuse(
                    self.request,
                    REFUSALS[step],
                    step.body(host, self._responseTimeout or 0),
                )
            else:
                getattr(self, _STEPS[step])()

    def _streamFailed(self, reason: Failure) -> None:
        if self.exchange.done:
            if not reason.check(CancelledError):
                self._log.debug(
                    "Forwarding to {host} ended after the public client left: {why}",
                    host=self.route.host,
                    why=reason.getErrorMessage(),
                )
            return
        for failure, event in _STREAM_FAILURES:
            if reason.check(failure):
                self.tell(event, reason)
                return
        self.tell(Event.FAILED, reason)

    def _logStep(self, step: Step, reason: Failure | None) -> None:
        why = "unknown" if reason is None else reason.getErrorMessage()
        if step is Answer.INVALID_RESPONSE:
            self._log.warn(
                "No valid response through the tunnel for {host}: {why}",
                host=self.route.host,
                why=why,
            )
        elif step is Answer.LOCAL_TIMEOUT:
            self._log.warn(
                "The local service for {host} did not answer within {timeout} s; "
                "answering 504",
                host=self.route.host,
                timeout=self._responseTimeout,
            )
        elif step is Action.CUT_PUBLIC:
            self._log.warn("The response for {host} was cut: {why}", host=self.route.host, why=why)

    # -- the steps of the exchange -------------------------------------------

    def _cancelStreamRequest(self) -> None:
        self._streamRequest.cancel()

    def _sendRequest(self) -> None:
        self._metrics.streamOpened(self._clock.seconds() - self._askedAt)
        self.sendRequest(self._stream.transport)

    def _resetStream(self) -> None:
        if self._stream.transport is not None:
            self._stream.transport.abortConnection()

    def _startTimer(self) -> None:
        if self._responseTimeout is not None and self._responseTimer is None:
            self._responseTimer = self._clock.callLater(
                self._responseTimeout, self._responseTimedOut
            )

    def _stopTimer(self) -> None:
        if self._responseTimer is not None:
            if self._responseTimer.active():
                self._responseTimer.cancel()
            self._responseTimer = None

    def _responseTimedOut(self) -> None:
        self._responseTimer = None
        self.tell(Event.RESPONSE_TIMED_OUT)

    def _relayHead(self) -> None:
        markLocal(self.request)
        copyResponseHead(self._stream.parser.head, self.request)
        self.request.registerProducer(self._stream.transport, True)

    def _finish(self) -> None:
        self.request.unregisterProducer()
        self.request.finish()

    def _closeStream(self) -> None:
        self._stream.transport.loseConnection()

    def _cutPublic(self) -> None:
        self.request.unregisterProducer()
        self.request.channel.loseConnection()

    # -- what the stream tells -----------------------------------------------

    def headReceived(self, head: ResponseHead) -> None:
        """The response head is in."""
        self.tell(Event.HEAD_RECEIVED)

    def bodyReceived(self, data: bytes) -> None:
        """Relay some of the response body."""
        if self.exchange.relaying:
            self.request.write(data)

    def responseComplete(self) -> None:
        """The whole response is in."""
        self.tell(Event.RESPONSE_COMPLETE)

    def streamLost(self, reason: Failure) -> None:
        """
        The stream is gone: the end of a body delimited by the close, if it
        closed cleanly; else the end of the exchange.
        """
        if self.exchange.done:
            return
        if reason.check(SessionEndedError):
            self.tell(Event.SESSION_ENDED, reason)
        elif self._stream.parser.delimitedByClose and not reason.check(ConnectionDone):
            self.tell(Event.FAILED, reason)
        else:
            try:
                self._stream.parser.connectionLost()
            except ResponseError as e:
                self.tell(Event.FAILED, Failure(e))

    def malformedResponse(self, reason: Failure) -> None:
        """The response does not parse."""
        self.tell(Event.FAILED, reason)


#: The events of a failed stream request, by the failure's type; any other
#: failure is L{Event.FAILED}.
_STREAM_FAILURES = (
    (StreamTimeout, Event.STREAM_TIMED_OUT),
    (TooManyPendingStreams, Event.TOO_MANY_PENDING),
    (SessionEndedError, Event.SESSION_ENDED),
)

#: Why the tunnel answers by itself, for each error answer of the exchange.
REFUSALS = {
    Answer.STREAM_TIMEOUT: Refusal.STREAM_TIMEOUT,
    Answer.TOO_MANY_PENDING: Refusal.TOO_MANY_PENDING,
    Answer.CLIENT_GONE: Refusal.CLIENT_GONE,
    Answer.INVALID_RESPONSE: Refusal.INVALID_RESPONSE,
    Answer.LOCAL_TIMEOUT: Refusal.LOCAL_TIMEOUT,
}

#: The method of L{Forwarding} (or its subclasses) that carries out each action.
_STEPS = {
    Action.CANCEL_STREAM_REQUEST: "_cancelStreamRequest",
    Action.SEND_REQUEST: "_sendRequest",
    Action.END_BODY: "_endBody",
    Action.STOP_BODY: "_stopBody",
    Action.START_TIMER: "_startTimer",
    Action.STOP_TIMER: "_stopTimer",
    Action.RELAY_HEAD: "_relayHead",
    Action.SWITCH: "_switch",
    Action.FINISH: "_finish",
    Action.CLOSE_STREAM: "_closeStream",
    Action.RESET_STREAM: "_resetStream",
    Action.CUT_PUBLIC: "_cutPublic",
}


class _StreamClient(Protocol):
    """
    The HTTP client side of a stream: reads the response with a
    L{ResponseParser} that tells its L{Forwarding}, until the response
    turns out malformed.
    """

    upgrade = False

    def __init__(self, forwarding: Forwarding) -> None:
        self.forwarding = forwarding
        self.parser = ResponseParser(forwarding, forwarding.request.method, self.upgrade)
        self._malformed = False

    def dataReceived(self, data: bytes) -> None:
        if self._malformed:
            return
        try:
            self.parser.dataReceived(data)
        except ResponseError as e:
            self._malformed = True
            self.forwarding.malformedResponse(Failure(e))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        if not self._malformed:
            self.forwarding.streamLost(reason)


class HTTPForwarding(Forwarding):
    """
    Forwards a plain HTTP request: written into the stream with its body
    streamed, the response read back and relayed as it arrives.

    A local service that keeps the request waiting longer than the response
    timeout (for the response head once the request is all sent, or at a
    time while it reads none of the body) makes the public request a
    C{504}, and its stream is reset. Once the head is in, the response body
    may take as long as it likes, as a stream of events does.
    """

    _body: _WatchedBody | None = None
    _chunks: ChunkedEncoder | None = None

    def streamProtocol(self) -> _StreamClient:
        """An HTTP/1.1 client."""
        return _StreamClient(self)

    def sendRequest(self, transport: ITransport) -> None:
        """Send the request, its body streamed; the response follows."""
        request = self.request
        connection = splitTokens(request.requestHeaders.getRawHeaders(b"connection", []))
        dropped = HOP_BY_HOP.union(_CONSUMED, connection)
        body = requestBody(request, self._cooperator)
        if body is None:
            framing: tuple[bytes, ...] = ()
        elif body.length is UNKNOWN_LENGTH:
            framing = (b"Transfer-Encoding: chunked",)
        else:
            framing = (b"Content-Length: %d" % (body.length,),)
        transport.write(requestHead(request, dropped, framing + (b"Connection: close",)))
        if body is None:
            self.tell(Event.REQUEST_SENT)
            return
        self._body = _WatchedBody(body, self)
        consumer: IConsumer = transport
        if body.length is UNKNOWN_LENGTH:
            self._chunks = ChunkedEncoder()
            consumer = _ChunkedWriter(transport, self._chunks)
        transport.registerProducer(self._body, True)
        self._body.startProducing(consumer).addBoth(self._bodyDone)

    def _bodyDone(self, result: object) -> None:
        # Written, or stopped: the public client left in the middle of its
        # body, or the response came before all of it.
        self._body = None
        if not isinstance(result, Failure):
            self.tell(Event.BODY_SENT)

    def _endBody(self) -> None:
        transport = self._stream.transport
        transport.unregisterProducer()
        if self._chunks is not None:
            transport.write(self._chunks.finish())

    def _stopBody(self) -> None:
        transport = self._stream.transport
        if self._body is not None:
            self._body.stopProducing()
            self._body = None
        transport.unregisterProducer()
        transport.abortConnection()


class _ChunkedWriter:
    """Writes a body of unknown length into a stream in chunked framing."""

    def __init__(self, transport: ITransport, chunks: ChunkedEncoder) -> None:
        self._transport = transport
        self._chunks = chunks

    def write(self, data: bytes) -> None:
        """Write C{data} as one chunk."""
        if data:
            self._transport.writeSequence(self._chunks.encode(data))


@implementer(IBodyProducer)
class _WatchedBody:
    """
    A request body on its way into a stream, that tells its exchange when
    the stream holds it back (pauses it) and when it flows again.

    A stream that pauses it before it starts (the session's connection is
    full as it is registered) has it start paused: the pause is passed on
    once the body started, since not every body producer can be paused
    before.
    """

    def __init__(self, body: IBodyProducer, forwarding: Forwarding) -> None:
        self.length = body.length
        self._body = body
        self._forwarding = forwarding
        self._started = False
        self._paused = False

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write the body to C{consumer}, paused if the stream paused it."""
        self._started = True
        done = self._body.startProducing(consumer)
        if self._paused and not done.called:
            self._body.pauseProducing()
        return done

    def pauseProducing(self) -> None:
        """The stream can take no more."""
        self._paused = True
        if self._started:
            self._body.pauseProducing()
        self._forwarding.tell(Event.BODY_HELD_BACK)

    def resumeProducing(self) -> None:
        """The stream can take more."""
        self._paused = False
        self._forwarding.tell(Event.BODY_MOVING)
        if self._started:
            self._body.resumeProducing()

    def stopProducing(self) -> None:
        """The stream is gone."""
        self._body.stopProducing()


@implementer(IHalfCloseableProtocol)
class _UpgradeStreamClient(_StreamClient):
    """
    The client side of a stream that carries an upgrade: reads the response
    head like L{_StreamClient}; after a C{101}, hands the stream to a
    L{PipeEnd}.
    """

    upgrade = True

    def switch(self) -> PipeEnd:
        """
        The response was a C{101}: from now on the stream is one end of a
        pipe, which holds the bytes that came after the head, to be joined.
        """
        pipe = PipeEnd()
        rest = self.parser.unparsed()
        self.transport.attach(pipe)
        if rest:
            pipe.dataReceived(rest)
        return pipe

    def readConnectionLost(self) -> None:
        """The local service half-closed before a C{101}: the response ends."""
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our write side is closed: nothing to do before a C{101}."""


class UpgradeForwarding(Forwarding):
    """
    Forwards a request that switches protocols: the request head is written
    with its upgrade headers, and the response head read.

    Only a C{101} makes it a pipe: the head is relayed, the public
    connection taken over from twisted.web, and from then on raw bytes flow
    both ways (the bytes the public client sent after its request, which
    twisted.web held, first). Any other answer is relayed as a plain HTTP
    response, and the public connection stays HTTP: twisted.web reads the
    next request on it as any other.

    The response timeout applies to the wait for the response head; a pipe
    may then last as long as its two sides like.
    """

    @property
    def transportProtocol(self) -> TransportProtocol:  # type: ignore[override]
        """WebSocket for a WebSocket upgrade, else HTTP."""
        upgrade = self.request.requestHeaders.getRawHeaders(b"upgrade", [b""])[0]
        if upgrade.strip().lower() == b"websocket":
            return TransportProtocol.WEBSOCKET
        return TransportProtocol.HTTP

    def streamProtocol(self) -> _UpgradeStreamClient:
        """An HTTP/1.1 client that may become one end of a pipe."""
        return _UpgradeStreamClient(self)

    def sendRequest(self, transport: ITransport) -> None:
        """Write the request head, upgrade headers kept; the response follows."""
        dropped = (HOP_BY_HOP - _UPGRADE) | _CONSUMED
        transport.write(requestHead(self.request, dropped))
        self.tell(Event.REQUEST_SENT)

    def headReceived(self, head: ResponseHead) -> None:
        """A C{101} switches to a pipe; any other head is relayed as plain HTTP."""
        self.tell(Event.SWITCHED if head.code == 101 else Event.HEAD_RECEIVED)

    def _switch(self) -> None:
        public = PipeEnd()
        takeOverConnection(self.request, public)
        public.transport.write(switchingHead(self._stream.parser.head))
        public.join(self._stream.switch())
