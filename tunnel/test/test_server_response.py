"""
Tests for L{tunnel.server.response}: the response parser, fed in memory.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.server import response
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


class LinearWorkTests(SynchronousTestCase):
    """
    However a response is split, down to one byte per read, every byte is
    searched a bounded number of times: the work is linear in its size.
    """

    def countSearches(self, budget: int) -> tuple[CountingPattern, CountingPattern]:
        """Count the searches for the end of a head and of a line."""
        head = CountingPattern(response._END_OF_HEAD, budget)
        line = CountingPattern(response._END_OF_LINE, budget)
        self.patch(response, "_END_OF_HEAD", head)
        self.patch(response, "_END_OF_LINE", line)
        return head, line

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
