"""
The TCP listeners of a cluster's shared configuration, on one node: every
node listens on each endpoint the configuration names (C{config:tcp}) for
the client it names, and a connection to any of them reaches that client
wherever its session is.

The admin API of any node adds and removes them (L{SharedListeners.add},
L{SharedListeners.remove}); the node's L{ConfigFollower} keeps the others
(L{SharedListeners.apply}). An endpoint a node cannot listen on (its port
taken, on a machine that runs several nodes) is said once in its log and
in the admin API's C{GET /tcp}, and tried again at the next change.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.cluster.config import SharedConfig
from tunnel.listening import listenProblem


class ListeningServer(TypingProtocol):
    """What L{SharedListeners} needs of the tunnel server."""

    def bindTCPByName(self, endpoint: IStreamServerEndpoint, name: bytes) -> Deferred[IListeningPort]:
        """Listen on C{endpoint} for the client known by C{name}."""

    def unbindTCP(self, port: IListeningPort) -> Deferred[None]:
        """Stop a listener of L{bindTCPByName}."""


@attrs.frozen
class Unbound:
    """
    A listener of the configuration this node could not start.

    @ivar listen: its endpoint description.
    @ivar problem: why, in one line.
    """

    listen: str
    problem: str


@attrs.define
class _Bound:
    port: IListeningPort
    key: str


class SharedListeners:
    """The listeners of the shared configuration that this node has."""

    _log = Logger()

    def __init__(self, server: ListeningServer, reactor: Any, config: SharedConfig) -> None:
        self._server = server
        self._reactor = reactor
        self._config = config
        self._bound: dict[str, _Bound] = {}
        self._starting: set[str] = set()
        self._unbound: dict[str, str] = {}

    def unbound(self) -> list[Unbound]:
        """The listeners of the configuration this node could not start."""
        return [Unbound(listen, problem) for listen, problem in sorted(self._unbound.items())]

    def descriptionOf(self, port: int) -> str | None:
        """The description of this node's shared listener on C{port}, if it has one."""
        for description, bound in self._bound.items():
            if bound.port.getHost().port == port:
                return description
        return None

    def add(self, description: str, key: str) -> Deferred[IListeningPort]:
        """
        Listen on C{description} for the client of C{key} here, then add it
        to the configuration, for every node.

        @return: a L{Deferred} firing with the port, or failing with
            L{CannotListenError} (nothing added) or
            L{tunnel.cluster.scripts.StoreUnavailable} (this node stopped
            listening again).
        """

        def listened(port: IListeningPort) -> Deferred[IListeningPort]:
            def stored(_: int) -> IListeningPort:
                self._record(description, port, key)
                return port

            def unstored(failure: Failure) -> Deferred[None]:
                stopping = self._server.unbindTCP(port)
                return stopping.addBoth(lambda _: failure)

            return self._config.change(tcp={description: key}).addCallbacks(stored, unstored)

        return self._whileStarting(
            description, lambda: self._listen(description, key).addCallback(listened)
        )

    def remove(self, port: int) -> Deferred[None]:
        """
        Remove this node's shared listener on C{port} from the
        configuration, then stop it; every other node stops its own.

        @raise KeyError: if this node has no shared listener on C{port}.
        @return: a L{Deferred} firing once it stopped, or failing with
            L{tunnel.cluster.scripts.StoreUnavailable} (it still listens).
        """
        description = self.descriptionOf(port)
        if description is None:
            raise KeyError(port)
        removing = self._config.change(tcp={description: ""})
        return removing.addCallback(lambda _: self._stop(description))

    def apply(self, tcp: Mapping[str, str], rotated: Mapping[bytes, bytes]) -> Deferred[None]:
        """
        Make this node's shared listeners those of C{tcp}, endpoint
        description -> key: stop those it no longer names, start those it
        names that this node does not have (again, for those that could not
        start before).

        @param rotated: old key -> new key of the keys rotated in the same
            change, whose listeners the server moved already.
        """
        for old, new in rotated.items():
            self.rotate(old, new)
        work = []
        for description, bound in list(self._bound.items()):
            key = tcp.get(description)
            if key != bound.key:
                stopping = self._stop(description)
                if key is not None:
                    # Moved to another client: listen again once it stopped.
                    self._starting.add(description)
                    stopping.addCallback(lambda _, d=description, k=key: self._start(d, k))
                work.append(stopping)
        for description in self._unbound.keys() - tcp.keys():
            del self._unbound[description]
        for description, key in tcp.items():
            if description not in self._bound and description not in self._starting:
                work.append(self._start(description, key))
        return gatherResults(work).addCallback(lambda _: None)

    def rotate(self, old: bytes, new: bytes) -> None:
        """
        Know this node's shared listeners of the key C{old} as the new
        key's, as the server moved them when C{old} was rotated (see
        L{tunnel.server.TunnelServer.moveTCP}).
        """
        for bound in self._bound.values():
            if bound.key == old.decode("ascii"):
                bound.key = new.decode("ascii")

    def _listen(self, description: str, key: str) -> Deferred[IListeningPort]:
        endpoint = serverFromString(self._reactor, description)
        return self._server.bindTCPByName(endpoint, key.encode("ascii"))

    def _whileStarting(
        self, description: str, start: Callable[[], Deferred[Any]]
    ) -> Deferred[Any]:
        """Run C{start}, with C{description} known to be starting until it is done."""
        self._starting.add(description)

        def done(result: object) -> object:
            self._starting.discard(description)
            return result

        return start().addBoth(done)

    def _record(self, description: str, port: IListeningPort, key: str) -> None:
        self._bound[description] = _Bound(port, key)
        self._unbound.pop(description, None)

    def _start(self, description: str, key: str) -> Deferred[None]:
        def listened(port: IListeningPort) -> None:
            self._record(description, port, key)
            self._log.info(
                "Listening on port {port} ({listen}) for the cluster's TCP listener",
                port=port.getHost().port,
                listen=description,
            )

        def failed(failure: Failure) -> None:
            failure.trap(CannotListenError)
            problem = listenProblem(failure.value)
            if self._unbound.get(description) != problem:
                self._log.warn(
                    "The cluster's TCP listener {listen} does not listen on this node: "
                    "{problem}",
                    listen=description,
                    problem=problem,
                )
            self._unbound[description] = problem

        starting = self._whileStarting(
            description, lambda: self._listen(description, key).addCallbacks(listened, failed)
        )
        return starting.addErrback(
            lambda failure: self._log.failure("Starting a TCP listener failed", failure)
        )

    def _stop(self, description: str) -> Deferred[None]:
        bound = self._bound.pop(description)
        try:
            return self._server.unbindTCP(bound.port)
        except KeyError:
            # The server stopped it already: it is stopping.
            return succeed(None)
