"""
Tests for L{tunnel.workers.logs}: a worker's events, written as JSON the
way L{beginWorkerLogging} writes them, published again by the
supervisor's L{WorkerLogRelay} with the worker's label.
"""

from __future__ import annotations

import io

from twisted.logger import (
    LogLevel,
    Logger,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tunnel.workers.logs import SERVING_KEY, WorkerLogRelay, workerLogObserver


def written(*emits) -> bytes:
    """What a worker writes for the events C{emits} emit on its logger, as bytes."""
    stream = io.StringIO()
    log = Logger(
        namespace="tunnel.cluster.service.ClusterService", observer=workerLogObserver(stream)
    )
    for emit in emits:
        emit(log)
    return stream.getvalue().encode("utf-8")


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.published: list[dict] = []
        self.serving: list[None] = []
        self.relay = WorkerLogRelay("w1", lambda: self.serving.append(None), self.published.append)

    def test_eventsArePublishedWithTheWorkersLabel(self) -> None:
        """
        A worker's event is published with its level, format and fields,
        and the worker's label before its namespace as its system.
        """
        self.relay.eventsReceived(written(
            lambda log: log.info("Node {node} of the cluster", node="wk-w1")))
        [event] = self.published
        self.assertEqual(formatEvent(event), "Node wk-w1 of the cluster")
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(event["log_system"], "w1 tunnel.cluster.service.ClusterService#info")
        self.assertIn("[w1 tunnel.cluster.service.ClusterService#info] Node wk-w1 of the cluster",
                      formatEventAsClassicLogText(event))
        self.assertIsNone(self.relay.lastProblem)

    def test_recordsCutAnywhereArriveWhole(self) -> None:
        """Records split at any byte, several in one read, are published whole, in order."""
        data = written(*(lambda log, n=n: log.info("event {n}", n=n) for n in range(3)))
        for start in range(0, len(data), 7):
            self.relay.eventsReceived(data[start:start + 7])
        self.assertEqual([formatEvent(e) for e in self.published],
                         ["event 0", "event 1", "event 2"])

    def test_aSystemIsKept(self) -> None:
        """An event that names its system (Twisted's legacy ones do) keeps it, after the label."""
        self.relay.eventsReceived(
            written(lambda log: log.info("x", log_system="TunnelSite,0,1.2.3.4")))
        self.assertEqual(self.published[0]["log_system"], "w1 TunnelSite,0,1.2.3.4")

    def test_servingIsTold(self) -> None:
        """The event carrying L{SERVING_KEY} says the worker serves, once published."""
        self.relay.eventsReceived(written(lambda log: log.info("x")))
        self.assertEqual(self.serving, [])
        self.relay.eventsReceived(written(lambda log: log.info("serves", **{SERVING_KEY: True})))
        self.assertEqual((len(self.serving), len(self.published)), (1, 2))

    def test_theLastErrorIsKept(self) -> None:
        """
        The last error (or critical event, or failure) the worker logged is
        kept as one line, for the supervisor to say why it ended.
        """
        self.relay.eventsReceived(
            written(lambda log: log.critical("cannot listen on port {p}", p=7947)))
        self.assertEqual(self.relay.lastProblem, "cannot listen on port 7947")
        self.relay.eventsReceived(written(lambda log: log.warn("a warning")))
        self.assertEqual(self.relay.lastProblem, "cannot listen on port 7947")
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        self.relay.eventsReceived(written(lambda log: log.failure("It broke", failure)))
        self.assertEqual(self.relay.lastProblem,
                         "It broke: builtins.ZeroDivisionError: division by zero")
        text = formatEventAsClassicLogText(self.published[-1])
        self.assertIn("It broke\n\tTraceback (most recent call last):\n", text)
        self.assertIn("1 / 0", text)

    def test_standardErrorIsPublishedLineByLine(self) -> None:
        """
        What the worker writes to its standard error (a crash before its log
        began) is published as warnings, a line each; its last line is the
        last problem.
        """
        captured: list[dict] = []
        globalLogPublisher.addObserver(captured.append)
        self.addCleanup(globalLogPublisher.removeObserver, captured.append)
        self.relay.textReceived(
            b"Traceback (most recent call last):\n  File \"x\"\nImportError: no")
        self.relay.ended()
        lines = [(formatEvent(e), e["log_system"], e["log_level"]) for e in captured]
        self.assertEqual(lines, [
            ("Traceback (most recent call last):", "w1 stderr", LogLevel.warn),
            ('  File "x"', "w1 stderr", LogLevel.warn),
            ("ImportError: no", "w1 stderr", LogLevel.warn),
        ])
        self.assertEqual(self.relay.lastProblem, "ImportError: no")

    def test_notJSONIsText(self) -> None:
        """A line of standard output that is no record is published as text."""
        captured: list[dict] = []
        globalLogPublisher.addObserver(captured.append)
        self.addCleanup(globalLogPublisher.removeObserver, captured.append)
        self.relay.eventsReceived(b"printed at exit\n\x1e[1, 2]\n")
        self.assertEqual([formatEvent(e) for e in captured], ["printed at exit", "[1, 2]"])
        self.assertEqual(self.published, [])
