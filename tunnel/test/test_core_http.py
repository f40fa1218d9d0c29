"""
Tests for L{tunnel.core.http}: the response and request parsers, fed in
memory, the response head reader, and the rest of the grammar: token
lists, the Host header, error responses, chunked encoding.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.core import http
from tunnel.core.http import (
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    ChunkedEncoder,
    Host,
    IRequestReceiver,
    IResponseReceiver,
    RequestError,
    RequestHead,
    RequestParser,
    ResponseError,
    ResponseHead,
    ResponseHeadReader,
    ResponseParser,
    contentLength,
    errorResponse,
    isValidHost,
    normaliseHost,
    parseHost,
    splitList,
    splitTokens,
)


@implementer(IResponseReceiver)
class Receiver:
    """Records what a parser tells."""

    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.body = b""
        self.pieces = 0
        self.completed = 0

    def headReceived(self, head: ResponseHead) -> None:
        self.heads.append(head)

    def bodyReceived(self, data: bytes) -> None:
        assert data, "empty body data"
        self.body += data
        self.pieces += 1

    def responseComplete(self) -> None:
        self.completed += 1


def parse(*pieces: bytes, method: bytes = b"GET") -> tuple[ResponseParser, Receiver]:
    receiver = Receiver()
    parser = ResponseParser(receiver, method)
    for piece in pieces:
        parser.dataReceived(piece)
    return parser, receiver


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
)


class HeadTests(SynchronousTestCase):
    """The head: status, reason, headers."""

    def test_statusReasonAndHeadersInOrder(self) -> None:
        """The head keeps the code, the reason and every header as sent."""
        _, receiver = parse(
            b"HTTP/1.1 404 Not Found\r\nX-A: 1\r\nset-cookie: a\r\nSet-Cookie:  b \r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        [head] = receiver.heads
        self.assertEqual((head.code, head.phrase), (404, b"Not Found"))
        self.assertEqual(
            head.headers,
            [(b"X-A", b"1"), (b"set-cookie", b"a"), (b"Set-Cookie", b"b"),
             (b"Content-Length", b"0")],
        )
        self.assertEqual(head.values(b"set-cookie"), [b"a", b"b"])
        self.assertEqual(receiver.completed, 1)

    def test_emptyReasonAndBareLineFeeds(self) -> None:
        """A status line without a reason, and lines ended by LF alone, are read."""
        _, receiver = parse(b"HTTP/1.0 204\nA: b\n\n")
        [head] = receiver.heads
        self.assertEqual((head.code, head.phrase, head.headers), (204, b"", [(b"A", b"b")]))

    def test_continuationLinesAreFolded(self) -> None:
        """An obsolete continuation line joins the header before it."""
        _, receiver = parse(b"HTTP/1.1 200 OK\r\nX: a\r\n  b\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(receiver.heads[0].values(b"x"), [b"a b"])

    def test_informationalHeadsAreSkipped(self) -> None:
        """100 and 103 heads are skipped; the final head is reported."""
        _, receiver = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        )
        self.assertEqual([head.code for head in receiver.heads], [200])
        self.assertEqual(receiver.body, b"ok")

    def test_malformedHeadsAreErrors(self) -> None:
        """Anything that is not a response head raises ResponseError."""
        for head in (
            b"not http at all\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded first\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ):
            self.assertRaises(ResponseError, parse, head)

    def test_controlCharactersInTheReasonAreReplaced(self) -> None:
        """
        A reason phrase holding a bare CR or another control character is
        replaced with the standard phrase of its code (none for a code
        without one); tabs and non-ASCII bytes are kept.
        """
        for line, phrase in (
            (b"HTTP/1.1 200 OK\rSet-Cookie: evil=1", b"OK"),
            (b"HTTP/1.1 404 Gone\x00away", b"Not Found"),
            (b"HTTP/1.1 502 \x1b[31mred", b"Bad Gateway"),
            (b"HTTP/1.1 299 odd\x7f", b""),
            (b"HTTP/1.1 200 All\tfine \xc3\xa9", b"All\tfine \xc3\xa9"),
        ):
            _, receiver = parse(line + b"\r\nContent-Length: 0\r\n\r\n")
            self.assertEqual(receiver.heads[0].phrase, phrase, line)

    def test_carriageReturnsAndNulsInValuesBecomeSpaces(self) -> None:
        """CR and NUL in a field value are replaced with spaces (RFC 9110, 5.5)."""
        _, receiver = parse(
            b"HTTP/1.1 200 OK\r\nX-A: one\rX-B: two\r\nX-C: a\x00b\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        head = receiver.heads[0]
        self.assertEqual(head.values(b"x-a"), [b"one X-B: two"])
        self.assertEqual(head.values(b"x-c"), [b"a b"])

    def test_ambiguousFramingIsAnErrorBeforeTheHead(self) -> None:
        """
        Content-Lengths that disagree or are malformed, a Content-Length
        with a Transfer-Encoding, or a transfer coding other than chunked
        raise ResponseError before the head is reported, whatever the
        method or status: the head must not be relayed.
        """
        for method, framing in (
            (b"GET", b"Content-Length: 1\r\nContent-Length: 2\r\n"),
            (b"GET", b"Content-Length: 1, 2\r\n"),
            (b"GET", b"Content-Length: -1\r\n"),
            (b"GET", b"Content-Length: 0x10\r\n"),
            (b"GET", b"Content-Length: \r\n"),
            (b"GET", b"Content-Length: " + b"9" * 5000 + b"\r\n"),
            (b"GET", b"Content-Length: 100\r\nTransfer-Encoding: chunked\r\n"),
            (b"GET", b"Transfer-Encoding: gzip, chunked\r\n"),
            (b"GET", b"Transfer-Encoding: chunked, identity\r\n"),
            (b"HEAD", b"Content-Length: 1\r\nContent-Length: 2\r\n"),
        ):
            receiver = Receiver()
            parser = ResponseParser(receiver, method)
            with self.assertRaises(ResponseError, msg=framing[:40]):
                parser.dataReceived(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n")
            self.assertEqual((receiver.heads, parser.head), ([], None))

    def test_repeatedEqualContentLengthsAreOne(self) -> None:
        """Content-Lengths that agree give that length."""
        _, receiver = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok"
        )
        self.assertEqual((receiver.body, receiver.completed), (b"ok", 1))

    def test_headIsBounded(self) -> None:
        """A head that grows past 64 KiB without ending raises, holding no more."""
        parser, _ = parse(b"HTTP/1.1 200 OK\r\n")
        with self.assertRaises(ResponseError):
            for _ in range(MAX_HEAD_BYTES // 1024 + 2):
                parser.dataReceived(b"X: " + b"a" * 1021 + b"\r\n")


class UpgradeTests(SynchronousTestCase):
    """
    A parser for a request that asked to switch protocols takes a C{101}
    as the final head, and keeps what follows for the new protocol.
    """

    def test_switchingHeadIsFinal(self) -> None:
        """
        The 101 head is reported (after any informational head), the
        parser is switched, and the bytes after the head, however they
        came, are the new protocol's, in order.
        """
        receiver = Receiver()
        parser = ResponseParser(receiver, b"GET", upgrade=True)
        parser.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching")
        parser.dataReceived(b" Protocols\r\nUpgrade: websocket\r\n\r\nfirst ")
        parser.dataReceived(b"frames")
        [head] = receiver.heads
        self.assertEqual((head.code, head.values(b"upgrade")), (101, [b"websocket"]))
        self.assertTrue(parser.switched)
        self.assertFalse(parser.complete)
        self.assertEqual((receiver.body, receiver.completed), (b"", 0))
        self.assertEqual(parser.unparsed(), b"first frames")
        self.assertEqual(parser.unparsed(), b"")
        parser.connectionLost()

    def test_refusalIsAnOrdinaryResponse(self) -> None:
        """Any other final status is read as an ordinary response."""
        receiver = Receiver()
        parser = ResponseParser(receiver, b"GET", upgrade=True)
        parser.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nnoGET /")
        self.assertEqual((receiver.body, receiver.completed), (b"no", 1))
        self.assertFalse(parser.switched)

    def test_switchingAnsweringAPlainRequestIsAnError(self) -> None:
        """Without an upgrade asked for, a 101 is an error."""
        self.assertRaises(ResponseError, parse, b"HTTP/1.1 101 Switching Protocols\r\n\r\n")


class CountingPattern:
    """
    A compiled pattern that counts the bytes its searches look at (from
    where each starts to the end of its match, or of the buffer), and fails
    as soon as they pass a budget.
    """

    def __init__(self, pattern: re.Pattern[bytes], budget: int) -> None:
        self.pattern = pattern
        self.budget = budget
        self.scanned = 0
        self.searches = 0

    def search(self, string: Any, pos: int = 0) -> re.Match[bytes] | None:
        match = self.pattern.search(string, pos)
        self.searches += 1
        self.scanned += (len(string) if match is None else match.end()) - pos
        if self.scanned > self.budget:
            raise AssertionError(f"searched {self.scanned} bytes, more than {self.budget}")
        return match


class SearchCounting(SynchronousTestCase):
    """Counts the searches of the parsers."""

    def countSearches(self, budget: int) -> tuple[CountingPattern, CountingPattern]:
        """Count the searches for the end of a head and of a line."""
        head = CountingPattern(http._END_OF_HEAD, budget)
        line = CountingPattern(http._END_OF_LINE, budget)
        self.patch(http, "_END_OF_HEAD", head)
        self.patch(http, "_END_OF_LINE", line)
        return head, line


class LinearWorkTests(SearchCounting):
    """
    However a response is split, down to one byte per read, every byte is
    searched a bounded number of times: the work is linear in its size.
    """

    def feedByteByByte(self, parser: ResponseParser, data: bytes) -> None:
        for index in range(len(data)):
            parser.dataReceived(data[index : index + 1])

    def test_maximalHeadByteByByte(self) -> None:
        """
        A head of the largest size allowed, sent one byte per read, is
        searched at most four bytes per byte (once, plus the three an end
        of head may start before a new byte), and is read.
        """
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Filler: "
        head = start + b"f" * (MAX_HEAD_BYTES - len(start)) + b"\r\n\r\n"
        size = len(head)
        searches, _ = self.countSearches(4 * size)
        receiver = Receiver()
        parser = ResponseParser(receiver, b"GET")
        self.feedByteByByte(parser, head)
        self.assertEqual((len(receiver.heads), receiver.completed), (1, 1))
        self.assertEqual(searches.searches, size)
        self.assertLessEqual(searches.scanned, 4 * size)

    def test_overlongHeadByteByByteIsRefusedInLinearWork(self) -> None:
        """
        A head that never ends, sent one byte per read, is refused with its
        clear error once past the limit, having cost linear work.
        """
        data = b"HTTP/1.1 200 OK\r\nX: " + b"a" * MAX_HEAD_BYTES
        searches, _ = self.countSearches(4 * len(data))
        parser = ResponseParser(Receiver(), b"GET")
        with self.assertRaises(ResponseError) as caught:
            self.feedByteByByte(parser, data)
        self.assertEqual(
            str(caught.exception), f"response head longer than {MAX_HEAD_BYTES} bytes"
        )
        self.assertLessEqual(searches.scanned, 4 * len(data))

    def test_chunkFramingByteByByte(self) -> None:
        """
        Chunk-size lines as long as allowed, chunk data and its terminator,
        and trailers up to their limit, sent one byte per read, cost one
        search per byte over at most the new byte.
        """
        chunk = b"1;" + b"e" * (MAX_LINE_BYTES - 4) + b"\r\nx\r\n"
        trailer = b"X-T: " + b"t" * (MAX_LINE_BYTES - 7) + b"\r\n"
        body = chunk * 16 + b"0\r\n" + trailer * (MAX_HEAD_BYTES // len(trailer)) + b"\r\n"
        _, searches = self.countSearches(2 * len(body))
        receiver = Receiver()
        parser = ResponseParser(receiver, b"GET")
        parser.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.feedByteByByte(parser, body)
        self.assertEqual((receiver.body, receiver.completed), (b"x" * 16, 1))
        self.assertLessEqual(searches.scanned, len(body))

    def test_manyShortHeadsAndChunksInOneRead(self) -> None:
        """
        Many informational heads and many small chunks in one read are
        each searched from where the one before ended, not from the start.
        """
        data = (
            b"HTTP/1.1 100 Continue\r\n\r\n" * 1000
            + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nx\r\n" * 5000
            + b"0\r\n\r\n"
        )
        head, line = self.countSearches(10 * len(data))
        _, receiver = parse(data)
        self.assertEqual((len(receiver.body), receiver.completed), (5000, 1))
        self.assertLessEqual(head.scanned + line.scanned, 2 * len(data))


class BodyTests(SynchronousTestCase):
    """The framing of the body."""

    def test_contentLengthBodyEndsAtItsLength(self) -> None:
        """A body of Content-Length bytes completes there; what follows is ignored."""
        parser, receiver = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", b"56789extra"
        )
        self.assertEqual((receiver.body, receiver.completed), (b"0123456789", 1))
        self.assertTrue(parser.complete)
        parser.dataReceived(b"more")
        self.assertEqual(receiver.body, b"0123456789")

    def test_longBodyIsPassedOnAsItComes(self) -> None:
        """Each piece of a long body is passed on as one piece."""
        parser, receiver = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n")
        for _ in range(3):
            parser.dataReceived(b"x" * 100000)
        self.assertEqual((len(receiver.body), receiver.pieces, receiver.completed), (300000, 3, 1))

    def test_chunkedBodyIsDecoded(self) -> None:
        """A chunked body arrives without its framing; trailers are dropped."""
        parser, receiver = parse(CHUNKED)
        self.assertEqual((receiver.body, receiver.completed), (b"hello, world", 1))
        self.assertEqual(receiver.heads[0].values(b"transfer-encoding"), [b"chunked"])


    def test_bodyWithoutLengthEndsWithTheStream(self) -> None:
        """Without Content-Length or chunks, the body runs to the end of the stream."""
        parser, receiver = parse(b"HTTP/1.1 200 OK\r\n\r\nsome", b" more")
        self.assertTrue(parser.delimitedByClose)
        self.assertEqual((receiver.body, receiver.completed), (b"some more", 0))
        parser.connectionLost()
        self.assertEqual(receiver.completed, 1)
        self.assertTrue(parser.complete)

    def test_bodilessResponses(self) -> None:
        """HEAD responses, 204 and 304 have no body, whatever their headers say."""
        for method, head in (
            (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"),
            (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
            (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
        ):
            parser, receiver = parse(head, method=method)
            self.assertEqual((receiver.body, receiver.completed), (b"", 1))

    def test_cutResponsesAreErrors(self) -> None:
        """A stream that ends before the head, or before a framed body ends, raises."""
        for data in (
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ):
            parser, receiver = parse(data)
            self.assertRaises(ResponseError, parser.connectionLost)
            self.assertEqual(receiver.completed, 0)

    def test_malformedChunksAreErrors(self) -> None:
        """Bad chunk sizes, chunks longer than said, endless size lines raise."""
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for body in (b"zz\r\n", b"2\r\nabc\r\n", b"1" * (MAX_LINE_BYTES + 2)):
            self.assertRaises(ResponseError, parse, head + body)

    @given(st.lists(st.integers(min_value=0, max_value=len(CHUNKED)), max_size=10))
    def test_anySplitReadsTheSame(self, cuts: list[int]) -> None:
        """However the bytes are split, the same head and body come out."""
        points = sorted(set(cuts))
        pieces = [CHUNKED[a:b] for a, b in zip([0, *points], [*points, len(CHUNKED)])]
        _, receiver = parse(*pieces)
        self.assertEqual((receiver.heads[0].code, receiver.body, receiver.completed),
                         (200, b"hello, world", 1))

    @given(st.binary(max_size=300))
    def test_arbitraryBytesRaiseOnlyResponseError(self, data: bytes) -> None:
        """Arbitrary bytes after a valid status line raise nothing but ResponseError."""
        try:
            parser, _ = parse(b"HTTP/1.1 200 OK\r\n", data)
            parser.connectionLost()
        except ResponseError:
            pass


class ResponseHeadReaderTests(SynchronousTestCase):
    """L{ResponseHeadReader} reads a head and keeps what follows it."""

    def test_headAndTheBytesAfterIt(self) -> None:
        """
        The first empty line ends the head, whatever the line ends; the
        status, reason and Content-Length are read, and the bytes after the
        head are kept.
        """
        head, rest = ResponseHeadReader().feed(
            b"HTTP/1.1 403 Forbidden\nContent-Length: 5\r\n\nbody!"
        )
        self.assertEqual((head.code, head.phrase, contentLength(head)), (403, b"Forbidden", 5))
        self.assertEqual(rest, b"body!")
        self.assertIsNone(ResponseHeadReader().feed(b"HTTP/1.1 200 OK\r\n"))
        head, rest = ResponseHeadReader().feed(b"HTTP/1.0 200\n\n\x00")
        self.assertEqual((head.code, head.phrase, rest), (200, b"", b"\x00"))

    def test_headIsBounded(self) -> None:
        """A head longer than the reader's bound raises, however it arrives."""
        reader = ResponseHeadReader(maxSize=100)
        with self.assertRaises(ResponseError) as caught:
            for _ in range(110):
                reader.feed(b"x")
        self.assertEqual(str(caught.exception), "response head longer than 100 bytes")
        self.assertRaises(
            ResponseError,
            ResponseHeadReader(maxSize=100).feed,
            b"HTTP/1.1 200 OK\r\nX: " + b"y" * 100 + b"\r\n\r\n",
        )

    def test_malformedHeadIsAnError(self) -> None:
        """A complete head that is not a response head raises ResponseError."""
        self.assertRaises(ResponseError, ResponseHeadReader().feed, b"SSH-2.0-x\r\n\r\n")


@implementer(IRequestReceiver)
class RequestRecorder:
    """Records what a request parser tells, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    @property
    def heads(self) -> list[RequestHead]:
        return [event[1] for event in self.events if event[0] == "head"]

    @property
    def body(self) -> bytes:
        return b"".join(event[1] for event in self.events if event[0] == "body")

    @property
    def completed(self) -> int:
        return sum(1 for event in self.events if event[0] == "complete")

    def headReceived(self, head: RequestHead) -> None:
        self.events.append(("head", head))

    def bodyReceived(self, data: bytes) -> None:
        assert data, "empty body data"
        self.events.append(("body", data))

    def requestComplete(self) -> None:
        self.events.append(("complete",))


def parseRequest(*pieces: bytes) -> tuple[RequestParser, RequestRecorder]:
    receiver = RequestRecorder()
    parser = RequestParser(receiver)
    for piece in pieces:
        parser.dataReceived(piece)
    return parser, receiver


def byteByByte(data: bytes) -> list[bytes]:
    """C{data} as one-byte pieces."""
    return [data[index : index + 1] for index in range(len(data))]


CHUNKED_REQUEST = (
    b"POST /upload?x=1 HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
)


class RequestHeadTests(SynchronousTestCase):
    """L{RequestParser} reads a request head strictly."""

    def test_requestLineAndHeadersInOrder(self) -> None:
        """The head keeps the method, target, version and every header as sent."""
        parser, receiver = parseRequest(
            b"GET /a%20b?c HTTP/1.1\r\nHost: app.example\r\nx-a:  1 \r\nX-A: 2\r\n\r\n"
        )
        [head] = receiver.heads
        self.assertEqual(
            head,
            RequestHead(
                b"GET",
                b"/a%20b?c",
                b"HTTP/1.1",
                [(b"Host", b"app.example"), (b"x-a", b"1"), (b"X-A", b"2")],
            ),
        )
        self.assertEqual(head.values(b"x-a"), [b"1", b"2"])
        self.assertIs(parser.head, head)

    def test_bareLineFeedsAreRead(self) -> None:
        """Lines ended by LF alone are read."""
        _, receiver = parseRequest(b"OPTIONS * HTTP/1.0\nA: b\n\n")
        [head] = receiver.heads
        self.assertEqual(
            (head.method, head.target, head.version, head.headers),
            (b"OPTIONS", b"*", b"HTTP/1.0", [(b"A", b"b")]),
        )

    def test_malformedHeadsAreErrors(self) -> None:
        """Anything that is not a request head raises RequestError, nothing reported."""
        for data in (
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /a\x00b HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        ):
            receiver = RequestRecorder()
            with self.assertRaises(RequestError, msg=data):
                RequestParser(receiver).dataReceived(data)
            self.assertEqual(receiver.events, [], data)

    def test_obsoleteLineFoldingIsAnError(self) -> None:
        """
        A continuation line is refused (RFC 9112, 5.2), as is white space
        before the first header (RFC 9112, 2.2).
        """
        for data in (
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
            b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        ):
            self.assertRaises(RequestError, parseRequest, data)

    def test_bareCarriageReturnIsAnError(self) -> None:
        """A CR that does not end a line, anywhere in the head, is refused."""
        for data in (
            b"GET /\r HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n",
            b"GET / HTTP/1.1\r\nX\r: a\r\n\r\n",
        ):
            self.assertRaises(RequestError, parseRequest, data)

    def test_controlCharactersInValuesAreErrors(self) -> None:
        """NUL, ESC, DEL in a field value are refused; a tab is kept."""
        for value in (b"a\x00b", b"\x1b[31m", b"a\x7f"):
            self.assertRaises(
                RequestError, parseRequest, b"GET / HTTP/1.1\r\nX: " + value + b"\r\n\r\n"
            )
        _, receiver = parseRequest(b"GET / HTTP/1.1\r\nX: a\tb\r\n\r\n")
        self.assertEqual(receiver.heads[0].values(b"x"), [b"a\tb"])

    def test_headIsBounded(self) -> None:
        """A head that grows past 64 KiB without ending raises."""
        parser, _ = parseRequest(b"GET / HTTP/1.1\r\n")
        with self.assertRaises(RequestError) as caught:
            for _ in range(MAX_HEAD_BYTES // 1024 + 2):
                parser.dataReceived(b"X: " + b"a" * 1021 + b"\r\n")
        self.assertEqual(
            str(caught.exception), f"request head longer than {MAX_HEAD_BYTES} bytes"
        )

    def test_upgrade(self) -> None:
        """
        A request asks for an upgrade with an Upgrade header and the
        C{upgrade} token in Connection, not with either alone.
        """
        for headers, upgrade in (
            (b"Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n", True),
            (b"Upgrade: websocket\r\nConnection: x\r\nConnection: UPGRADE\r\n", True),
            (b"Upgrade: websocket\r\n", False),
            (b"Connection: upgrade\r\n", False),
            (b"", False),
        ):
            _, receiver = parseRequest(b"GET /ws HTTP/1.1\r\n" + headers + b"\r\n")
            self.assertEqual(receiver.heads[0].upgrade, upgrade, headers)

    def test_wantsClose(self) -> None:
        """
        The connection ends with the exchange on C{Connection: close}, and
        for HTTP/1.0 unless it says C{Connection: keep-alive}.
        """
        for version, headers, close in (
            (b"HTTP/1.1", b"", False),
            (b"HTTP/1.1", b"Connection: Close\r\n", True),
            (b"HTTP/1.1", b"Connection: te, close\r\n", True),
            (b"HTTP/1.1", b"Connection: keep-alive\r\n", False),
            (b"HTTP/1.0", b"", True),
            (b"HTTP/1.0", b"Connection: Keep-Alive\r\n", False),
            (b"HTTP/1.0", b"Connection: keep-alive, close\r\n", True),
        ):
            _, receiver = parseRequest(b"GET / " + version + b"\r\n" + headers + b"\r\n")
            self.assertEqual(receiver.heads[0].wantsClose, close, (version, headers))


class RequestBodyTests(SynchronousTestCase):
    """L{RequestParser} frames the body, and leaves what follows the request."""

    def test_withoutFramingThereIsNoBody(self) -> None:
        """
        A request without Content-Length or Transfer-Encoding completes
        with its head; the bytes after it, then and later, are left
        unparsed, once.
        """
        parser, receiver = parseRequest(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next")
        self.assertEqual([event[0] for event in receiver.events], ["head", "complete"])
        self.assertTrue(parser.complete)
        parser.dataReceived(b" HTTP/1.1\r\n")
        self.assertEqual(parser.unparsed(), b"GET /next HTTP/1.1\r\n")
        self.assertEqual(parser.unparsed(), b"")
        self.assertEqual(receiver.completed, 1)

    def test_contentLengthBodyEndsAtItsLength(self) -> None:
        """A body of Content-Length bytes completes there; what follows is unparsed."""
        parser, receiver = parseRequest(
            b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234", b"56789extra"
        )
        self.assertEqual((receiver.body, receiver.completed), (b"0123456789", 1))
        self.assertEqual(parser.unparsed(), b"extra")
        self.assertEqual(receiver.events[-1], ("complete",))

    def test_zeroContentLengthCompletesWithTheHead(self) -> None:
        """C{Content-Length: 0} is a request without body."""
        parser, receiver = parseRequest(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nx")
        self.assertEqual((receiver.body, receiver.completed, parser.unparsed()), (b"", 1, b"x"))

    def test_repeatedEqualContentLengthsAreOne(self) -> None:
        """Content-Lengths that agree give that length."""
        _, receiver = parseRequest(
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok"
        )
        self.assertEqual((receiver.body, receiver.completed), (b"ok", 1))

    def test_longBodyIsPassedOnAsItComes(self) -> None:
        """Each piece of a long body is passed on as one piece."""
        parser, receiver = parseRequest(b"PUT / HTTP/1.1\r\nContent-Length: 300000\r\n\r\n")
        for _ in range(3):
            parser.dataReceived(b"x" * 100000)
        pieces = [event for event in receiver.events if event[0] == "body"]
        self.assertEqual((len(receiver.body), len(pieces), receiver.completed), (300000, 3, 1))

    def test_chunkedBodyIsDecoded(self) -> None:
        """
        A chunked body arrives without its framing; chunk extensions and
        trailers are dropped; what follows the last chunk is unparsed.
        """
        parser, receiver = parseRequest(CHUNKED_REQUEST + b"GET / HTTP/1.1\r\n")
        self.assertEqual((receiver.body, receiver.completed), (b"hello, world", 1))
        self.assertEqual(parser.unparsed(), b"GET / HTTP/1.1\r\n")

    def test_finalChunkedAfterOtherCodings(self) -> None:
        """
        Codings before a final C{chunked} are the body's (left in the
        head); the chunked framing is removed.
        """
        _, receiver = parseRequest(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n"
            b"2\r\n\x1f\x8b\r\n0\r\n\r\n"
        )
        self.assertEqual(receiver.heads[0].tokens(b"transfer-encoding"), [b"gzip", b"chunked"])
        self.assertEqual((receiver.body, receiver.completed), (b"\x1f\x8b", 1))

    def test_smugglingFramingIsAnErrorBeforeTheHead(self) -> None:
        """
        Every framing two readers could take differently raises
        RequestError before the head is reported: a Content-Length with a
        Transfer-Encoding, a final coding other than chunked, chunked
        twice, Transfer-Encoding in HTTP/1.0, Content-Lengths that
        disagree or are malformed.
        """
        for version, framing in (
            (b"HTTP/1.1", b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            (b"HTTP/1.1", b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"),
            (b"HTTP/1.1", b"Transfer-Encoding: chunked, identity\r\n"),
            (b"HTTP/1.1", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"),
            (b"HTTP/1.1", b"Transfer-Encoding: identity\r\n"),
            (b"HTTP/1.1", b"Transfer-Encoding: xchunked\r\n"),
            (b"HTTP/1.1", b"Transfer-Encoding: chunked, chunked\r\n"),
            (b"HTTP/1.1", b"Transfer-Encoding: \r\n"),
            (b"HTTP/1.0", b"Transfer-Encoding: chunked\r\n"),
            (b"HTTP/1.1", b"Content-Length: 1\r\nContent-Length: 2\r\n"),
            (b"HTTP/1.1", b"Content-Length: 1, 2\r\n"),
            (b"HTTP/1.1", b"Content-Length: 1,\r\n"),
            (b"HTTP/1.1", b"Content-Length: -1\r\n"),
            (b"HTTP/1.1", b"Content-Length: +1\r\n"),
            (b"HTTP/1.1", b"Content-Length: 0x10\r\n"),
            (b"HTTP/1.1", b"Content-Length: \r\n"),
            (b"HTTP/1.1", b"Content-Length: " + b"9" * 5000 + b"\r\n"),
        ):
            receiver = RequestRecorder()
            parser = RequestParser(receiver)
            with self.assertRaises(RequestError, msg=framing[:60]):
                parser.dataReceived(b"POST / " + version + b"\r\n" + framing + b"\r\n0\r\n\r\n")
            self.assertEqual((receiver.events, parser.head), ([], None), framing[:60])

    def test_malformedChunksAreErrors(self) -> None:
        """
        Bad chunk sizes, chunks longer than said, endless size lines, and
        bare CRs in the framing raise.
        """
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        for body in (
            b"zz\r\n",
            b"-1\r\n",
            b"0x5\r\n",
            b"2\r\nabc\r\n",
            b"1" * (MAX_LINE_BYTES + 2),
            b"5\r\r\nhello\r\n",
            b"5\rX\r\nhello\r\n",
            b"5\r\nhello\r\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ):
            self.assertRaises(RequestError, parseRequest, head + body)

    def test_trailersAreBounded(self) -> None:
        """Trailers past 64 KiB raise."""
        parser, _ = parseRequest(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        )
        trailer = b"X: " + b"t" * (MAX_LINE_BYTES - 3) + b"\r\n"
        with self.assertRaises(RequestError):
            for _ in range(MAX_HEAD_BYTES // MAX_LINE_BYTES + 2):
                parser.dataReceived(trailer)

    def test_cutRequestsAreErrors(self) -> None:
        """A stream that ends before the request is complete raises."""
        for data, message in (
            (b"", "the stream ended before a request head"),
            (b"GET / HTTP/1.1\r\n", "the stream ended before a request head"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nabc",
                "the stream ended in the middle of the request body",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
                "the stream ended in the middle of the request body",
            ),
        ):
            parser, receiver = parseRequest(data)
            with self.assertRaises(RequestError) as caught:
                parser.connectionLost()
            self.assertEqual((str(caught.exception), receiver.completed), (message, 0))
            self.assertEqual(parser.unparsed(), b"")

    def test_completeRequestEndsCleanly(self) -> None:
        """The end of the stream after a complete request is no error."""
        parser, _ = parseRequest(b"GET / HTTP/1.1\r\n\r\n")
        parser.connectionLost()

    def test_upgradeRequestLeavesTheNewProtocolUnparsed(self) -> None:
        """
        After an upgrade request, what follows it (once the upgrade is
        accepted, the new protocol's bytes) is left unparsed.
        """
        parser, receiver = parseRequest(
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00"
        )
        self.assertTrue(receiver.heads[0].upgrade)
        self.assertEqual((receiver.completed, parser.unparsed()), (1, b"\x81\x00"))

    def test_byteByByteGivesTheSameEvents(self) -> None:
        """
        A request fed one byte at a time gives the same head, body and
        completion, and leaves the same bytes unparsed.
        """
        data = CHUNKED_REQUEST + b"NEXT"
        whole, wholeReceiver = parseRequest(data)
        single, singleReceiver = parseRequest(*byteByByte(data))
        self.assertEqual(singleReceiver.heads, wholeReceiver.heads)
        self.assertEqual(
            (singleReceiver.body, singleReceiver.completed, single.unparsed()),
            (b"hello, world", 1, b"NEXT"),
        )
        self.assertEqual(whole.unparsed(), b"NEXT")

    @given(st.lists(st.integers(min_value=0, max_value=len(CHUNKED_REQUEST)), max_size=10))
    def test_anySplitReadsTheSame(self, cuts: list[int]) -> None:
        """However the bytes are split, the same head and body come out."""
        points = sorted(set(cuts))
        pieces = [CHUNKED_REQUEST[a:b] for a, b in zip([0, *points], [*points, len(CHUNKED_REQUEST)])]
        _, receiver = parseRequest(*pieces)
        self.assertEqual(
            (receiver.heads[0].target, receiver.body, receiver.completed),
            (b"/upload?x=1", b"hello, world", 1),
        )

    @given(st.binary(max_size=300))
    def test_arbitraryBytesRaiseOnlyRequestError(self, data: bytes) -> None:
        """Arbitrary bytes after a valid request line raise nothing but RequestError."""
        try:
            parser, _ = parseRequest(b"POST / HTTP/1.1\r\n", data)
            parser.connectionLost()
        except RequestError:
            pass


class RequestLinearWorkTests(SearchCounting):
    """
    However a request is split, down to one byte per read, every byte is
    searched a bounded number of times.
    """

    def feedRequestByteByByte(self, parser: RequestParser, data: bytes) -> None:
        for index in range(len(data)):
            parser.dataReceived(data[index : index + 1])

    def test_maximalRequestHeadByteByByte(self) -> None:
        """
        A request head of the largest size allowed, sent one byte per read,
        is searched at most four bytes per byte, and is read.
        """
        start = b"GET / HTTP/1.1\r\nHost: a\r\nX-Filler: "
        head = start + b"f" * (MAX_HEAD_BYTES - len(start)) + b"\r\n\r\n"
        searches, _ = self.countSearches(4 * len(head))
        receiver = RequestRecorder()
        parser = RequestParser(receiver)
        self.feedRequestByteByByte(parser, head)
        self.assertEqual((len(receiver.heads), receiver.completed), (1, 1))
        self.assertEqual(searches.searches, len(head))
        self.assertLessEqual(searches.scanned, 4 * len(head))

    def test_overlongRequestHeadByteByByteIsRefusedInLinearWork(self) -> None:
        """A request head that never ends is refused past the limit, linearly."""
        data = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES
        searches, _ = self.countSearches(4 * len(data))
        parser = RequestParser(RequestRecorder())
        with self.assertRaises(RequestError):
            self.feedRequestByteByByte(parser, data)
        self.assertLessEqual(searches.scanned, 4 * len(data))

    def test_chunkedRequestBodyByteByByte(self) -> None:
        """
        Chunk-size lines as long as allowed, chunk data and trailers, sent
        one byte per read, cost one search per byte over at most the new
        byte.
        """
        chunk = b"1;" + b"e" * (MAX_LINE_BYTES - 4) + b"\r\nx\r\n"
        trailer = b"X-T: " + b"t" * (MAX_LINE_BYTES - 7) + b"\r\n"
        body = chunk * 16 + b"0\r\n" + trailer * (MAX_HEAD_BYTES // len(trailer)) + b"\r\n"
        _, searches = self.countSearches(2 * len(body))
        receiver = RequestRecorder()
        parser = RequestParser(receiver)
        parser.dataReceived(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.feedRequestByteByByte(parser, body)
        self.assertEqual((receiver.body, receiver.completed), (b"x" * 16, 1))
        self.assertLessEqual(searches.scanned, len(body))

    def test_manySmallChunksInOneRead(self) -> None:
        """Many small chunks in one read are each searched from where the one before ended."""
        data = (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"1\r\nx\r\n" * 5000
            + b"0\r\n\r\n"
        )
        head, line = self.countSearches(10 * len(data))
        _, receiver = parseRequest(data)
        self.assertEqual((len(receiver.body), receiver.completed), (5000, 1))
        self.assertLessEqual(head.scanned + line.scanned, 2 * len(data))


class TokenTests(SynchronousTestCase):
    """The one splitter of comma-separated lists."""

    def test_tokensAreLowerCasedWithoutEmptyOnes(self) -> None:
        """Tokens come lower-cased, stripped, in order, empty ones dropped."""
        self.assertEqual(
            splitTokens([b"Keep-Alive, ,Upgrade", b" TE\t", b""]),
            [b"keep-alive", b"upgrade", b"te"],
        )

    def test_listItemsKeepEmptyOnes(self) -> None:
        """List elements keep their case and their empty ones."""
        self.assertEqual(splitList([b"1, A", b""]), [b"1", b"A", b""])

    def test_headTokens(self) -> None:
        """A head's tokens are those of every field of that name."""
        head = ResponseHead(200, b"OK", [(b"Connection", b"X-A"), (b"connection", b"close")])
        self.assertEqual(head.tokens(b"connection"), [b"x-a", b"close"])


class HostTests(SynchronousTestCase):
    """The one Host grammar: Host headers, and virtual host names."""

    def test_hostAndPort(self) -> None:
        """A Host header's name is lower-cased; its port is read."""
        self.assertEqual(parseHost(b"App.Example:8080"), Host("app.example", 8080))
        self.assertEqual(str(parseHost(b"App.Example:8080")), "app.example:8080")

    def test_hostAlone(self) -> None:
        """A Host without a port, or with an empty one, has none."""
        self.assertEqual(parseHost(b"APP.example"), Host("app.example"))
        self.assertEqual(parseHost(b"app.example:"), Host("app.example"))
        self.assertEqual(str(parseHost(b"app.example:")), "app.example")

    def test_ipv6Literal(self) -> None:
        """Bracketed IPv6 literals keep their brackets, with or without port."""
        self.assertEqual(parseHost(b"[::1]:81"), Host("[::1]", 81))
        self.assertEqual(parseHost(b"[::1]"), Host("[::1]"))

    def test_malformedHostsAreErrors(self) -> None:
        """
        A port that is not a number below 65536, white space, a path, an
        unbracketed IPv6 literal or userinfo is not a Host header.
        """
        for bad in (b"", b"a:http", b"a:70000", b"a b", b"a/b", b"::1", b"u@a", b"a:1:2"):
            self.assertRaises(ValueError, parseHost, bad)
            self.assertFalse(isValidHost(bad), bad)
        for good in (b"a", b"a:1", b"a:", b"[::1]:443", b"a_b.example", b"%41"):
            self.assertTrue(isValidHost(good), good)

    def test_canonicalForm(self) -> None:
        """Names and IPv6 literals are lower-cased; a port is kept."""
        self.assertEqual(normaliseHost(" Demo.Example.COM:8080 "), "demo.example.com:8080")
        self.assertEqual(normaliseHost("[::1]:8080"), "[::1]:8080")
        self.assertEqual(normaliseHost("127.0.0.1"), "127.0.0.1")

    def test_notHostNames(self) -> None:
        """What is not a DNS name or bracketed IPv6 literal is refused."""
        for bad in ("", "a b", "-x.example", "x-.example", "a..b", "x.example:port",
                    "a/b", "a=b", "x.example:65536", "::1", "[::1%eth0]", "bücher.example"):
            self.assertRaises(ValueError, normaliseHost, bad)

    def test_serverRefusesBadHostNames(self) -> None:
        """The embedding API applies the same rule as the command line."""
        from tunnel.server import TunnelServer

        server = TunnelServer()
        self.assertRaises(ValueError, server.addHost, "bad host", "identifier")
        server.addHost("Good.Example", "identifier")
        self.assertEqual([h.host for h in server.hosts()], ["good.example"])


class ErrorResponseTests(SynchronousTestCase):
    """The short plain-text responses of errors."""

    def test_bytes(self) -> None:
        """The response is whole, its reason standard, and it closes the connection."""
        self.assertEqual(
            errorResponse(431, b"too large\n"),
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"X-Content-Type-Options: nosniff\r\n"
            b"Content-Length: 10\r\n"
            b"Connection: close\r\n"
            b"\r\n"
            b"too large\n",
        )

    def test_reasons(self) -> None:
        """Each code the tunnel refuses with has RFC 9110's reason."""
        for code, reason in (
            (408, b"Request Timeout"),
            (414, b"URI Too Long"),
            (502, b"Bad Gateway"),
            (503, b"Service Unavailable"),
        ):
            self.assertTrue(errorResponse(code, b"").startswith(b"HTTP/1.1 %d %s\r\n" % (code, reason)))

    def test_parsesAsItSays(self) -> None:
        """The response parser reads the response back, body and all."""
        _, receiver = parse(errorResponse(503, b"no\n"))
        self.assertEqual((receiver.heads[0].code, receiver.body, receiver.completed), (503, b"no\n", 1))


class ChunkedEncoderTests(SynchronousTestCase):
    """L{ChunkedEncoder} frames a body, and owns its end."""

    def test_chunksAndTheEnd(self) -> None:
        """Data becomes chunks, no data no chunk; the last chunk ends the body once."""
        encoder = ChunkedEncoder()
        pieces = encoder.encode(b"hello") + encoder.encode(b"") + encoder.encode(b"x" * 26)
        self.assertEqual(b"".join(pieces), b"5\r\nhello\r\n1a\r\n" + b"x" * 26 + b"\r\n")
        self.assertEqual(encoder.finish(), b"0\r\n\r\n")
        self.assertTrue(encoder.finished)
        self.assertRaises(ValueError, encoder.finish)
        self.assertRaises(ValueError, encoder.encode, b"late")

    def test_requestParserReadsItBack(self) -> None:
        """What the encoder writes, the request parser reads back."""
        encoder = ChunkedEncoder()
        body = b"".join(encoder.encode(b"abc") + encoder.encode(b"def")) + encoder.finish()
        _, receiver = parseRequest(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body
        )
        self.assertEqual((receiver.body, receiver.completed), (b"abcdef", 1))
