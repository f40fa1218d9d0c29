"""
Tests for L{tunnel.server.metrics}: what a L{TunnelServer} counts, scraped
in the Prometheus text format and read back with prometheus_client's
parser; in memory, through the server's site.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from tunnel.core.access import AccessRule, parseNetworks
from tunnel.server.metrics import (
    MAX_HOST_LABELS,
    NO_HOST,
    OTHER_HOSTS,
    HostLabels,
    ServerMetrics,
)
from tunnel.measures import statusClass
from tunnel.server.outcome import Outcome, Refusal
from tunnel.test.serversupport import Harness, RawLocal, TunnelClient

IDENTIFIER = b"metrics-identifier"
GET = b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n"

#: The samples of a scrape: value by sample name and labels.
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: ServerMetrics) -> Samples:
    """Expose C{metrics} as a scraper gets them, and parse them back."""
    text = generate_latest(metrics.registry).decode("utf-8")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The value of one sample; 0 for a labelled series not there yet."""
    return samples.get((name, frozenset(labels.items())), 0.0)


class Echo(Resource):
    """The local service: answers C{hello}, or the body it was sent."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        return request.content.read() or b"hello"


class MetricsTestCase(SynchronousTestCase):
    """A harness with C{app.example} routed to L{IDENTIFIER}."""

    def setUp(self) -> None:
        self.harness = Harness()
        self.server = self.harness.server
        self.server.addHost("app.example", IDENTIFIER)
        self.streams: list[Protocol | None] = []
        self.local = Site(Echo(), reactor=self.harness.clock)

    def connectClient(self) -> TunnelClient:
        return self.harness.tunnelClient(
            IDENTIFIER,
            lambda message: self.streams.pop(0) if self.streams else self.local.buildProtocol(None),
        )

    def scrape(self) -> Samples:
        return scrape(self.server.metrics)


class RequestMetricsTests(MetricsTestCase):
    """Answered requests, their bytes, durations and refusals."""

    def test_requestsAreCountedByHostAndStatusClass(self) -> None:
        """
        Three requests answered 200 count for their host under 2xx; one for
        an unknown host counts under no host as a 4xx and a refusal for no
        tunnel, its Host not being a label.
        """
        self.connectClient()
        for _ in range(3):
            self.harness.send(GET)
        self.harness.send(b"GET / HTTP/1.1\r\nHost: unknown.example\r\n\r\n")
        samples = self.scrape()
        self.assertEqual(
            value(samples, "tunnel_server_requests_total", host="app.example", status="2xx"), 3
        )
        self.assertEqual(
            value(samples, "tunnel_server_requests_total", host=NO_HOST, status="4xx"), 1
        )
        self.assertEqual(
            {labels for name, labels in samples if name == "tunnel_server_requests_total"},
            {
                frozenset({("host", "app.example"), ("status", "2xx")}),
                frozenset({("host", NO_HOST), ("status", "4xx")}),
            },
        )
        self.assertEqual(value(samples, "tunnel_server_refusals_total", reason="no-tunnel"), 1)
        self.assertEqual(
            value(samples, "tunnel_server_request_duration_seconds_count", status="2xx"), 3
        )

    def test_refusalCountsUnderItsReasonOnly(self) -> None:
        """
        A request the host's access rule refuses counts once, under
        C{forbidden}; every other reason is there, at 0.
        """
        self.server.setAccess("app.example", AccessRule(parseNetworks("10.0.0.0/8")))
        self.connectClient()
        self.harness.send(GET)
        samples = self.scrape()
        refusals = {
            dict(labels)["reason"]: count
            for (name, labels), count in samples.items()
            if name == "tunnel_server_refusals_total"
        }
        self.assertEqual(refusals, {refusal.reason: 0 for refusal in Refusal} | {"forbidden": 1})
        self.assertEqual(
            value(samples, "tunnel_server_requests_total", host="app.example", status="4xx"), 1
        )

    def test_localAnswersAreNoRefusals(self) -> None:
        """A local service's own 404 is a 4xx of its host, not a refusal."""
        self.connectClient()
        self.harness.send(b"GET /nothing HTTP/1.1\r\nHost: app.example\r\n\r\n")
        self.local.resource = Resource()
        self.harness.send(b"GET /nothing HTTP/1.1\r\nHost: app.example\r\n\r\n")
        samples = self.scrape()
        self.assertEqual(
            value(samples, "tunnel_server_requests_total", host="app.example", status="4xx"), 1
        )
        self.assertEqual(
            sum(count for (name, _), count in samples.items()
                if name == "tunnel_server_refusals_total"),
            0,
        )

    def test_bodyBytesAreCountedByHost(self) -> None:
        """The bytes of a request body and of its response's body count for the host."""
        self.connectClient()
        self.harness.send(
            b"POST / HTTP/1.1\r\nHost: app.example\r\nContent-Length: 11\r\n\r\nhello world"
        )
        self.harness.send(GET)
        samples = self.scrape()
        self.assertEqual(value(samples, "tunnel_server_received_bytes_total", host="app.example"), 11)
        self.assertEqual(value(samples, "tunnel_server_sent_bytes_total", host="app.example"), 16)

    def test_durationRunsFromTheFirstLine(self) -> None:
        """A request the local service keeps waiting for 60 s takes 60 s, as a 5xx."""
        self.streams.append(RawLocal())
        self.connectClient()
        self.harness.send(GET)
        self.harness.advance(60)
        samples = self.scrape()
        self.assertEqual(
            value(samples, "tunnel_server_request_duration_seconds_sum", status="5xx"), 60
        )
        self.assertEqual(
            value(samples, "tunnel_server_request_duration_seconds_bucket", status="5xx", le="30.0"),
            0,
        )
        self.assertEqual(
            value(samples, "tunnel_server_request_duration_seconds_bucket", status="5xx", le="60.0"),
            1,
        )
        self.assertEqual(value(samples, "tunnel_server_refusals_total", reason="local-timeout"), 1)

    def test_refusedConnectionsAreCounted(self) -> None:
        """A connection beyond the site's caps counts as a refusal."""
        self.harness = Harness({"maxConnectionsPerSource": 1})
        self.server = self.harness.server
        self.harness.send(b"")
        self.harness.send(b"")
        self.assertEqual(
            value(self.scrape(), "tunnel_server_refusals_total", reason="too-many-connections"), 1
        )


class TunnelMetricsTests(MetricsTestCase):
    """Clients, streams and round trips through the tunnel."""

    def test_connectedClientsFollowClients(self) -> None:
        """
        The gauge of connected clients follows a client connecting and
        leaving; every session that completes its handshake is counted.
        """
        self.assertEqual(value(self.scrape(), "tunnel_server_connected_clients"), 0)
        client = self.connectClient()
        samples = self.scrape()
        self.assertEqual(value(samples, "tunnel_server_connected_clients"), 1)
        self.assertEqual(value(samples, "tunnel_server_sessions_started_total"), 1)
        client.transport.loseConnection()
        self.harness.flush()
        self.assertEqual(value(self.scrape(), "tunnel_server_connected_clients"), 0)
        self.connectClient()
        samples = self.scrape()
        self.assertEqual(value(samples, "tunnel_server_connected_clients"), 1)
        self.assertEqual(value(samples, "tunnel_server_sessions_started_total"), 2)

    def test_replacedClientIsCountedOnce(self) -> None:
        """A session that replaces a silent one of the same client leaves one client."""
        first = self.connectClient()
        first.mux.dataReceived = lambda data: None
        self.connectClient()
        self.harness.advance(5)
        samples = self.scrape()
        self.assertEqual(value(samples, "tunnel_server_connected_clients"), 1)
        self.assertEqual(value(samples, "tunnel_server_sessions_started_total"), 2)

    def test_pendingAndOpenStreams(self) -> None:
        """
        A request waits for its stream until the client opens it; the
        stream is open until its exchange ends.
        """
        self.streams.append(None)
        client = self.connectClient()
        self.harness.send(GET)
        samples = self.scrape()
        self.assertEqual(
            (value(samples, "tunnel_server_pending_streams"),
             value(samples, "tunnel_server_open_streams")),
            (1, 0),
        )
        client.mux.openStream(RawLocal())
        self.harness.flush()
        samples = self.scrape()
        self.assertEqual(
            (value(samples, "tunnel_server_pending_streams"),
             value(samples, "tunnel_server_open_streams")),
            (0, 1),
        )
        self.harness.advance(60)
        self.assertEqual(value(self.scrape(), "tunnel_server_open_streams"), 0)

    def test_streamOpenTime(self) -> None:
        """The time from asking for a stream to having it open is measured."""
        self.streams.append(None)
        client = self.connectClient()
        self.harness.send(GET)
        self.harness.clock.advance(0.25)
        client.mux.openStream(self.local.buildProtocol(None))
        self.harness.flush()
        samples = self.scrape()
        self.assertEqual(value(samples, "tunnel_server_stream_open_seconds_count"), 1)
        self.assertEqual(value(samples, "tunnel_server_stream_open_seconds_sum"), 0.25)

    def test_keepAliveRoundTrip(self) -> None:
        """Each answered keep-alive ping of a session is measured."""
        self.connectClient()
        self.assertEqual(value(self.scrape(), "tunnel_server_keepalive_rtt_seconds_count"), 0)
        self.harness.clock.advance(30)
        self.harness.clock.advance(0.125)
        self.harness.flush()
        samples = self.scrape()
        self.assertEqual(value(samples, "tunnel_server_keepalive_rtt_seconds_count"), 1)
        self.assertEqual(value(samples, "tunnel_server_keepalive_rtt_seconds_sum"), 0.125)


class BoundsTests(SynchronousTestCase):
    """Each server's metrics are its own, and their labels are bounded."""

    def test_hostLabelsAreCapped(self) -> None:
        """
        The first L{MAX_HOST_LABELS} hosts are labelled by name, and keep
        their label; the others share L{OTHER_HOSTS}.
        """
        labels = HostLabels()
        names = [f"host{number}.example" for number in range(MAX_HOST_LABELS + 2)]
        self.assertEqual([labels.label(name) for name in names[:MAX_HOST_LABELS]],
                         names[:MAX_HOST_LABELS])
        self.assertEqual([labels.label(name) for name in names[MAX_HOST_LABELS:]],
                         [OTHER_HOSTS, OTHER_HOSTS])
        self.assertEqual(labels.label(names[0]), names[0])
        self.assertEqual(labels.label(None), NO_HOST)

    def test_hostsBeyondTheCapShareOneSeries(self) -> None:
        """Requests of hosts beyond the cap count together."""
        metrics = ServerMetrics(maxHosts=1)
        for host in ("a.example", "b.example", "c.example"):
            metrics.requestAnswered(Outcome(host), 200, 0.0, 0, 0)
        samples = scrape(metrics)
        self.assertEqual(
            value(samples, "tunnel_server_requests_total", host="a.example", status="2xx"), 1
        )
        self.assertEqual(
            value(samples, "tunnel_server_requests_total", host=OTHER_HOSTS, status="2xx"), 2
        )

    def test_labelsAreBounded(self) -> None:
        """Every metric is the server's, labelled by host, status or reason only."""
        metrics = ServerMetrics()
        metrics.requestAnswered(Outcome("a.example", Refusal.FORBIDDEN), 403, 0.0, 0, 0)
        families = list(metrics.registry.collect())
        self.assertTrue(families)
        for family in families:
            self.assertTrue(family.name.startswith("tunnel_server_"), family.name)
            for sample in family.samples:
                self.assertLessEqual(set(sample.labels), {"host", "status", "reason", "le"})

    def test_eachServerCountsApart(self) -> None:
        """Two servers in one process count apart, and not in the global registry."""
        first, second = Harness(), Harness()
        first.send(GET)
        self.assertEqual(
            value(scrape(first.server.metrics), "tunnel_server_requests_total",
                  host=NO_HOST, status="4xx"),
            1,
        )
        self.assertEqual(
            value(scrape(second.server.metrics), "tunnel_server_requests_total",
                  host=NO_HOST, status="4xx"),
            0,
        )
        self.assertFalse(
            [family for family in REGISTRY.collect() if family.name.startswith("tunnel_")]
        )

    def test_statusClasses(self) -> None:
        """A status counts in its class."""
        self.assertEqual(
            [statusClass(code) for code in (101, 200, 302, 404, 599, None, 600, 99)],
            ["1xx", "2xx", "3xx", "4xx", "5xx", "none", "none", "none"],
        )
