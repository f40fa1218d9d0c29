"""
The bytes of a captured request sent again, as it was or edited, sans I/O.

A replayed request asks the local service to close the connection after
its answer (C{Connection: close}), carries its body with a
C{Content-Length} that L{replayRequest} computes, and is read back with the
strict request grammar of L{tunnel.core.http} before it is sent: an edit
that would not make exactly one well-formed request is refused.
"""

from __future__ import annotations

import attrs
from zope.interface import implementer

from tunnel.core.capture import CapturedExchange, Kind, MessageState
from tunnel.core.http import IRequestReceiver, RequestHead, RequestParser, MessageError

#: Header fields the replay writes itself, or leaves out: the framing and
#: the connection's own.
_HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade"}
)

#: Methods whose requests carry a Content-Length even when their body is empty.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class ReplayError(ValueError):
    """The exchange cannot be replayed as asked; the message says why."""


@attrs.frozen
class ReplayEdit:
    """
    What to change of a captured request before sending it again; what is
    L{None} is sent as it was captured.

    @ivar method: the method.
    @ivar target: the request target (path and query).
    @ivar headers: every header field, in order (the framing fields are
        written by the replay).
    @ivar body: the body.
    """

    method: str | None = None
    target: str | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes | None = None


@implementer(IRequestReceiver)
class _Check:
    """Reads the built request back."""

    def __init__(self) -> None:
        self.head: RequestHead | None = None
        self.complete = False

    def headReceived(self, head: RequestHead) -> None:
        self.head = head

    def bodyReceived(self, data: bytes) -> None:
        pass

    def requestComplete(self) -> None:
        self.complete = True


def _encode(value: str, what: str) -> bytes:
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ReplayError(f"the {what} {value[:80]!r} is not Latin-1 text") from None


def replayRequest(exchange: CapturedExchange, edit: ReplayEdit = ReplayEdit()) -> bytes:
    """
    The request of C{exchange} to send again, changed as C{edit} says.

    @raise ReplayError: if the exchange is not an HTTP request kept whole
        (its body truncated, say, without an edited body), or the edit does
        not make one well-formed request.
    """
    request = exchange.request
    if exchange.kind is not Kind.HTTP or exchange.method is None or exchange.target is None:
        raise ReplayError("only an HTTP exchange whose request head was read can be replayed")
    if edit.body is None and (request.truncated or request.state is not MessageState.COMPLETE):
        raise ReplayError(
            "the request's body was not kept whole, so it cannot be sent again as it "
            "was; give the body to send"
        )
    method = exchange.method if edit.method is None else edit.method
    target = exchange.target if edit.target is None else edit.target
    fields = request.textHeaders() if edit.headers is None else edit.headers
    body = bytes(request.body) if edit.body is None else edit.body
    lines = [b"%s %s HTTP/1.1" % (_encode(method, "method"), _encode(target, "target"))]
    for name, value in fields:
        if name.lower() not in _HOP_BY_HOP:
            lines.append(_encode(name, "header name") + b": " + _encode(value, "header value"))
    if body or method in _BODY_METHODS:
        lines.append(b"Content-Length: %d" % (len(body),))
    lines.append(b"Connection: close")
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    check = _Check()
    parser = RequestParser(check)
    try:
        parser.dataReceived(data)
    except MessageError as e:
        raise ReplayError(f"the edited request is not well-formed: {e}") from None
    if not check.complete or parser.unparsed() or len(check.head.headers) != len(lines) - 1:
        raise ReplayError("the edited request does not read back as one request")
    return data
