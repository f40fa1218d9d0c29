"""
Forwarding one public request over one tunnel stream: plain HTTP (the
request written into the stream, the response parsed and relayed, bodies
streamed both ways with back-pressure), or an HTTP upgrade (the request
written raw, then raw bytes piped both ways).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IConsumer, IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import (
    HTTP11ClientProtocol,
    PotentialDataLoss,
    Request as ClientRequest,
    ResponseDone,
)
from twisted.web.http import NO_CONTENT, NOT_MODIFIED, Request
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer, IResponse
from zope.interface import implementer

from tunnel._hijack import takeOverConnection
from tunnel.mux import SessionEndedError
from tunnel.pipe import PipeEnd
from tunnel.protocol import TransportProtocol
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


def writeError(request: Request, code: int, message: bytes) -> None:
    """
    Answer C{request} with C{code} and a short plain-text body.
    """
    body = message + b"\n"
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % (len(body),))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.write(body)
    request.finish()


def _tokens(headers: Headers, name: bytes) -> set[bytes]:
    return {
        token.strip().lower()
        for value in headers.getRawHeaders(name, [])
        for token in value.split(b",")
    }


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
        b"upgrade" in _tokens(headers, b"connection")
        and headers.hasHeader(b"upgrade")
        and not hasBody(request)
    )


def _clientHost(address: IAddress) -> bytes:
    host = getattr(address, "host", None)
    return (str(address) if host is None else host).encode("ascii", "replace")


def forwardedHeaders(request: Request, dropped: frozenset[bytes]) -> Headers:
    """
    The headers to send to the local service: those of C{request} but the
    C{dropped} ones (lower-case names), with C{X-Forwarded-For} appended to
    and C{X-Forwarded-Proto} and C{X-Forwarded-Host} set. C{Host} is kept.
    """
    headers = Headers()
    for name, values in request.requestHeaders.getAllRawHeaders():
        if name.lower() not in dropped:
            headers.setRawHeaders(name, values)
    forwardedFor = headers.getRawHeaders(b"x-forwarded-for", [])
    forwardedFor.append(_clientHost(request.getClientAddress()))
    headers.setRawHeaders(b"x-forwarded-for", [b", ".join(forwardedFor)])
    headers.setRawHeaders(
        b"x-forwarded-proto", [b"https" if request.isSecure() else b"http"]
    )
    host = request.getHeader(b"host")
    if host is not None:
        headers.setRawHeaders(b"x-forwarded-host", [host])
    return headers


def copyResponseHead(response: IResponse, request: Request) -> None:
    """
    Give C{request} the status, reason and end-to-end headers of
    C{response}, and its Content-Length when it has one.
    """
    request.setResponseCode(response.code, response.phrase or None)
    headers = request.responseHeaders
    for name in _DEFAULTS:
        headers.removeHeader(name)
    for name, values in response.headers.getAllRawHeaders():
        if name.lower() not in HOP_BY_HOP:
            headers.setRawHeaders(name, values)
    if (
        response.length is not UNKNOWN_LENGTH
        and request.method != b"HEAD"
        and response.code not in (NO_CONTENT, NOT_MODIFIED)
    ):
        headers.setRawHeaders(b"content-length", [b"%d" % (response.length,)])


class Forwarding:
    """
    Forwards one public request to the client of its host: asks the
    client's session for a stream, forwards over it, and answers the public
    request with errors when there is no stream.

    Subclasses say what to attach to the stream and what to do once it is
    connected.
    """

    _log = Logger()
    transportProtocol = TransportProtocol.HTTP

    def __init__(self, request: Request, route: Route, session: ClientSession) -> None:
        self.request = request
        self.route = route
        self._session = session
        self._publicGone = False
        self._stream = self.streamProtocol()
        self._streamRequest: Deferred[Protocol] | None = None

    def start(self) -> None:
        """Ask for the stream; forward once it is there."""
        self._streamRequest = self._session.requestStream(
            self.transportProtocol, self.route.port, self._stream
        )
        self.request.notifyFinish().addErrback(self._publicLost)
        self._streamRequest.addCallback(self.streamConnected).addErrback(self._failed)

    def streamProtocol(self) -> Protocol:
        """The protocol to attach to the stream."""
        raise NotImplementedError

    def streamConnected(self, protocol: Protocol) -> Deferred[None] | None:
        """The stream is there with C{protocol} attached: forward."""
        raise NotImplementedError

    def _publicLost(self, reason: Failure) -> None:
        self._publicGone = True
        if self._streamRequest.called:
            self._resetStream()
        else:
            self._streamRequest.cancel()

    def _resetStream(self) -> None:
        # The local service need not go on.
        if self._stream.transport is not None:
            self._stream.transport.abortConnection()

    def _failed(self, reason: Failure) -> None:
        if self._publicGone or self.request.finished:
            if not reason.check(CancelledError):
                self._log.debug(
                    "Forwarding to {host} ended after the public client left: {why}",
                    host=self.route.host,
                    why=reason.getErrorMessage(),
                )
            return
        host = self.request.getHeader(b"host")
        if reason.check(StreamTimeout):
            writeError(
                self.request,
                504,
                b"the tunnel client for host %s did not open a stream in time" % (host,),
            )
        elif reason.check(TooManyPendingStreams):
            writeError(
                self.request,
                503,
                b"too many requests are waiting for the tunnel client for host %s"
                % (host,),
            )
        elif reason.check(SessionEndedError):
            writeError(
                self.request,
                502,
                b"the tunnel client for host %s went away" % (host,),
            )
        else:
            self._log.warn(
                "No valid response through the tunnel for {host}: {why}",
                host=self.route.host,
                why=reason.getErrorMessage(),
            )
            self._resetStream()
            writeError(
                self.request,
                502,
                b"no valid response from the tunnel client for host %s" % (host,),
            )


class _StreamClient(HTTP11ClientProtocol):
    """
    The HTTP client side of a stream.

    @ivar lostReason: why the stream ended, once it did: what tells a
        complete close-delimited response from a cut one.
    """

    lostReason: Failure | None = None

    def requestEarly(self, request: ClientRequest) -> Deferred[IResponse]:
        """
        Send C{request}; fire with the response as soon as its head is in,
        while the request body may still be on its way. (L{request} waits
        until the body is all sent, which would stall a local app that
        answers as it reads, as an echo does.)
        """
        sent = self.request(request)
        if self.state != "TRANSMITTING":
            return sent
        head: Deferred[IResponse] = Deferred()

        def responded(response: IResponse) -> IResponse:
            if not head.called:
                head.callback(response)
            return response

        def failed(reason: Failure) -> None:
            if not head.called:
                head.errback(reason)

        # The parser's Deferred fires with the head; the protocol hands it
        # on to the request's Deferred only once the body is sent.
        self._responseDeferred.addCallback(responded)
        sent.addErrback(failed)
        return head

    def connectionLost(self, reason: Failure) -> None:
        self.lostReason = reason
        super().connectionLost(reason)


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

    def __init__(
        self,
        request: Request,
        route: Route,
        session: ClientSession,
        cooperator: Cooperator,
        clock: IReactorTime | None = None,
        responseTimeout: float | None = None,
    ) -> None:
        """
        @param clock: runs the response timeout; needed with one.
        @param responseTimeout: seconds, or L{None} for no limit.
        """
        super().__init__(request, route, session)
        self._cooperator = cooperator
        self._clock = clock
        self._responseTimeout = responseTimeout
        self._responseTimer: IDelayedCall | None = None
        self._awaitingResponse = False
        self._requestSent = False

    def streamProtocol(self) -> Protocol:
        """An HTTP/1.1 client."""
        return _StreamClient()

    def streamConnected(self, protocol: Protocol) -> Deferred[None]:
        """Send the request; relay the response."""
        request = self.request
        dropped = HOP_BY_HOP | _CONSUMED | _tokens(request.requestHeaders, b"connection")
        headers = forwardedHeaders(request, dropped)
        body = requestBody(request, self._cooperator)
        self._awaitingResponse = True
        responded = protocol.requestEarly(
            ClientRequest._construct(
                request.method,
                request.uri,
                headers,
                None if body is None else _WatchedBody(body, self),
                persistent=False,
            )
        )
        if body is None:
            self._sent()
        return responded.addCallback(self._responseReceived)

    # -- the response timeout ------------------------------------------------

    def _sent(self) -> None:
        """The whole request is in the stream: the local service must answer."""
        self._requestSent = True
        self._startResponseTimer()

    def _heldBack(self) -> None:
        """The stream holds the body back: the local service does not read."""
        self._startResponseTimer()

    def _moving(self) -> None:
        """The body flows again."""
        if not self._requestSent:
            self._stopResponseTimer()

    def _startResponseTimer(self) -> None:
        if (
            self._responseTimeout is not None
            and self._awaitingResponse
            and self._responseTimer is None
        ):
            self._responseTimer = self._clock.callLater(
                self._responseTimeout, self._responseTimedOut
            )

    def _stopResponseTimer(self) -> None:
        if self._responseTimer is not None:
            if self._responseTimer.active():
                self._responseTimer.cancel()
            self._responseTimer = None

    def _responseTimedOut(self) -> None:
        self._responseTimer = None
        self._awaitingResponse = False
        self._log.warn(
            "The local service for {host} did not answer within {timeout} s; "
            "answering 504",
            host=self.route.host,
            timeout=self._responseTimeout,
        )
        if not self._publicGone:
            writeError(
                self.request,
                504,
                b"the local service for host %s did not answer within %g s"
                % (self.request.getHeader(b"host"), self._responseTimeout),
            )
        self._resetStream()

    def _publicLost(self, reason: Failure) -> None:
        self._awaitingResponse = False
        self._stopResponseTimer()
        super()._publicLost(reason)

    def _failed(self, reason: Failure) -> None:
        self._awaitingResponse = False
        self._stopResponseTimer()
        super()._failed(reason)

    # -- the response --------------------------------------------------------

    def _responseReceived(self, response: IResponse) -> None:
        self._awaitingResponse = False
        self._stopResponseTimer()
        if self._publicGone or self.request.finished:
            return
        copyResponseHead(response, self.request)
        response.deliverBody(_BodyRelay(self))

    def _bodyEnded(self, reason: Failure) -> None:
        if self._publicGone:
            return
        self.request.unregisterProducer()
        stream = self._stream.lostReason
        if reason.check(ResponseDone) or (
            reason.check(PotentialDataLoss) and stream is not None and stream.check(ConnectionDone)
        ):
            self.request.finish()
            return
        self._log.warn(
            "The response for {host} was cut: {why}",
            host=self.route.host,
            why=(stream or reason).getErrorMessage(),
        )
        self.request.channel.loseConnection()


@implementer(IBodyProducer)
class _WatchedBody:
    """
    A request body on its way into a stream, that tells its
    L{HTTPForwarding} when the stream holds it back (pauses it), when it
    flows again, and when it is all written.
    """

    def __init__(self, body: IBodyProducer, forwarding: HTTPForwarding) -> None:
        self.length = body.length
        self._body = body
        self._forwarding = forwarding

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        """Write the body to C{consumer}."""

        def written(result: None) -> None:
            self._forwarding._sent()
            return result

        return self._body.startProducing(consumer).addCallback(written)

    def pauseProducing(self) -> None:
        """The stream can take no more."""
        self._body.pauseProducing()
        self._forwarding._heldBack()

    def resumeProducing(self) -> None:
        """The stream can take more."""
        self._forwarding._moving()
        self._body.resumeProducing()

    def stopProducing(self) -> None:
        """The stream is gone."""
        self._body.stopProducing()


class _BodyRelay(Protocol):
    """
    Writes a response body to the public request as it arrives; a public
    client that reads slowly pauses the stream.
    """

    def __init__(self, forwarding: HTTPForwarding) -> None:
        self._forwarding = forwarding
        self._request = forwarding.request

    def connectionMade(self) -> None:
        self._request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self._request.write(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._forwarding._bodyEnded(reason)


class UpgradeForwarding(Forwarding):
    """
    Forwards a request that switches protocols: the request is written raw
    into the stream, the public connection is taken over from twisted.web,
    and from then on raw bytes flow both ways, the response included.
    """

    def __init__(self, request: Request, route: Route, session: ClientSession) -> None:
        super().__init__(request, route, session)
        upgrade = request.requestHeaders.getRawHeaders(b"upgrade", [b""])[0]
        if upgrade.strip().lower() == b"websocket":
            self.transportProtocol = TransportProtocol.WEBSOCKET

    def streamProtocol(self) -> Protocol:
        """One end of a pipe."""
        return PipeEnd()

    def streamConnected(self, protocol: Protocol) -> None:
        """Write the request, take the public connection over, pipe."""
        request = self.request
        head = [b"%s %s HTTP/1.1\r\n" % (request.method, request.uri)]
        dropped = (HOP_BY_HOP - _UPGRADE) | _CONSUMED
        for name, values in forwardedHeaders(request, dropped).getAllRawHeaders():
            head.extend(b"%s: %s\r\n" % (name, value) for value in values)
        head.append(b"\r\n")
        protocol.transport.write(b"".join(head))
        public = PipeEnd()
        takeOverConnection(request, public)
        public.join(protocol)
