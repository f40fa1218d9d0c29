"""
Tests for L{tunnel.client.inspector}: its live event stream, in memory on a
clock, and the checks of what reaches its API.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

import tunnel

from tunnel.client.inspector import Inspector, InspectorService
from tunnel.client.inspector.replay import _Replay
from tunnel.client.inspector.events import FLUSH_INTERVAL, MAX_STREAMS
from tunnel.client.inspector.web import _editFromJSON, isLocalHostHeader
from tunnel.core.capture import CaptureLimits, CaptureStore, Kind
from tunnel.core.replay import ReplayEdit
from tunnel.server.jsonapi import JSONError
from tunnel.test.capturesoak import RSS_TOLERANCE_BYTES


class StreamRequest:
    """The parts of a twisted.web request an event stream uses."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.written = bytearray()
        self.producer: object = None
        self.finished = False
        self._finish: Deferred[None] = Deferred()

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def write(self, data: bytes) -> None:
        self.written += data

    def registerProducer(self, producer: object, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def notifyFinish(self) -> Deferred[None]:
        return self._finish

    def finish(self) -> None:
        self.finished = True
        self._finish.callback(None)

    def events(self) -> list[tuple[str, object]]:
        """The events written so far, decoded, and forget them."""
        found = []
        for block in bytes(self.written).decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in lines:
                found.append((lines["event"], json.loads(lines["data"])))
        self.written.clear()
        return found


class EventStreamTests(SynchronousTestCase):
    """The inspector's server-sent events."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.inspector = Inspector(self.clock, CaptureLimits(maxExchanges=2))
        self.streams = self.inspector.resource.events

    def open(self) -> StreamRequest:
        request = StreamRequest()
        self.streams.add(request)  # type: ignore[arg-type]
        return request

    def test_startsWithStatus(self) -> None:
        """A new stream is an event stream whose first event is the status."""
        request = self.open()
        self.assertEqual(request.headers[b"content-type"], b"text/event-stream")
        self.assertEqual(request.events(), [("status", self.inspector.status())])

    def test_batched(self) -> None:
        """
        What changes within a flush interval is sent once, each exchange
        with its latest summary, dropped ones by id.
        """
        request = self.open()
        request.events()
        first = self.inspector.store.record(Kind.HTTP)
        first.requestData(b"GET /one HTTP/1.1\r\n\r\n")
        first.responseData(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.inspector.store.record(Kind.HTTP)
        self.clock.advance(FLUSH_INTERVAL / 2)
        self.assertEqual(request.events(), [])
        self.inspector.store.record(Kind.TCP)
        self.clock.advance(FLUSH_INTERVAL / 2)
        [(name, news)] = request.events()
        self.assertEqual(name, "exchanges")
        self.assertEqual([e["id"] for e in news["changed"]], [2, 3])
        self.assertEqual(news["dropped"], [1])
        self.clock.advance(10 * FLUSH_INTERVAL)
        self.assertEqual(request.events(), [])

    def test_stalledPage(self) -> None:
        """
        A page that reads nothing is sent nothing until it reads again, and
        then told to fetch the list anew.
        """
        request = self.open()
        request.events()
        request.producer.pauseProducing()
        for _ in range(100):
            self.inspector.store.record(Kind.HTTP)
            self.clock.advance(FLUSH_INTERVAL)
        self.assertEqual(request.events(), [])
        request.producer.resumeProducing()
        self.assertEqual(request.events(), [("resync", {})])

    def test_bounded(self) -> None:
        """At most L{MAX_STREAMS} are open; a finished one makes room."""
        requests = [self.open() for _ in range(MAX_STREAMS)]
        with self.assertRaises(JSONError) as caught:
            self.open()
        self.assertEqual(caught.exception.code, 503)
        requests[0].finish()
        self.open()
        self.assertEqual(len(self.streams), MAX_STREAMS)

    def test_close(self) -> None:
        """Closing ends every stream and cancels the pending batch."""
        request = self.open()
        self.inspector.store.record(Kind.HTTP)
        self.streams.close()
        self.assertTrue(request.finished)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class CheckTests(SynchronousTestCase):
    """What the inspector's API takes."""

    def test_localHostHeaders(self) -> None:
        """Only localhost names and IP literals name the inspector."""
        for host in [b"127.0.0.1:4040", b"localhost:4040", b"[::1]:4040", b"app.localhost",
                     b"192.168.1.20:4040", b"LOCALHOST"]:
            self.assertTrue(isLocalHostHeader(host), host)
        for host in [None, b"", b"evil.example", b"127.0.0.1.evil.example:4040",
                     b"localhost.evil.example", b"\xff", b"a b"]:
            self.assertFalse(isLocalHostHeader(host), host)

    def test_edit(self) -> None:
        """A replay's JSON body: every field, or none."""
        self.assertEqual(_editFromJSON(b""), ReplayEdit())
        self.assertEqual(
            _editFromJSON(json.dumps({"method": "PUT", "target": "/x", "headers": [["A", "b"]],
                                      "body": "é"}).encode()),
            ReplayEdit("PUT", "/x", [("A", "b")], "é".encode()),
        )
        self.assertEqual(_editFromJSON(b'{"bodyBase64": "AAE="}'), ReplayEdit(body=b"\x00\x01"))

    def test_badEdits(self) -> None:
        """A malformed replay body is a 400 saying what is wrong."""
        for body, words in [
            (b"{", "not JSON"),
            (b"[]", "JSON object"),
            (b'{"path": "/"}', "unknown fields: path"),
            (b'{"method": 1}', "method is a string"),
            (b'{"headers": [["a"]]}', "headers is a list"),
            (b'{"body": "a", "bodyBase64": "YQ=="}', "not both"),
            (b'{"bodyBase64": "!!"}', "not base64"),
        ]:
            with self.assertRaises(JSONError) as caught:
                _editFromJSON(body)
            self.assertEqual(caught.exception.code, 400)
            self.assertIn(words, str(caught.exception))


class CaptureSoakTests(TestCase):
    """The capture's memory under a soak, in a process of its own."""

    timeout = 120

    @defer.inlineCallbacks
    def test_tenThousandExchangesOfAMebibyte(self):
        """
        10,000 exchanges with 1 MiB bodies each way: the store never keeps
        more than its budget, and the process's resident memory never grows
        by more than that budget and the interpreter's slack.
        """
        packageRoot = os.path.dirname(os.path.dirname(os.path.abspath(tunnel.__file__)))
        out, err, code = yield getProcessOutputAndValue(
            sys.executable,
            ["-m", "tunnel.test.capturesoak", "--exchanges", "10000", "--body-bytes", str(1024 * 1024)],
            env={**os.environ, "PYTHONPATH": packageRoot},
        )
        self.assertEqual(code, 0, out + err)
        report = json.loads(out)
        self.assertEqual(report["bytesRecorded"], 2 * 10_000 * 1024 * 1024)
        self.assertLessEqual(report["mostRetainedBytes"], report["budgetBytes"])
        self.assertLessEqual(report["growthBytes"], report["budgetBytes"] + RSS_TOLERANCE_BYTES)
        self.assertGreater(report["kept"], 0)


class InspectorServiceTests(TestCase):
    """Where the inspector listens, on real loopback ports."""

    def takenPort(self) -> int:
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def serviceOf(self, descriptions: list[str], required: bool = True) -> InspectorService:
        service = InspectorService(Inspector(reactor), descriptions, required)
        self.addCleanup(service.stopService)
        return service

    def test_nextFreePort(self) -> None:
        """With its first endpoint taken, it listens on the next, and says where."""
        taken = self.takenPort()
        service = self.serviceOf([f"tcp:{taken}:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"])
        service.startService()
        self.assertRegex(service.url, r"^http://127\.0\.0\.1:\d+/$")
        self.assertNotIn(f":{taken}/", service.url)

    def test_requiredEndpointTaken(self) -> None:
        """An endpoint asked for that is taken stops the start."""
        service = self.serviceOf([f"tcp:{self.takenPort()}:interface=127.0.0.1"])
        self.assertRaises(CannotListenError, service.startService)

    def test_defaultsTaken(self) -> None:
        """When none of the defaults is free, the client runs without it, and says so."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service = self.serviceOf([f"tcp:{self.takenPort()}:interface=127.0.0.1"], required=False)
        service.startService()
        self.assertIsNone(service.url)
        self.assertTrue(any("The inspector is off" in e.get("log_format", "") for e in events))


class ReplayProtocolTests(SynchronousTestCase):
    """The connection a replay makes to the local service, in memory."""

    def test_closesOnceAnswered(self) -> None:
        """
        However the answer is split, the connection is closed once it is
        whole, or once it breaks the grammar, and the exchange has it all.
        """
        captures = CaptureStore(CaptureLimits(), lambda: 0.0)
        for answer, whole in [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", True),
            (b"not an answer\r\n\r\n", False),
        ]:
            recorder = captures.record(Kind.HTTP)
            ended: Deferred[None] = Deferred()
            protocol = _Replay(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", recorder, ended)
            transport = StringTransport()
            protocol.makeConnection(transport)
            self.assertEqual(transport.value(), b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            for index in range(len(answer)):
                self.assertFalse(transport.disconnecting)
                protocol.dataReceived(answer[index : index + 1])
            self.assertTrue(transport.disconnecting)
            self.assertEqual(recorder.exchange.bytesOut, len(answer))
            self.assertEqual(recorder.exchange.status, 200 if whole else None)
