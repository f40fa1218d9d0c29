"""
Tests for L{tunnel.server.forwarding} and L{tunnel.server.site}: public
requests forwarded over tunnel streams to a local app, in memory.
"""

from __future__ import annotations

from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, readBody
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tunnel.mux import StreamResetError
from tunnel.core.control import ControlMessage, TransportProtocol
from tunnel.test.serversupport import Harness, RawLocal
from tunnel.test.support import Recorder

IDENTIFIER = b"forwarding-identifier"


class RecordingRequest(Request):
    """A request of the local app that records its body as it arrives."""

    def handleContentChunk(self, data: bytes) -> None:
        self.channel.site.chunks.append(data)
        super().handleContentChunk(data)


class App(Resource):
    """
    The local app: records every request; answers by calling C{answer}.

    @ivar requests: the requests received, in order.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []
        self.bodies: list[bytes] = []
        self.answer = lambda request: b"hello"

    def render(self, request: Request) -> object:
        self.requests.append(request)
        self.bodies.append(request.content.read())
        return self.answer(request)


class EchoApp(Protocol):
    """A raw local app that answers at once and echoes the body as it arrives."""

    def __init__(self) -> None:
        self.head = b""

    def dataReceived(self, data: bytes) -> None:
        if b"\r\n\r\n" not in self.head:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            data = self.head.partition(b"\r\n\r\n")[2]
        self.transport.write(data)


class ForwardingTestCase(SynchronousTestCase):
    """A harness with a connected client whose streams reach L{App}."""

    serverArguments: dict[str, object] = {}

    def setUp(self) -> None:
        self.harness = Harness(**self.serverArguments)
        self.harness.server.addHost("app.example", IDENTIFIER)
        self.app = App()
        self.local = Site(self.app, reactor=self.harness.clock)
        self.local.requestFactory = RecordingRequest
        self.local.chunks = []
        self.streams: list[Protocol | None] = []
        self.client = self.harness.tunnelClient(IDENTIFIER, self.connectStream)

    def connectStream(self, message: ControlMessage) -> Protocol | None:
        if self.streams:
            return self.streams.pop(0)
        return self.local.buildProtocol(None)

    def get(self, headers: dict[bytes, list[bytes]], secure: bool = False, method: bytes = b"GET"):
        client = self.harness.httpClient(secure)
        response = self.successResultOf(
            self.harness.request(client, method, b"/path?q=1", {b"host": [b"app.example"], **headers})
        )
        body = readBody(response)
        self.harness.flush()
        return response, self.successResultOf(body)

    def raw(self, data: bytes) -> Recorder:
        public = Recorder()
        self.harness.connect(public)
        public.transport.write(data)
        self.harness.flush()
        return public


class HeaderTests(ForwardingTestCase):
    """
    What is forwarded: the request with X-Forwarded-* added and hop-by-hop
    headers removed; the response's status, reason and end-to-end headers.
    """

    def test_requestIsForwardedWithForwardingHeaders(self) -> None:
        """
        The local app gets the method, URI and Host of the public request,
        with X-Forwarded-For, -Proto and -Host.
        """
        self.get({})
        [request] = self.app.requests
        self.assertEqual((request.method, request.uri), (b"GET", b"/path?q=1"))
        headers = request.requestHeaders
        self.assertEqual(headers.getRawHeaders(b"host"), [b"app.example"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-for"), [b"203.0.113.7"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-proto"), [b"http"])
        self.assertEqual(headers.getRawHeaders(b"x-forwarded-host"), [b"app.example"])

    def test_forwardedForIsAppendedTo(self) -> None:
        """An existing X-Forwarded-For gets the public client's address appended."""
        self.get({b"x-forwarded-for": [b"198.51.100.1, 198.51.100.2", b"198.51.100.3"]})
        self.assertEqual(
            self.app.requests[0].requestHeaders.getRawHeaders(b"x-forwarded-for"),
            [b"198.51.100.1, 198.51.100.2, 198.51.100.3, 203.0.113.7"],
        )

    def test_secureRequestsAreForwardedAsHTTPS(self) -> None:
        """A request over TLS is forwarded with X-Forwarded-Proto https."""
        self.get({b"x-forwarded-proto": [b"http"]}, secure=True)
        self.assertEqual(
            self.app.requests[0].requestHeaders.getRawHeaders(b"x-forwarded-proto"),
            [b"https"],
        )

    def test_hopByHopRequestHeadersAreRemoved(self) -> None:
        """
        Hop-by-hop headers of the public request, and those its Connection
        header names, do not reach the local app; end-to-end ones do.
        """
        self.get(
            {
                b"connection": [b"keep-alive, X-Hop"],
                b"x-hop": [b"1"],
                b"keep-alive": [b"timeout=5"],
                b"te": [b"trailers"],
                b"trailer": [b"X-Trailer"],
                b"proxy-authorization": [b"Basic eDp5"],
                b"upgrade": [b"something"],
                b"x-end-to-end": [b"kept"],
            }
        )
        headers = self.app.requests[0].requestHeaders
        for name in (b"x-hop", b"keep-alive", b"te", b"trailer", b"proxy-authorization", b"upgrade"):
            self.assertFalse(headers.hasHeader(name), name)
        self.assertEqual(headers.getRawHeaders(b"connection"), [b"close"])
        self.assertEqual(headers.getRawHeaders(b"x-end-to-end"), [b"kept"])

    def test_responseStatusAndEndToEndHeadersAreRelayed(self) -> None:
        """
        The status, reason and end-to-end headers (repeated ones included)
        reach the public client; hop-by-hop ones and twisted.web's defaults
        do not.
        """

        def answer(request: Request) -> bytes:
            request.setResponseCode(201, b"Made Here")
            request.responseHeaders.setRawHeaders(b"set-cookie", [b"a=1", b"b=2"])
            request.setHeader(b"x-custom", b"yes")
            request.setHeader(b"keep-alive", b"timeout=5")
            request.setHeader(b"proxy-authenticate", b"Basic")
            request.setHeader(b"server", b"local")
            return b"made"

        self.app.answer = answer
        response, body = self.get({})
        self.assertEqual((response.code, response.phrase, body), (201, b"Made Here", b"made"))
        headers = response.headers
        self.assertEqual(headers.getRawHeaders(b"set-cookie"), [b"a=1", b"b=2"])
        self.assertEqual(headers.getRawHeaders(b"x-custom"), [b"yes"])
        self.assertEqual(headers.getRawHeaders(b"server"), [b"local"])
        self.assertFalse(headers.hasHeader(b"keep-alive"))
        self.assertFalse(headers.hasHeader(b"proxy-authenticate"))
        self.assertEqual(response.length, 4)

    def test_responseHeadersNamedInConnectionAreRemoved(self) -> None:
        """
        Response headers the local service's Connection header names are
        hop-by-hop too, and do not reach the public client.
        """
        self.streams.append(
            RawLocal(
                b"HTTP/1.1 200 OK\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\n"
                b"X-End: 2\r\nContent-Length: 2\r\n\r\nok",
                close=True,
            )
        )
        response, body = self.get({})
        self.assertEqual((response.code, body), (200, b"ok"))
        self.assertFalse(response.headers.hasHeader(b"x-hop"))
        self.assertEqual(response.headers.getRawHeaders(b"x-end"), [b"2"])

    def test_responseWithoutContentTypeGetsNone(self) -> None:
        """No Content-Type is made up for a response that has none."""
        def answer(request: Request) -> bytes:
            request.defaultContentType = None
            return b"untyped"

        self.app.answer = answer
        response, body = self.get({})
        self.assertFalse(response.headers.hasHeader(b"content-type"))

    def test_headResponseKeepsItsContentLength(self) -> None:
        """A HEAD response keeps the Content-Length the local app gave."""
        response, body = self.get({}, method=b"HEAD")
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(response.headers.getRawHeaders(b"content-length"), [b"5"])


class BodyTests(ForwardingTestCase):
    """Request and response bodies flow as they arrive, both ways."""

    def test_requestBodyIsPassedOnBeforeItIsComplete(self) -> None:
        """
        In a tunnel site, the first part of a request body reaches the local
        app while the public client is still sending the rest.
        """
        public = self.raw(
            b"POST /up HTTP/1.1\r\nHost: app.example\r\nContent-Length: 10\r\n\r\nhello"
        )
        self.assertEqual(self.local.chunks, [b"hello"])
        self.assertEqual(self.app.requests, [])
        public.transport.write(b"world")
        self.harness.flush()
        self.assertEqual(self.app.bodies, [b"helloworld"])
        self.assertTrue(public.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(public.received.endswith(b"hello"))

    def test_chunkedRequestBodyIsForwardedChunked(self) -> None:
        """A chunked request body is forwarded chunked, as it arrives."""
        public = self.raw(
            b"POST /up HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        self.assertEqual(self.local.chunks, [b"hello"])
        public.transport.write(b"6\r\n world\r\n0\r\n\r\n")
        self.harness.flush()
        self.assertEqual(self.app.bodies, [b"hello world"])
        self.assertEqual(
            self.app.requests[0].requestHeaders.getRawHeaders(b"transfer-encoding"), [b"chunked"]
        )

    def test_bufferedBodyIsForwardedInAnOrdinarySite(self) -> None:
        """
        In an ordinary site, which buffers request bodies, the resource
        forwards the buffered body with its length.
        """
        self.harness.site = Site(self.harness.server.resource, reactor=self.harness.clock)
        self.raw(
            b"POST /up HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        )
        self.assertEqual(self.app.bodies, [b"hello"])
        self.assertEqual(
            self.app.requests[0].requestHeaders.getRawHeaders(b"content-length"), [b"5"]
        )

    def test_continueIsSentOnceTheStreamIsThere(self) -> None:
        """
        A request that expects C{100 Continue} is told to go on only once
        the client opened the stream; the local app sees no Expect.
        """
        self.streams.append(None)
        public = self.raw(
            b"PUT /up HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertEqual(public.received, b"")
        self.client.mux.openStream(self.local.buildProtocol(None))
        self.harness.flush()
        self.assertEqual(public.received, b"HTTP/1.1 100 Continue\r\n\r\n")
        public.transport.write(b"hello")
        self.harness.flush()
        self.assertEqual(self.app.bodies, [b"hello"])
        self.assertFalse(self.app.requests[0].requestHeaders.hasHeader(b"expect"))

    def test_errorBeforeTheBodyClosesTheConnection(self) -> None:
        """
        A request refused before its body arrived gets its error at once,
        without C{100 Continue}, and the connection is closed after it.
        """
        public = self.raw(
            b"PUT /up HTTP/1.1\r\nHost: elsewhere.example\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertTrue(public.received.startswith(b"HTTP/1.1 404 Not Found\r\n"))
        self.assertIn(b"\r\nConnection: close\r\n", public.received)
        self.assertIsNotNone(public.lost)

    def test_responseFlowsWhileTheRequestBodyStillArrives(self) -> None:
        """
        A local app that answers while it reads the body (an echo) gets its
        answer relayed at once; the connection closes after it, since it
        started before the body was all in.
        """
        self.streams.append(EchoApp())
        public = self.raw(
            b"PUT /echo HTTP/1.1\r\nHost: app.example\r\nContent-Length: 10\r\n\r\nhello"
        )
        self.assertTrue(public.received.endswith(b"\r\n\r\nhello"))
        self.assertIn(b"\r\nConnection: close\r\n", public.received)
        public.transport.write(b"world")
        self.harness.flush()
        self.assertTrue(public.received.endswith(b"\r\n\r\nhelloworld"))
        self.assertIsNotNone(public.lost)

    def test_earlyAnswerIsRelayed(self) -> None:
        """
        A local app that answers without reading the whole body has its
        answer relayed, and the public connection is closed after it.
        """
        self.streams.append(
            RawLocal(b"HTTP/1.1 413 Too Large\r\nContent-Length: 4\r\n\r\nbig!", close=True)
        )
        public = self.raw(
            b"PUT /up HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100000\r\n\r\nhello"
        )
        self.assertTrue(public.received.startswith(b"HTTP/1.1 413 Too Large\r\n"))
        self.assertTrue(public.received.endswith(b"\r\n\r\nbig!"))
        self.assertIsNotNone(public.lost)

    def test_responseIsRelayedChunkByChunk(self) -> None:
        """
        A response the local app streams reaches the public client one
        chunk at a time, as it is produced.
        """
        pending: list[Request] = []
        self.app.answer = lambda request: pending.append(request) or NOT_DONE_YET
        client = self.harness.httpClient()
        responded = self.harness.request(client, b"GET", b"/events", {b"host": [b"app.example"]})
        [request] = pending
        request.write(b"event 1\n")
        self.harness.flush()
        collector = Recorder()
        self.successResultOf(responded).deliverBody(collector)
        self.assertEqual(collector.chunks, [b"event 1\n"])
        request.write(b"event 2\n")
        self.harness.flush()
        self.assertEqual(collector.chunks, [b"event 1\n", b"event 2\n"])
        self.assertIsNone(collector.lost)
        request.finish()
        self.harness.flush()
        self.assertTrue(collector.lost.check(ResponseDone))

    def test_closeDelimitedResponseIsComplete(self) -> None:
        """
        A response whose end is the end of the stream is relayed in full
        and finished properly.
        """
        self.streams.append(RawLocal(b"HTTP/1.1 200 OK\r\n\r\nall of it", close=True))
        response, body = self.get({})
        self.assertEqual((response.code, body), (200, b"all of it"))

    def test_sessionDeathMidResponseClosesThePublicConnection(self) -> None:
        """
        If the session dies while a response is relayed, the public
        connection is closed without finishing the response.
        """
        pending: list[Request] = []
        self.app.answer = lambda request: pending.append(request) or NOT_DONE_YET
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        pending[0].write(b"partial")
        self.harness.flush()
        self.client.transport.loseConnection()
        self.harness.flush()
        self.assertIn(b"partial", public.received)
        self.assertFalse(public.received.endswith(b"0\r\n\r\n"))
        self.assertIsNotNone(public.lost)

    def test_manyRequestsOnOnePublicConnection(self) -> None:
        """A public connection carries request after request, each its own stream."""
        client = self.harness.httpClient()
        for number in range(3):
            self.app.answer = lambda request, n=number: b"answer %d" % n
            response = self.successResultOf(
                self.harness.request(client, b"GET", b"/", {b"host": [b"app.example"]})
            )
            body = readBody(response)
            self.harness.flush()
            self.assertEqual(self.successResultOf(body), b"answer %d" % number)
        self.assertEqual(len(self.client.messages), 3)

    def test_slowPublicClientPausesTheStream(self) -> None:
        """
        While the public connection cannot take more, the stream delivers
        nothing and grants no window, so the local app's data waits on its
        side; it flows again once the public client reads.
        """
        size = 600 * 1024
        pending: list[Request] = []
        self.app.answer = lambda request: pending.append(request) or NOT_DONE_YET
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        pending[0].setHeader(b"content-length", b"%d" % (size + 5,))
        pending[0].write(b"start")
        self.harness.flush()
        channel = self.harness.pumps[-1].serverIO.producer
        channel.pauseProducing()
        pending[0].write(b"x" * size)
        self.harness.flush()
        streamID = max(self.client.mux.streams)
        self.assertGreater(self.client.mux.session.bufferedAmount(streamID), 0)
        self.assertLess(len(public.received), size)
        channel.resumeProducing()
        pending[0].finish()
        self.harness.flush()
        self.assertTrue(public.received.endswith(b"\r\n\r\nstart" + b"x" * size))


class FailureTests(ForwardingTestCase):
    """What happens when the public client or the stream goes away."""

    def test_publicClientLeavingWhileWaitingConsumesItsStream(self) -> None:
        """
        A public client that leaves before its stream arrives gives it up:
        the stream is closed on arrival and the next request gets its own.
        """
        late = RawLocal()
        self.streams.append(None)
        public = self.raw(b"GET /first HTTP/1.1\r\nHost: app.example\r\n\r\n")
        public.transport.loseConnection()
        self.harness.flush()
        self.client.mux.openStream(late)
        self.harness.flush()
        self.assertIsNotNone(late.lost)
        response, body = self.get({})
        self.assertEqual(body, b"hello")

    def test_publicClientLeavingMidResponseResetsTheStream(self) -> None:
        """A public client that leaves mid-response resets the stream."""
        pending: list[Request] = []
        self.app.answer = lambda request: pending.append(request) or NOT_DONE_YET
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        pending[0].write(b"partial")
        self.harness.flush()
        lost = pending[0].notifyFinish()
        public.transport.loseConnection()
        self.harness.flush()
        self.failureResultOf(lost, StreamResetError)

    def test_publicClientLeavingMidUploadResetsTheStream(self) -> None:
        """A public client that leaves mid-upload resets the stream."""
        local = RawLocal()
        self.streams.append(local)
        public = self.raw(
            b"PUT /up HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100\r\n\r\nhello"
        )
        self.assertTrue(local.received.endswith(b"\r\n\r\nhello"))
        public.transport.loseConnection()
        self.harness.flush()
        self.assertTrue(local.lost.check(StreamResetError))

    def test_streamClosedWithoutAResponseIsBadGateway(self) -> None:
        """A stream that ends without a response gets a 502 naming the host."""
        self.streams.append(RawLocal(b"not http at all\r\n\r\n", close=True))
        response, body = self.get({})
        self.assertEqual(response.code, 502)
        self.assertEqual(body, b"no valid response from the tunnel client for host app.example\n")



UPLOAD = b"PUT /up HTTP/1.1\r\nHost: app.example\r\nContent-Length: %d\r\n\r\n"


class PoliteUploader:
    """
    Sends a request body on a public connection of a harness as a TCP
    client would: 64 KiB at a time, and nothing while the server paused its
    side of the connection (the in-memory transport itself ignores pauses).
    """

    def __init__(self, test: ForwardingTestCase, size: int) -> None:
        self.test = test
        self.remaining = size
        self.public = test.raw(UPLOAD % (size,))
        self.paused = False
        server = test.harness.pumps[-1].serverIO
        server.pauseProducing = lambda: setattr(self, "paused", True)
        server.resumeProducing = lambda: setattr(self, "paused", False)

    def send(self) -> int:
        """Send until paused or done; return how much was sent."""
        sent = 0
        while self.remaining and not self.paused:
            chunk = min(64 * 1024, self.remaining)
            self.public.transport.write(b"x" * chunk)
            self.test.harness.flush()
            self.remaining -= chunk
            sent += chunk
        return sent


class ResponseTimeoutTests(ForwardingTestCase):
    """
    A local service that accepts a request and keeps it waiting (no
    response head, or none of the body read) makes it a C{504} after the
    response timeout (60 s), and the tunnel goes on serving.
    """

    def assertTimedOut(self, public: Recorder, seconds: bytes = b"60") -> None:
        head, _, body = bytes(public.received).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), head)
        self.assertEqual(
            body,
            b"the local service for host app.example did not answer within %s s\n" % (seconds,),
        )

    def test_localServiceThatNeverAnswersGets504(self) -> None:
        """
        A request the local service takes and never answers gets a 504 60 s
        after it was sent; its stream is reset, and the next request is
        served.
        """
        local = RawLocal()
        self.streams.append(local)
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.assertTrue(local.received.endswith(b"\r\n\r\n"))
        self.harness.advance(59.9)
        self.assertEqual(public.received, b"")
        self.harness.advance(0.1)
        self.assertTimedOut(public)
        self.assertTrue(local.lost.check(StreamResetError))
        response, body = self.get({})
        self.assertEqual((response.code, body), (200, b"hello"))

    def test_localServiceThatStopsReadingTheBodyGets504(self) -> None:
        """
        A local service that reads none of the request body for 60 s gets
        the request answered 504, and the public connection closed (the
        rest of the body is not read).
        """
        local = RawLocal()
        self.streams.append(local)
        uploader = PoliteUploader(self, 1024 * 1024)
        public = uploader.public
        local.transport.pauseProducing()
        uploader.send()
        self.assertTrue(uploader.paused)
        self.harness.advance(59.9)
        self.assertEqual(public.received, b"")
        self.harness.advance(0.1)
        self.assertTimedOut(public)
        self.assertIn(b"\r\nConnection: close\r\n", bytes(public.received))
        self.assertIsNotNone(public.lost)
        self.assertTrue(local.lost.check(StreamResetError))

    def test_uploadReadSlowlyIsNotCut(self) -> None:
        """
        An upload the local service reads slowly, pausing for 50 s at a
        time, takes minutes and is not cut: the timeout starts over each
        time the body moves.
        """
        local = RawLocal()
        self.streams.append(local)
        size = 1024 * 1024
        uploader = PoliteUploader(self, size)
        local.transport.pauseProducing()
        uploader.send()
        cycles = 0
        while uploader.remaining:
            self.harness.advance(50)
            local.transport.resumeProducing()
            self.harness.flush()
            local.transport.pauseProducing()
            self.assertTrue(uploader.send())
            cycles += 1
        self.assertGreater(cycles, 2)
        local.transport.resumeProducing()
        self.harness.flush()
        self.assertEqual(len(local.received.partition(b"\r\n\r\n")[2]), size)
        public = uploader.public
        self.assertEqual(public.received, b"")
        local.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.harness.flush()
        self.assertTrue(public.received.startswith(b"HTTP/1.1 204 No Content\r\n"))

    def test_slowResponseBodyIsNotCut(self) -> None:
        """
        Once its head is in, a response may take as long as it likes, as a
        stream of events does.
        """
        pending: list[Request] = []
        self.app.answer = lambda request: pending.append(request) or NOT_DONE_YET
        public = self.raw(b"GET /events HTTP/1.1\r\nHost: app.example\r\n\r\n")
        pending[0].write(b"event 1\n")
        self.harness.flush()
        for _ in range(10):
            self.harness.advance(60)
        pending[0].write(b"event 2\n")
        self.harness.flush()
        self.assertTrue(public.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertIn(b"event 2\n", public.received)
        self.assertIsNone(public.lost)


class ConfiguredResponseTimeoutTests(ForwardingTestCase):
    """The server takes its own response timeout."""

    serverArguments = {"responseTimeout": 5}

    def test_responseTimeoutIsConfigurable(self) -> None:
        """With a response timeout of 5 s, a request waits 5 s."""
        self.streams.append(RawLocal())
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.harness.advance(4.9)
        self.assertEqual(public.received, b"")
        self.harness.advance(0.1)
        ResponseTimeoutTests.assertTimedOut(self, public, b"5")


class NoResponseTimeoutTests(ForwardingTestCase):
    """
    Without a response timeout, a public request waits for the local
    service as long as the local service likes; the public connection's
    idle timeout (60 s) does not count the time the tunnel holds an upload
    back, but still cuts a public client that stops sending its body.
    """

    serverArguments = {"responseTimeout": None}

    def test_localServiceMayTakeAnHour(self) -> None:
        """A request the local service answers after an hour is answered."""
        local = RawLocal()
        self.streams.append(local)
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        for _ in range(60):
            self.harness.advance(60)
        local.transport.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        self.harness.flush()
        self.assertTrue(public.received.startswith(b"HTTP/1.1 204 No Content\r\n"))

    def test_uploadHeldBackByTheTunnelOutlivesTheIdleTimeout(self) -> None:
        """
        An upload the local service stops reading pauses the public
        connection (back-pressure), so nothing arrives on it; twisted.web's
        idle timer would cut it after 60 s. It is not cut: when the local
        service reads again, the upload completes.
        """
        local = RawLocal()
        self.streams.append(local)
        size = 1024 * 1024
        uploader = PoliteUploader(self, size)
        local.transport.pauseProducing()
        uploader.send()
        self.assertTrue(uploader.paused)
        for _ in range(10):
            self.harness.advance(30)
        self.assertIsNone(uploader.public.lost)
        local.transport.resumeProducing()
        self.harness.flush()
        uploader.send()
        self.assertEqual(len(local.received.partition(b"\r\n\r\n")[2]), size)
        self.assertIsNone(uploader.public.lost)

    def test_idleTimeoutStartsOverWhenTheUploadMovesAgain(self) -> None:
        """
        Once a held-back upload moves again, its public client has a whole
        idle timeout to send more.
        """
        local = RawLocal()
        self.streams.append(local)
        uploader = PoliteUploader(self, 1024 * 1024)
        public = uploader.public
        local.transport.pauseProducing()
        uploader.send()
        self.harness.advance(60)
        self.harness.advance(30)
        local.transport.resumeProducing()
        self.harness.flush()
        self.assertFalse(uploader.paused)
        self.harness.advance(59.9)
        self.assertIsNone(public.lost)
        self.harness.advance(0.1)
        self.assertIsNotNone(public.lost)

    def test_publicClientThatStopsSendingItsBodyIsCut(self) -> None:
        """
        A public client that stops sending its body while the local service
        reads is idle: its connection is closed after 60 s, with no answer.
        """
        local = RawLocal()
        self.streams.append(local)
        public = self.raw(
            b"PUT /up HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100\r\n\r\nhello"
        )
        self.harness.advance(59.9)
        self.assertIsNone(public.lost)
        self.harness.advance(0.1)
        self.assertIsNotNone(public.lost)
        self.assertEqual(public.received, b"")


class LimitTests(ForwardingTestCase):
    """The limit of streams a client may owe."""

    serverArguments = {"maxPendingStreams": 1}

    def test_tooManyWaitingRequestsAreUnavailable(self) -> None:
        """Requests beyond the limit of streams a client may owe get a 503."""
        self.streams.extend([None, None])
        busy = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        response, body = self.get({})
        self.assertEqual(response.code, 503)
        self.assertEqual(
            body, b"too many requests are waiting for the tunnel client for host app.example\n"
        )
        self.assertEqual(busy.received, b"")


class UpgradeTests(ForwardingTestCase):
    """
    Requests that switch protocols are written into the stream with their
    upgrade headers; once the local service answered C{101}, the connection
    is piped raw both ways. Any other answer is relayed as HTTP, and the
    public connection stays HTTP.
    """

    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: abc\r\n\r\n"
    )
    switched = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    def test_upgradeIsRelayedAndPipedRaw(self) -> None:
        """
        The upgrade request reaches the local service raw with its upgrade
        headers and X-Forwarded-*, the 101 reaches the public client byte
        for byte, then bytes flow raw both ways.
        """
        local = RawLocal(self.switched, echo=True)
        self.streams.append(local)
        public = self.raw(self.upgrade)
        self.assertEqual(self.client.messages[-1].transportProtocol, TransportProtocol.WEBSOCKET)
        head = local.received
        self.assertTrue(head.startswith(b"GET /ws HTTP/1.1\r\n"))
        self.assertIn(b"Upgrade: websocket\r\n", head)
        self.assertIn(b"Connection: keep-alive, Upgrade\r\n", head)
        self.assertIn(b"X-Forwarded-For: 203.0.113.7\r\n", head)
        self.assertTrue(head.endswith(b"\r\n\r\n"))
        self.assertEqual(public.received, self.switched)
        public.transport.write(b"\x81\x05hello")
        self.harness.flush()
        self.assertEqual(public.received, self.switched + b"\x81\x05hello")

    def test_bytesSentWithTheUpgradeRequestFollowIt(self) -> None:
        """Bytes sent right after the upgrade request reach the local service after it."""
        local = RawLocal(self.switched)
        self.streams.append(local)
        self.raw(self.upgrade + b"early bytes")
        self.assertTrue(local.received.endswith(b"\r\n\r\nearly bytes"))

    def test_otherUpgradesAreAskedForAsHTTP(self) -> None:
        """An upgrade to something else than WebSocket asks for an HTTP stream."""
        local = RawLocal(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")
        self.streams.append(local)
        public = self.raw(
            b"GET / HTTP/1.1\r\nHost: app.example\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        )
        self.assertEqual(self.client.messages[-1].transportProtocol, TransportProtocol.HTTP)
        self.assertTrue(public.received.startswith(b"HTTP/1.1 101 "))

    def test_upgradedConnectionOutlivesThePublicTimeouts(self) -> None:
        """
        An upgraded connection is not subject to the site's idle and header
        timeouts: after an hour of silence it still carries bytes.
        """
        local = RawLocal(self.switched, echo=True)
        self.streams.append(local)
        public = self.raw(self.upgrade)
        for _ in range(120):
            self.harness.advance(30)
        self.assertIsNone(public.lost)
        public.transport.write(b"\x81\x05later")
        self.harness.flush()
        self.assertEqual(public.received, self.switched + b"\x81\x05later")

    def test_closeIsPassedOn(self) -> None:
        """When the public client closes, the stream to the local service closes."""
        local = RawLocal(self.switched)
        self.streams.append(local)
        public = self.raw(self.upgrade)
        public.transport.loseConnection()
        self.harness.flush()
        self.assertIsNotNone(local.lost)

    def test_bytesSentBeforeTheSwitchWaitForIt(self) -> None:
        """
        Bytes the public client sends after its upgrade request wait until
        the local service answered 101; then they reach it, in order, and
        the local service's first bytes after its 101 head reach the
        public client after it.
        """
        local = RawLocal()
        self.streams.append(local)
        public = self.raw(self.upgrade + b"early")
        public.transport.write(b" bytes")
        self.harness.flush()
        self.assertTrue(local.received.endswith(FORWARDED))
        self.assertEqual(public.received, b"")
        local.transport.write(self.switched + b"server first")
        self.harness.flush()
        self.assertEqual(public.received, self.switched + b"server first")
        self.assertTrue(local.received.endswith(FORWARDED + b"early bytes"))
        public.transport.write(b" later")
        local.transport.write(b" and more")
        self.harness.flush()
        self.assertTrue(local.received.endswith(FORWARDED + b"early bytes later"))
        self.assertEqual(public.received, self.switched + b"server first and more")

    def test_switchingHeadSplitAcrossReads(self) -> None:
        """A 101 head that arrives a byte at a time is relayed whole, then piped."""
        local = RawLocal()
        self.streams.append(local)
        public = self.raw(self.upgrade)
        for index in range(len(self.switched)):
            local.transport.write(self.switched[index : index + 1])
            self.harness.flush()
        local.transport.write(b"\x81\x02hi")
        self.harness.flush()
        self.assertEqual(public.received, self.switched + b"\x81\x02hi")

    def test_refusedUpgradeStaysHTTP(self) -> None:
        """
        An upgrade the local service refuses (200) is relayed as an HTTP
        response; the request the public client sent right after it on the
        same connection is then read as HTTP: forwarded with its own control
        message and stream, its X-Forwarded-For appended to, not written
        into the refused upgrade's stream.
        """
        refusing = RawLocal(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno", close=True)
        self.streams.append(refusing)
        public = self.raw(
            self.upgrade
            + b"GET /next HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 192.0.2.66\r\n\r\n"
        )
        self.assertTrue(refusing.received.endswith(FORWARDED))
        self.assertNotIn(b"/next", refusing.received)
        self.assertEqual(
            [message.transportProtocol for message in self.client.messages],
            [TransportProtocol.WEBSOCKET, TransportProtocol.HTTP],
        )
        [request] = self.app.requests
        self.assertEqual(request.uri, b"/next")
        self.assertEqual(
            request.requestHeaders.getRawHeaders(b"x-forwarded-for"),
            [b"192.0.2.66, 203.0.113.7"],
        )
        first, _, second = bytes(public.received).partition(b"\r\n\r\nno")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertNotIn(b"Upgrade", first)
        self.assertTrue(second.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertTrue(second.endswith(b"\r\n\r\nhello"))
        self.assertIsNone(public.lost)

    def test_requestAfterARefusedUpgradeIsReadAsHTTP(self) -> None:
        """
        After a refused upgrade (here 426, with a chunked body), a request
        sent later on the same connection is parsed and routed as any other:
        one for the control path is the control request, not forwarded.
        """
        refusing = RawLocal(
            b"HTTP/1.1 426 Upgrade Required\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nnope\r\n0\r\n\r\n",
            close=True,
        )
        self.streams.append(refusing)
        public = self.raw(self.upgrade)
        self.assertTrue(public.received.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"))
        self.assertTrue(public.received.endswith(b"4\r\nnope\r\n0\r\n\r\n"))
        public.chunks.clear()
        public.transport.write(b"GET /_controlPath/ HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.harness.flush()
        self.assertTrue(public.received.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n"))
        public.chunks.clear()
        public.transport.write(b"GET /after HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.harness.flush()
        self.assertEqual([request.uri for request in self.app.requests], [b"/after"])
        self.assertTrue(public.received.endswith(b"\r\n\r\nhello"))
        self.assertEqual(len(self.client.messages), 2)

    def test_unansweredUpgradeTimesOut(self) -> None:
        """
        An upgrade the local service never answers gets a 504 after the
        response timeout, and the connection stays HTTP.
        """
        local = RawLocal()
        self.streams.append(local)
        public = self.raw(self.upgrade)
        self.harness.advance(59.9)
        self.assertEqual(public.received, b"")
        self.harness.advance(0.1)
        ResponseTimeoutTests.assertTimedOut(self, public)
        self.assertTrue(local.lost.check(StreamResetError))
        self.assertIsNone(public.lost)

    def test_malformedAnswerToAnUpgradeIsBadGateway(self) -> None:
        """An answer to an upgrade that is not HTTP gets a 502, nothing piped."""
        local = RawLocal(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.streams.append(local)
        public = self.raw(self.upgrade)
        self.assertTrue(public.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertNotIn(b"SSH", public.received)
        public.transport.write(b"stats\r\n")
        self.harness.flush()
        self.assertNotIn(b"stats", local.received)


#: How the head of a forwarded upgrade ends.
FORWARDED = (
    b"X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\n"
    b"X-Forwarded-Host: app.example\r\n\r\n"
)


class ResponseCheckTests(ForwardingTestCase):
    """What the local service answers is checked before it reaches the public."""

    def test_controlCharactersInTheReasonAreReplaced(self) -> None:
        """
        A reason phrase with a bare CR reaches the public client as the
        standard phrase of its code: nothing it held becomes a header.
        """
        self.streams.append(
            RawLocal(
                b"HTTP/1.1 200 OK\rSet-Cookie: stolen=1\r\nContent-Length: 2\r\n\r\nok",
                close=True,
            )
        )
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.assertTrue(public.received.startswith(b"HTTP/1.1 200 OK\r\n"))
        self.assertNotIn(b"stolen", public.received)
        self.assertTrue(public.received.endswith(b"\r\n\r\nok"))

    def test_ambiguousFramingIsBadGateway(self) -> None:
        """
        A response with conflicting Content-Lengths, a malformed one, or
        both Content-Length and Transfer-Encoding gets the public client a
        502 (none of its head relayed), and the public connection goes on.
        """
        for framing in (
            b"Content-Length: 2\r\nContent-Length: 3\r\n",
            b"Content-Length: two\r\n",
            b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        ):
            self.streams.append(
                RawLocal(b"HTTP/1.1 200 OK\r\nX-Local: 1\r\n" + framing + b"\r\nok", close=True)
            )
            client = self.harness.httpClient()
            response = self.successResultOf(
                self.harness.request(client, b"GET", b"/", {b"host": [b"app.example"]})
            )
            body = readBody(response)
            self.harness.flush()
            self.assertEqual(response.code, 502, framing)
            self.assertFalse(response.headers.hasHeader(b"x-local"))
            self.assertEqual(
                self.successResultOf(body),
                b"no valid response from the tunnel client for host app.example\n",
            )
            response = self.successResultOf(
                self.harness.request(client, b"GET", b"/", {b"host": [b"app.example"]})
            )
            body = readBody(response)
            self.harness.flush()
            self.assertEqual(self.successResultOf(body), b"hello")

    def test_repeatedContentLengthIsRelayedOnce(self) -> None:
        """Content-Lengths that agree reach the public client as one."""
        self.streams.append(
            RawLocal(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok",
                close=True,
            )
        )
        public = self.raw(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        head, _, body = bytes(public.received).partition(b"\r\n\r\n")
        self.assertEqual(body, b"ok")
        self.assertEqual(head.lower().count(b"content-length"), 1)
        self.assertIn(b"\r\nContent-Length: 2", head)
