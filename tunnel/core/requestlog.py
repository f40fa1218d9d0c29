"""
The client's line per forwarded HTTP exchange, sans I/O: what it reads of
the bytes going by (the request line, the status line) and how it says it.

It reads at most L{MAX_FIRST_LINE} bytes of each direction and keeps only
counts after that, so watching costs no memory that grows with the
exchange. The lines are read with L{tunnel.core.http}'s grammar; a
malformed one is shown as dashes. What the public wrote (the target) is
shown with anything outside printable ASCII replaced, so that a request
cannot write control sequences to the terminal of the client's user.
"""

from __future__ import annotations

import re

import attrs

from tunnel.core.http import methodAndTarget, statusCode

#: The most bytes of each direction read for its first line.
MAX_FIRST_LINE = 8 * 1024

#: The longest target shown; longer ones are cut, with an ellipsis.
MAX_TARGET_SHOWN = 120

_NOT_PRINTABLE = re.compile(rb"[^!-~]")


def _printable(value: bytes, limit: int) -> str:
    text = _NOT_PRINTABLE.sub(b"?", value[:limit]).decode("ascii")
    return text + "…" if len(value) > limit else text


class _FirstLine:
    """The first line of one direction, once it has come, and a byte count."""

    def __init__(self) -> None:
        self.line: bytes | None = None
        self.size = 0
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self.size += len(data)
        if self.line is not None or len(self._buffer) >= MAX_FIRST_LINE:
            return
        chunk = data[: MAX_FIRST_LINE - len(self._buffer)]
        self._buffer += chunk
        if b"\n" in chunk:
            line = bytes(self._buffer).partition(b"\n")[0]
            self.line, self._buffer = line.rstrip(b"\r"), bytearray()


@attrs.frozen
class ExchangeSummary:
    """
    One forwarded HTTP exchange, as the client's log line says it.

    @ivar method: the request's method, or C{"-"} if no request line came.
    @ivar target: the request's target (its path), or C{"-"}.
    @ivar status: the local service's status code, or L{None} if it sent none.
    @ivar requestBytes: bytes that went to the local service.
    @ivar responseBytes: bytes that came back from it.
    @ivar seconds: from the stream's arrival to the end of both directions.
    """

    method: str
    target: str
    status: int | None
    requestBytes: int
    responseBytes: int
    seconds: float

    def __str__(self) -> str:
        status = "-" if self.status is None else str(self.status)
        return (
            f"{self.method} {self.target} {status} {self.seconds * 1000:.0f} ms "
            f"{self.requestBytes} B in, {self.responseBytes} B out"
        )


class ExchangeWatcher:
    """
    Watches the bytes of one forwarded HTTP exchange go by, to summarise it.

    @ivar started: when the exchange began, in the caller's clock's seconds.
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self._request = _FirstLine()
        self._response = _FirstLine()

    def requestData(self, data: bytes) -> None:
        """Bytes of the request went to the local service."""
        self._request.feed(data)

    def responseData(self, data: bytes) -> None:
        """Bytes of the response came from the local service."""
        self._response.feed(data)

    def summary(self, now: float) -> ExchangeSummary:
        """The exchange, ended at C{now}."""
        request = None if self._request.line is None else methodAndTarget(self._request.line)
        method, target = (b"-", b"-") if request is None else request
        status = None if self._response.line is None else statusCode(self._response.line)
        return ExchangeSummary(
            _printable(method, 20),
            _printable(target, MAX_TARGET_SHOWN),
            status,
            self._request.size,
            self._response.size,
            max(0.0, now - self.started),
        )
