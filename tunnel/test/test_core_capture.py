"""
Tests for L{tunnel.core.capture}: what the client keeps of the exchanges
going through the tunnel, and the bounds of its store.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.capture import (
    CaptureLimits,
    CaptureStore,
    ExchangeState,
    Kind,
    MessageState,
    StoreEvent,
)
from tunnel.core.http import MAX_HEAD_BYTES

REQUEST = (
    b"POST /api/items?x=1 HTTP/1.1\r\nHost: app.example\r\n"
    b"X-Forwarded-For: 10.0.0.1, 203.0.113.7\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n"
)
RESPONSE = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Clock:
    """A clock the tests move by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def store(**limits: int) -> tuple[CaptureStore, Clock]:
    clock = Clock()
    return CaptureStore(CaptureLimits(**limits), clock), clock


class RecorderTests(SynchronousTestCase):
    """What one recorder reads of the bytes going by."""

    def test_exchange(self) -> None:
        """
        Heads, de-chunked bodies, the host, the public source and the byte
        counts, however the bytes are split.
        """
        captures, clock = store()
        recorder = captures.record(Kind.HTTP, "127.0.0.1:3000")
        for i in range(len(REQUEST)):
            recorder.requestData(REQUEST[i : i + 1])
        recorder.responseData(RESPONSE)
        clock.now += 0.25
        recorder.end(clock.now)
        exchange = recorder.exchange
        self.assertEqual(
            (exchange.method, exchange.target, exchange.host, exchange.source),
            ("POST", "/api/items?x=1", "app.example", "203.0.113.7"),
        )
        self.assertEqual((exchange.status, exchange.reason), (201, "Created"))
        self.assertEqual(bytes(exchange.request.body), b'{"a": 1}')
        self.assertEqual(bytes(exchange.response.body), b"ok")
        self.assertEqual(exchange.request.header("content-type"), "application/json")
        self.assertEqual(
            (exchange.request.state, exchange.response.state),
            (MessageState.COMPLETE, MessageState.COMPLETE),
        )
        self.assertEqual(
            (exchange.request.wireBytes, exchange.response.wireBytes), (len(REQUEST), len(RESPONSE))
        )
        self.assertEqual((exchange.state, exchange.duration(500.0)), (ExchangeState.ENDED, 0.25))
        self.assertEqual(exchange.destination, "127.0.0.1:3000")

    def test_bodyBudget(self) -> None:
        """
        A body past the budget keeps its first bytes, is marked truncated,
        and the rest is counted only.
        """
        captures, _ = store(maxBodyBytes=10)
        recorder = captures.record(Kind.HTTP)
        recorder.requestData(b"GET / HTTP/1.1\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        recorder.responseData(head)
        for _ in range(10):
            recorder.responseData(b"x" * 100)
        response = recorder.exchange.response
        self.assertEqual(bytes(response.body), b"x" * 10)
        self.assertTrue(response.truncated)
        self.assertEqual(response.state, MessageState.COUNTING)
        self.assertEqual(response.wireBytes, len(head) + 1000)

    def test_summaryFromHeads(self) -> None:
        """
        The host, source and reason of an exchange with large bodies are
        read from its heads, and agree with the whole reading.
        """
        captures, _ = store()
        recorder = captures.record(Kind.HTTP)
        recorder.requestData(
            b"PUT /big HTTP/1.1\r\nHost: big.example\r\nX-Forwarded-For: 198.51.100.4\r\n"
            b"Content-Length: 200000\r\n\r\n" + b"u" * 200_000
        )
        recorder.responseData(b"HTTP/1.1 201 Made It\r\nContent-Length: 3\r\n\r\nyes")
        exchange = recorder.exchange
        self.assertEqual(
            (exchange.host, exchange.source, exchange.reason),
            ("big.example", "198.51.100.4", "Made It"),
        )
        self.assertEqual(len(exchange.request.body), 200_000)
        self.assertEqual(exchange.heads(), (exchange.reading().requestHead, exchange.reading().responseHead))

    def test_webSocket(self) -> None:
        """A 101 answer makes the exchange a WebSocket, its frames counted only."""
        captures, _ = store()
        recorder = captures.record(Kind.HTTP)
        recorder.requestData(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        recorder.responseData(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi")
        recorder.requestData(b"\x81\x82abcdxx" * 1000)
        exchange = recorder.exchange
        self.assertEqual((exchange.kind, exchange.status), (Kind.WEBSOCKET, 101))
        self.assertEqual(exchange.request.state, MessageState.COMPLETE)
        self.assertEqual(exchange.response.state, MessageState.COUNTING)
        self.assertEqual(bytes(exchange.request.body + exchange.response.body), b"")
        self.assertGreater(exchange.request.wireBytes, 8000)
        recorder.responseData(b"\x81\x02hi" * 1000)
        # The frames either way are counted, not kept.
        self.assertEqual(
            captures.retainedBytes, len(exchange.toLocal.data) + len(exchange.fromLocal.data)
        )
        self.assertLess(captures.retainedBytes, 200)
        self.assertEqual(exchange.response.headers, [(b"Upgrade", b"websocket")])

    def test_webSocketHeadDribbled(self) -> None:
        """
        A C{101} head that comes a byte at a time is read as it comes, each
        byte once; one longer than the grammar allows stops the keeping
        where it is, however it goes on.
        """
        captures, _ = store()
        recorder = captures.record(Kind.HTTP)
        recorder.requestData(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        for byte in head + b"\x81\x02hi":
            recorder.responseData(bytes([byte]))
        self.assertEqual(bytes(recorder.exchange.fromLocal.data), head)
        self.assertEqual(recorder.exchange.kind, Kind.WEBSOCKET)

        endless = captures.record(Kind.HTTP)
        endless.requestData(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        endless.responseData(b"HTTP/1.1 101 Switching Protocols\r\nX: ")
        for _ in range(200_000):
            endless.responseData(b"a")
        kept = len(endless.exchange.fromLocal.data)
        self.assertLessEqual(kept, MAX_HEAD_BYTES + 8)
        endless.responseData(b"a" * 100_000)
        self.assertEqual(len(endless.exchange.fromLocal.data), kept)
        self.assertEqual(endless.exchange.response.state, MessageState.MALFORMED)

    def test_tcp(self) -> None:
        """A TCP connection is not read as HTTP: its bytes are counted."""
        captures, _ = store()
        recorder = captures.record(Kind.TCP)
        recorder.requestData(b"GET / HTTP/1.1\r\n\r\n")
        recorder.responseData(b"SSH-2.0\r\n")
        exchange = recorder.exchange
        self.assertIsNone(exchange.method)
        self.assertEqual((exchange.request.wireBytes, exchange.response.wireBytes), (18, 9))
        self.assertEqual(captures.retainedBytes, 0)

    def test_malformed(self) -> None:
        """A request that breaks the grammar is marked so, with why; its bytes are still counted."""
        captures, _ = store()
        recorder = captures.record(Kind.HTTP)
        recorder.requestData(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        recorder.requestData(b"more")
        request = recorder.exchange.request
        self.assertEqual(request.state, MessageState.MALFORMED)
        self.assertIn("malformed header line", request.error)
        self.assertEqual(request.wireBytes, 34)

    def test_cut(self) -> None:
        """A response cut before its end says so once the exchange ends."""
        captures, _ = store()
        recorder = captures.record(Kind.HTTP)
        recorder.requestData(b"GET / HTTP/1.1\r\n\r\n")
        recorder.responseData(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        recorder.end(captures.now())
        self.assertIn("middle of the response body", recorder.exchange.response.error)

    def test_answerBeforeRequest(self) -> None:
        """The client's own answer, before any request, is read as a response."""
        captures, _ = store()
        recorder = captures.record(Kind.HTTP)
        recorder.responseData(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(recorder.exchange.status, 503)


class StoreTests(SynchronousTestCase):
    """The bounds of the store, and what its observers are told."""

    def test_ring(self) -> None:
        """Past the most exchanges, the oldest go; ids keep growing."""
        captures, _ = store(maxExchanges=3)
        for _ in range(5):
            captures.record(Kind.HTTP)
        self.assertEqual([e.id for e in captures], [3, 4, 5])
        self.assertIsNone(captures.get(2))
        self.assertEqual(captures.get(4).id, 4)

    def test_totalBudget(self) -> None:
        """
        Past the most bytes in all, the oldest exchanges go, open or not: an
        open one dropped stops being kept, and its memory is given back.
        """
        limits = CaptureLimits(maxBodyBytes=1000, maxTotalBytes=CaptureLimits(maxBodyBytes=1000).exchangeBytes)
        captures = CaptureStore(limits, Clock())
        first = captures.record(Kind.HTTP)
        head = b"PUT / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"
        first.requestData(head + b"a" * 900)
        kept = captures.retainedBytes
        self.assertGreater(kept, 900)
        for _ in range(200):
            recorder = captures.record(Kind.HTTP)
            recorder.requestData(b"PUT / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000)
            recorder.end(captures.now())
            self.assertLessEqual(captures.retainedBytes, limits.maxTotalBytes)
        self.assertIsNone(captures.get(first.exchange.id))
        self.assertTrue(first.exchange.dropped)
        first.requestData(b"a" * 1000)
        self.assertEqual(bytes(first.exchange.request.body), b"")
        self.assertTrue(first.exchange.request.truncated)
        self.assertEqual(first.exchange.request.wireBytes, len(head) + 1900)
        self.assertEqual(
            captures.retainedBytes, sum(exchange.retained for exchange in captures)
        )

    def test_observers(self) -> None:
        """
        Observers hear of each exchange added, its answer starting, its end,
        and its drop.
        """
        captures, _ = store(maxExchanges=1)
        events: list[tuple[StoreEvent, int]] = []
        captures.subscribe(lambda event, exchange: events.append((event, exchange.id)))
        recorder = captures.record(Kind.HTTP)
        recorder.requestData(b"GET / HTTP/1.1\r\n\r\n")
        recorder.responseData(b"HTTP/1.1 204 No Content\r\n\r\n")
        recorder.end(captures.now())
        captures.record(Kind.TCP)
        self.assertEqual(
            events,
            [
                (StoreEvent.ADDED, 1),
                (StoreEvent.CHANGED, 1),
                (StoreEvent.CHANGED, 1),
                (StoreEvent.ADDED, 2),
                (StoreEvent.DROPPED, 1),
            ],
        )

    def test_clear(self) -> None:
        """Clearing lets every exchange go."""
        captures, _ = store()
        captures.record(Kind.HTTP).requestData(b"GET / HTTP/1.1\r\n\r\n")
        captures.clear()
        self.assertEqual((len(captures), captures.retainedBytes), (0, 0))

    def test_limits(self) -> None:
        """Limits that cannot hold one exchange are refused, saying why."""
        with self.assertRaises(ValueError) as caught:
            CaptureLimits(maxBodyBytes=1024 * 1024, maxTotalBytes=1024 * 1024)
        self.assertIn("at least what one exchange may keep", str(caught.exception))
        self.assertRaises(ValueError, CaptureLimits, maxExchanges=0)
        self.assertRaises(ValueError, CaptureLimits, maxBodyBytes=-1)
