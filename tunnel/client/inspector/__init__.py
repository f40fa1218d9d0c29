"""
The client's inspector: a local web page and JSON API that show every
request going through the tunnel, live, and send one again on demand.

An L{Inspector} holds the capture store the client's L{LocalConnector}
records into and the client's metrics; L{InspectorService} serves its page
on an endpoint (C{tcp:4040:interface=127.0.0.1} by default in the console
command).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.client.inspector.replay import replay
from tunnel.client.inspector.web import InspectorResource
from tunnel.client.metrics import ClientMetrics
from tunnel.client.service import ClientState, TunnelClientService
from tunnel.core.capture import CapturedExchange, CaptureLimits, CaptureStore
from tunnel.core.replay import ReplayEdit
from tunnel.server.site import PrivateSite

#: Where the console command's inspector listens, and the ports it tries
#: after it when that one is taken (another client runs already).
DEFAULT_INSPECT = "tcp:4040:interface=127.0.0.1"
DEFAULT_FALLBACKS = tuple(f"tcp:{port}:interface=127.0.0.1" for port in range(4041, 4050))


class Inspector:
    """
    What the inspector shows, and the resource that shows it.

    @ivar reactor: the reactor: the store's clock, and what replays dial with.
    @ivar store: the captured exchanges.
    @ivar metrics: the client's metrics.
    @ivar clients: the client services whose status it shows (one per
        server), once attached.
    @ivar resource: its twisted.web resource.
    """

    def __init__(self, reactor: Any, limits: CaptureLimits = CaptureLimits()) -> None:
        self.reactor = reactor
        self.store = CaptureStore(limits, reactor.seconds)
        self.metrics = ClientMetrics()
        self.clients: list[TunnelClientService] = []
        self._everUp: set[int] = set()
        self._statusObservers: list[Callable[[], object]] = []
        self.resource = InspectorResource(self)

    def attach(self, clients: list[TunnelClientService]) -> None:
        """
        Show the status of C{clients} (one per server, sharing one local
        side), and replay through their connector.
        """
        self.clients = clients
        for index, client in enumerate(clients):
            client.addStateObserver(lambda state, index=index: self._stateChanged(index, state))
            client.addRoundTripObserver(self._roundTrip)

    def subscribeStatus(self, observer: Callable[[], object]) -> None:
        """Call C{observer} whenever the status changes."""
        self._statusObservers.append(observer)

    def _stateChanged(self, index: int, state: ClientState) -> None:
        self.metrics.tunnelsUp(sum(client.state.name == "connected" for client in self.clients))
        if state.name == "connected":
            if index in self._everUp:
                self.metrics.reconnected()
            self._everUp.add(index)
        self._tellStatus()

    def _roundTrip(self, seconds: float) -> None:
        self.metrics.roundTrip(seconds)
        self._tellStatus()

    def _tellStatus(self) -> None:
        for observer in list(self._statusObservers):
            observer()

    def status(self) -> dict[str, Any]:
        """
        The tunnels' status, as C{GET /api/status} says it: that of the
        first tunnel up (or of the first, when none is), the public hosts
        of all, and each tunnel's own under C{tunnels}.
        """
        tunnels = [_tunnelStatus(client) for client in self.clients]
        if not tunnels:
            return {"state": "stopped", "connected": False, "since": None, "rttMs": None,
                    "hosts": [], "forwards": [], "tunnels": []}
        up = [tunnel for tunnel in tunnels if tunnel["connected"]]
        status = dict((up or tunnels)[0])
        status["hosts"] = sorted({host for tunnel in tunnels for host in tunnel["hosts"]})
        status["tunnels"] = tunnels
        return status

    def captureJSON(self) -> dict[str, Any]:
        """The store's bounds and how full it is."""
        limits = self.store.limits
        return {
            "exchanges": len(self.store),
            "retainedBytes": self.store.retainedBytes,
            "maxExchanges": limits.maxExchanges,
            "maxBodyBytes": limits.maxBodyBytes,
            "maxTotalBytes": limits.maxTotalBytes,
        }

    def replay(self, exchange: CapturedExchange, edit: ReplayEdit) -> Deferred[CapturedExchange]:
        """
        Send the request of C{exchange} again (see L{replay}).

        @raise tunnel.core.replay.ReplayError: if it cannot be.
        """
        assert self.clients, "the inspector replays through its clients' connector"
        return replay(self.clients[0].endpoint.connector, exchange, self.reactor, edit)


def _tunnelStatus(client: TunnelClientService) -> dict[str, Any]:
    """The status of one client's tunnel."""
    state = client.state
    rtt = client.roundTrip
    return {
        "state": state.name,
        "connected": state.name == "connected",
        "detail": state.detail,
        "since": state.since,
        "server": client.endpoint.settings.host,
        "rttMs": None if rtt is None else round(rtt * 1000, 3),
        "hosts": sorted({urlsplit(forward.public).hostname or "" for forward in state.forwards}),
        "forwards": [
            {"public": forward.public, "local": forward.destination}
            for forward in state.forwards
        ],
    }


class InspectorService(Service):
    """
    Serves an inspector's page while running.

    It listens on the first of its endpoints it can. If it can listen on
    none, it fails to start when C{required} (the user asked for that
    endpoint), and only says so otherwise (the console's default, whose
    ports may all be taken by other clients).

    @ivar url: the page's address, once listening.
    """

    _log = Logger()

    def __init__(
        self, inspector: Inspector, descriptions: Sequence[str], required: bool = True
    ) -> None:
        self.inspector = inspector
        self.url: str | None = None
        self._descriptions = descriptions
        self._required = required
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        """
        Listen on the first endpoint that can be.

        @raise CannotListenError: when none can and the endpoint was asked for.
        """
        super().startService()
        site = PrivateSite(self.inspector.resource)
        site.noisy = False
        problem: Failure | None = None
        for description in self._descriptions:
            listening = serverFromString(self.inspector.reactor, description).listen(site)
            outcome: list[Any] = []
            listening.addBoth(outcome.append)
            if outcome and isinstance(outcome[0], Failure):
                problem = outcome[0]
                if problem.check(CannotListenError):
                    continue
                problem.raiseException()
            if outcome:
                self._listening(outcome[0])
                return
            listening.addCallback(self._listening)
            return
        if problem is not None and self._required:
            problem.raiseException()
        self._log.warn(
            "The inspector is off: it cannot listen on {endpoint} ({why})",
            endpoint=self._descriptions[0],
            why=None if problem is None else problem.getErrorMessage(),
        )

    def _listening(self, port: IListeningPort) -> None:
        self._port = port
        address = port.getHost()
        host = getattr(address, "host", None)
        if host in ("0.0.0.0", "::", None):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        self.url = f"http://{host}:{getattr(address, 'port', '')}/"
        self._log.info("Inspecting requests at {url}", url=self.url)

    def stopService(self) -> Deferred[None] | None:
        """Stop listening and end the event streams."""
        super().stopService()
        self.inspector.resource.events.close()
        port, self._port = self._port, None
        return None if port is None else port.stopListening()
