"""
The C{/tcp} calls of the admin API: TCP listeners bound at run time to the
identifier of a registered host::

    GET    /tcp            -> 200 {"listeners": [{"port": ..., "host": ..., "connected": ...}]}
    POST   /tcp            {"listen": "ENDPOINT", "sameAs": "HOST"}
                           -> 201 {"port": ..., "listen": ..., "host": ...}
    DELETE /tcp/PORT       -> 200 {"deleted": PORT}

A listener added here lasts until it is deleted or the server stops; it is
not saved in the hosts file, which holds hosts only. On a node of a
cluster it is the cluster's instead (see L{tunnel.cluster.listeners}):
added to its shared configuration, every node listens on it, until it is
deleted through any node; C{GET /tcp} then also lists, as C{unbound}, the
cluster's listeners this node could not start, and why.
"""

from __future__ import annotations

import errno
import json
from typing import TYPE_CHECKING, Any, NoReturn, Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from tunnel.cluster.scripts import StoreUnavailable
from tunnel.core.http import normaliseHost
from tunnel.listening import listenProblem
from tunnel.options import checkTunnelEndpoint, serverEndpointDescription
from tunnel.server.jsonapi import JSONError
from tunnel.server.events import ListenerStatus

if TYPE_CHECKING:
    from tunnel.cluster.listeners import SharedListeners

#: An answer of the admin API: its status and its JSON body.
Answer = tuple[int, dict[str, Any]]


class ListenerRegistry(TypingProtocol):
    """What the C{/tcp} calls need of the tunnel server."""

    def identifierOf(self, host: str) -> bytes:
        """The identifier C{host} is routed to; L{KeyError} if none."""

    def bindTCPByName(self, endpoint: IStreamServerEndpoint, name: bytes) -> Deferred[IListeningPort]:
        """Listen on C{endpoint} for the client known by C{name} (see L{identifierOf})."""

    def unbindTCP(self, port: IListeningPort) -> Deferred[None]:
        """Stop a listener of L{bindTCP}; L{KeyError} if it is not one."""

    def tcpListeners(self) -> list[ListenerStatus]:
        """Every TCP listener, by port."""


def _parseBody(body: bytes) -> tuple[str, str]:
    """The endpoint description and the host of a C{POST /tcp} body."""
    try:
        fields = json.loads(body)
        listen, host = fields["listen"], fields["sameAs"]
        if not (isinstance(listen, str) and isinstance(host, str)):
            raise TypeError("listen and sameAs must be strings")
    except (ValueError, KeyError, TypeError) as e:
        raise JSONError(400, f'expected {{"listen": "ENDPOINT", "sameAs": "HOST"}}: {e}') from None
    return serverEndpointDescription(listen), host


def _portOf(description: str) -> int:
    """
    The port C{description} listens on, checked as C{--tcp} checks it; a
    C{400} if it is malformed or its type has no port.
    """
    try:
        return checkTunnelEndpoint("listen", description)
    except usage.UsageError as e:
        raise JSONError(400, str(e)) from None


class TCPListenersAPI:
    """
    The C{/tcp} calls of the admin API; each returns an L{Answer} (or a
    L{Deferred} of one) or raises an L{JSONError}.

    It stops only the listeners it added: those of C{--tcp} stay until the
    server stops.
    """

    _log = Logger()

    def __init__(
        self, registry: ListenerRegistry, reactor: Any, shared: SharedListeners | None = None
    ) -> None:
        """
        @param registry: the tunnel server.
        @param reactor: the reactor to listen with.
        @param shared: on a node of a cluster, its listeners of the shared
            configuration, which this API adds to and removes from.
        """
        self._registry = registry
        self._reactor = reactor
        self._shared = shared
        self._added: dict[int, IListeningPort] = {}

    def list(self) -> Answer:
        """
        Every TCP listener, with a host of its identifier and whether its
        client is connected; in a cluster, those of the cluster this node
        could not start too.
        """
        answer: dict[str, Any] = {
            "listeners": [attrs.asdict(s) for s in self._registry.tcpListeners()]
        }
        if self._shared is not None:
            answer["unbound"] = [attrs.asdict(u) for u in self._shared.unbound()]
        return 200, answer

    def addFromBody(self, body: bytes) -> Deferred[Answer]:
        """
        Listen where the body says, for the client of its C{sameAs} host:
        C{201} once listening, C{400} for a malformed body or endpoint,
        C{404} for an unknown host, C{409} for a port that has a listener
        already or is in use, C{500} for another reason not to listen, and
        in a cluster C{503} if its shared configuration cannot take it.
        """
        description, name = _parseBody(body)
        port = _portOf(description)
        try:
            host = normaliseHost(name)
            name = self._registry.identifierOf(host)
        except (KeyError, ValueError):
            raise JSONError(404, f"no host {name!r}") from None
        if port and any(each.port == port for each in self._registry.tcpListeners()):
            raise JSONError(409, f"port {port} has a TCP listener already")
        if self._shared is not None:
            listening = self._shared.add(description, name.decode("ascii"))
        else:
            endpoint = serverFromString(self._reactor, description)
            listening = self._registry.bindTCPByName(endpoint, name)
        return listening.addCallbacks(
            self._listening,
            self._notListening,
            callbackArgs=(description, host),
            errbackArgs=(description,),
        )

    def _listening(self, port: IListeningPort, description: str, host: str) -> Answer:
        number = port.getHost().port
        if self._shared is None:
            self._added[number] = port
        self._log.info(
            "admin: listening on port {port} for the client of {host}", port=number, host=host
        )
        return 201, {"port": number, "listen": description, "host": host}

    def _notListening(self, reason: Failure, description: str) -> Answer:
        if reason.check(StoreUnavailable):
            unsharedChange(reason)
        reason.trap(CannotListenError)
        error = reason.value
        problem = listenProblem(error)
        self._log.warn("admin: {listen}: {problem}", listen=description, problem=problem)
        inUse = getattr(error.socketError, "errno", None) == errno.EADDRINUSE
        raise JSONError(409 if inUse else 500, problem)

    def moved(self, old: bytes, new: bytes) -> None:
        """
        The server moved the listeners of the name C{old} to C{new} (see
        L{ListenerRegistry}): in a cluster, they are its shared ones of
        C{new} from now on.
        """
        if self._shared is not None:
            self._shared.rotate(old, new)

    def delete(self, name: str) -> Deferred[Answer]:
        """
        Stop the listener on port C{name} that this API added: C{200} once
        it stopped, C{404} if there is none, C{409} for one of C{--tcp}.
        """
        number = int(name) if name.isascii() and name.isdigit() else None
        if self._shared is not None and number is not None:
            try:
                removing = self._shared.remove(number)
            except KeyError:
                pass
            else:
                self._log.info("admin: the cluster stops listening on port {port}", port=number)
                return removing.addCallbacks(lambda _: (200, {"deleted": number}), unsharedChange)
        port = self._added.pop(number, None) if number is not None else None
        if port is None:
            if any(each.port == number for each in self._registry.tcpListeners()):
                raise JSONError(
                    409,
                    f"the TCP listener on port {number} was not added through the admin "
                    "API (--tcp); it stays until the server stops",
                )
            raise JSONError(404, f"no TCP listener on port {name}")
        try:
            stopping = self._registry.unbindTCP(port)
        except KeyError:
            # The server stopped it already: it is stopping.
            raise JSONError(404, f"no TCP listener on port {number}") from None
        self._log.info("admin: stopped listening on port {port}", port=number)
        return stopping.addCallback(lambda _: (200, {"deleted": number}))



def unsharedChange(reason: Failure) -> NoReturn:
    """
    Raise the C{503} of a change the cluster's shared configuration could
    not take, if C{reason} is a L{StoreUnavailable}; else C{reason}.
    """
    reason.trap(StoreUnavailable)
    raise JSONError(
        503,
        f"the cluster's shared configuration cannot be changed ({reason.value}); "
        "nothing was changed",
    )
