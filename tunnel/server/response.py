"""
A lean HTTP/1.1 response parser, sans I/O: the response a local service
sends back through a tunnel stream goes in as bytes, and comes out as calls
to a L{IResponseReceiver}: its head once, its body as it arrives (chunked
framing removed), and its end.

It reads one response per stream (the tunnel asks for no keep-alive), so
it knows nothing of pipelining; it skips informational (1xx) heads, bounds
every line it must hold, and raises L{ResponseError} for anything it cannot
frame, never anything else.
"""

from __future__ import annotations

import enum
import re

import attrs
from twisted.web.http import RESPONSES
from zope.interface import Interface

#: The most bytes a response head may take, and a chunk-size or trailer
#: line.
MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 4 * 1024

# The longest Content-Length taken: 2**63 has 19 digits.
_MAX_LENGTH_DIGITS = 19

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
# How many bytes before the first new one an end of head may start at.
_END_OF_HEAD_OVERLAP = 3
_END_OF_LINE = re.compile(rb"\n")
_LINE_END = re.compile(rb"\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: (.*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# What a reason phrase may not hold (RFC 9112: HTAB, SP, VCHAR, obs-text).
_UNSAFE_PHRASE = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
# What a field value may not hold, replaced with SP (RFC 9110, 5.5).
_UNSAFE_VALUE = bytes.maketrans(
    bytes(c for c in range(0x20) if c != 0x09) + b"\x7f", b" " * 32
)


class _State(enum.Enum):
    """Where a L{ResponseParser} is in the response."""

    HEAD = "head"
    LENGTH = "length"
    UNTIL_CLOSE = "until close"
    CHUNK_SIZE = "chunk size"
    CHUNK_DATA = "chunk data"
    CHUNK_END = "chunk end"
    TRAILER = "trailer"
    SWITCHED = "switched"
    DONE = "done"


class ResponseError(Exception):
    """The bytes are not an HTTP/1.1 response this parser can frame."""


@attrs.frozen
class ResponseHead:
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

    def values(self, name: bytes) -> list[bytes]:
        """The values of the fields called C{name} (lower-case)."""
        return [value for key, value in self.headers if key.lower() == name]

    def tokens(self, name: bytes) -> list[bytes]:
        """The comma-separated, lower-cased tokens of the fields C{name}."""
        return [
            token.strip().lower()
            for value in self.values(name)
            for token in value.split(b",")
            if token.strip()
        ]


class IResponseReceiver(Interface):
    """What a L{ResponseParser} tells of the response it reads."""

    def headReceived(head: ResponseHead) -> None:
        """The final (non-informational) head is in."""

    def bodyReceived(data: bytes) -> None:
        """Some of the body arrived (never empty)."""

    def responseComplete() -> None:
        """The whole response is in."""


def parseHead(data: bytes) -> ResponseHead:
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
        phrase = RESPONSES.get(code, b"")
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


def contentLength(head: ResponseHead) -> int | None:
    """
    The body length C{head}'s Content-Length fields give, or L{None}
    without any.

    @raise ResponseError: if they are malformed or disagree.
    """
    values = {
        item.strip() for value in head.values(b"content-length") for item in value.split(b",")
    }
    if not values:
        return None
    if len(values) > 1:
        raise ResponseError("conflicting Content-Length values")
    value = values.pop()
    if not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
        raise ResponseError(f"malformed Content-Length {value[:80]!r}")
    return int(value)


@attrs.frozen
class _Framing:
    """How a response body is delimited: the state that reads it, and its length."""

    state: _State
    length: int = 0


def bodyFraming(head: ResponseHead, method: bytes) -> _Framing:
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


class ResponseParser:
    """
    Reads one HTTP/1.1 response.

    Every byte is searched at most once (a few more at the edge of what was
    searched before) for the end of the line or head it belongs to,
    however the response is split: the work is linear in its size.

    @ivar head: the final head, once it is in.
    """

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
        self._receiver = receiver
        self._method = method
        self._upgrade = upgrade
        self._state = _State.HEAD
        self._buffer = bytearray()
        # How many bytes at the start of the buffer were searched already,
        # in vain, for the end of what is being read.
        self._searched = 0
        self._remaining = 0
        self._trailerBytes = 0
        self.head: ResponseHead | None = None

    @property
    def complete(self) -> bool:
        """Whether the whole response is in."""
        return self._state is _State.DONE

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
        self._buffer += data
        while self._buffer and _STEPS[self._state](self):
            pass

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

    # -- the states --------------------------------------------------------

    # Each reads what it can of the buffer and returns whether to go on.

    def _finish(self) -> None:
        self._state = _State.DONE
        self._buffer.clear()
        self._receiver.responseComplete()

    def _readHead(self) -> bool:
        buffer = self._buffer
        end = self._search(_END_OF_HEAD, _END_OF_HEAD_OVERLAP)
        if end is None:
            # The buffer may end with the start of the empty line.
            if len(buffer) > MAX_HEAD_BYTES + _END_OF_HEAD_OVERLAP:
                raise ResponseError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            return False
        if end.start() > MAX_HEAD_BYTES:
            raise ResponseError(f"response head longer than {MAX_HEAD_BYTES} bytes")
        head = parseHead(bytes(buffer[: end.start()]))
        self._consume(end.end())
        if head.code == 101 and self._upgrade:
            self._state = _State.SWITCHED
            self.head = head
            self._receiver.headReceived(head)
            return False
        if 100 <= head.code < 200:
            if head.code == 101:
                raise ResponseError("101 Switching Protocols answering a plain request")
            return True
        framing = bodyFraming(head, self._method)
        self.head = head
        self._receiver.headReceived(head)
        if framing.state is _State.DONE:
            self._finish()
            return False
        self._state = framing.state
        self._remaining = framing.length
        if self._state is _State.UNTIL_CLOSE and buffer:
            data = bytes(buffer)
            buffer.clear()
            self._receiver.bodyReceived(data)
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

    def _line(self) -> bytes | None:
        """Take a line (chunk size, chunk end, trailer) off the buffer."""
        buffer = self._buffer
        end = self._search(_END_OF_LINE, 0)
        if end is None:
            # The buffer may end with the line's CR.
            if len(buffer) > MAX_LINE_BYTES + 1:
                raise ResponseError(f"chunked framing line longer than {MAX_LINE_BYTES} bytes")
            return None
        line = bytes(buffer[: end.start()]).rstrip(b"\r")
        if len(line) > MAX_LINE_BYTES:
            raise ResponseError(f"chunked framing line longer than {MAX_LINE_BYTES} bytes")
        self._consume(end.end())
        return line

    def _readChunkSize(self) -> bool:
        line = self._line()
        if line is None:
            return False
        size = line.partition(b";")[0].strip()
        if _HEX.fullmatch(size) is None:
            raise ResponseError(f"malformed chunk size {line[:80]!r}")
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
            raise ResponseError("chunk data longer than its size")
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
            raise ResponseError(f"trailers longer than {MAX_HEAD_BYTES} bytes")
        return True

    def _readSwitched(self) -> bool:
        # The bytes are the new protocol's: kept for unparsed().
        return False


# What each state reads of the buffer.
_STEPS = {
    _State.HEAD: ResponseParser._readHead,
    _State.LENGTH: ResponseParser._readLength,
    _State.CHUNK_SIZE: ResponseParser._readChunkSize,
    _State.CHUNK_DATA: ResponseParser._readChunkData,
    _State.CHUNK_END: ResponseParser._readChunkEnd,
    _State.TRAILER: ResponseParser._readTrailer,
    _State.SWITCHED: ResponseParser._readSwitched,
}
