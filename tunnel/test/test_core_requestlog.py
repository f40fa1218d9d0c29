"""
Tests for L{tunnel.core.requestlog}: the client's line per forwarded HTTP
exchange, from the bytes going by.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.requestlog import (
    MAX_FIRST_LINE,
    MAX_TARGET_SHOWN,
    ExchangeSummary,
    ExchangeWatcher,
)


class ExchangeWatcherTests(SynchronousTestCase):
    """What the watcher reads of an exchange, and how the line says it."""

    def test_exchange(self) -> None:
        """Method, target, status, duration and byte counts, however the bytes are split."""
        watcher = ExchangeWatcher(10.0)
        request = b"GET /api/items?page=2 HTTP/1.1\r\nHost: a.example\r\n\r\n"
        for i in range(len(request)):
            watcher.requestData(request[i : i + 1])
        watcher.responseData(b"HTTP/1.1 20")
        watcher.responseData(b"4 No Content\r\n\r\n")
        summary = watcher.summary(10.0125)
        self.assertEqual(
            summary,
            ExchangeSummary("GET", "/api/items?page=2", 204, len(request), 27, summary.seconds),
        )
        self.assertAlmostEqual(summary.seconds, 0.0125)
        self.assertEqual(str(summary), f"GET /api/items?page=2 204 12 ms {len(request)} B in, 27 B out")

    def test_noAnswer(self) -> None:
        """An exchange without a status line (or any bytes) says so with dashes."""
        self.assertEqual(str(ExchangeWatcher(0.0).summary(0.0)), "- - - 0 ms 0 B in, 0 B out")
        watcher = ExchangeWatcher(0.0)
        watcher.requestData(b"POST / HTTP/1.1\r\n")
        watcher.responseData(b"not http\r\n")
        self.assertIsNone(watcher.summary(1.0).status)

    def test_terminalSafe(self) -> None:
        """
        What the public wrote cannot reach the terminal as control bytes,
        and a long target is cut.
        """
        watcher = ExchangeWatcher(0.0)
        watcher.requestData(b"GET /\xc3\xa9[2J" + b"a" * 500 + b" HTTP/1.1\r\n")
        summary = watcher.summary(0.0)
        self.assertTrue(summary.target.startswith("/??[2Jaaa"), summary.target)
        self.assertEqual(len(summary.target), MAX_TARGET_SHOWN + 1)
        self.assertTrue(summary.target.endswith("…"))

    def test_malformedLinesAreNotShown(self) -> None:
        """
        A request line with a control character (which the strict grammar
        refuses) is shown as dashes, not echoed.
        """
        watcher = ExchangeWatcher(0.0)
        watcher.requestData(b"GET /\x1b[2J HTTP/1.1\r\n")
        watcher.responseData(b"HTTP/1.1 2000 Odd\r\n")
        summary = watcher.summary(0.0)
        self.assertEqual((summary.method, summary.target, summary.status), ("-", "-", None))

    def test_boundedReading(self) -> None:
        """
        A first line longer than L{MAX_FIRST_LINE} is not kept: the
        exchange's bytes are still counted, in constant memory.
        """
        watcher = ExchangeWatcher(0.0)
        for i in range(100):
            watcher.requestData(b"x" * MAX_FIRST_LINE)
        watcher.requestData(b"\r\n")
        self.assertLessEqual(len(watcher._request._buffer), MAX_FIRST_LINE)
        summary = watcher.summary(0.0)
        self.assertEqual((summary.method, summary.requestBytes), ("-", 100 * MAX_FIRST_LINE + 2))
