"""
Tests for L{tunnel.server.accesslog}: the access log of a L{TunnelServer}'s
site names each request's virtual host and who answered it, in a line
nothing the public sends can break; in memory, through the site.
"""

from __future__ import annotations

import re

from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tunnel.server.accesslog import quoted
from tunnel.test.serversupport import Harness, RawLocal

IDENTIFIER = b"access-log-identifier"

#: The grammar of a line: the combined log format, then the two fields.
LINE = re.compile(
    r'(?P<combined>"[^"]*" - - \[[^]]*\] "(?:[^"\\]|\\.)*" \d{3} (?:\d+|-) '
    r'"(?:[^"\\]|\\.)*" "(?:[^"\\]|\\.)*")'
    r' host=(?P<host>-|"(?:[^"\\]|\\.)*") answer=(?P<answer>local|tunnel:[a-z-]+|-)'
)


class Hello(Resource):
    """The local service: answers every request."""

    isLeaf = True

    def render(self, request: object) -> bytes:
        return b"hello"


class AccessLogTestCase(SynchronousTestCase):
    """
    A harness with C{app.example} routed to L{IDENTIFIER}, logging to a
    file.
    """

    serverArguments: dict[str, object] = {}

    def setUp(self) -> None:
        self.path = self.mktemp()
        self.harness = Harness({"logPath": self.path}, **self.serverArguments)
        self.harness.server.addHost("app.example", IDENTIFIER)
        self.harness.site.doStart()
        self.streams: list[Protocol | None] = []
        self.local = Site(Hello(), reactor=self.harness.clock)

    def connectClient(self) -> None:
        self.harness.tunnelClient(
            IDENTIFIER,
            lambda message: self.streams.pop(0) if self.streams else self.local.buildProtocol(None),
        )

    def get(self, host: bytes = b"app.example", target: bytes = b"/") -> None:
        self.harness.send(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, host))

    def lines(self) -> list[re.Match[str]]:
        """Every line logged, each matched against the grammar."""
        self.harness.site.doStop()
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        matches = [LINE.fullmatch(line) for line in lines]
        for line, match in zip(lines, matches):
            self.assertIsNotNone(match, line)
        return matches  # type: ignore[return-value]

    def assertLogged(self, host: str, answer: str, status: str) -> None:
        [line] = self.lines()
        self.assertEqual((line["host"], line["answer"]), (host, answer))
        self.assertIn(f'" {status} ', line["combined"])


class AccessLogTests(AccessLogTestCase):
    """Each answered request is one line, that says who answered."""

    def test_localAnswer(self) -> None:
        """A response of the local service is C{answer=local}."""
        self.connectClient()
        self.get(target=b"/page?q=1")
        self.assertLogged('"app.example"', "local", "200")
        [line] = self.lines()
        self.assertIn('"GET /page?q=1 HTTP/1.1" 200 5 "-" "-"', line["combined"])

    def test_noTunnel(self) -> None:
        """A request for no virtual host names its Host, answered by the tunnel."""
        self.get(b"Unknown.Example:8080")
        self.assertLogged('"Unknown.Example:8080"', "tunnel:no-tunnel", "404")

    def test_clientNotConnected(self) -> None:
        """A host whose client is not connected is a 502 of the tunnel."""
        self.get()
        self.assertLogged('"app.example"', "tunnel:not-connected", "502")

    def test_invalidResponse(self) -> None:
        """No valid response through the tunnel is a 502 of the tunnel."""
        self.streams.append(RawLocal(b"not http\r\n\r\n", close=True))
        self.connectClient()
        self.get()
        self.assertLogged('"app.example"', "tunnel:invalid-response", "502")

    def test_streamTimeout(self) -> None:
        """A stream the client does not open in time is a 504 of the tunnel."""
        self.streams.append(None)
        self.connectClient()
        self.get()
        self.harness.advance(10)
        self.assertLogged('"app.example"', "tunnel:stream-timeout", "504")

    def test_localTimeout(self) -> None:
        """A local service that keeps the request waiting is a 504 of the tunnel."""
        self.streams.append(RawLocal())
        self.connectClient()
        self.get()
        self.harness.advance(60)
        self.assertLogged('"app.example"', "tunnel:local-timeout", "504")

    def test_noHost(self) -> None:
        """A request without a Host header logs none."""
        self.harness.send(b"GET / HTTP/1.0\r\n\r\n")
        self.assertLogged("-", "tunnel:bad-request", "400")

    def test_hostileHostIsEscaped(self) -> None:
        """
        A Host header with quotes, backslashes, control characters or bytes
        beyond ASCII, or that pretends to end the field, stays inside its
        field: each request is one line, answered by the tunnel. One with a
        carriage return or a NUL is refused by twisted.web before it is a
        request, and logs nothing.
        """
        hostile = [
            b'a.example" answer=local x="',
            b"a\\b",
            b"a\rb answer=local",
            b"\x1b[31mred\x7f\x0b\tend",
            b"\x00",
            b"caf\xc3\xa9\xff",
        ]
        for host in hostile:
            self.get(host)
        lines = self.lines()
        self.assertEqual(
            [line["host"] for line in lines],
            [
                r'"a.example\" answer=local x=\""',
                r'"a\\b"',
                r'"\x1b[31mred\x7f\x0b\x09end"',
                r'"caf\xc3\xa9\xff"',
            ],
        )
        self.assertEqual({line["answer"] for line in lines}, {"tunnel:bad-request"})


class PendingAccessLogTests(AccessLogTestCase):
    """The limit of streams a client may owe, in the access log."""

    serverArguments = {"maxPendingStreams": 1}

    def test_tooManyPending(self) -> None:
        """A request beyond the streams the client may owe is a 503 of the tunnel."""
        self.streams.extend([None, None])
        self.connectClient()
        self.get()
        self.get()
        self.assertLogged('"app.example"', "tunnel:too-many-pending", "503")


class QuotedTests(SynchronousTestCase):
    """L{quoted} escapes what could break a field."""

    def test_printableASCIIStandsForItself(self) -> None:
        """Letters, digits, punctuation and spaces are kept as they are."""
        self.assertEqual(quoted(b"app.example:8080 [::1] ~!$&'()*+,;=%-_"),
                         "\"app.example:8080 [::1] ~!$&'()*+,;=%-_\"")

    def test_quotesAndBackslashesAreBackslashed(self) -> None:
        """C{"} and C{\\} get a backslash before them."""
        self.assertEqual(quoted(b'say "hi" \\o/'), r'"say \"hi\" \\o/"')

    def test_otherBytesAreHex(self) -> None:
        """Line ends, other control bytes and bytes beyond ASCII are C{\\xHH}."""
        self.assertEqual(quoted(b"\r\n\t\x7f\x80\xff"), r'"\x0d\x0a\x09\x7f\x80\xff"')
