"""
Tests for L{tunnel.server.monitoring} and L{tunnel.server.health}:
C{/metrics}, C{/healthz} and C{/readyz}, alone and in the admin API,
through treq's in-memory stub.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from tunnel.server.admin import AdminResource
from tunnel.server.health import ListenersCheck, Milestone, Readiness
from tunnel.server.monitoring import MonitoringResource
from tunnel.test.serversupport import Harness

TOKEN = "monitoring-token"
AUTH = {b"Authorization": [b"Bearer " + TOKEN.encode()]}
IDENTIFIER = b"monitoring-identifier"


@implementer(IStreamServerEndpoint)
class PendingEndpoint:
    """An endpoint that listens once told to."""

    def __init__(self) -> None:
        self.listening: Deferred[object] = Deferred()

    def listen(self, factory: object) -> Deferred[object]:
        return self.listening


class ReadinessTests(SynchronousTestCase):
    """L{Readiness} is met when every check is."""

    def test_noChecksIsReady(self) -> None:
        """Without checks, nothing is missing."""
        self.assertEqual(Readiness().problems(), {})

    def test_milestone(self) -> None:
        """A milestone is a problem until reached."""
        hosts = Milestone("hosts", "the hosts are not loaded yet")
        readiness = Readiness([hosts])
        self.assertEqual(readiness.problems(), {"hosts": "the hosts are not loaded yet"})
        hosts.reach()
        self.assertEqual(readiness.problems(), {})

    def test_listeners(self) -> None:
        """The listeners check waits for every endpoint it watches to listen."""
        listeners = ListenersCheck()
        first, second = PendingEndpoint(), PendingEndpoint()
        ports = [listeners.watch(endpoint).listen(Site(Resource())) for endpoint in (first, second)]
        self.assertEqual(listeners.problem(), "2 of 2 public listeners do not listen yet")
        first.listening.callback("port 1")
        self.assertEqual(listeners.problem(), "1 of 2 public listeners do not listen yet")
        second.listening.callback("port 2")
        self.assertIsNone(listeners.problem())
        self.assertEqual([self.successResultOf(port) for port in ports], ["port 1", "port 2"])

    def test_moreChecksCanBeAdded(self) -> None:
        """A check added later is one more condition, named by its name."""
        readiness = Readiness([Milestone("hosts", "waiting", reached=True)])

        class Store:
            name = "store"

            def problem(self) -> str | None:
                return "the cluster store does not answer"

        readiness.add(Store())
        self.assertEqual(readiness.problems(), {"store": "the cluster store does not answer"})


class Calls(SynchronousTestCase):
    """Calls C{self.treq}."""

    treq: StubTreq

    def get(self, path: str, **keywords: Any) -> tuple[int, bytes, bytes]:
        """GET C{path}: the status, the content type and the body."""
        response = self.successResultOf(
            self.treq.get("http://monitoring.invalid" + path, **keywords)
        )
        body = self.successResultOf(response.content())
        return response.code, response.headers.getRawHeaders(b"content-type", [b""])[0], body


class MonitoringResourceTests(Calls):
    """A L{MonitoringResource} answers scrapers and probes."""

    def setUp(self) -> None:
        self.harness = Harness()
        self.harness.server.addHost("app.example", IDENTIFIER)
        self.hosts = Milestone("hosts", "the hosts are not loaded yet")
        resource = MonitoringResource(self.harness.server.metrics, Readiness([self.hosts]))
        self.treq = StubTreq(resource)

    def test_metricsAreTheServers(self) -> None:
        """
        C{/metrics} is the server's metrics in the Prometheus text format:
        a request counted on the server is there.
        """
        self.harness.send(b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n")
        code, contentType, body = self.get("/metrics")
        self.assertEqual((code, contentType), (200, b"text/plain; version=0.0.4; charset=utf-8"))
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for sample in family.samples
        }
        self.assertEqual(
            samples[("tunnel_server_requests_total", (("host", "app.example"), ("status", "5xx")))],
            1,
        )
        self.assertEqual(
            samples[("tunnel_server_refusals_total", (("reason", "not-connected"),))], 1
        )

    def test_openMetricsOnRequest(self) -> None:
        """A scraper that accepts OpenMetrics gets them."""
        code, contentType, body = self.get(
            "/metrics", headers={"Accept": ["application/openmetrics-text"]}
        )
        self.assertEqual(code, 200)
        self.assertTrue(contentType.startswith(b"application/openmetrics-text"), contentType)
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_healthz(self) -> None:
        """C{/healthz} says the process is alive, ready or not."""
        self.assertEqual(
            self.get("/healthz"), (200, b"application/json", b'{"status": "alive"}\n')
        )

    def test_readyz(self) -> None:
        """C{/readyz} is a 503 saying what is not ready, then a 200."""
        code, contentType, body = self.get("/readyz")
        self.assertEqual((code, contentType), (503, b"application/json"))
        self.assertEqual(
            json.loads(body),
            {"status": "not ready", "problems": {"hosts": "the hosts are not loaded yet"}},
        )
        self.hosts.reach()
        self.assertEqual(
            self.get("/readyz"), (200, b"application/json", b'{"status": "ready"}\n')
        )

    def test_otherPathsAndMethods(self) -> None:
        """Any other path is a 404; any other method than GET or HEAD a 405."""
        for path in ("/", "/metrics/", "/hosts", "/healthz/x"):
            code, contentType, body = self.get(path)
            self.assertEqual((code, contentType), (404, b"application/json"), path)
        response = self.successResultOf(self.treq.post("http://monitoring.invalid/metrics"))
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"allow"), [b"GET, HEAD"])


class AdminMonitoringTests(Calls):
    """The admin API serves the metrics with its token, and the probes without."""

    def setUp(self) -> None:
        self.harness = Harness()
        monitoring = MonitoringResource(self.harness.server.metrics, Readiness())
        admin = AdminResource(
            self.harness.server, TOKEN, reactor=MemoryReactor(), monitoring=monitoring
        )
        self.treq = StubTreq(admin)

    def test_probesNeedNoToken(self) -> None:
        """C{/healthz} and C{/readyz} answer without the token."""
        self.assertEqual(self.get("/healthz")[0], 200)
        self.assertEqual(self.get("/readyz")[0], 200)

    def test_metricsNeedTheToken(self) -> None:
        """C{/metrics} answers with the token, and is a 401 without."""
        code, contentType, body = self.get("/metrics")
        self.assertEqual((code, json.loads(body)), (401, {"error": "a valid bearer token is required"}))
        code, contentType, body = self.get("/metrics", headers=AUTH)
        self.assertEqual(code, 200)
        self.assertIn(b"# TYPE tunnel_server_requests_total counter", body)

    def test_everythingElseStillNeedsTheToken(self) -> None:
        """The rest of the admin API still needs the token."""
        self.assertEqual(self.get("/hosts")[0], 401)
        self.assertEqual(self.get("/hosts", headers=AUTH)[0], 200)

    def test_withoutMonitoringThereAreNone(self) -> None:
        """An admin API given no monitoring serves none of its paths."""
        self.treq = StubTreq(AdminResource(self.harness.server, TOKEN, reactor=MemoryReactor()))
        self.assertEqual(self.get("/healthz")[0], 401)
        self.assertEqual(self.get("/metrics", headers=AUTH)[0], 404)
