"""
End to end: the C{--metrics} endpoint of a real C{twistd tunnel-server},
over loopback sockets.
"""

from __future__ import annotations

from typing import Any, Generator

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tunnel.test.twistdprocess import spawnTwistd


class MetricsPluginTests(TestCase):
    """Scraping and probing a running server on its --metrics endpoint."""

    timeout = 60

    @defer.inlineCallbacks
    def startServer(self) -> Generator[Any, Any, tuple[int, int]]:
        """Start a server with one host; its public and its metrics ports."""
        server = spawnTwistd(reactor, "tunnel-server", [
            "--listen", "tcp:0:interface=127.0.0.1",
            "--host", "app.localhost=e2e-metrics-identifier",
            "--metrics", "tcp:0:interface=127.0.0.1",
        ])
        self.addCleanup(server.kill)
        public = yield server.waitFor(r"TunnelSite starting on (\d+)")
        metrics = yield server.waitFor(r"MonitoringSite starting on (\d+)")
        return int(public.group(1)), int(metrics.group(1))

    @defer.inlineCallbacks
    def get(
        self, port: int, path: str, host: str | None = None
    ) -> Generator[Any, Any, tuple[int, bytes]]:
        """GET C{path} on C{port}, with C{host} as its Host: the status and the body."""
        headers = {} if host is None else {"Host": [host]}
        response = yield treq.get(
            f"http://127.0.0.1:{port}{path}", headers=headers, persistent=False
        )
        body = yield response.content()
        return response.code, body

    @defer.inlineCallbacks
    def test_scrapeAndProbes(self) -> Generator[Any, Any, None]:
        """
        Without a token, the --metrics endpoint says the server is alive and
        ready, and exposes its metrics, which count the public requests
        made; it serves nothing else.
        """
        public, metrics = yield self.startServer()
        self.assertEqual((yield self.get(metrics, "/healthz")), (200, b'{"status": "alive"}\n'))
        self.assertEqual((yield self.get(metrics, "/readyz")), (200, b'{"status": "ready"}\n'))
        code, _ = yield self.get(public, "/", "app.localhost")
        self.assertEqual(code, 502)
        code, _ = yield self.get(public, "/", "unknown.localhost")
        self.assertEqual(code, 404)
        code, body = yield self.get(metrics, "/metrics")
        self.assertEqual(code, 200)
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for sample in family.samples
        }
        self.assertEqual(
            samples[("tunnel_server_requests_total", (("host", "app.localhost"), ("status", "5xx")))],
            1,
        )
        self.assertEqual(
            samples[("tunnel_server_requests_total", (("host", "_none"), ("status", "4xx")))], 1
        )
        self.assertEqual(samples[("tunnel_server_refusals_total", (("reason", "no-tunnel"),))], 1)
        self.assertEqual(samples[("tunnel_server_connected_clients", ())], 0)
        code, _ = yield self.get(metrics, "/hosts")
        self.assertEqual(code, 404)
