"""
What scrapers and probes ask a tunnel server::

    GET /metrics  -> 200, the server's metrics in the Prometheus text format
                     (OpenMetrics if the scraper's Accept asks for it)
    GET /healthz  -> 200 {"status": "alive"}, while the process serves
    GET /readyz   -> 200 {"status": "ready"}, or
                     503 {"status": "not ready", "problems": {CHECK: WHAT}}

Anything else gets a C{404}. The admin API serves the same paths
(L{tunnel.server.admin}); C{--metrics} serves them alone, without a token,
on an endpoint of their own (a L{MonitoringSite}).
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Request

from tunnel.server.health import Readiness
from tunnel.server.metrics import ServerMetrics
from tunnel.server.site import PrivateSite

#: The paths of the probes, which never need a token.
PROBE_PATHS = frozenset({b"/healthz", b"/readyz"})
#: Every path a L{MonitoringResource} serves.
MONITORING_PATHS = PROBE_PATHS | {b"/metrics"}


class MonitoringResource(Resource):
    """C{/metrics}, C{/healthz} and C{/readyz} of one server."""

    isLeaf = True

    def __init__(self, metrics: ServerMetrics, readiness: Readiness) -> None:
        """
        @param metrics: what C{/metrics} exposes.
        @param readiness: what C{/readyz} checks.
        """
        super().__init__()
        self._metrics = metrics
        self._readiness = readiness

    def render(self, request: Request) -> bytes:
        """Answer a scraper or a probe."""
        request.setHeader(b"cache-control", b"no-store")
        if request.path not in MONITORING_PATHS:
            return _json(
                request, 404, {"error": "no such resource; see /metrics, /healthz and /readyz"}
            )
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _json(request, 405, {"error": "use GET"})
        if request.path == b"/healthz":
            return _json(request, 200, {"status": "alive"})
        if request.path == b"/readyz":
            problems = self._readiness.problems()
            if problems:
                return _json(request, 503, {"status": "not ready", "problems": problems})
            return _json(request, 200, {"status": "ready"})
        accept = request.getHeader(b"accept") or b""
        encoder, contentType = choose_encoder(accept.decode("latin-1"))
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return encoder(self._metrics.registry)


def _json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode("utf-8") + b"\n"


class MonitoringSite(PrivateSite):
    """The site of C{--metrics}: a L{MonitoringResource} on a private endpoint."""
