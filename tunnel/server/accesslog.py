"""
The tunnel server's access log: a line per answered request, in the
combined log format, followed by what only the tunnel knows::

    COMBINED host="HOST" answer=ANSWER

C{HOST} is the request's Host header as the public sent it (for an
absolute-form target, the target's authority), or C{-} without one.
Between its quotes, printable ASCII stands for itself but for C{"} and
C{\\}, written C{\\"} and C{\\\\}; every other byte is written C{\\xHH}:
whatever the public sends, a line stays one line, and its fields stay
where they are.

C{ANSWER} says who answered: C{local} for the local service, through the
tunnel; C{tunnel:REASON} for the tunnel server itself, C{REASON} one of
the L{Refusal} reasons (C{tunnel:no-tunnel}, C{tunnel:forbidden},
C{tunnel:stream-timeout}...); C{-} if neither marked it (an error inside
the server).
"""

from __future__ import annotations

from twisted.web.http import Request, combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter
from zope.interface import provider

from tunnel.server.outcome import LOCAL, outcomeOf

# The bytes written after a backslash between the quotes of a field, and
# those that stand for themselves.
_BACKSLASHED = frozenset(b'"\\')
_PLAIN = frozenset(range(0x20, 0x7F)) - _BACKSLASHED


def _escaped(byte: int) -> str:
    if byte in _PLAIN:
        return chr(byte)
    if byte in _BACKSLASHED:
        return "\\" + chr(byte)
    return f"\\x{byte:02x}"


def quoted(value: bytes) -> str:
    """C{value} between double quotes, escaped as the module says."""
    return '"' + "".join(_escaped(byte) for byte in value) + '"'


def describeAnswer(request: Request) -> str:
    """Who answered C{request}: C{local}, C{tunnel:REASON} or C{-}."""
    answeredBy = outcomeOf(request).answeredBy
    if answeredBy is None:
        return "-"
    if answeredBy == LOCAL:
        return "local"
    return f"tunnel:{answeredBy.reason}"


@provider(IAccessLogFormatter)
def accessLogFormatter(timestamp: str, request: Request) -> str:
    """The access log line of C{request}, answered at C{timestamp}."""
    host = request.getHeader(b"host")
    return (
        f"{combinedLogFormatter(timestamp, request)} "
        f"host={'-' if host is None else quoted(host)} answer={describeAnswer(request)}"
    )
