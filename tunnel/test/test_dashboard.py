"""
The Grafana dashboards in C{doc/}: C{grafana-tunnel.json} of the server's
metrics and C{grafana-tunnel-client.json} of the client's; valid JSON whose
queries use only their side's metrics and labels, and every metric.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry
from twisted.trial.unittest import SynchronousTestCase

from tunnel.client.local import PORT_NOT_EXPOSED
from tunnel.client.metrics import ClientMetrics
from tunnel.core.capture import CapturedExchange, ExchangeRecorder, Kind
from tunnel.server.metrics import ServerMetrics
from tunnel.server.outcome import Outcome, Refusal
from tunnel.test.support import docPath

#: The samples each type of metric exposes, by suffix of the family's name.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
#: Labels Prometheus adds to every series it scrapes, or that histograms have.
SCRAPE_LABELS = {"instance", "job", "le"}


def loadDashboard(name: str) -> dict[str, Any]:
    with open(docPath(name), encoding="utf-8") as f:
        return json.load(f)


def serverRegistry() -> CollectorRegistry:
    """A server's registry, with one request of each label, for every labelled metric to have series."""
    metrics = ServerMetrics()
    metrics.requestAnswered(Outcome("a.example", Refusal.FORBIDDEN), 403, 0.1, 1, 1)
    return metrics.registry


def clientRegistry() -> CollectorRegistry:
    """A client's registry, with an exchange and a refusal counted."""
    metrics = ClientMetrics()
    recorder = ExchangeRecorder(CapturedExchange(1, Kind.HTTP, 0.0))
    recorder.responseData(b"HTTP/1.1 200 OK\r\n\r\n")
    recorder.end(0.1)
    metrics.exchangeEnded(recorder.exchange)
    metrics.refused(PORT_NOT_EXPOSED)
    metrics.roundTrip(0.01)
    return metrics.registry


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of the dashboard: its panels' and its variables'."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]["query"]


class _DashboardTests:
    """A dashboard fits its side's metrics."""

    dashboardName: str
    registry: Callable[[], CollectorRegistry]

    def setUp(self) -> None:
        self.dashboard = loadDashboard(self.dashboardName)
        families = list(type(self).registry().collect())
        self.samples = {
            family.name + suffix: family.name
            for family in families
            for suffix in SUFFIXES[family.type]
        }
        self.families = {family.name for family in families}
        self.labels = {
            label
            for family in families
            for sample in family.samples
            for label in sample.labels
        }

    def test_everyMetricUsedExists(self) -> None:
        """Every metric name a query uses is one its side exposes."""
        used = {name for query in queries(self.dashboard)
                for name in re.findall(r"\btunnel_[a-z_]+", query)}
        self.assertTrue(used)
        self.assertEqual(used - set(self.samples), set())

    def test_everyMetricHasAPanel(self) -> None:
        """Every metric of its side is on the dashboard."""
        used = {self.samples.get(name) for query in queries(self.dashboard)
                for name in re.findall(r"\btunnel_[a-z_]+", query)}
        self.assertEqual(self.families - used, set())

    def test_everyLabelUsedExists(self) -> None:
        """The labels queries group and select by are its side's, or Prometheus's."""
        used = set()
        for query in queries(self.dashboard):
            for group in re.findall(r"\bby \(([^)]*)\)", query):
                used.update(label.strip() for label in group.split(","))
            for selector in re.findall(r"\{([^}]*)\}", query):
                used.update(re.findall(r"([a-z_]+)\s*[=!]~?", selector))
            used.update(re.findall(r"label_values\([a-z_]+, ([a-z_]+)\)", query))
        self.assertEqual(used - self.labels - SCRAPE_LABELS, set())

    def test_panelsAreComplete(self) -> None:
        """Each panel has a title, a unique id, a place and queries with unique ids."""
        panels = self.dashboard["panels"]
        self.assertEqual(len({panel["id"] for panel in panels}), len(panels))
        for panel in panels:
            self.assertTrue(panel["title"])
            self.assertEqual(set(panel["gridPos"]), {"x", "y", "w", "h"})
            refIds = [target["refId"] for target in panel["targets"]]
            self.assertTrue(refIds, panel["title"])
            self.assertEqual(len(set(refIds)), len(refIds), panel["title"])


class ServerDashboardTests(_DashboardTests, SynchronousTestCase):
    """The server's dashboard."""

    dashboardName = "grafana-tunnel.json"
    registry = staticmethod(serverRegistry)


class ClientDashboardTests(_DashboardTests, SynchronousTestCase):
    """The client's dashboard."""

    dashboardName = "grafana-tunnel-client.json"
    registry = staticmethod(clientRegistry)
