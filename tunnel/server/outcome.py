"""
Who answered a request the tunnel server served: the local service behind
a client, through the tunnel, or the tunnel server itself, and why.

The place that decides marks the request, once: L{markRouted} where the
request is routed to a virtual host, L{markLocal} where a local service's
response is relayed, L{refuse} wherever the server answers by itself. The
access log (L{tunnel.server.accesslog}) and the metrics
(L{tunnel.server.metrics}) read the marks (L{outcomeOf}); neither decides
anything.
"""

from __future__ import annotations

import enum
from typing import Literal, Union

import attrs
from twisted.web.http import Request

from tunnel.core.http import reasonPhrase

#: The mark of a response that came from the local service, through the
#: tunnel.
LOCAL: Literal["local"] = "local"


class Refusal(enum.Enum):
    """
    Why the tunnel server answered by itself: each reason, as the access
    log and the metrics name it, and the status it answers with.
    """

    #: A malformed request: its Host header, its target, a control request
    #: with a body or malformed access rules.
    BAD_REQUEST = ("bad-request", 400)
    #: No virtual host matches the request's Host.
    NO_TUNNEL = ("no-tunnel", 404)
    #: The host's access rule does not admit the source address.
    FORBIDDEN = ("forbidden", 403)
    #: The host asks for a user name and password, and got no right pair.
    UNAUTHORIZED = ("unauthorized", 401)
    #: The host's client is not connected.
    NOT_CONNECTED = ("not-connected", 502)
    #: The host's client went away before the response head.
    CLIENT_GONE = ("client-gone", 502)
    #: No valid response came through the tunnel.
    INVALID_RESPONSE = ("invalid-response", 502)
    #: Too many requests wait for a stream of the client, or the client
    #: reads nothing of what it is sent.
    TOO_MANY_PENDING = ("too-many-pending", 503)
    #: The client did not open a stream in time.
    STREAM_TIMEOUT = ("stream-timeout", 504)
    #: The local service kept the request waiting too long.
    LOCAL_TIMEOUT = ("local-timeout", 504)
    #: A request for the control path that is not a CONNECT.
    METHOD_NOT_ALLOWED = ("method-not-allowed", 405)
    #: A CONNECT from a source address that failed too often.
    RATE_LIMITED = ("rate-limited", 429)
    #: A CONNECT with an identifier (or an account's token) the server does
    #: not know.
    UNKNOWN_IDENTIFIER = ("unknown-identifier", 403)
    #: A CONNECT for an identifier whose client is connected and answers.
    CONFLICT = ("conflict", 409)
    #: A CONNECT whose self-service registration was refused (its status
    #: says why: 400, 403, 409, 500 or 503).
    REGISTRATION_REFUSED = ("registration-refused", 403)
    #: A connection beyond the public site's caps, refused before any
    #: request was read (counted by the metrics; no request is logged).
    TOO_MANY_CONNECTIONS = ("too-many-connections", 503)

    @property
    def reason(self) -> str:
        """Its name in the access log and the metrics."""
        return self.value[0]

    @property
    def code(self) -> int:
        """The status it answers with, unless told another."""
        return self.value[1]


#: Who answered a request: the local service, or the tunnel for a reason.
AnsweredBy = Union[Refusal, Literal["local"]]


@attrs.define
class Outcome:
    """
    What the tunnel server made of one request.

    @ivar host: the virtual host it was routed to, or L{None}.
    @ivar answeredBy: L{LOCAL}, a L{Refusal}, or L{None} while nobody
        answered (or if something other than the tunnel's resource did).
    """

    host: str | None = None
    answeredBy: AnsweredBy | None = None


def outcomeOf(request: Request) -> Outcome:
    """The marks of C{request}, empty ones if nothing marked it yet."""
    outcome = getattr(request, "tunnelOutcome", None)
    if outcome is None:
        outcome = request.tunnelOutcome = Outcome()  # type: ignore[attr-defined]
    return outcome


def markRouted(request: Request, host: str) -> None:
    """C{request} goes to the virtual host C{host}."""
    outcomeOf(request).host = host


def markLocal(request: Request) -> None:
    """The response to C{request} is the local service's."""
    outcomeOf(request).answeredBy = LOCAL


def refuse(request: Request, refusal: Refusal, message: bytes, code: int | None = None) -> None:
    """
    Answer C{request} by the tunnel server itself, for C{refusal}: its
    status (or C{code}) and a short plain-text C{message}.
    """
    outcomeOf(request).answeredBy = refusal
    code = refusal.code if code is None else code
    body = message + b"\n"
    # twisted.web's table lacks some phrases (429 would be "Unknown Status").
    request.setResponseCode(code, reasonPhrase(code) or None)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"content-length", b"%d" % (len(body),))
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.write(body)
    request.finish()
