"""
The client's line per forwarded HTTP exchange, sans I/O: how it says what
an L{tunnel.core.capture.ExchangeRecorder} kept of the bytes going by.

The request and status lines are read with L{tunnel.core.http}'s grammar;
a malformed one is shown as dashes. What the public wrote (the method, the target) is shown
with anything outside printable ASCII replaced, so that a request cannot
write control sequences to the terminal of the client's user.
"""

from __future__ import annotations

import re

import attrs

from tunnel.core.capture import CapturedExchange

#: The longest target shown; longer ones are cut, with an ellipsis.
MAX_TARGET_SHOWN = 120

_NOT_PRINTABLE = re.compile(r"[^!-~]")


def _printable(value: str, limit: int) -> str:
    text = _NOT_PRINTABLE.sub("?", value[:limit])
    return text + "…" if len(value) > limit else text


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


def summarise(exchange: CapturedExchange, now: float) -> ExchangeSummary:
    """The line of a recorded HTTP exchange, ended (or still open) at C{now}."""
    return ExchangeSummary(
        "-" if exchange.method is None else _printable(exchange.method, 20),
        "-" if exchange.target is None else _printable(exchange.target, MAX_TARGET_SHOWN),
        exchange.status,
        exchange.bytesIn,
        exchange.bytesOut,
        exchange.duration(now),
    )
