"""
Tests for L{tunnel.core.requestlog}: the client's line per forwarded HTTP
exchange, from what a recorder read of the bytes going by.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.capture import CapturedExchange, ExchangeRecorder, Kind
from tunnel.core.http import MAX_HEAD_BYTES, MAX_LINE_BYTES
from tunnel.core.requestlog import MAX_TARGET_SHOWN, ExchangeSummary, summarise


def recorder(started: float = 0.0) -> ExchangeRecorder:
    """A recorder of an HTTP exchange that keeps no body, as the log has it."""
    return ExchangeRecorder(CapturedExchange(1, Kind.HTTP, started))


class SummaryTests(SynchronousTestCase):
    """What the line says of an exchange."""

    def test_exchange(self) -> None:
        """Method, target, status, duration and byte counts, however the bytes are split."""
        watcher = recorder(10.0)
        request = b"GET /api/items?page=2 HTTP/1.1\r\nHost: a.example\r\n\r\n"
        for i in range(len(request)):
            watcher.requestData(request[i : i + 1])
        watcher.responseData(b"HTTP/1.1 20")
        watcher.responseData(b"4 No Content\r\n\r\n")
        watcher.end(10.0125)
        summary = summarise(watcher.exchange, 20.0)
        self.assertEqual(
            summary,
            ExchangeSummary("GET", "/api/items?page=2", 204, len(request), 27, summary.seconds),
        )
        self.assertAlmostEqual(summary.seconds, 0.0125)
        self.assertEqual(str(summary), f"GET /api/items?page=2 204 12 ms {len(request)} B in, 27 B out")

    def test_noAnswer(self) -> None:
        """An exchange without a status line (or any bytes) says so with dashes."""
        self.assertEqual(str(summarise(recorder().exchange, 0.0)), "- - - 0 ms 0 B in, 0 B out")
        watcher = recorder()
        watcher.requestData(b"POST / HTTP/1.1\r\n\r\n")
        watcher.responseData(b"not http\r\n\r\n")
        self.assertIsNone(summarise(watcher.exchange, 1.0).status)

    def test_terminalSafe(self) -> None:
        """
        What the public wrote cannot reach the terminal as control bytes,
        and a long target is cut.
        """
        watcher = recorder()
        watcher.requestData(b"GET /\xc3\xa9[2J" + b"a" * 500 + b" HTTP/1.1\r\n\r\n")
        summary = summarise(watcher.exchange, 0.0)
        self.assertTrue(summary.target.startswith("/??[2Jaaa"), summary.target)
        self.assertEqual(len(summary.target), MAX_TARGET_SHOWN + 1)
        self.assertTrue(summary.target.endswith("…"))

    def test_malformedLinesAreNotShown(self) -> None:
        """
        A request line with a control character (which the strict grammar
        refuses) is shown as dashes, not echoed.
        """
        watcher = recorder()
        watcher.requestData(b"GET /\x1b[2J HTTP/1.1\r\n\r\n")
        watcher.responseData(b"HTTP/1.1 2000 Odd\r\n\r\n")
        summary = summarise(watcher.exchange, 0.0)
        self.assertEqual((summary.method, summary.target, summary.status), ("-", "-", None))

    def test_boundedReading(self) -> None:
        """
        Without a store, no more than a line of each direction is kept: the
        exchange's bytes are still counted.
        """
        watcher = recorder()
        for i in range(100):
            watcher.requestData(b"x" * MAX_HEAD_BYTES)
        watcher.requestData(b"\r\n\r\n")
        exchange = watcher.exchange
        self.assertEqual(len(exchange.toLocal.data), MAX_LINE_BYTES)
        summary = summarise(exchange, 0.0)
        self.assertEqual((summary.method, summary.requestBytes), ("-", 100 * MAX_HEAD_BYTES + 4))
