"""
The tunnel client's Prometheus metrics, served by its inspector at
C{/metrics}.

Every metric lives in the L{ClientMetrics}' own registry (several clients
may run in one process). Their labels take a few fixed values only (a
status class, a kind of connection, a direction, a reason): never a path,
a host the public wrote, or an identifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tunnel.core.capture import CapturedExchange, Kind
from tunnel.measures import REQUEST_BUCKETS, ROUND_TRIP_BUCKETS, statusClass

if TYPE_CHECKING:
    from tunnel.client.local import LocalConnectionLimit


class ClientMetrics:
    """
    What a tunnel client counts.

    @ivar registry: the registry every metric is in.
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "tunnel_client_requests",
            "HTTP exchanges forwarded to the local service, by the class of their status",
            ["status_class"],
            registry=registry,
        )
        self._connections = Counter(
            "tunnel_client_connections",
            "Tunnelled connections that ended, by kind (http, websocket, tcp)",
            ["kind"],
            registry=registry,
        )
        self._bytes = Counter(
            "tunnel_client_bytes",
            "Bytes of tunnelled connections, to_local or from_local",
            ["direction"],
            registry=registry,
        )
        self._duration = Histogram(
            "tunnel_client_request_duration_seconds",
            "Seconds from the stream's arrival to the end of an HTTP exchange",
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._refusals = Counter(
            "tunnel_client_refusals",
            "Tunnelled connections the client answered itself, by reason",
            ["reason"],
            registry=registry,
        )
        self._localConnections = Gauge(
            "tunnel_client_local_connections",
            "Local connections being dialled or open",
            registry=registry,
        )
        self._connected = Gauge(
            "tunnel_client_connected",
            "Tunnels up: 1 while the tunnel is, or with several servers, one per server",
            registry=registry,
        )
        self._reconnects = Counter(
            "tunnel_client_reconnects",
            "Tunnels to a server established again after the first",
            registry=registry,
        )
        self._rtt = Histogram(
            "tunnel_client_keepalive_rtt_seconds",
            "Round-trip times of the tunnel session's keep-alive pings",
            buckets=ROUND_TRIP_BUCKETS,
            registry=registry,
        )
        # Each exchange counts in a few series: bound once, not looked up
        # by label each time.
        self._byKind = {kind: self._connections.labels(kind.value) for kind in Kind}
        self._toLocal = self._bytes.labels("to_local")
        self._fromLocal = self._bytes.labels("from_local")
        self._byClass = {
            label: self._requests.labels(label)
            for label in map(statusClass, (None, 100, 200, 300, 400, 500))
        }

    def exchangeEnded(self, exchange: CapturedExchange) -> None:
        """Count a tunnelled connection that ended."""
        kind = exchange.kind
        self._byKind[kind].inc()
        self._toLocal.inc(exchange.bytesIn)
        self._fromLocal.inc(exchange.bytesOut)
        if exchange.refusal is not None:
            self._refusals.labels(exchange.refusal).inc()
        if kind is Kind.HTTP:
            self._byClass[statusClass(exchange.status)].inc()
            if exchange.ended is not None:
                self._duration.observe(exchange.duration(exchange.ended))

    def refused(self, reason: str) -> None:
        """Count a tunnelled connection refused without a dial."""
        self._refusals.labels(reason).inc()

    def watchLocalConnections(self, limit: LocalConnectionLimit) -> None:
        """Report how many local connections C{limit} counts."""
        self._localConnections.set_function(lambda: limit.live)

    def tunnelsUp(self, count: int) -> None:
        """C{count} tunnels are up now (one per server)."""
        self._connected.set(count)

    def reconnected(self) -> None:
        """A tunnel to a server came up again."""
        self._reconnects.inc()

    def roundTrip(self, seconds: float) -> None:
        """Count a keep-alive ping's round-trip time."""
        self._rtt.observe(seconds)
