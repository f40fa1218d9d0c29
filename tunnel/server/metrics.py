"""
What a tunnel server counts and measures, for Prometheus.

Each L{ServerMetrics} has a registry of its own: one process may run many
tunnel servers (the tests do), and none of them counts into
prometheus_client's global registry.

Every label has few values: status classes, refusal reasons, and virtual
hosts, at most L{MAX_HOST_LABELS} of them (further hosts count together
under L{OTHER_HOSTS}). No label holds a path, an identifier, or a Host
header as the public wrote it: a request routed to no virtual host counts
under L{NO_HOST}.

The metrics are fed through the server's seams: the site tells each
answered request (L{requestAnswered}) with the marks of
L{tunnel.server.outcome}; forwarding tells how long a stream took to
open; sessions tell their keep-alive round trips; the registry's events
(L{observe}) tell clients connecting and leaving. The streams open and
waiting are read from the sessions when scraped.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol as TypingProtocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tunnel.measures import REQUEST_BUCKETS, ROUND_TRIP_BUCKETS, statusClass
from tunnel.server.events import ClientConnected, ClientDisconnected
from tunnel.server.outcome import Outcome, Refusal

#: The most virtual hosts that are labelled by name; the others share
#: L{OTHER_HOSTS}, so that a server with many self-service hosts keeps a
#: bounded number of series.
MAX_HOST_LABELS = 1000
#: The host label of the virtual hosts beyond L{MAX_HOST_LABELS}. No
#: virtual host can be named so: a host name has no underscore.
OTHER_HOSTS = "_other"
#: The host label of a request routed to no virtual host (a 404, a 400,
#: the control path).
NO_HOST = "_none"


class SessionLoad(TypingProtocol):
    """What the metrics read of a client's session when scraped."""

    @property
    def openStreams(self) -> int:
        """Its streams that carry requests or TCP connections."""

    @property
    def waitingRequests(self) -> int:
        """The requests that wait for a stream it owes them."""


class HostLabels:
    """
    The host label of each virtual host: its name, for the first
    C{maxHosts} hosts seen, and L{OTHER_HOSTS} for the others. A host keeps
    its label for the life of the process, deleted or not, as its series
    do.
    """

    def __init__(self, maxHosts: int = MAX_HOST_LABELS) -> None:
        self._maxHosts = maxHosts
        self._labelled: set[str] = set()

    def label(self, host: str | None) -> str:
        """The label of the virtual host C{host}; L{NO_HOST} for L{None}."""
        if host is None:
            return NO_HOST
        if host not in self._labelled:
            if len(self._labelled) >= self._maxHosts:
                return OTHER_HOSTS
            self._labelled.add(host)
        return host


class ServerMetrics:
    """
    The metrics of one tunnel server, in a registry of their own.

    @ivar registry: the L{CollectorRegistry} to expose.
    """

    def __init__(
        self,
        sessions: Callable[[], Iterable[SessionLoad]] = tuple,
        maxHosts: int = MAX_HOST_LABELS,
    ) -> None:
        """
        @param sessions: gives the connected sessions, whose streams the
            gauges of streams add up when scraped.
        @param maxHosts: how many virtual hosts are labelled by name.
        """
        self.registry = CollectorRegistry()
        self._hosts = HostLabels(maxHosts)
        self._series: dict[tuple[str, str], tuple[Any, Any, Any, Any]] = {}
        self._sessions = sessions
        registry = self.registry
        self._requests = Counter(
            "tunnel_server_requests_total",
            "Requests answered, by virtual host and status class.",
            ["host", "status"],
            registry=registry,
        )
        self._received = Counter(
            "tunnel_server_received_bytes_total",
            "Bytes of request bodies received from the public, by virtual host.",
            ["host"],
            registry=registry,
        )
        self._sent = Counter(
            "tunnel_server_sent_bytes_total",
            "Bytes of response bodies sent to the public, by virtual host.",
            ["host"],
            registry=registry,
        )
        self._duration = Histogram(
            "tunnel_server_request_duration_seconds",
            "Seconds from a request's first line to the end of its answer, by status class.",
            ["status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._refusals = Counter(
            "tunnel_server_refusals_total",
            "Requests (and connections) the tunnel server answered by itself, by reason.",
            ["reason"],
            registry=registry,
        )
        for refusal in Refusal:
            self._refusals.labels(refusal.reason)
        self._streamOpen = Histogram(
            "tunnel_server_stream_open_seconds",
            "Seconds from asking a client for a request's stream to having it open.",
            buckets=ROUND_TRIP_BUCKETS,
            registry=registry,
        )
        self._keepAlive = Histogram(
            "tunnel_server_keepalive_rtt_seconds",
            "Round trips of the keep-alive pings of the clients' sessions, in seconds.",
            buckets=ROUND_TRIP_BUCKETS,
            registry=registry,
        )
        self._clients = Gauge(
            "tunnel_server_connected_clients",
            "Clients whose session completed its handshake and serves their hosts.",
            registry=registry,
        )
        self._sessionsStarted = Counter(
            "tunnel_server_sessions_started_total",
            "Client sessions that completed their handshake.",
            registry=registry,
        )
        Gauge(
            "tunnel_server_open_streams",
            "Streams of the connected sessions that carry requests or TCP connections.",
            registry=registry,
        ).set_function(lambda: sum(session.openStreams for session in self._sessions()))
        Gauge(
            "tunnel_server_pending_streams",
            "Requests waiting for a connected client to open their stream.",
            registry=registry,
        ).set_function(lambda: sum(session.waitingRequests for session in self._sessions()))

    def requestAnswered(
        self, outcome: Outcome, code: int, seconds: float, received: int, sent: int
    ) -> None:
        """
        A request was answered.

        @param outcome: what the server made of it.
        @param code: its status.
        @param seconds: how long it took, from its first line.
        @param received: the bytes of its body.
        @param sent: the bytes of its response's body.
        """
        key = (self._hosts.label(outcome.host), statusClass(code))
        series = self._series.get(key)
        if series is None:
            # Bound once per host and status class, not looked up by label
            # on every request; as bounded as the labels.
            host, status = key
            series = self._series[key] = (
                self._requests.labels(host, status),
                self._received.labels(host),
                self._sent.labels(host),
                self._duration.labels(status),
            )
        requests, receivedBytes, sentBytes, duration = series
        requests.inc()
        receivedBytes.inc(received)
        sentBytes.inc(sent)
        duration.observe(seconds)
        if isinstance(outcome.answeredBy, Refusal):
            self.refused(outcome.answeredBy)

    def refused(self, refusal: Refusal) -> None:
        """Count a refusal (once per request or connection)."""
        self._refusals.labels(refusal.reason).inc()

    def streamOpened(self, seconds: float) -> None:
        """A client opened the stream of a request C{seconds} after it was asked."""
        self._streamOpen.observe(seconds)

    def keepAliveAnswered(self, seconds: float) -> None:
        """A client answered a keep-alive ping after C{seconds}."""
        self._keepAlive.observe(seconds)

    def observe(self, event: ClientConnected | ClientDisconnected) -> None:
        """Follow the registry's clients (see L{tunnel.server.TunnelServer.addObserver})."""
        if isinstance(event, ClientConnected):
            self._sessionsStarted.inc()
            self._clients.inc()
        else:
            self._clients.dec()
