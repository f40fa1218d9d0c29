"""
Unit tests for L{tunnel.server.site.StreamedBody}: how it holds, passes on
and pauses the public connection. (End to end, bodies are tested in
C{test_server_forwarding} and C{test_server_loopback}.)
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import UNKNOWN_LENGTH

from tunnel.server.site import CONTINUE, StreamedBody


class FakeChannel:
    """Records what the body writes to the public connection."""

    def __init__(self) -> None:
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data


class FakeRequest:
    """What L{StreamedBody} uses of its request."""

    def __init__(self) -> None:
        self.transport = StringTransport()
        self.channel = FakeChannel()
        self.clientproto = b"HTTP/1.1"


class Consumer:
    """Collects what the body writes."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class StreamedBodyTests(SynchronousTestCase):
    """L{StreamedBody} passes the body on as it arrives, with back-pressure."""

    def setUp(self) -> None:
        self.request = FakeRequest()
        self.body = StreamedBody(self.request, None, expectContinue=False)
        self.consumer = Consumer()

    def test_publicConnectionIsPausedUntilTheBodyIsAskedFor(self) -> None:
        """
        Until a consumer asks for the body, the public connection is paused
        and what arrives is held; then it is passed on and reading resumes.
        """
        self.assertEqual(self.request.transport.producerState, "paused")
        self.body.dataReceived(b"early")
        self.body.startProducing(self.consumer)
        self.assertEqual(self.consumer.data, b"early")
        self.assertEqual(self.request.transport.producerState, "producing")
        self.body.dataReceived(b" later")
        self.assertEqual(self.consumer.data, b"early later")
        self.assertIs(self.body.length, UNKNOWN_LENGTH)

    def test_consumerPausesThePublicConnection(self) -> None:
        """Pausing the body pauses the public connection; resuming resumes it."""
        self.body.startProducing(self.consumer)
        self.body.pauseProducing()
        self.assertEqual(self.request.transport.producerState, "paused")
        self.body.resumeProducing()
        self.assertEqual(self.request.transport.producerState, "producing")

    def test_completeBodyNoLongerPausesThePublicConnection(self) -> None:
        """
        Once the body is complete, a pause (from the consumer's last write)
        leaves the public connection alone: it is read for the next request.
        """
        done = self.body.startProducing(self.consumer)
        self.body.allDataReceived()
        self.successResultOf(done)
        self.body.pauseProducing()
        self.assertEqual(self.request.transport.producerState, "producing")

    def test_continueIsSentWhenTheBodyIsAskedFor(self) -> None:
        """A client waiting for C{100 Continue} is told to go on at start."""
        body = StreamedBody(self.request, 5, expectContinue=True)
        self.assertEqual(self.request.channel.written, b"")
        body.startProducing(self.consumer)
        self.assertEqual(self.request.channel.written, CONTINUE)

    def test_lostConnectionFailsTheBody(self) -> None:
        """If the public connection is lost, the body fails."""
        done = self.body.startProducing(self.consumer)
        self.body.connectionLost(Failure(ConnectionError("gone")))
        self.failureResultOf(done, ConnectionError)

    def test_stoppedBodyDropsTheRest(self) -> None:
        """After stopProducing nothing more is written and nothing fires."""
        done = self.body.startProducing(self.consumer)
        self.body.stopProducing()
        self.body.dataReceived(b"dropped")
        self.body.allDataReceived()
        self.assertEqual(self.consumer.data, b"")
        self.assertNoResult(done)
