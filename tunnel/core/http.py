"""
HTTP/1.1 as the tunnel speaks it, sans I/O: the project's one grammar of
heads (status and request lines, header fields, token lists, the Host
header), the readers of one response and of one request with their body
framing, chunked encoding, and the short plain-text responses of errors.

The parsers take bytes and tell a receiver of the head once, of the body as
it arrives (its framing removed), and of the end. They bound every line
they must hold, search every byte a bounded number of times however the
bytes are split (the work is linear in the message's size), and raise
L{ResponseError} or L{RequestError} for anything they cannot frame, never
anything else.

A response is read as relayed from a local service: leniently where that
is safe (an obsolete line folding is joined, control characters in field
values become spaces), strictly where the framing is concerned. A request
is read strictly throughout: anything two readers could frame differently
(conflicting lengths, a transfer coding other than a final C{chunked}, an
obsolete line folding, a bare CR) is an error.
"""

from __future__ import annotations

import enum
import re
from http import HTTPStatus
from typing import Callable, ClassVar, Iterable

import attrs
from zope.interface import Interface

#: The most bytes a head may take (without the empty line that ends it),
#: and the trailers of a chunked body.
MAX_HEAD_BYTES = 64 * 1024

#: The most bytes a chunk-size or trailer line may take.
MAX_LINE_BYTES = 4 * 1024

#: The most digits a Content-Length may have: 2**63 has 19.
MAX_LENGTH_DIGITS = 19

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
# How many bytes before the first new one an end of head may start at.
_END_OF_HEAD_OVERLAP = 3
_END_OF_LINE = re.compile(rb"\n")
_LINE_END = re.compile(rb"\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: (.*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request line: a method (a token), a target without white space or
# control characters, and the version.
_REQUEST_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e\x80-\xff]+) (HTTP/1\.[0-9])"
)
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# What a reason phrase may not hold (RFC 9112: HTAB, SP, VCHAR, obs-text).
_UNSAFE_PHRASE = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
# What a field value may not hold, replaced with SP (RFC 9110, 5.5).
_UNSAFE_VALUE = bytes.maketrans(
    bytes(c for c in range(0x20) if c != 0x09) + b"\x7f", b" " * 32
)
# What a request's field value may not hold at all.
_INVALID_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# RFC 9110's reason phrases where Python before 3.13 has older ones.
_REASONS = {
    413: b"Content Too Large",
    414: b"URI Too Long",
    416: b"Range Not Satisfiable",
    422: b"Unprocessable Content",
}

# RFC 3986's host (an IP literal in brackets, or a reg-name of unreserved
# characters, sub-delims and percent-encodings) and an optional port.
_HOST = re.compile(
    rb"(\[[0-9A-Za-z:.%]+\]|[0-9A-Za-z._~!$&'()*+,;=%-]+)(?::([0-9]{0,5}))?"
)
# What a virtual host's name must be: a DNS name or a bracketed IPv6
# literal, lower-cased.
_VIRTUAL_HOST_NAME = re.compile(
    r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\]"
)


class MessageError(Exception):
    """The bytes are not an HTTP/1.1 message these parsers can frame."""


class ResponseError(MessageError):
    """The bytes are not an HTTP/1.1 response these parsers can frame."""


class RequestError(MessageError):
    """The bytes are not an HTTP/1.1 request these parsers can frame."""


# -- token lists ---------------------------------------------------------------


def splitList(values: Iterable[bytes]) -> list[bytes]:
    """
    The elements of the comma-separated list fields C{values}, without
    surrounding white space, empty ones included (RFC 9110, 5.6.1).
    """
    return [item.strip(b" \t") for value in values for item in value.split(b",")]


def splitTokens(values: Iterable[bytes]) -> list[bytes]:
    """
    The lower-cased tokens of the comma-separated list fields C{values}
    (a C{Connection} or C{Transfer-Encoding} header, say), empty ones
    dropped.
    """
    return [item.lower() for item in splitList(values) if item]


# -- heads ---------------------------------------------------------------------


class _Fields:
    """
    The header fields of a head, looked up by name: the fields are indexed
    by lower-cased name at the first lookup, so that the several a head
    gets (its framing, its connection, its host...) cost one pass.
    """

    __slots__ = ()
    headers: list[tuple[bytes, bytes]]
    _byName: dict[bytes, list[bytes]] | None
    _error: ClassVar[type[MessageError]] = MessageError

    def values(self, name: bytes) -> list[bytes]:
        """The values of the fields called C{name} (lower-case)."""
        byName = self._byName
        if byName is None:
            byName = {}
            for key, value in self.headers:
                byName.setdefault(key.lower(), []).append(value)
            object.__setattr__(self, "_byName", byName)
        return list(byName.get(name, ()))

    def tokens(self, name: bytes) -> list[bytes]:
        """The comma-separated, lower-cased tokens of the fields C{name}."""
        return splitTokens(self.values(name))


@attrs.frozen
class ResponseHead(_Fields):
    """
    The head of a response.

    @ivar code: the status code.
    @ivar phrase: the reason phrase (may be empty).
    @ivar headers: the header fields in the order they came, names as sent,
        values without surrounding white space.
    """

    code: int
    phrase: bytes
    headers: list[tuple[bytes, bytes]]
    _byName: dict[bytes, list[bytes]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )
    _error: ClassVar[type[MessageError]] = ResponseError


@attrs.frozen
class RequestHead(_Fields):
    """
    The head of a request.

    @ivar method: the method, as sent (methods are case-sensitive).
    @ivar target: the request target, as sent.
    @ivar version: C{HTTP/1.0} or C{HTTP/1.1} (or another C{HTTP/1.x}).
    @ivar headers: the header fields in the order they came, names as sent,
        values without surrounding white space.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    _byName: dict[bytes, list[bytes]] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )
    _error: ClassVar[type[MessageError]] = RequestError

    @property
    def upgrade(self) -> bool:
        """
        Whether the request asks to switch protocols: an C{Upgrade} header
        and C{upgrade} among the C{Connection} tokens.
        """
        return bool(self.values(b"upgrade")) and b"upgrade" in self.tokens(b"connection")

    @property
    def wantsClose(self) -> bool:
        """
        Whether the connection ends with this exchange: the request says
        C{Connection: close}, or it is an HTTP/1.0 one without
        C{Connection: keep-alive} (RFC 9112, 9.3).
        """
        tokens = self.tokens(b"connection")
        if b"close" in tokens:
            return True
        return self.version == b"HTTP/1.0" and b"keep-alive" not in tokens


def reasonPhrase(code: int) -> bytes:
    """The standard reason phrase of C{code}, or an empty one for a code without one."""
    if code in _REASONS:
        return _REASONS[code]
    try:
        return HTTPStatus(code).phrase.encode("ascii")
    except ValueError:
        return b""


def statusCode(line: bytes) -> int | None:
    """The code of a status line (without its line end), or L{None} if it is malformed."""
    status = _STATUS_LINE.fullmatch(line)
    return None if status is None else int(status.group(1))


def methodAndTarget(line: bytes) -> tuple[bytes, bytes] | None:
    """
    The method and target of a request line (without its line end), or
    L{None} if it is malformed.
    """
    request = _REQUEST_LINE.fullmatch(line)
    return None if request is None else (request.group(1), request.group(2))


def _parseResponseHead(data: bytes) -> ResponseHead:
    """
    Parse a response head (the status line and the header lines, without
    the empty line that ends them).

    A reason phrase that holds control characters (a bare CR, say) is
    replaced with the standard phrase of the code, or none; control
    characters but tab in field values become spaces, as do obsolete line
    foldings.

    @raise ResponseError: if it is malformed.
    """
    lines = _LINE_END.split(data)
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise ResponseError(f"malformed status line {lines[0][:80]!r}")
    code = int(status.group(1))
    phrase = status.group(2) or b""
    if _UNSAFE_PHRASE.search(phrase) is not None:
        phrase = reasonPhrase(code)
    # Each field as its name and the pieces of its value, joined once at
    # the end: folding a value piece by piece would copy it again per line.
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                raise ResponseError("continuation line before any header")
            fields[-1][1].append(line.strip())
            continue
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise ResponseError(f"malformed header line {line[:80]!r}")
        fields.append((name, [value.strip(b" \t")]))
    headers = [
        (name, b" ".join(piece for piece in pieces if piece).translate(_UNSAFE_VALUE))
        for name, pieces in fields
    ]
    return ResponseHead(code, phrase, headers)


def _parseRequestHead(data: bytes) -> RequestHead:
    """
    Parse a request head (the request line and the header lines, without
    the empty line that ends them), strictly.

    @raise RequestError: if it is malformed, holds a bare CR or a control
        character in a field value, or an obsolete line folding.
    """
    lines = _LINE_END.split(data)
    if b"\r" in data and any(b"\r" in line for line in lines):
        raise RequestError("bare CR in the request head")
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None:
        raise RequestError(f"malformed request line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise RequestError(f"obsolete line folding {line[:80]!r}")
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise RequestError(f"malformed header line {line[:80]!r}")
        if _INVALID_VALUE.search(value) is not None:
            raise RequestError(f"control character in header {name[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    method, target, version = request.groups()
    return RequestHead(method, target, version, headers)


def contentLength(head: ResponseHead | RequestHead) -> int | None:
    """
    The body length C{head}'s Content-Length fields give, or L{None}
    without any.

    @raise ResponseError: if they are malformed or disagree (L{RequestError}
        for a request's head).
    """
    values = set(splitList(head.values(b"content-length")))
    if not values:
        return None
    if len(values) > 1:
        raise head._error("conflicting Content-Length values")
    value = values.pop()
    if not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
        raise head._error(f"malformed Content-Length {value[:80]!r}")
    return int(value)


# -- the Host header -------------------------------------------------------------


@attrs.frozen
class Host:
    """
    A host and an optional port, as a Host header or a virtual host name
    them.

    @ivar name: the host, lower-cased; an IPv6 literal in its brackets.
    @ivar port: the port, or L{None} when there is none (or it is empty).
    """

    name: str
    port: int | None = None

    def __str__(self) -> str:
        """C{NAME} or C{NAME:PORT}."""
        return self.name if self.port is None else f"{self.name}:{self.port}"


def parseHost(value: bytes) -> Host:
    """
    Parse a Host header (or the authority of an absolute-form target): a
    host name or an IP address (IPv6 in brackets), with an optional port
    up to 65535 (RFC 9110, 7.2; RFC 3986, 3.2.2).

    @raise ValueError: if it is malformed.
    """
    match = _HOST.fullmatch(value)
    port = None if match is None else match.group(2)
    if match is None or (port and int(port) > 0xFFFF):
        raise ValueError(f"{value[:80]!r} is not a host (HOST or HOST:PORT)")
    return Host(match.group(1).decode("ascii").lower(), int(port) if port else None)


def isValidHost(value: bytes) -> bool:
    """Whether C{value} is a well-formed Host header (see L{parseHost})."""
    try:
        parseHost(value)
    except ValueError:
        return False
    return True


def normaliseHost(host: str) -> str:
    """
    The canonical form of a virtual host name: C{NAME} or C{NAME:PORT},
    lower-cased, as it is registered and matched against L{parseHost}'s
    reading of a Host header.

    @raise ValueError: if it is not a DNS name or bracketed IPv6 address
        with an optional port.
    """
    try:
        parsed = parseHost(host.strip().encode("ascii"))
    except (UnicodeEncodeError, ValueError):
        parsed = None
    if parsed is None or _VIRTUAL_HOST_NAME.fullmatch(parsed.name) is None:
        raise ValueError(f"{host!r} is not a host name (HOST or HOST:PORT)")
    return str(parsed)


# -- writing ---------------------------------------------------------------------


def errorResponse(code: int, body: bytes) -> bytes:
    """
    A whole response refusing a request or a connection: C{code} with its
    standard reason and the plain text C{body}, after which the connection
    closes.
    """
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"X-Content-Type-Options: nosniff\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n"
        b"\r\n%s" % (code, reasonPhrase(code), len(body), body)
    )


class ChunkedEncoder:
    """
    Frames a body in chunks (RFC 9112, 7.1), and ends it: the only place
    that knows the framing, terminator included.

    @ivar finished: whether the last chunk was given.
    """

    def __init__(self) -> None:
        self.finished = False

    def encode(self, data: bytes) -> list[bytes]:
        """
        The chunk that carries C{data}, in pieces for C{writeSequence}
        (none for no data: an empty chunk would end the body).

        @raise ValueError: after L{finish}.
        """
        if self.finished:
            raise ValueError("the chunked body is finished")
        if not data:
            return []
        return [b"%x\r\n" % (len(data),), data, b"\r\n"]

    def finish(self) -> bytes:
        """
        The last chunk, with an empty trailer section: the end of the body.

        @raise ValueError: if it was given already.
        """
        if self.finished:
            raise ValueError("the chunked body is finished")
        self.finished = True
        return b"0\r\n\r\n"


# -- reading ---------------------------------------------------------------------


class _State(enum.Enum):
    """Where a parser is in its message."""

    HEAD = "head"
    LENGTH = "length"
    UNTIL_CLOSE = "until close"
    CHUNK_SIZE = "chunk size"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk end"
    TRAILER = "trailer"
    SWITCHED = "switched"
    DONE = "done"


@attrs.frozen
class _Framing:
    """How a body is delimited: the state that reads it, and its length."""

    state: _State
    length: int = 0


class IResponseReceiver(Interface):
    """What a L{ResponseParser} tells of the response it reads."""

    def headReceived(head: ResponseHead) -> None:
        """The final (non-informational) head is in."""

    def bodyReceived(data: bytes) -> None:
        """Some of the body arrived (never empty)."""

    def responseComplete() -> None:
        """The whole response is in."""


class IRequestReceiver(Interface):
    """What a L{RequestParser} tells of the request it reads."""

    def headReceived(head: RequestHead) -> None:
        """The head is in."""

    def bodyReceived(data: bytes) -> None:
        """Some of the body arrived (never empty)."""

    def requestComplete() -> None:
        """The whole request is in."""


class _Reader:
    """
    The buffer of a parser, and the body framing requests and responses
    share: a length, chunks, or (responses only) the end of the stream.

    Every byte is searched at most once (a few more at the edge of what was
    searched before) for the end of the line or head it belongs to,
    however the message is split: the work is linear in its size.

    Subclasses say what their head is, and how each state reads the
    buffer (C{_steps}); each step reads what it can and returns whether to
    go on.
    """

    _error: ClassVar[type[MessageError]] = MessageError
    _what: ClassVar[str] = "message"
    # Whether framing lines must end with one CRLF (or LF), no bare CR.
    _strict: ClassVar[bool] = False
    _steps: ClassVar[dict[_State, Callable[[_Reader], bool]]] = {}

    def __init__(self, receiver: IResponseReceiver | IRequestReceiver | None) -> None:
        self._receiver = receiver
        self._state = _State.HEAD
        self._buffer = bytearray()
        # How many bytes at the start of the buffer were searched already,
        # in vain, for the end of what is being read.
        self._searched = 0
        self._remaining = 0
        self._trailerBytes = 0
        self._maxHead = MAX_HEAD_BYTES

    @property
    def complete(self) -> bool:
        """Whether the whole message is in."""
        return self._state is _State.DONE

    def _read(self, data: bytes) -> None:
        """Add C{data} to the buffer and read what the states can."""
        self._buffer += data
        steps = self._steps
        while self._buffer and steps[self._state](self):
            pass

    def _finish(self) -> None:
        """The message is complete."""
        raise NotImplementedError()

    # -- searching the buffer ------------------------------------------------

    def _search(self, pattern: re.Pattern[bytes], overlap: int) -> re.Match[bytes] | None:
        """
        Search the buffer for C{pattern}, from C{overlap} bytes before the
        first byte not searched yet (a match may start there).
        """
        buffer = self._buffer
        match = pattern.search(buffer, max(0, self._searched - overlap))
        if match is None:
            self._searched = len(buffer)
        return match

    def _consume(self, size: int) -> None:
        """Drop the first C{size} bytes of the buffer: what follows is new."""
        del self._buffer[:size]
        self._searched = 0

    def _takeHead(self) -> bytes | None:
        """Take a head, without the empty line that ends it, off the buffer."""
        buffer = self._buffer
        end = self._search(_END_OF_HEAD, _END_OF_HEAD_OVERLAP)
        if end is None:
            # The buffer may end with the start of the empty line.
            if len(buffer) > self._maxHead + _END_OF_HEAD_OVERLAP:
                raise self._error(f"{self._what} head longer than {self._maxHead} bytes")
            return None
        if end.start() > self._maxHead:
            raise self._error(f"{self._what} head longer than {self._maxHead} bytes")
        head = bytes(buffer[: end.start()])
        self._consume(end.end())
        return head

    def _line(self) -> bytes | None:
        """Take a line (chunk size, chunk end, trailer) off the buffer."""
        buffer = self._buffer
        end = self._search(_END_OF_LINE, 0)
        if end is None:
            # The buffer may end with the line's CR.
            if len(buffer) > MAX_LINE_BYTES + 1:
                raise self._error(f"chunked framing line longer than {MAX_LINE_BYTES} bytes")
            return None
        line = bytes(buffer[: end.start()])
        if not self._strict:
            line = line.rstrip(b"\r")
        elif line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > MAX_LINE_BYTES:
            raise self._error(f"chunked framing line longer than {MAX_LINE_BYTES} bytes")
        if self._strict and b"\r" in line:
            raise self._error("bare CR in chunked framing")
        self._consume(end.end())
        return line

    # -- the body states -------------------------------------------------------

    def _startBody(self, framing: _Framing) -> bool:
        """Read the body as C{framing} says; return whether to go on."""
        if framing.state is _State.DONE:
            self._finish()
            return False
        self._state = framing.state
        self._remaining = framing.length
        return True

    def _takeBody(self) -> bool:
        """
        Pass on the buffered body bytes, at most the C{_remaining} ones;
        return whether none remain.
        """
        data = bytes(self._buffer[: self._remaining])
        self._consume(len(data))
        self._remaining -= len(data)
        self._receiver.bodyReceived(data)
        return self._remaining == 0

    def _readLength(self) -> bool:
        if self._takeBody():
            self._finish()
            return False
        return True

    def _readChunkSize(self) -> bool:
        line = self._line()
        if line is None:
            return False
        size = line.partition(b";")[0].strip()
        if _HEX.fullmatch(size) is None:
            raise self._error(f"malformed chunk size {line[:80]!r}")
        self._remaining = int(size, 16)
        self._state = _State.CHUNK_DATA if self._remaining else _State.TRAILER
        return True

    def _readChunkData(self) -> bool:
        if self._takeBody():
            self._state = _State.CHUNK_END
        return True

    def _readChunkEnd(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if line:
            raise self._error("chunk data longer than its size")
        self._state = _State.CHUNK_SIZE
        return True

    def _readTrailer(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if not line:
            self._finish()
            return False
        self._trailerBytes += len(line)
        if self._trailerBytes > MAX_HEAD_BYTES:
            raise self._error(f"trailers longer than {MAX_HEAD_BYTES} bytes")
        return True


def _responseFraming(head: ResponseHead, method: bytes) -> _Framing:
    """
    How the body of the response with C{head} to a C{method} request is
    delimited: none (C{HEAD}, C{204}, C{304}), chunked, a length, or the
    end of the stream.

    The framing must be unambiguous, even for a response without a body,
    since its head is relayed: one C{Content-Length} value, or the single
    transfer coding C{chunked}, never both.

    @raise ResponseError: if it is not.
    """
    encodings = head.tokens(b"transfer-encoding")
    length = contentLength(head)
    if encodings:
        if length is not None:
            raise ResponseError("both Transfer-Encoding and Content-Length")
        if encodings != [b"chunked"]:
            raise ResponseError(
                f"unsupported Transfer-Encoding {b', '.join(encodings)[:80]!r}"
            )
    if method == b"HEAD" or head.code in (204, 304):
        return _Framing(_State.DONE)
    if encodings:
        return _Framing(_State.CHUNK_SIZE)
    if length is None:
        return _Framing(_State.UNTIL_CLOSE)
    return _Framing(_State.LENGTH, length) if length else _Framing(_State.DONE)


def _requestFraming(head: RequestHead) -> _Framing:
    """
    How the body of the request with C{head} is delimited (RFC 9112, 6.3):
    chunked when C{chunked} is the final transfer coding, else its
    C{Content-Length}, else none.

    @raise RequestError: for any framing two readers could take
        differently: a Transfer-Encoding with a Content-Length, or whose
        final coding is not C{chunked} (or that has it twice), or in an
        HTTP/1.0 request; Content-Lengths that disagree or are malformed.
    """
    length = contentLength(head)
    if head.values(b"transfer-encoding"):
        encodings = head.tokens(b"transfer-encoding")
        if length is not None:
            raise RequestError("both Transfer-Encoding and Content-Length")
        if head.version == b"HTTP/1.0":
            raise RequestError("Transfer-Encoding in an HTTP/1.0 request")
        if encodings[-1:] != [b"chunked"] or encodings.count(b"chunked") > 1:
            raise RequestError(
                f"unsupported Transfer-Encoding {b', '.join(encodings)[:80]!r}"
            )
        return _Framing(_State.CHUNK_SIZE)
    return _Framing(_State.LENGTH, length) if length else _Framing(_State.DONE)


class ResponseParser(_Reader):
    """
    Reads one HTTP/1.1 response.

    It reads one response per stream (the tunnel asks for no keep-alive),
    so it knows nothing of pipelining; it skips informational (1xx) heads.

    @ivar head: the final head, once it is in.
    """

    _error = ResponseError
    _what = "response"

    def __init__(
        self, receiver: IResponseReceiver, method: bytes, upgrade: bool = False
    ) -> None:
        """
        @param receiver: told of the response.
        @param method: the request's method (a C{HEAD} response has no body).
        @param upgrade: whether the request asked to switch protocols: a
            C{101} head is then the final one, and what follows it another
            protocol's bytes (see L{unparsed}); else a C{101} is an error.
        """
        super().__init__(receiver)
        self._method = method
        self._upgrade = upgrade
        self.head: ResponseHead | None = None

    @property
    def delimitedByClose(self) -> bool:
        """Whether the body ends where the stream ends."""
        return self._state is _State.UNTIL_CLOSE

    @property
    def switched(self) -> bool:
        """Whether the response was a C{101}, the stream now another protocol's."""
        return self._state is _State.SWITCHED

    def dataReceived(self, data: bytes) -> None:
        """
        Read C{data}; what follows a complete response is ignored, what
        follows a C{101} kept for L{unparsed}.

        @raise ResponseError: if the response is malformed.
        """
        state = self._state
        if state is _State.UNTIL_CLOSE:
            if data:
                self._receiver.bodyReceived(data)
            return
        if state is _State.LENGTH and not self._buffer and len(data) < self._remaining:
            # The fast path of a long body: handed on as it comes.
            if data:
                self._remaining -= len(data)
                self._receiver.bodyReceived(data)
            return
        if state is _State.DONE:
            return
        self._read(data)

    def unparsed(self) -> bytes:
        """
        Take the bytes that followed a C{101} head: the first of the new
        protocol's.
        """
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def connectionLost(self) -> None:
        """
        The stream ended. A body delimited by the close is complete now;
        any other response that is not complete was cut.

        @raise ResponseError: if the response was cut.
        """
        if self._state is _State.UNTIL_CLOSE:
            self._finish()
        elif self._state not in (_State.DONE, _State.SWITCHED):
            raise ResponseError(
                "the stream ended before a response head"
                if self.head is None
                else "the stream ended in the middle of the response body"
            )

    def _finish(self) -> None:
        self._state = _State.DONE
        self._buffer.clear()
        self._receiver.responseComplete()

    def _readHead(self) -> bool:
        data = self._takeHead()
        if data is None:
            return False
        head = _parseResponseHead(data)
        if head.code == 101 and self._upgrade:
            self._state = _State.SWITCHED
            self.head = head
            self._receiver.headReceived(head)
            return False
        if 100 <= head.code < 200:
            if head.code == 101:
                raise ResponseError("101 Switching Protocols answering a plain request")
            return True
        framing = _responseFraming(head, self._method)
        self.head = head
        self._receiver.headReceived(head)
        if not self._startBody(framing):
            return False
        buffer = self._buffer
        if self._state is _State.UNTIL_CLOSE and buffer:
            data = bytes(buffer)
            buffer.clear()
            self._receiver.bodyReceived(data)
        return True

    def _readSwitched(self) -> bool:
        # The bytes are the new protocol's: kept for unparsed().
        return False


class RequestParser(_Reader):
    """
    Reads one HTTP/1.1 request, as a stream carries it: its head, then a
    body framed by its Content-Length or chunked, or none. What follows the
    request (the next request, or once an upgrade is accepted the new
    protocol's bytes) is kept for L{unparsed}.

    It reads strictly (see L{_requestFraming} and L{_parseRequestHead}):
    whatever a local service could frame otherwise is an error, so that no
    request can hide another.

    @ivar head: the head, once it is in.
    """

    _error = RequestError
    _what = "request"
    _strict = True

    def __init__(self, receiver: IRequestReceiver) -> None:
        """
        @param receiver: told of the request.
        """
        super().__init__(receiver)
        self.head: RequestHead | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Read C{data}; what follows the request is kept for L{unparsed}.

        @raise RequestError: if the request is malformed.
        """
        state = self._state
        if state is _State.LENGTH and not self._buffer and len(data) < self._remaining:
            # The fast path of a long body: handed on as it comes.
            if data:
                self._remaining -= len(data)
                self._receiver.bodyReceived(data)
            return
        if state is _State.DONE:
            self._buffer += data
            return
        self._read(data)

    def unparsed(self) -> bytes:
        """Take the bytes that followed the complete request."""
        if self._state is not _State.DONE:
            return b""
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def connectionLost(self) -> None:
        """
        The stream ended.

        @raise RequestError: if the request is not complete.
        """
        if self._state is not _State.DONE:
            raise RequestError(
                "the stream ended before a request head"
                if self.head is None
                else "the stream ended in the middle of the request body"
            )

    def _finish(self) -> None:
        self._state = _State.DONE
        self._searched = 0
        self._receiver.requestComplete()

    def _readHead(self) -> bool:
        data = self._takeHead()
        if data is None:
            return False
        head = _parseRequestHead(data)
        framing = _requestFraming(head)
        self.head = head
        self._receiver.headReceived(head)
        return self._startBody(framing)


class ResponseHeadReader(_Reader):
    """
    Reads a response head that arrives in pieces, and keeps the bytes that
    follow it: for a response after which the stream carries another
    protocol (the answer to the tunnel's C{CONNECT}).

    @ivar maxSize: the longest head accepted.
    """

    _error = ResponseError
    _what = "response"

    def __init__(self, maxSize: int = MAX_HEAD_BYTES) -> None:
        super().__init__(None)
        self.maxSize = self._maxHead = maxSize

    def feed(self, data: bytes) -> tuple[ResponseHead, bytes] | None:
        """
        Take the next bytes of the response.

        @return: the head and the bytes after it once the head is complete,
            else L{None}.
        @raise ResponseError: if the head is longer than L{maxSize} or
            malformed.
        """
        self._buffer += data
        head = self._takeHead()
        if head is None:
            return None
        rest = bytes(self._buffer)
        self._buffer = bytearray()
        return _parseResponseHead(head), rest


ResponseParser._steps = {
    _State.HEAD: ResponseParser._readHead,
    _State.LENGTH: ResponseParser._readLength,
    _State.CHUNK_SIZE: ResponseParser._readChunkSize,
    _State.CHUNK_DATA: ResponseParser._readChunkData,
    _State.CHUNK_END: ResponseParser._readChunkEnd,
    _State.TRAILER: ResponseParser._readTrailer,
    _State.SWITCHED: ResponseParser._readSwitched,
}

RequestParser._steps = {
    _State.HEAD: RequestParser._readHead,
    _State.LENGTH: RequestParser._readLength,
    _State.CHUNK_SIZE: RequestParser._readChunkSize,
    _State.CHUNK_DATA: RequestParser._readChunkData,
    _State.CHUNK_END: RequestParser._readChunkEnd,
    _State.TRAILER: RequestParser._readTrailer,
}
