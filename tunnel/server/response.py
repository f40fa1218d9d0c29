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

import re

import attrs
from zope.interface import Interface

#: The most bytes a response head may take, and a chunk-size or trailer
#: line.
MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 4 * 1024

_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_LINE_END = re.compile(rb"\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: (.*))?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

# Framing states.
_HEAD = "head"
_LENGTH = "length"
_UNTIL_CLOSE = "until close"
_CHUNK_SIZE = "chunk size"
_CHUNK_DATA = "chunk data"
_CHUNK_END = "chunk end"
_TRAILER = "trailer"
_DONE = "done"


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

    @raise ResponseError: if it is malformed.
    """
    lines = _LINE_END.split(data)
    status = _STATUS_LINE.fullmatch(lines[0])
    if status is None:
        raise ResponseError(f"malformed status line {lines[0][:80]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise ResponseError("continuation line before any header")
            name, value = headers.pop()
            headers.append((name, (value + b" " + line.strip()).strip()))
            continue
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            raise ResponseError(f"malformed header line {line[:80]!r}")
        headers.append((name, value.strip(b" \t")))
    return ResponseHead(int(status.group(1)), status.group(2) or b"", headers)


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
    if len(values) > 1 or not all(value.isdigit() for value in values):
        raise ResponseError("malformed Content-Length")
    return int(values.pop())


class ResponseParser:
    """
    Reads one HTTP/1.1 response.

    @ivar head: the final head, once it is in.
    """

    def __init__(self, receiver: IResponseReceiver, method: bytes) -> None:
        """
        @param receiver: told of the response.
        @param method: the request's method (a C{HEAD} response has no body).
        """
        self._receiver = receiver
        self._method = method
        self._state = _HEAD
        self._buffer = bytearray()
        self._remaining = 0
        self._trailerBytes = 0
        self.head: ResponseHead | None = None

    @property
    def complete(self) -> bool:
        """Whether the whole response is in."""
        return self._state is _DONE

    @property
    def delimitedByClose(self) -> bool:
        """Whether the body ends where the stream ends."""
        return self._state is _UNTIL_CLOSE

    def dataReceived(self, data: bytes) -> None:
        """
        Read C{data}; what follows a complete response is ignored.

        @raise ResponseError: if the response is malformed.
        """
        state = self._state
        if state is _UNTIL_CLOSE:
            if data:
                self._receiver.bodyReceived(data)
            return
        if state is _LENGTH and not self._buffer and len(data) < self._remaining:
            # The fast path of a long body: handed on as it comes.
            if data:
                self._remaining -= len(data)
                self._receiver.bodyReceived(data)
            return
        if state is _DONE:
            return
        self._buffer += data
        while self._buffer and _STEPS[self._state](self):
            pass

    def connectionLost(self) -> None:
        """
        The stream ended. A body delimited by the close is complete now;
        any other response that is not complete was cut.

        @raise ResponseError: if the response was cut.
        """
        if self._state is _UNTIL_CLOSE:
            self._finish()
        elif self._state is not _DONE:
            raise ResponseError(
                "the stream ended before a response head"
                if self.head is None
                else "the stream ended in the middle of the response body"
            )

    # -- the states --------------------------------------------------------

    # Each reads what it can of the buffer and returns whether to go on.

    def _finish(self) -> None:
        self._state = _DONE
        self._buffer.clear()
        self._receiver.responseComplete()

    def _readHead(self) -> bool:
        buffer = self._buffer
        end = _END_OF_HEAD.search(buffer)
        if end is None:
            if len(buffer) > MAX_HEAD_BYTES:
                raise ResponseError(f"response head longer than {MAX_HEAD_BYTES} bytes")
            return False
        if end.start() > MAX_HEAD_BYTES:
            raise ResponseError(f"response head longer than {MAX_HEAD_BYTES} bytes")
        head = parseHead(bytes(buffer[: end.start()]))
        del buffer[: end.end()]
        if 100 <= head.code < 200:
            if head.code == 101:
                raise ResponseError("101 Switching Protocols answering a plain request")
            return True
        self.head = head
        self._receiver.headReceived(head)
        if self._method == b"HEAD" or head.code in (204, 304):
            self._finish()
            return False
        encodings = head.tokens(b"transfer-encoding")
        length = contentLength(head)
        if encodings:
            self._state = _CHUNK_SIZE if encodings[-1] == b"chunked" else _UNTIL_CLOSE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH
            if length == 0:
                self._finish()
                return False
        else:
            self._state = _UNTIL_CLOSE
        if self._state is _UNTIL_CLOSE and buffer:
            data = bytes(buffer)
            buffer.clear()
            self._receiver.bodyReceived(data)
        return True

    def _takeBody(self) -> bool:
        """
        Pass on the buffered body bytes, at most the C{_remaining} ones;
        return whether none remain.
        """
        buffer = self._buffer
        data = bytes(buffer[: self._remaining])
        del buffer[: len(data)]
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
        end = buffer.find(b"\n")
        if end < 0:
            if len(buffer) > MAX_LINE_BYTES:
                raise ResponseError(f"chunked framing line longer than {MAX_LINE_BYTES} bytes")
            return None
        line = bytes(buffer[:end]).rstrip(b"\r")
        del buffer[: end + 1]
        return line

    def _readChunkSize(self) -> bool:
        line = self._line()
        if line is None:
            return False
        size = line.partition(b";")[0].strip()
        if _HEX.fullmatch(size) is None:
            raise ResponseError(f"malformed chunk size {line[:80]!r}")
        self._remaining = int(size, 16)
        self._state = _CHUNK_DATA if self._remaining else _TRAILER
        return True

    def _readChunkData(self) -> bool:
        if self._takeBody():
            self._state = _CHUNK_END
        return True

    def _readChunkEnd(self) -> bool:
        line = self._line()
        if line is None:
            return False
        if line:
            raise ResponseError("chunk data longer than its size")
        self._state = _CHUNK_SIZE
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


# What each state reads of the buffer.
_STEPS = {
    _HEAD: ResponseParser._readHead,
    _LENGTH: ResponseParser._readLength,
    _CHUNK_SIZE: ResponseParser._readChunkSize,
    _CHUNK_DATA: ResponseParser._readChunkData,
    _CHUNK_END: ResponseParser._readChunkEnd,
    _TRAILER: ResponseParser._readTrailer,
}
