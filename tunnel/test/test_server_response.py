"""
Tests for L{tunnel.server.response}: the response parser, fed in memory.
"""

from __future__ import annotations

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.server.response import (
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    IResponseReceiver,
    ResponseError,
    ResponseHead,
    ResponseParser,
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

    def test_headIsBounded(self) -> None:
        """A head that grows past 64 KiB without ending raises, holding no more."""
        parser, _ = parse(b"HTTP/1.1 200 OK\r\n")
        with self.assertRaises(ResponseError):
            for _ in range(MAX_HEAD_BYTES // 1024 + 2):
                parser.dataReceived(b"X: " + b"a" * 1021 + b"\r\n")


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

    def test_chunkedWinsOverContentLength(self) -> None:
        """With both, the body is framed by its chunks."""
        _, receiver = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nok\r\n0\r\n\r\n"
        )
        self.assertEqual((receiver.body, receiver.completed), (b"ok", 1))

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
        for body in (b"zz\r\n", b"2\r\nabc\r\n", b"1" * (MAX_LINE_BYTES + 1)):
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
