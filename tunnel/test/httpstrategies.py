"""
Hypothesis strategies for the HTTP fuzzers of L{tunnel.test.test_http_fuzz}:
responses of a local service, requests of the public, their mutations, and
the ways bytes are cut into pieces on their way.

Well-formed messages come with what a reader must make of them (their head
and body); mutated ones come with nothing but the bytes: whatever a reader
makes of those, it must make the same of them however they are cut.
"""

from __future__ import annotations

from typing import Sequence

import attrs
from hypothesis import strategies as st

from tunnel.test.support import pattern

#: The characters of a token (RFC 9110, section 5.6.2).
TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Visible characters (for header values and reason phrases).
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))

#: The framing headers, which only the generators of framing write.
FRAMING = frozenset({b"content-length", b"transfer-encoding"})


# Strategies are built once: building them anew in every draw costs more
# than the drawing.
_TOKENS = st.text(TCHAR, min_size=1, max_size=12).map(str.encode)
_WORDS = st.lists(st.text(VCHAR, min_size=1, max_size=8), max_size=4).map(
    lambda parts: " ".join(parts)[:30].strip().encode()
)


def tokens() -> st.SearchStrategy[bytes]:
    """A token."""
    return _TOKENS


def words() -> st.SearchStrategy[bytes]:
    """Visible characters with single spaces between them, none around."""
    return _WORDS


#: Header names the generators like, beside random tokens.
COMMON_NAMES = [
    b"Content-Type", b"Set-Cookie", b"Cache-Control", b"Location", b"Server", b"Date",
    b"X-Request-Id", b"Vary", b"ETag", b"Link",
]


_FIELD = st.tuples(st.one_of(st.sampled_from(COMMON_NAMES), _TOKENS), _WORDS)
_FIELDS = {size: st.lists(_FIELD, max_size=size) for size in (2, 6)}


@st.composite
def headerFields(draw: st.DrawFn, maxSize: int = 6) -> list[tuple[bytes, bytes]]:
    """End-to-end header fields (2 or 6 at most), names as sent; never a framing header."""
    fields = draw(_FIELDS[maxSize])
    return [(name, value) for name, value in fields if name.lower() not in FRAMING]


def cutInto(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """C{data} cut at the offsets C{cuts} (taken modulo its length plus one)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@st.composite
def splits(draw: st.DrawFn, data: bytes, maxPieces: int = 12) -> list[bytes]:
    """
    C{data} cut into pieces: anywhere, a byte at a time, or around its line
    ends (where a reader must remember what it saw last).
    """
    how = draw(st.sampled_from(["anywhere", "lines", "bytes", "whole"]))
    if how == "whole" or not data:
        return [data]
    if how == "bytes" and len(data) <= 600:
        return [data[i : i + 1] for i in range(len(data))]
    if how == "lines":
        ends = [i for i, byte in enumerate(data) if byte in b"\r\n"]
        if ends:
            cuts = draw(st.lists(st.sampled_from(ends), max_size=maxPieces))
            return cutInto(data, [cut + draw(st.integers(0, 1)) for cut in cuts])
    return cutInto(data, draw(st.lists(st.integers(0, len(data)), max_size=maxPieces)))


# -- responses ---------------------------------------------------------------


@attrs.frozen
class ResponseCase:
    """
    A well-formed response of a local service, and what a reader must make
    of it.

    @ivar data: the bytes: informational heads, the response, and whatever
        follows it (L{trailing}).
    @ivar method: the method of the request it answers.
    @ivar code: the final status code.
    @ivar phrase: the final reason phrase.
    @ivar headers: the final head's fields, as sent.
    @ivar body: the body, framing removed.
    @ivar byClose: whether the body ends where the stream ends.
    @ivar trailing: the bytes after the end of the response (none for a
        body that ends with the stream).
    """

    data: bytes
    method: bytes
    code: int
    phrase: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    byClose: bool
    trailing: bytes


def bodies(maxSize: int = 400) -> st.SearchStrategy[bytes]:
    """A body: a few arbitrary bytes, or a longer run of a pattern."""
    return st.one_of(
        st.binary(max_size=maxSize),
        st.integers(0, 20000).map(pattern),
    )


def hexSize(size: int, upper: bool, zeros: int) -> bytes:
    """A chunk size in hexadecimal, in either case, with leading zeros."""
    text = b"0" * zeros + b"%x" % (size,)
    return text.upper() if upper else text


_EXTENSIONS = st.one_of(
    st.just(b""),
    st.builds(lambda n, v: b";" + n + b"=" + v, _TOKENS, _TOKENS),
    st.builds(lambda n: b';%s="quoted; value"' % (n,), _TOKENS),
    st.just(b";bare"),
)


@st.composite
def chunkedBodies(draw: st.DrawFn, body: bytes) -> bytes:
    """C{body} in chunked framing, with extensions and trailers."""
    cuts = draw(st.lists(st.integers(1, max(1, len(body))), max_size=5))
    pieces = [piece for piece in cutInto(body, cuts) if piece]
    upper = draw(st.booleans())
    out = []
    extension = _EXTENSIONS
    for piece in pieces:
        zeros = draw(st.integers(0, 3))
        out.append(hexSize(len(piece), upper, zeros) + draw(extension) + b"\r\n" + piece + b"\r\n")
    out.append(b"0" * draw(st.integers(1, 3)) + draw(extension) + b"\r\n")
    for name, value in draw(headerFields(maxSize=2)):
        out.append(name + b": " + value + b"\r\n")
    out.append(b"\r\n")
    return b"".join(out)


@st.composite
def informationalHeads(draw: st.DrawFn) -> bytes:
    """Zero to two 1xx heads (never a 101)."""
    heads = []
    for _ in range(draw(st.integers(0, 2))):
        code = draw(st.sampled_from([100, 102, 103]))
        fields = draw(headerFields(maxSize=2))
        heads.append(
            b"HTTP/1.1 %d %s\r\n" % (code, draw(words()))
            + b"".join(name + b": " + value + b"\r\n" for name, value in fields)
            + b"\r\n"
        )
    return b"".join(heads)


#: Final status codes the generators like, beside any from 200 to 599.
COMMON_CODES = [200, 201, 204, 206, 301, 302, 304, 400, 403, 404, 500, 502, 503]


@st.composite
def wellFormedResponses(draw: st.DrawFn) -> ResponseCase:
    """A well-formed response, framed in every way a local service may."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD"]))
    code = draw(st.one_of(st.sampled_from(COMMON_CODES), st.integers(200, 599)))
    phrase = draw(words())
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    fields = draw(headerFields())
    bodiless = method == b"HEAD" or code in (204, 304)
    body = b"" if bodiless else draw(bodies())
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    framingFields: list[tuple[bytes, bytes]] = []
    encoded = body
    if bodiless:
        if code != 204 and draw(st.booleans()):
            framingFields = [(b"Content-Length", b"%d" % (draw(st.integers(0, 10**6)),))]
        byClose = False
    elif framing == "length":
        framingFields = [(draw(st.sampled_from([b"Content-Length", b"content-length"])), b"%d" % (len(body),))]
        byClose = False
    elif framing == "chunked":
        framingFields = [(b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked", b"CHUNKED"])))]
        encoded = draw(chunkedBodies(body))
        byClose = False
    else:
        byClose = True
    headers = fields[:]
    for field in framingFields:
        headers.insert(draw(st.integers(0, len(headers))), field)
    trailing = b"" if byClose else draw(st.one_of(st.just(b""), st.binary(max_size=40), st.just(b"HTTP/1.1 200 OK\r\n\r\n")))
    data = (
        draw(informationalHeads())
        + b"HTTP/%s %d%s\r\n" % (version, code, b" " + phrase if phrase or draw(st.booleans()) else b"")
        + b"".join(name + b":" + draw(st.sampled_from([b" ", b"", b"  ", b"\t"])) + value + b"\r\n" for name, value in headers)
        + b"\r\n"
        + encoded
        + trailing
    )
    return ResponseCase(data, method, code, phrase, headers, body, byClose, trailing)


#: Bytes the mutations insert: line ends, NULs, folds, framing headers that
#: repeat or contradict, numbers past every bound, heads in heads.
INSERTIONS = [
    b"\r", b"\n", b"\0", b"\r\n", b"\r\n ", b"\r\n\t", b" ", b"\t", b":", b"\r\n\r\n", b"\xff",
    b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999999999\r\n", b"Content-Length: 5, 6\r\n",
    b"Content-Length: 5, 5\r\n", b"Content-Length: +5\r\n", b"Content-Length: 0x10\r\n",
    b"Content-Length: 1_0\r\n", b"Content-Length : 5\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n", b"Transfer-Encoding: chunked, chunked\r\n",
    b"Transfer-Encoding: \x0bchunked\r\n", b"ffffffffffffffffffff\r\n", b"0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n", b"X: a\rb\r\n", b"X: \x00\r\n",
]


@st.composite
def longLines(draw: st.DrawFn, limits: Sequence[int]) -> bytes:
    """A run of letters about as long as one of C{limits} (a little under or over)."""
    return b"a" * max(0, draw(st.sampled_from(list(limits))) + draw(st.integers(-4, 4)))


@st.composite
def mutated(draw: st.DrawFn, data: bytes, limits: Sequence[int]) -> bytes:
    """
    C{data} with one to four mutations: bytes flipped, inserted (at line
    starts, where they change the most, or anywhere), removed, repeated,
    line ends made bare, runs as long as one of C{limits}, or the end cut.
    """
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(
            ["flip", "insert", "insertAtLine", "delete", "repeat", "bareLF", "long", "truncate"]
        ))
        position = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            position = min(position, len(data) - 1)
            data = data[:position] + bytes([data[position] ^ draw(st.integers(1, 255))]) + data[position + 1 :]
        elif kind in ("insert", "insertAtLine"):
            if kind == "insertAtLine":
                starts = [i + 1 for i, byte in enumerate(data) if byte == 0x0A] or [0]
                position = draw(st.sampled_from(starts))
            data = data[:position] + draw(st.sampled_from(INSERTIONS)) + data[position:]
        elif kind == "delete":
            data = data[:position] + data[position + draw(st.integers(1, 8)) :]
        elif kind == "repeat":
            data = data[:position] + data[position : position + draw(st.integers(1, 40))] + data[position:]
        elif kind == "bareLF":
            data = data.replace(b"\r\n", b"\n", draw(st.integers(1, 3)))
        elif kind == "long":
            data = data[:position] + draw(longLines(limits)) + data[position:]
        else:
            data = data[:position]
    return data


# -- public requests ---------------------------------------------------------


@attrs.frozen
class RequestCase:
    """
    One request of a public client, as the generators wrote it.

    @ivar data: its bytes.
    @ivar method: its method.
    @ivar clean: whether it is a well-formed, complete HTTP/1.1 request
        (whatever it asks for), so that the server owes it an answer.
    """

    data: bytes
    method: bytes
    clean: bool


#: Request targets: ordinary, odd, absolute-form, and every spelling of the
#: control path.
TARGETS = [
    b"/", b"/path?q=1", b"/a/b/../c", b"/x%20y", b"/_controlPath", b"/_controlPath/x",
    b"/_controlPath/", b"//_controlPath/", b"/%5FcontrolPath/", b"/%5fcontrolPath/",
    b"/%2F_controlPath/", b"/./_controlPath/", b"/x/../_controlPath/", b"///_controlPath//",
    b"http://app.example/x", b"http://app.example/_controlPath/", b"HTTP://APP.EXAMPLE:80/y",
    b"http://other.example/", b"https://app.example:8080//_controlPath/", b"*",
]

#: Host header values: the routed hosts in every spelling, hosts routed to
#: a client that is not connected, unknown hosts, ports of every kind, IP
#: literals, lists, and malformed ones.
HOSTS = [
    b"app.example", b"APP.Example", b"app.example:80", b"app.example:8080",
    b"app.example:1234", b"app.example:22", b"app.example.", b"app.example:",
    b"app.example:99999", b"ported.example:8080", b"ported.example", b"ported.example:9",
    b"other.example", b"unknown.example", b"[::1]", b"[::1]:80", b"127.0.0.1:11211",
    b"", b"app.example, other.example", b"app.example app", b"app.example\t",
    b"app.example/x", b"app.example@other.example",
]

#: The Host values of the routed hosts, that requests reach the local
#: service with: most requests have one.
ROUTED_HOSTS = [b"app.example", b"APP.Example", b"app.example:8080", b"ported.example:8080", b"app.example:1234"]
_ANY_HOST = st.one_of(st.sampled_from(ROUTED_HOSTS), st.sampled_from(ROUTED_HOSTS), st.sampled_from(HOSTS))

#: Header lines besides Host and the framing: forged forwarding headers,
#: hop-by-hop headers, upgrades, expectations.
EXTRA_HEADERS = [
    b"X-Forwarded-For: 198.51.100.1", b"X-Forwarded-For: 198.51.100.1, 10.0.0.1",
    b"X-Forwarded-Host: evil.example", b"X-Forwarded-Proto: https",
    b"Connection: close", b"Connection: keep-alive", b"Connection: Upgrade",
    b"Connection: upgrade, X-Secret", b"X-Secret: hop", b"Upgrade: websocket",
    b"Upgrade: h2c", b"Expect: 100-continue", b"Expect: something-else", b"TE: trailers",
    b"Keep-Alive: 5", b"Proxy-Connection: keep-alive", b"Accept: */*", b"Cookie: a=b",
    b"User-Agent: fuzz/1.0",
]

#: The methods of the generated requests.
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"FOO"]


@st.composite
def publicRequests(
    draw: st.DrawFn, maxHeaderBytes: int, maxHeaders: int, clean: bool = False
) -> RequestCase:
    """
    A public request: a method, a target, Host headers (none, one or two),
    other headers, a body framed by Content-Length, chunks, both or
    neither; sometimes with bare LF line ends, a head over the limits, or
    plain garbage.

    @param maxHeaderBytes: the server's limit on a request head, to write
        heads just under and over it.
    @param maxHeaders: the server's limit on header lines, likewise.
    @param clean: make only well-formed, complete requests.
    """
    kind = "request" if clean else draw(st.sampled_from(["request"] * 6 + ["garbage", "overlong", "manyHeaders"]))
    if kind == "garbage":
        data = draw(st.one_of(
            st.binary(min_size=1, max_size=60),
            st.just(b"GET / HTTP/1.1\r\n\r\n"),
            st.just(b"\r\n\r\n"),
            st.just(b"GET /\r\n"),
            st.just(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        ))
        return RequestCase(data + b"\r\n\r\n", b"GET", False)
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = b"HTTP/1.1" if clean else draw(st.sampled_from([b"HTTP/1.1"] * 4 + [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1"]))
    lines = [b"%s %s %s" % (method, target, version)]
    hosts = (
        draw(st.lists(_ANY_HOST, min_size=0, max_size=2))
        if draw(st.integers(0, 9)) == 0
        else [draw(_ANY_HOST)]
    )
    hostName = draw(st.sampled_from([b"Host", b"host", b"HOST"]))
    lines.extend(hostName + b": " + host for host in hosts)
    lines.extend(draw(st.lists(st.sampled_from(EXTRA_HEADERS), max_size=4)))
    body = draw(st.binary(max_size=50)) if draw(st.booleans()) else b""
    framing = draw(st.sampled_from(
        ["none", "length", "chunked"] + ([] if clean else ["both", "short", "long"])
    ))
    encoded = b""
    if framing == "length" or (framing == "none" and body):
        lines.append(b"Content-Length: %d" % (len(body),))
        encoded = body
        framing = "length"
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        encoded = draw(chunkedBodies(body))
    elif framing == "both":
        lines.append(b"Content-Length: %d" % (len(body) + 3,))
        lines.append(b"Transfer-Encoding: chunked")
        encoded = draw(chunkedBodies(body))
    elif framing == "short":
        # The body says it is longer than what follows: the rest is the
        # next request's bytes, or never comes.
        lines.append(b"Content-Length: %d" % (len(body) + draw(st.integers(1, 20)),))
        encoded = body
    elif framing == "long":
        lines.append(b"Content-Length: %d" % (max(0, len(body) - draw(st.integers(1, 5))),))
        encoded = body
    if kind == "overlong":
        size = maxHeaderBytes + draw(st.integers(-40, 40))
        lines.insert(1, b"X-Long: " + b"l" * max(0, size - sum(map(len, lines))))
    elif kind == "manyHeaders":
        count = maxHeaders + draw(st.integers(-2, 2))
        lines[1:1] = [b"X-Many-%d: m" % (i,) for i in range(count)]
    lineEnd = b"\n" if not clean and draw(st.integers(0, 9)) == 0 else b"\r\n"
    data = b"".join(line + lineEnd for line in lines) + lineEnd + encoded
    clean = (
        kind == "request"
        and lineEnd == b"\r\n"
        and version == b"HTTP/1.1"
        and framing in ("none", "length", "chunked")
    )
    return RequestCase(data, method, clean)


@st.composite
def responsesAtTheLimits(draw: st.DrawFn, maxHead: int, maxLine: int) -> bytes:
    """
    A response whose head, or one of whose chunk-size lines, is within a
    few bytes of C{maxHead} or C{maxLine}: a reader may take or refuse it,
    but must do the same however it is cut.
    """
    delta = draw(st.integers(-6, 6))
    if draw(st.booleans()):
        start = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: "
        return start + b"p" * (maxHead + delta - len(start) - 2) + b"\r\n\r\nok"
    size = b"2;x="
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size + b"e" * (maxLine + delta - len(size)) + b"\r\nok\r\n0\r\n\r\n"
    )
