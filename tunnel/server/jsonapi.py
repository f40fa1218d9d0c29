"""
What the JSON APIs (the server's admin API, the client's inspector) share:
their error, answered as C{{"error": REASON}} with its status; how they
read a bounded request body; and how they render an answer.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import NOT_DONE_YET, Request

from tunnel.server.site import StreamingRequest


class JSONError(Exception):
    """
    A request a JSON API refuses.

    @ivar code: the HTTP status of the answer.
    """

    def __init__(self, code: int, message: str) -> None:
        """
        @param code: the HTTP status of the answer.
        @param message: why, in one line; the answer's C{error}.
        """
        super().__init__(message)
        self.code = code


def _tooLarge(maxBytes: int) -> JSONError:
    return JSONError(413, f"the request body is larger than {maxBytes} bytes")


class _BoundedBody:
    """
    Collects a streamed request body of at most C{maxBytes}; past that, it
    stops the body and fails L{done} with a C{413}.

    @ivar done: fires with the whole body.
    """

    def __init__(self, producer: IProducer, maxBytes: int) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._producer = producer
        self._maxBytes = maxBytes
        self._chunks: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        """A chunk of the body."""
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._maxBytes:
            self._chunks = []
            self._producer.stopProducing()
            self.done.errback(Failure(_tooLarge(self._maxBytes)))
            return
        self._chunks.append(data)

    def finished(self, result: object) -> None:
        """The whole body arrived."""
        if not self.done.called:
            self.done.callback(b"".join(self._chunks))

    def failed(self, reason: Failure) -> None:
        """The connection was lost before the whole body arrived."""
        if not self.done.called:
            self.done.errback(reason)


def readBoundedBody(request: Request, maxBytes: int) -> Deferred[bytes]:
    """
    The body of C{request}, if it is no larger than C{maxBytes}: read as it
    arrives from a L{StreamingRequest} (one that announces more is refused
    before any of it is read), or from the body twisted.web buffered.

    @return: a L{Deferred} firing with the body, or failing with a C{413}
        L{JSONError} (or with the reason the connection was lost).
    """
    if isinstance(request, StreamingRequest):
        body = request.body
        if body is None:
            return succeed(b"")
        if body.length is not UNKNOWN_LENGTH and body.length > maxBytes:
            return fail(_tooLarge(maxBytes))
        collected = _BoundedBody(body, maxBytes)
        body.startProducing(collected).addCallbacks(collected.finished, collected.failed)
        return collected.done
    data = request.content.read(maxBytes + 1)
    if len(data) > maxBytes:
        return fail(_tooLarge(maxBytes))
    return succeed(data)


def renderJSON(request: Request, handle: Callable[[], object], log: Logger, api: str) -> object:
    """
    Render C{request} with what C{handle} answers, now or as a L{Deferred}:
    a C{dict} (a C{200}), C{(code, dict)} (JSON), C{(code, contentType,
    bytes)}, or L{NOT_DONE_YET} (it answers itself). A L{JSONError} is
    answered as C{{"error": REASON}}; any other failure is logged (naming
    the C{api}) and answered C{500}. Nothing is written to a request whose
    client has gone.

    @return: L{NOT_DONE_YET}, for twisted.web.
    """
    gone: list[Failure] = []
    request.notifyFinish().addErrback(gone.append)

    def failed(reason: Failure) -> object:
        if reason.check(JSONError):
            return reason.value.code, {"error": str(reason.value)}
        if not gone:
            log.failure("{api}: request failed", reason, api=api)
        return 500, {"error": "internal error"}

    def answer(answer: Any) -> None:
        if gone or answer is NOT_DONE_YET:
            return
        if isinstance(answer, dict):
            answer = 200, answer
        if len(answer) == 2:
            code, body = answer
            answer = code, b"application/json", json.dumps(body).encode("utf-8") + b"\n"
        code, contentType, data = answer
        request.setResponseCode(code)
        request.setHeader(b"content-type", contentType)
        request.setHeader(b"cache-control", b"no-store")
        request.write(data)
        request.finish()

    maybeDeferred(handle).addErrback(failed).addCallback(answer)
    return NOT_DONE_YET
