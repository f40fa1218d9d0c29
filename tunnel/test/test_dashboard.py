"""
The Grafana dashboard in C{doc/grafana-tunnel.json}: valid JSON whose
queries use only the server's metrics and labels, and every metric.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

from twisted.trial.unittest import SynchronousTestCase

from tunnel.server.metrics import ServerMetrics
from tunnel.server.outcome import Outcome, Refusal
from tunnel.test.support import docPath

#: The samples each type of metric exposes, by suffix of the family's name.
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}
#: Labels Prometheus adds to every series it scrapes, or that histograms have.
SCRAPE_LABELS = {"instance", "job", "le"}


def loadDashboard() -> dict[str, Any]:
    with open(docPath("grafana-tunnel.json"), encoding="utf-8") as f:
        return json.load(f)


def queries(dashboard: dict[str, Any]) -> Iterator[str]:
    """Every PromQL expression of the dashboard: its panels' and its variables'."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]["query"]


class DashboardTests(SynchronousTestCase):
    """The dashboard fits the server's metrics."""

    def setUp(self) -> None:
        self.dashboard = loadDashboard()
        metrics = ServerMetrics()
        # One request of each label, for the labelled metrics to have series.
        metrics.requestAnswered(Outcome("a.example", Refusal.FORBIDDEN), 403, 0.1, 1, 1)
        families = list(metrics.registry.collect())
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
        """Every metric name a query uses is one the server exposes."""
        used = {name for query in queries(self.dashboard)
                for name in re.findall(r"\btunnel_[a-z_]+", query)}
        self.assertTrue(used)
        self.assertEqual(used - set(self.samples), set())

    def test_everyMetricHasAPanel(self) -> None:
        """Every metric of the server is on the dashboard."""
        used = {self.samples.get(name) for query in queries(self.dashboard)
                for name in re.findall(r"\btunnel_[a-z_]+", query)}
        self.assertEqual(self.families - used, set())

    def test_everyLabelUsedExists(self) -> None:
        """The labels queries group and select by are the server's, or Prometheus's."""
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
