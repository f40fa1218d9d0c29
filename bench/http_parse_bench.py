"""
The cost and the strictness of HTTP/1.1 parsing: our sans-IO parsers
(L{tunnel.core.http}) against C{httptools} (llhttp, Node.js's parser in C),
and, for the public request side, twisted.web's L{HTTPChannel}.

Speed, in microseconds per message (best of several C{timeit} repeats, a
new parser per message, as a stream gets one):

  - responses, read by L{ResponseParser} and by L{HttptoolsResponseParser}
    (an llhttp C{HttpResponseParser} driving the same L{IResponseReceiver}
    callbacks: C{headReceived} with a L{ResponseHead}, C{bodyReceived},
    C{responseComplete}):
      - C{small}: a 200 with 6 headers and a 13-byte Content-Length body,
        in one read;
      - C{chunked}: a 200 with a chunked body of 10 chunks of 64 bytes, in
        one read;
      - C{64k}: a 200 with a 64 KiB Content-Length body, the head in one
        read and the body in four reads of 16 KiB;
  - a request head: a GET with 8 headers, read by twisted.web (a plain
    L{HTTPChannel} on a string transport, up to its C{Request.process},
    which does nothing; the channel's own set-up is measured apart and
    subtracted), by an llhttp C{HttpRequestParser} collecting the method,
    target and header list, and by our L{RequestParser} for reference.

Strictness: the smuggling and framing cases of C{tunnel/test/test_core_http.py},
C{tunnel/test/test_http_fuzz.py} and C{tunnel/test/httpstrategies.py}, each
read by every parser, with what each made of it: C{reject}, or what it
accepted (status or method, body length, complete or not). llhttp runs
with its default (strict) settings; the adapter adds only what the
callbacks need (skipping 1xx heads, a C{HEAD} response's missing body, the
end of a body delimited by the close) and a coarse bound on the head's
bytes, which llhttp does not bound itself.

Run it from the repository root, in an environment that has C{httptools}
besides the project's dependencies (it is not one of them)::

    python bench/http_parse_bench.py [--repeat N] [--skip-speed] [--skip-strictness]

Without C{httptools} it says so and exits without measuring anything.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import timeit
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import httptools
except ImportError:
    httptools = None

from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel, Request
from zope.interface import implementer

from tunnel.core.http import (
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    IRequestReceiver,
    IResponseReceiver,
    MessageError,
    RequestHead,
    RequestParser,
    ResponseError,
    ResponseHead,
    ResponseParser,
)


# -- the httptools adapter ------------------------------------------------------


class HttptoolsResponseParser:
    """
    L{ResponseParser}'s interface on an llhttp C{HttpResponseParser}: one
    response per stream, 1xx heads skipped, C{HEAD} responses without a
    body, what follows the response ignored.
    """

    def __init__(self, receiver: IResponseReceiver, method: bytes, upgrade: bool = False) -> None:
        self._receiver = receiver
        self._method = method
        self._upgrade = upgrade
        self._parser = httptools.HttpResponseParser(self)
        self._phrase = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._inHead = True
        self._headBytes = 0
        self._unparsed = b""
        self.head: ResponseHead | None = None
        self.complete = False
        self.switched = False

    # llhttp's callbacks

    def on_status(self, status: bytes) -> None:
        self._phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the head, these are trailers: dropped.
        if self._inHead:
            self._headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        if not self._inHead:
            return
        code = self._parser.get_status_code()
        if 100 <= code < 200 and code != 101:
            self._phrase = b""
            self._headers = []
            return
        if code == 101 and not self._upgrade:
            raise ResponseError("101 Switching Protocols answering a plain request")
        self._inHead = False
        head = self.head = ResponseHead(code, self._phrase, self._headers)
        self._receiver.headReceived(head)
        if code == 101:
            self.switched = True
        elif self._method == b"HEAD":
            self._finish()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._receiver.bodyReceived(body)

    def on_message_complete(self) -> None:
        if not self._inHead and not self.complete and not self.switched:
            self._finish()

    # ResponseParser's interface

    @property
    def delimitedByClose(self) -> bool:
        head = self.head
        return (
            head is not None
            and not self.complete
            and not self.switched
            and head.code not in (204, 304)
            and not head.values(b"content-length")
            # llhttp reads a response whose final coding is not chunked
            # to the end of the stream.
            and head.tokens(b"transfer-encoding")[-1:] != [b"chunked"]
        )

    def dataReceived(self, data: bytes) -> None:
        if self.complete or self.switched:
            return
        if self._inHead:
            self._headBytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._unparsed = data[upgrade.args[0] :]
        except httptools.HttpParserCallbackError as error:
            if self.complete:
                return
            if error.__context__ is not None:
                raise error.__context__
            raise ResponseError(str(error)) from error
        except httptools.HttpParserError as error:
            # What follows a complete response (a close) is not ours to read.
            if not self.complete:
                raise ResponseError(str(error)) from error
        if self._inHead and self._headBytes > MAX_HEAD_BYTES:
            raise ResponseError(f"response head longer than {MAX_HEAD_BYTES} bytes")

    def unparsed(self) -> bytes:
        data, self._unparsed = self._unparsed, b""
        return data

    def connectionLost(self) -> None:
        if self.delimitedByClose:
            self._finish()
        elif not (self.complete or self.switched):
            raise ResponseError("the stream ended before the response was complete")

    def _finish(self) -> None:
        self.complete = True
        self._receiver.responseComplete()


class HttptoolsRequestHead:
    """An llhttp C{HttpRequestParser}'s reading of a request head, collected."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.method = b""
        self.body = 0
        self.headComplete = False
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headComplete:
            self.headers.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        self.headComplete = True
        self.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        self.body += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


# -- receivers ----------------------------------------------------------------------


@implementer(IResponseReceiver)
class CountingReceiver:
    """Keeps the head, counts the body, notes the end."""

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.body = 0
        self.complete = False

    def headReceived(self, head: ResponseHead) -> None:
        self.head = head

    def bodyReceived(self, data: bytes) -> None:
        self.body += len(data)

    def responseComplete(self) -> None:
        self.complete = True


@implementer(IRequestReceiver)
class RequestCounter:
    """Keeps the head, counts the body, notes the end."""

    def __init__(self) -> None:
        self.head: RequestHead | None = None
        self.body = 0
        self.complete = False

    def headReceived(self, head: RequestHead) -> None:
        self.head = head

    def bodyReceived(self, data: bytes) -> None:
        self.body += len(data)

    def requestComplete(self) -> None:
        self.complete = True


class RecordingRequest(Request):
    """A twisted.web request that is processed by noting it, and no more."""

    processed: list[Request] = []

    def process(self) -> None:
        RecordingRequest.processed.append(self)


def newChannel() -> tuple[HTTPChannel, StringTransport]:
    """A twisted.web channel on a string transport, without timeouts."""
    channel = HTTPChannel()
    channel.requestFactory = RecordingRequest
    channel.timeOut = None
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


# -- the messages of the speed runs -------------------------------------------------

SMALL = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: demo/1.0\r\n"
    b"Date: Mon, 02 Jun 2025 10:00:00 GMT\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Request-Id: 7f3c2a1e-42\r\n"
    b"Content-Length: 13\r\n"
    b"\r\n"
    b"Hello, world!"
)

CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: demo/1.0\r\n"
    b"Content-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"\r\n"
    + b"".join(b"40\r\n" + b"%02d" % (i,) * 32 + b"\r\n" for i in range(10))
    + b"0\r\n\r\n"
)

BIG_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: demo/1.0\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Length: 65536\r\n"
    b"\r\n"
)
BIG_PIECES = [BIG_HEAD] + [bytes([65 + i]) * 16384 for i in range(4)]

GET = (
    b"GET /api/items?page=2&sort=name HTTP/1.1\r\n"
    b"Host: app.example\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/126.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"Cache-Control: max-age=0\r\n"
    b"\r\n"
)

RESPONSES = {
    "small": (SMALL, [SMALL], 13),
    "chunked": (CHUNKED, [CHUNKED], 640),
    "64k": (b"".join(BIG_PIECES), BIG_PIECES, 65536),
}


def readResponse(factory: Callable[..., Any], pieces: list[bytes]) -> CountingReceiver:
    receiver = CountingReceiver()
    parser = factory(receiver, b"GET")
    for piece in pieces:
        parser.dataReceived(piece)
    return receiver


def best(function: Callable[[], Any], repeat: int) -> float:
    """The best time of one call of C{function}, in microseconds."""
    timer = timeit.Timer(function)
    number, elapsed = timer.autorange()
    # About 0.1 s a repeat.
    number = max(1, int(number * 0.1 / max(elapsed, 1e-9)))
    return min(timer.repeat(repeat, number)) / number * 1e6


def speed(repeat: int) -> None:
    print(f"# Speed (CPython {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"httptools {httptools.__version__}), microseconds per message\n")
    print(f"{'message':<12} {'ResponseParser':>15} {'httptools':>10} {'ratio':>7}")
    for name, (_, pieces, size) in RESPONSES.items():
        for factory in (ResponseParser, HttptoolsResponseParser):
            receiver = readResponse(factory, pieces)
            assert receiver.complete and receiver.body == size, (name, factory)
        ours = best(lambda: readResponse(ResponseParser, pieces), repeat)
        theirs = best(lambda: readResponse(HttptoolsResponseParser, pieces), repeat)
        print(f"{name:<12} {ours:>15.2f} {theirs:>10.2f} {ours / theirs:>6.2f}x")

    def twistedGet() -> None:
        channel, _ = newChannel()
        channel.dataReceived(GET)

    def httptoolsGet() -> None:
        HttptoolsRequestHead().parser.feed_data(GET)

    def oursGet() -> None:
        RequestParser(RequestCounter()).dataReceived(GET)

    RecordingRequest.processed.clear()
    twistedGet()
    [request] = RecordingRequest.processed
    assert request.method == b"GET" and len(list(request.requestHeaders.getAllRawHeaders())) == 8
    collected = HttptoolsRequestHead()
    collected.parser.feed_data(GET)
    assert collected.complete and len(collected.headers) == 8
    RecordingRequest.processed = _Discard()
    setup = best(newChannel, repeat)
    gross = best(twistedGet, repeat)
    llhttp = best(httptoolsGet, repeat)
    ours = best(oursGet, repeat)
    net = gross - setup
    print(f"\nGET, 8 headers: twisted.web HTTPChannel {gross:.2f} "
          f"(channel set-up {setup:.2f}, net {net:.2f}); httptools {llhttp:.2f}; "
          f"RequestParser {ours:.2f}")
    print(f"  twisted.web net / httptools: {net / llhttp:.2f}x; "
          f"RequestParser / httptools: {ours / llhttp:.2f}x\n")


class _Discard(list):
    """A list that keeps nothing (the speed runs make many requests)."""

    def append(self, item: object) -> None:
        pass


# -- strictness ----------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\n"
TE = OK + b"Transfer-Encoding: chunked\r\n\r\n"

#: (what, method, bytes, whether the stream then ends)
RESPONSE_CASES: list[tuple[str, bytes, bytes, bool]] = [
    ("Content-Length 1 and 2", b"GET", OK + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", False),
    ("Content-Length 2, 2 (equal, twice)", b"GET", OK + b"Content-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok", False),
    ("Content-Length: 1, 2", b"GET", OK + b"Content-Length: 1, 2\r\n\r\nab", False),
    ("Content-Length: -1", b"GET", OK + b"Content-Length: -1\r\n\r\n", False),
    ("Content-Length: +5", b"GET", OK + b"Content-Length: +5\r\n\r\nhello", False),
    ("Content-Length: 0x10", b"GET", OK + b"Content-Length: 0x10\r\n\r\n", False),
    ("Content-Length: 1_0", b"GET", OK + b"Content-Length: 1_0\r\n\r\n", False),
    ("Content-Length: (empty)", b"GET", OK + b"Content-Length: \r\n\r\n", False),
    ("Content-Length: 26 digits", b"GET", OK + b"Content-Length: 99999999999999999999999999\r\n\r\n", False),
    ("Content-Length: 5000 digits", b"GET", OK + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", False),
    ("Content-Length : 5 (space before colon)", b"GET", OK + b"Content-Length : 5\r\n\r\nhello", False),
    ("Content-Length + Transfer-Encoding", b"GET", OK + b"Content-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False),
    ("HEAD: Content-Length 1 and 2", b"HEAD", OK + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n", False),
    ("TE: gzip, chunked", b"GET", OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", False),
    ("TE: chunked, identity", b"GET", OK + b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", True),
    ("TE: chunked, chunked", b"GET", OK + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", True),
    ("TE: gzip", b"GET", OK + b"Transfer-Encoding: gzip\r\n\r\nxx", True),
    ("TE: \\x0bchunked", b"GET", OK + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", True),
    ("TE: Chunked (case)", b"GET", OK + b"Transfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False),
    ("obs-fold in a value", b"GET", OK + b"X: a\r\n  b\r\nContent-Length: 0\r\n\r\n", False),
    ("fold before any header", b"GET", OK + b" folded first\r\nContent-Length: 0\r\n\r\n", False),
    ("bare LF line ends", b"GET", b"HTTP/1.0 204\nA: b\n\n", False),
    ("bare LF after a header", b"GET", OK + b"A: b\nContent-Length: 0\r\n\r\n", False),
    ("bare CR in a value", b"GET", OK + b"X-A: one\rX-B: two\r\nContent-Length: 0\r\n\r\n", False),
    ("NUL in a value", b"GET", OK + b"X-C: a\x00b\r\nContent-Length: 0\r\n\r\n", False),
    ("form feed in a value", b"GET", OK + b"Content-Type: 0\x0c\r\nContent-Length: 0\r\n\r\n", False),
    ("bare CR in the reason", b"GET", b"HTTP/1.1 200 OK\rSet-Cookie: evil=1\r\nContent-Length: 0\r\n\r\n", False),
    ("ESC in the reason", b"GET", b"HTTP/1.1 502 \x1b[31mred\r\nContent-Length: 0\r\n\r\n", False),
    ("non-ASCII reason", b"GET", b"HTTP/1.1 200 All\tfine \xc3\xa9\r\nContent-Length: 0\r\n\r\n", False),
    ("non-ASCII (\\xff) in a value", b"GET", OK + b"X: caf\xff\r\nContent-Length: 0\r\n\r\n", False),
    ("space in a header name", b"GET", OK + b"bad name: x\r\nContent-Length: 0\r\n\r\n", False),
    ("header line without colon", b"GET", OK + b"no colon\r\nContent-Length: 0\r\n\r\n", False),
    ("HTTP/2 status line", b"GET", b"HTTP/2 200 OK\r\n\r\n", False),
    ("two-digit status", b"GET", b"HTTP/1.1 20 OK\r\n\r\n", False),
    ("not HTTP", b"GET", b"not http at all\r\n\r\n", False),
    ("101 answering a plain request", b"GET", b"HTTP/1.1 101 Switching Protocols\r\n\r\n", False),
    ("100 and 103, then 200", b"GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + OK + b"Content-Length: 2\r\n\r\nok", False),
    ("HEAD, Content-Length: 50, no body", b"HEAD", OK + b"Content-Length: 50\r\n\r\n", False),
    ("204 without framing", b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", False),
    ("304 with Content-Length: 9", b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", False),
    ("no framing: body until close", b"GET", OK + b"\r\nsome more", True),
    ("cut: Content-Length 5, 3 bytes", b"GET", OK + b"Content-Length: 5\r\n\r\nabc", True),
    ("cut: chunk of 5, 2 bytes", b"GET", TE + b"5\r\nab", True),
    ("bytes after the response", b"GET", OK + b"Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n", False),
    ("bytes after a Connection: close one", b"GET", OK + b"Connection: close\r\nContent-Length: 2\r\n\r\nokextra", False),
    ("chunk size zz", b"GET", TE + b"zz\r\n", False),
    ("chunk size -1", b"GET", TE + b"-1\r\n", False),
    ("chunk size 0x5", b"GET", TE + b"0x5\r\nhello\r\n0\r\n\r\n", False),
    ("chunk size 20 hex digits", b"GET", TE + b"ffffffffffffffffffff\r\n", False),
    ("chunk size with leading zeros, upper case", b"GET", TE + b"000A\r\n0123456789\r\n0\r\n\r\n", False),
    ("chunk size then space", b"GET", TE + b"2 \r\nok\r\n0\r\n\r\n", False),
    ("chunk longer than its size", b"GET", TE + b"2\r\nabc\r\n", False),
    ("chunk-size line of 4098 bytes", b"GET", TE + b"1" * (MAX_LINE_BYTES + 2), False),
    ("chunk extensions (token, quoted, bare)", b"GET", TE + b'2;a=b\r\nok\r\n2;n="quoted; value"\r\nok\r\n0;bare\r\n\r\n', False),
    ("chunk extension 4 KiB long", b"GET", TE + b"2;x=" + b"e" * (MAX_LINE_BYTES + 4) + b"\r\nok\r\n0\r\n\r\n", False),
    ("bare CR in a chunk-size line", b"GET", TE + b"5\rX\r\nhello\r\n0\r\n\r\n", False),
    ("bare LF after chunk data", b"GET", TE + b"2\r\nok\n0\r\n\r\n", False),
    ("trailers", b"GET", TE + b"2\r\nok\r\n0\r\nTrailer: x\r\n\r\n", False),
    ("head of 64 KiB - 6", b"GET", OK + b"Content-Length: 2\r\nX-Pad: " + b"p" * (MAX_HEAD_BYTES - 6 - 45) + b"\r\n\r\nok", False),
    ("head of 70 KiB", b"GET", OK + b"X: " + b"a" * (70 * 1024) + b"\r\nContent-Length: 0\r\n\r\n", False),
]

POST = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

#: (what, bytes)
REQUEST_CASES: list[tuple[str, bytes]] = [
    ("Content-Length + Transfer-Encoding", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("Transfer-Encoding + Content-Length: 0", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"),
    ("TE: chunked, identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
    ("TE: chunked, then TE: gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n"),
    ("TE: gzip, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    ("TE: identity", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"),
    ("TE: xchunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("TE: chunked, chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("TE: (empty)", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"),
    ("HTTP/1.0 with TE: chunked", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("Content-Length 1 and 2", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    ("Content-Length 2 and 2", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab"),
    ("Content-Length: 1, 2", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab"),
    ("Content-Length: 1,", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,\r\n\r\na"),
    ("Content-Length: -1", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
    ("Content-Length: +1", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na"),
    ("Content-Length: 0x10", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n"),
    ("Content-Length: (empty)", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n"),
    ("Content-Length: 5000 digits", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n"),
    ("obs-fold (space)", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
    ("obs-fold (tab)", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"),
    ("space before the first header", b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
    ("bare CR in the target", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rTransfer-Encoding: chunked\r\n\r\n"),
    ("bare CR before CRLF", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\r\n\r\n"),
    ("bare CR in a name", b"GET / HTTP/1.1\r\nHost: a\r\nX\r: a\r\n\r\n"),
    ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n"),
    ("ESC in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: \x1b[31m\r\n\r\n"),
    ("DEL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"),
    ("tab in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\tb\r\n\r\n"),
    ("non-ASCII (\\xff) in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xff\r\n\r\n"),
    ("non-ASCII in the target", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\n\n"),
    ("no version (HTTP/0.9)", b"GET /\r\n\r\n"),
    ("two spaces after the method", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("space after the version", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
    ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
    ("http/1.1 (lower case)", b"GET / http/1.1\r\nHost: a\r\n\r\n"),
    ("method G(T", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("method FOO", b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("NUL in the target", b"GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("a response", b"HTTP/1.1 200 OK\r\n\r\n"),
    ("header without colon", b"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n"),
    ("Host : a (space before colon)", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
    ("empty header name", b"GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n"),
    ("chunk size zz", POST + b"zz\r\n"),
    ("chunk size -1", POST + b"-1\r\n"),
    ("chunk size 0x5", POST + b"0x5\r\nhello\r\n0\r\n\r\n"),
    ("chunk size 20 hex digits", POST + b"ffffffffffffffffffff\r\n"),
    ("chunk longer than its size", POST + b"2\r\nabc\r\n"),
    ("chunk-size line of 4098 bytes", POST + b"1" * (MAX_LINE_BYTES + 2)),
    ("chunk extensions (token, quoted, bare)", POST + b'2;a=b\r\nok\r\n2;n="quoted; value"\r\nok\r\n0;bare\r\n\r\n'),
    ("5\\r\\r\\n chunk size", POST + b"5\r\r\nhello\r\n0\r\n\r\n"),
    ("bare CR in a chunk-size line", POST + b"5\rX\r\nhello\r\n0\r\n\r\n"),
    ("bare CR after chunk data", POST + b"5\r\nhello\r\r\n0\r\n\r\n"),
    ("bare CR in a trailer", POST + b"0\r\nX: a\rb\r\n\r\n"),
    ("head of 70 KiB", b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n"),
]


def describe(error: bool, code: object, body: int, complete: bool) -> str:
    if error:
        return "reject"
    if code is None:
        return "no head"
    return f"{code!s} {body}B" + ("" if complete else " open")


def responseOutcome(factory: Callable[..., Any], method: bytes, data: bytes, close: bool) -> str:
    receiver = CountingReceiver()
    parser = factory(receiver, method)
    try:
        parser.dataReceived(data)
        if close:
            parser.connectionLost()
    except MessageError:
        return "reject"
    head = receiver.head
    return describe(False, None if head is None else head.code, receiver.body, receiver.complete)


def oursRequest(data: bytes) -> str:
    receiver = RequestCounter()
    try:
        RequestParser(receiver).dataReceived(data)
    except MessageError:
        return "reject"
    head = receiver.head
    return describe(False, None if head is None else head.method.decode(), receiver.body, receiver.complete)


def twistedRequest(data: bytes) -> str:
    RecordingRequest.processed = []
    channel, transport = newChannel()
    try:
        channel.dataReceived(data)
    except Exception as error:
        # In a reactor: logged, and the connection dropped.
        return f"reject ({type(error).__name__} raised)"
    written = transport.value()
    if written.startswith(b"HTTP/1.1 400") or transport.disconnecting:
        return "reject" + (" (400)" if written else " (close)")
    if RecordingRequest.processed:
        request = RecordingRequest.processed[0]
        request.content.seek(0)
        return describe(False, request.method.decode("latin-1"), len(request.content.read()), True)
    if channel.requests:
        return "head in, body pending"
    return "no head"


def httptoolsRequest(data: bytes) -> str:
    collected = HttptoolsRequestHead()
    try:
        collected.parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return "reject"
    # llhttp does not bound a head: what an adapter would add.
    if not collected.headComplete and len(data) > MAX_HEAD_BYTES:
        return "reject (adapter's bound)"
    if not collected.headComplete:
        return "no head"
    return describe(False, collected.method.decode(), collected.body, collected.complete)


def same(a: str, b: str) -> str:
    return "yes" if a.split(" (")[0] == b.split(" (")[0] else "**no**"


def strictness() -> None:
    print("# Responses (local services), ResponseParser vs llhttp behind the adapter\n")
    print("| case | ResponseParser | httptools | same |")
    print("|---|---|---|---|")
    for what, method, data, close in RESPONSE_CASES:
        ours = responseOutcome(ResponseParser, method, data, close)
        theirs = responseOutcome(HttptoolsResponseParser, method, data, close)
        print(f"| {what} | {ours} | {theirs} | {same(ours, theirs)} |")
    print("\n# Requests (public side): RequestParser, twisted.web HTTPChannel, httptools\n")
    print("| case | RequestParser | twisted.web | httptools | httptools = RequestParser |")
    print("|---|---|---|---|---|")
    for what, data in REQUEST_CASES:
        ours = oursRequest(data)
        web = twistedRequest(data)
        theirs = httptoolsRequest(data)
        print(f"| {what} | {ours} | {web} | {theirs} | {same(ours, theirs)} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="timeit repeats (best is kept)")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-strictness", action="store_true")
    options = parser.parse_args()
    if httptools is None:
        print("httptools is not installed (it is not a dependency of the project): "
              "nothing to compare; pip install httptools to run this benchmark.",
              file=sys.stderr)
        return
    if not options.skip_speed:
        speed(options.repeat)
    if not options.skip_strictness:
        strictness()


if __name__ == "__main__":
    main()
