"""
The inspector's web side: its page, its JSON API, its live event stream
and its metrics, as one twisted.web resource.

    - C{GET /}, C{/inspector.js}, C{/inspector.css}: the page, shipped in
      the package;
    - C{GET /api/requests}: the exchanges kept, newest first;
      C{DELETE /api/requests} lets them all go;
    - C{GET /api/requests/ID}: one exchange, with heads and bodies;
    - C{POST /api/requests/ID/replay}: send its request again to the local
      service, as it was or changed by a JSON body (C{method}, C{target},
      C{headers} as C{[[NAME, VALUE], ...]}, C{body} as text or
      C{bodyBase64}); answers with the new exchange once it ended;
    - C{GET /api/status}: the tunnel's state, since when, the keep-alive
      round trip, the public addresses;
    - C{GET /api/events}: the same news pushed as server-sent events;
    - C{GET /metrics}: the client's Prometheus metrics.

The inspector shows what went through the tunnel, bodies included, to
whoever can reach it; it listens on loopback unless told otherwise. A web
page the user visits must not read it or press its buttons: a request
whose C{Host} is a name other than C{localhost} (DNS rebinding) is
refused, as is a changing request (C{POST}, C{DELETE}) from another
C{Origin} or whose body is not declared JSON (which a cross-site form
cannot send without the browser asking first). It is served by a
L{tunnel.server.site.PrivateSite}: a request is checked at its head, and a
body announcing more than L{MAX_EDIT_BYTES} is refused before it is read.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from tunnel.client.inspector.events import EventStreams
from tunnel.client.inspector.exchangejson import detailJSON, summaryJSON
from tunnel.core.capture import CapturedExchange
from tunnel.core.replay import ReplayEdit, ReplayError
from tunnel.server.jsonapi import JSONError, readBoundedBody, renderJSON

if TYPE_CHECKING:
    from tunnel.client.inspector import Inspector

#: The page's files, and their content types.
ASSETS = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"inspector.js": ("inspector.js", b"text/javascript; charset=utf-8"),
    b"inspector.css": ("inspector.css", b"text/css; charset=utf-8"),
}

#: The most bytes of a replay's JSON body.
MAX_EDIT_BYTES = 4 * 1024 * 1024

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'",
    ),
]


def _asset(name: str) -> bytes:
    return files("tunnel.client.inspector.page").joinpath(name).read_bytes()


def isLocalHostHeader(host: bytes | None) -> bool:
    """
    Whether a C{Host} header names the inspector in a way no other site
    can: C{localhost} (or a name under it), or an IP address literal.
    """
    if not host:
        return False
    try:
        name = urlsplit("//" + host.decode("ascii")).hostname
    except (UnicodeDecodeError, ValueError):
        return False
    if name is None:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _editFromJSON(body: bytes) -> ReplayEdit:
    """
    Read a replay's JSON body.

    @raise JSONError: C{400}, if it is not a JSON object of the fields a
        replay takes, with the right types.
    """
    if not body.strip():
        return ReplayEdit()
    try:
        fields = json.loads(body)
    except ValueError as e:
        raise JSONError(400, f"the body is not JSON: {e}") from None
    if not isinstance(fields, dict):
        raise JSONError(400, "the body is a JSON object")
    unknown = set(fields) - {"method", "target", "headers", "body", "bodyBase64"}
    if unknown:
        raise JSONError(400, f"unknown fields: {', '.join(sorted(unknown))}")
    for name in ("method", "target", "body", "bodyBase64"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise JSONError(400, f"{name} is a string")
    headers = fields.get("headers")
    if headers is not None and not (
        isinstance(headers, list)
        and all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
            for pair in headers
        )
    ):
        raise JSONError(400, "headers is a list of [name, value] strings")
    if fields.get("body") is not None and fields.get("bodyBase64") is not None:
        raise JSONError(400, "give body or bodyBase64, not both")
    body = None
    if fields.get("bodyBase64") is not None:
        try:
            body = base64.b64decode(fields["bodyBase64"], validate=True)
        except binascii.Error:
            raise JSONError(400, "bodyBase64 is not base64") from None
    elif fields.get("body") is not None:
        body = fields["body"].encode("utf-8")
    return ReplayEdit(
        fields.get("method"),
        fields.get("target"),
        None if headers is None else [(name, value) for name, value in headers],
        body,
    )


class InspectorResource(Resource):
    """The inspector's page, API, event stream and metrics."""

    isLeaf = True
    _log = Logger()

    def __init__(self, inspector: Inspector) -> None:
        super().__init__()
        self._inspector = inspector
        self.events = EventStreams(inspector)

    def render(self, request: Request) -> object:
        """Check where the request comes from, dispatch it, and answer."""
        for name, value in _SECURITY_HEADERS:
            request.setHeader(name, value)
        request.setHeader(b"cache-control", b"no-store")
        return renderJSON(request, lambda: self._dispatch(request), self._log, "inspector")

    def _dispatch(self, request: Request) -> object:
        if not isLocalHostHeader(request.getHeader(b"host")):
            raise JSONError(
                403,
                "the inspector answers only to localhost or an IP address in the Host "
                "header; open it at http://127.0.0.1:PORT/",
            )
        method = request.method
        if method not in (b"GET", b"HEAD"):
            self._checkChangingRequest(request)
        segments = request.path.split(b"/")[1:]
        if method == b"GET" and len(segments) == 1 and segments[0] in ASSETS:
            name, contentType = ASSETS[segments[0]]
            return 200, contentType, _asset(name)
        if method == b"GET" and segments == [b"metrics"]:
            return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(self._inspector.metrics.registry)
        if segments[:1] != [b"api"]:
            raise JSONError(404, "no such page")
        return self._api(request, method, segments[1:])

    def _api(self, request: Request, method: bytes, segments: list[bytes]) -> object:
        inspector = self._inspector
        now = inspector.store.now()
        if segments == [b"status"] and method == b"GET":
            return inspector.status()
        if segments == [b"events"] and method == b"GET":
            self.events.add(request)
            return NOT_DONE_YET
        if segments == [b"requests"]:
            if method == b"GET":
                exchanges = [summaryJSON(e, now) for e in reversed(list(inspector.store))]
                return {"requests": exchanges, "capture": inspector.captureJSON()}
            if method == b"DELETE":
                inspector.store.clear()
                return {"requests": [], "capture": inspector.captureJSON()}
        if len(segments) in (2, 3) and segments[0] == b"requests":
            exchange = self._exchange(segments[1])
            if len(segments) == 2 and method == b"GET":
                return detailJSON(exchange, now)
            if segments[2:] == [b"replay"] and method == b"POST":
                return readBoundedBody(request, MAX_EDIT_BYTES).addCallback(
                    self._replay, exchange
                )
        raise JSONError(404 if method in (b"GET", b"HEAD") else 405, "no such API call")

    def _replay(self, body: bytes, exchange: CapturedExchange) -> Deferred[dict[str, Any]]:
        inspector = self._inspector
        try:
            replaying = inspector.replay(exchange, _editFromJSON(body))
        except ReplayError as e:
            raise JSONError(409, str(e)) from None
        return replaying.addCallback(lambda new: detailJSON(new, inspector.store.now()))

    def _exchange(self, segment: bytes) -> CapturedExchange:
        exchange = None
        if segment.isdigit() and len(segment) < 19:
            exchange = self._inspector.store.get(int(segment))
        if exchange is None:
            raise JSONError(404, "no such request: it was never captured, or no longer is")
        return exchange

    def _checkChangingRequest(self, request: Request) -> None:
        origin = request.getHeader(b"origin")
        if origin is not None and urlsplit(origin.decode("latin-1")).netloc.encode(
            "latin-1"
        ) != request.getHeader(b"host"):
            raise JSONError(403, "the inspector takes changes only from its own page")
        contentType = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
        if request.method == b"POST" and contentType.lower() != b"application/json":
            raise JSONError(415, "a POST to the inspector has a JSON body (application/json)")
