"""
Tests for L{tunnel.server.outcome}: every way a public request (or a
control request) is answered marks it with who answered and, once routed,
its virtual host; in memory, through a L{TunnelServer}'s site.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tunnel.core.access import AccessRule, parseCredentials, parseNetworks
from tunnel.core.exchange import Answer
from tunnel.server.forwarding import REFUSALS
from tunnel.server.outcome import LOCAL, AnsweredBy, Outcome, Refusal, outcomeOf
from tunnel.test.serversupport import Harness, RawLocal, TunnelClient

IDENTIFIER = b"outcome-identifier"
GET = b"GET /some/path HTTP/1.1\r\nHost: app.example\r\n\r\n"


class Hello(Resource):
    """The local service: answers every request."""

    isLeaf = True

    def render(self, request: object) -> bytes:
        return b"hello"


class OutcomeTestCase(SynchronousTestCase):
    """
    A harness with C{app.example} routed to L{IDENTIFIER}, that records
    the status and the marks of every request its site answers.
    """

    serverArguments: dict[str, Any] = {}

    def setUp(self) -> None:
        self.harness = Harness(**self.serverArguments)
        self.harness.server.addHost("app.example", IDENTIFIER)
        self.answered: list[tuple[int, Outcome]] = []
        log = self.harness.site.log

        def record(request: Any) -> None:
            self.answered.append((request.code, outcomeOf(request)))
            log(request)

        self.harness.site.log = record  # type: ignore[method-assign]
        #: What the next streams are attached to (L{None}: the client opens
        #: none); the local service once it is empty.
        self.streams: list[Protocol | None] = []
        self.local = Site(Hello(), reactor=self.harness.clock)

    def connectClient(self) -> TunnelClient:
        return self.harness.tunnelClient(
            IDENTIFIER,
            lambda message: self.streams.pop(0) if self.streams else self.local.buildProtocol(None),
        )

    def assertAnswered(self, code: int, host: str | None, answeredBy: AnsweredBy) -> None:
        self.assertEqual(self.answered, [(code, Outcome(host, answeredBy))])


class PublicOutcomeTests(OutcomeTestCase):
    """Each answer to a public request is marked where it is decided."""

    def test_localServiceAnswer(self) -> None:
        """A response relayed from the local service is marked local."""
        self.connectClient()
        self.harness.send(GET)
        self.assertAnswered(200, "app.example", LOCAL)

    def test_noTunnel(self) -> None:
        """A Host no virtual host matches: a 404, routed nowhere."""
        self.harness.send(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n")
        self.assertAnswered(404, None, Refusal.NO_TUNNEL)

    def test_malformedHost(self) -> None:
        """A malformed Host header: a 400, routed nowhere."""
        self.harness.send(b'GET / HTTP/1.1\r\nHost: a"b\r\n\r\n')
        self.assertAnswered(400, None, Refusal.BAD_REQUEST)

    def test_forbidden(self) -> None:
        """A source the host's rule does not admit: a 403, routed to the host."""
        self.harness.server.setAccess("app.example", AccessRule(parseNetworks("10.0.0.0/8")))
        self.connectClient()
        self.harness.send(GET)
        self.assertAnswered(403, "app.example", Refusal.FORBIDDEN)

    def test_unauthorized(self) -> None:
        """No credentials for a host that asks for them: a 401."""
        rule = AccessRule(credentials=parseCredentials("alice:s3cret", "users"))
        self.harness.server.setAccess("app.example", rule)
        self.connectClient()
        self.harness.send(GET)
        self.assertAnswered(401, "app.example", Refusal.UNAUTHORIZED)

    def test_clientNotConnected(self) -> None:
        """A host whose client is not connected: a 502."""
        self.harness.send(GET)
        self.assertAnswered(502, "app.example", Refusal.NOT_CONNECTED)

    def test_streamTimeout(self) -> None:
        """A client that opens no stream in time: a 504."""
        self.streams.append(None)
        self.connectClient()
        self.harness.send(GET)
        self.harness.advance(10)
        self.assertAnswered(504, "app.example", Refusal.STREAM_TIMEOUT)

    def test_clientGone(self) -> None:
        """A client that goes away while a request waits for its stream: a 502."""
        self.streams.append(None)
        client = self.connectClient()
        self.harness.send(GET)
        client.transport.loseConnection()
        self.harness.flush()
        self.assertAnswered(502, "app.example", Refusal.CLIENT_GONE)

    def test_invalidResponse(self) -> None:
        """A local service that answers no HTTP: a 502."""
        self.streams.append(RawLocal(b"not http at all\r\n\r\n", close=True))
        self.connectClient()
        self.harness.send(GET)
        self.assertAnswered(502, "app.example", Refusal.INVALID_RESPONSE)

    def test_localTimeout(self) -> None:
        """A local service that keeps the request waiting: a 504."""
        self.streams.append(RawLocal())
        self.connectClient()
        self.harness.send(GET)
        self.harness.advance(60)
        self.assertAnswered(504, "app.example", Refusal.LOCAL_TIMEOUT)


class PendingOutcomeTests(OutcomeTestCase):
    """The limit of streams a client may owe."""

    serverArguments = {"maxPendingStreams": 1}

    def test_tooManyPending(self) -> None:
        """A request beyond the streams the client may owe: a 503."""
        self.streams.extend([None, None])
        self.connectClient()
        self.harness.send(GET)
        self.harness.send(GET)
        self.assertAnswered(503, "app.example", Refusal.TOO_MANY_PENDING)


class ControlOutcomeTests(OutcomeTestCase):
    """Control requests the server refuses are marked too."""

    serverArguments = {"maxFailedConnects": 1}

    def connect(self, identifier: bytes) -> None:
        self.harness.send(
            b"CONNECT /_controlPath/ HTTP/1.1\r\nHost: tunnel\r\n"
            b"X-KTunnel-Identifier: %s\r\n\r\n" % (identifier,)
        )

    def test_unknownIdentifier(self) -> None:
        """A CONNECT with an unknown identifier: a 403."""
        self.connect(b"unknown-identifier")
        self.assertAnswered(403, None, Refusal.UNKNOWN_IDENTIFIER)

    def test_rateLimited(self) -> None:
        """A CONNECT from a source that failed too often: a 429."""
        self.connect(b"unknown-identifier")
        del self.answered[:]
        self.connect(IDENTIFIER)
        self.assertAnswered(429, None, Refusal.RATE_LIMITED)

    def test_methodNotAllowed(self) -> None:
        """Another method than CONNECT on the control path: a 405."""
        self.harness.send(b"GET /_controlPath/ HTTP/1.1\r\nHost: tunnel\r\n\r\n")
        self.assertAnswered(405, None, Refusal.METHOD_NOT_ALLOWED)

    def test_acceptedConnectIsNotAnswered(self) -> None:
        """A CONNECT that becomes a tunnel session is no answered request."""
        self.connectClient()
        self.assertEqual(self.answered, [])


class RefusalTests(SynchronousTestCase):
    """The reasons of refusals."""

    def test_everyExchangeAnswerHasARefusalOfItsStatus(self) -> None:
        """Each error answer of the exchange is marked with a reason of its own status."""
        self.assertEqual(set(REFUSALS), set(Answer))
        for answer, refusal in REFUSALS.items():
            self.assertEqual(refusal.code, answer.code, answer)
        self.assertEqual(len(set(REFUSALS.values())), len(REFUSALS))

    def test_reasonsAreDistinctTokens(self) -> None:
        """
        Reasons are lower-case words joined by hyphens, each its own, so
        that they stand as they are in a log line and a label.
        """
        reasons = [refusal.reason for refusal in Refusal]
        self.assertEqual(len(set(reasons)), len(reasons))
        for reason in reasons:
            self.assertRegex(reason, re.compile(r"\A[a-z]+(-[a-z]+)*\Z"))
