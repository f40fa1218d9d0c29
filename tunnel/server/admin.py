"""
The admin API: register virtual hosts and TCP listeners at run time.

JSON in and out, behind a bearer token::

    GET    /hosts          -> 200 {"hosts": [{"host": ..., "connected": ...}]}
    POST   /hosts          {"host": "NAME"}
                           -> 201 {"host": ..., "identifier": ...}
    DELETE /hosts/NAME     -> 200 {"deleted": NAME}; the host's session closes
    POST   /hosts/NAME/rotate -> 200 {"hosts": [...], "identifier": ...}
    GET    /clients        -> 200 {"clients": [...]}, identifiers redacted
    GET, POST /tcp, DELETE /tcp/PORT: TCP listeners (see L{tunnel.server.admintcp})
    GET    /metrics, /healthz, /readyz: see L{tunnel.server.monitoring}

A request without the right C{Authorization: Bearer TOKEN} header gets 401,
but for the probes C{/healthz} and C{/readyz}, which need no token: they
say no more than whether the server is up and ready, and a probe (a load
balancer's, an orchestrator's) seldom holds a secret;
a body larger than L{MAX_BODY} gets 413. Served by an L{AdminSite}, both
are answered as soon as the request head is in, before any of the body is
read. With a hosts file, registrations and deletions are saved there
(atomically), so they survive a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING, Any, Callable, Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from tunnel.client.address import joinHostPort
from tunnel.cluster.accesstext import encodeAccess
from tunnel.cluster.config import SharedConfig
from tunnel.hostsfile import updateHostsFile
from tunnel.core.control import redactIdentifier
from tunnel.core.http import normaliseHost
from tunnel.sparselog import isSparseCount
from tunnel.core.access import AccessRule
from tunnel.server.accessfile import updateAccessFile
from tunnel.server.adminaccess import accessRuleFromBody, describeAccess
from tunnel.server.jsonapi import JSONError, readBoundedBody, renderJSON
from tunnel.server.admintcp import ListenerRegistry, TCPListenersAPI, unsharedChange
from tunnel.server.events import ClientInfo
from tunnel.server.monitoring import MONITORING_PATHS, PROBE_PATHS, MonitoringResource
from tunnel.server.site import PrivateSite

if TYPE_CHECKING:
    from tunnel.cluster.listeners import SharedListeners

#: The largest request body the admin API reads.
MAX_BODY = 64 * 1024

#: An answer of the admin API, or one to come.
Answer = "tuple[int, dict[str, Any]] | Deferred[tuple[int, dict[str, Any]]]"


class HostRegistry(ListenerRegistry, TypingProtocol):
    """
    What the admin API needs of the tunnel server: its hosts and clients,
    and the TCP listeners of L{ListenerRegistry}.
    """

    def addHost(self, host: str, identifier: str) -> None:
        """Route C{host} to the client with C{identifier}."""

    def addHostByName(self, host: str, name: bytes) -> None:
        """Route C{host} to the client known by C{name} (see L{identifierOf})."""

    def nameOf(self, identifier: str) -> bytes:
        """What the server knows C{identifier} by."""

    def deleteHost(self, host: str) -> None:
        """Forget C{host}."""

    def hosts(self) -> list[Any]:
        """The hosts, each with C{.host} and C{.connected}."""

    def hasHost(self, host: str) -> bool:
        """Whether C{host} (normalised) is routed."""

    def clients(self) -> list[ClientInfo]:
        """The connected clients."""

    def setAccess(self, host: str, rule: AccessRule | None) -> None:
        """Admit to C{host} only whom C{rule} permits (everyone for L{None})."""

    def moveTCP(self, old: bytes, new: bytes) -> list[int]:
        """Bind the TCP listeners of the name C{old} to the name C{new}; their ports."""

    def accessOf(self, host: str) -> AccessRule | None:
        """The rule of C{host}, if any."""



def newIdentifier() -> str:
    """A fresh random identifier: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def _describePeer(peer: object) -> str | None:
    """C{HOST:PORT} of a client's address, if it has one."""
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    return None if host is None else joinHostPort(host, port)


class AdminResource(Resource):
    """
    The admin API as a twisted.web resource; serve it with an L{AdminSite}
    on a private endpoint. (In an ordinary L{Site} it works too, but
    twisted.web then reads every request body, up to any size, before the
    token is checked.)

    The token is compared in constant time, and never logged.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        registry: HostRegistry,
        token: str,
        hostsFile: str | None = None,
        identifierFactory: Callable[[], str] = newIdentifier,
        reactor: Any = None,
        accessFile: str | None = None,
        monitoring: MonitoringResource | None = None,
        shared: SharedConfig | None = None,
        sharedListeners: SharedListeners | None = None,
    ) -> None:
        """
        @param registry: the tunnel server.
        @param token: the bearer token.
        @param hostsFile: the hosts file to save registrations to, if any.
        @param identifierFactory: makes the identifiers of new hosts.
        @param reactor: the reactor TCP listeners added through the API
            listen with; the global one by default.
        @param accessFile: the access file to save access rules to, if any.
        @param monitoring: what serves C{/metrics} (with the token),
            C{/healthz} and C{/readyz} (without), if anything.
        @param shared: the shared configuration of the cluster this server
            is a node of, if any: hosts and access rules are changed there
            first, for every node.
        @param sharedListeners: that node's TCP listeners of the shared
            configuration, where C{/tcp} adds and removes listeners then.
        @raise ValueError: if C{token} is empty.
        """
        super().__init__()
        if not token:
            raise ValueError("the admin token must not be empty")
        self._registry = registry
        # Digests of equal length, compared in constant time: neither the
        # token's bytes nor its length show in how long a comparison takes.
        self._tokenDigest = hashlib.sha256(token.encode("utf-8")).digest()
        self._hostsFile = hostsFile
        self._accessFile = accessFile
        self._identifierFactory = identifierFactory
        self._monitoring = monitoring
        self._shared = shared
        self._refusedRequests = 0
        if reactor is None:
            from twisted.internet import reactor
        self._tcp = TCPListenersAPI(registry, reactor, sharedListeners)

    def render(self, request: Request) -> object:
        """
        Authenticate, dispatch, and answer in JSON. A request without the
        token is answered at once, whatever body it announces.
        """
        if self._monitoring is not None and request.path in MONITORING_PATHS:
            if request.path in PROBE_PATHS or self._hasToken(request):
                return self._monitoring.render(request)
        return renderJSON(request, lambda: self._handle(request), self._log, "admin")

    def _handle(self, request: Request) -> object:
        self._authenticate(request)
        return self._dispatch(request)

    def _hasToken(self, request: Request) -> bool:
        """Whether C{request} carries the bearer token."""
        header = request.getHeader(b"authorization") or b""
        scheme, _, presented = header.partition(b" ")
        presentedDigest = hashlib.sha256(presented.strip()).digest()
        valid = hmac.compare_digest(presentedDigest, self._tokenDigest)
        return scheme.lower() == b"bearer" and valid

    def _authenticate(self, request: Request) -> None:
        if not self._hasToken(request):
            self._refusedRequests += 1
            if isSparseCount(self._refusedRequests):
                self._log.info(
                    "admin: refused a request from {peer} without a valid token "
                    "({count} such requests so far)",
                    peer=request.getClientAddress(),
                    count=self._refusedRequests,
                )
            request.setHeader(b"www-authenticate", b'Bearer realm="tunnel-admin"')
            raise JSONError(401, "a valid bearer token is required")

    def _dispatch(self, request: Request) -> object:
        segments = [s for s in request.path.split(b"/") if s]
        method = request.method
        if segments == [b"hosts"]:
            if method == b"GET":
                return 200, {"hosts": self._hosts()}
            if method == b"POST":
                return self._add(request)
            raise JSONError(405, "use GET or POST on /hosts")
        if len(segments) == 2 and segments[0] == b"hosts":
            if method == b"DELETE":
                return self._delete(segments[1].decode("utf-8", "replace"))
            raise JSONError(405, "use DELETE on /hosts/NAME")
        if len(segments) == 3 and segments[0] == b"hosts" and segments[2] == b"access":
            host = self._known(segments[1].decode("utf-8", "replace"))
            if method == b"GET":
                return 200, {"host": host, "access": describeAccess(self._registry.accessOf(host))}
            if method == b"PUT":
                return readBoundedBody(request, MAX_BODY).addCallback(
                    lambda body: self._setAccess(host, accessRuleFromBody(body))
                )
            if method == b"DELETE":
                return self._setAccess(host, None)
            raise JSONError(405, "use GET, PUT or DELETE on /hosts/NAME/access")
        if len(segments) == 3 and segments[0] == b"hosts" and segments[2] == b"rotate":
            if method == b"POST":
                return self._rotate(segments[1].decode("utf-8", "replace"))
            raise JSONError(405, "use POST on /hosts/NAME/rotate")
        if segments == [b"clients"]:
            if method == b"GET":
                return 200, {"clients": self._clients()}
            raise JSONError(405, "use GET on /clients")
        if segments == [b"tcp"]:
            if method == b"GET":
                return self._tcp.list()
            if method == b"POST":
                return readBoundedBody(request, MAX_BODY).addCallback(self._tcp.addFromBody)
            raise JSONError(405, "use GET or POST on /tcp")
        if len(segments) == 2 and segments[0] == b"tcp":
            if method == b"DELETE":
                return self._tcp.delete(segments[1].decode("utf-8", "replace"))
            raise JSONError(405, "use DELETE on /tcp/PORT")
        raise JSONError(404, "no such resource; see /hosts, /clients and /tcp")

    def _clients(self) -> list[dict[str, Any]]:
        return [
            {
                "identifier": client.identifier,
                "peer": _describePeer(client.peer),
                "connectedSince": client.connectedSince,
                "hosts": list(client.hosts),
            }
            for client in self._registry.clients()
        ]

    def _known(self, name: str) -> str:
        """C{name} as a routed host, or a 404."""
        try:
            host = normaliseHost(name)
        except ValueError:
            raise JSONError(404, f"no host {name!r}") from None
        if not self._registry.hasHost(host):
            raise JSONError(404, f"no host {host}")
        return host

    def _rotate(self, name: str) -> Answer:
        """
        Give C{name}, and every host and TCP listener that shares its
        identifier, a fresh identifier; the client of the old one is
        disconnected, and refused from then on.
        """
        host = self._known(name)
        old = self._registry.identifierOf(host)
        moved = [h.host for h in self._registry.hosts() if self._registry.identifierOf(h.host) == old]
        identifier = self._identifierFactory()
        name = self._registry.nameOf(identifier).decode("ascii")

        def rotate() -> tuple[int, dict[str, Any]]:
            self._save(lambda hosts: hosts.update(dict.fromkeys(moved, identifier)))
            for each in moved:
                self._registry.addHost(each, identifier)
            new = self._registry.nameOf(identifier)
            ports = self._registry.moveTCP(old, new)
            self._tcp.moved(old, new)
            self._log.info(
                "admin: new identifier {identifier} for {hosts} (was {old})",
                identifier=redactIdentifier(identifier),
                hosts=", ".join(moved + [f"TCP port {port}" for port in ports]),
                old=redactIdentifier(old),
            )
            return 200, {"hosts": moved, "tcpPorts": ports, "identifier": identifier}

        return self._changing(
            rotate, hosts=dict.fromkeys(moved, name), rotated={old.decode("ascii"): name}
        )

    def _hosts(self) -> list[dict[str, Any]]:
        return [{"host": h.host, "connected": h.connected} for h in self._registry.hosts()]

    def _add(self, request: Request) -> Deferred[tuple[int, dict[str, Any]]]:
        return readBoundedBody(request, MAX_BODY).addCallback(self._addFromBody)

    def _addFromBody(self, body: bytes) -> Answer:
        try:
            fields = json.loads(body)
            host = normaliseHost(fields["host"])
            sameAs = fields.get("sameAs")
            if sameAs is not None and not isinstance(sameAs, str):
                raise TypeError("sameAs must be a host name")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise JSONError(
                400, f'expected {{"host": "NAME"}} or {{"host": "NAME", "sameAs": "HOST"}}: {e}'
            ) from None
        if self._registry.hasHost(host):
            raise JSONError(409, f"host {host} is already registered")
        if sameAs is None:
            identifier = self._identifierFactory()
            name = self._registry.nameOf(identifier)
        else:
            other = self._known(sameAs)
            name = self._registry.identifierOf(other)
            # Known in clear only outside a cluster, where the name is it.
            identifier = name.decode("utf-8")

        def add() -> tuple[int, dict[str, Any]]:
            self._save(lambda hosts: hosts.__setitem__(host, identifier))
            self._registry.addHostByName(host, name)
            self._log.info(
                "admin: registered host {host} for identifier {identifier}",
                host=host,
                identifier=redactIdentifier(identifier),
            )
            if sameAs is not None and self._shared is not None:
                return 201, {"host": host, "sameAs": other}
            return 201, {"host": host, "identifier": identifier}

        return self._changing(add, hosts={host: name.decode("ascii")})

    def _setAccess(self, host: str, rule: AccessRule | None) -> Answer:
        """
        Replace the rule of C{host}, saved to the access file (or the
        cluster's configuration) first if there is one; L{None} admits
        everyone again.
        """

        def setAccess() -> tuple[int, dict[str, Any]]:
            self._saveTo(
                self._accessFile,
                "access file",
                updateAccessFile,
                lambda rules: rules.pop(host, None)
                if rule is None
                else rules.__setitem__(host, rule),
            )
            self._registry.setAccess(host, rule)
            self._log.info(
                "admin: access to {host} {change}",
                host=host,
                change="is open to everyone" if rule is None else "is guarded",
            )
            return 200, {"host": host, "access": describeAccess(rule)}

        return self._changing(setAccess, access={host: encodeAccess(rule)})

    def _delete(self, name: str) -> Answer:
        host = self._known(name)

        def delete() -> tuple[int, dict[str, Any]]:
            self._save(lambda hosts: hosts.pop(host, None))
            self._registry.deleteHost(host)
            self._log.info("admin: deleted host {host}", host=host)
            return 200, {"deleted": host}

        return self._changing(delete, hosts={host: ""})

    def _changing(
        self,
        change: Callable[[], tuple[int, dict[str, Any]]],
        hosts: dict[str, str] = {},
        access: dict[str, str] = {},
        rotated: dict[str, str] = {},
    ) -> Answer:
        """
        Make C{change} on this server, once the cluster's shared
        configuration (if this server is a node of one) took the same
        C{hosts} and C{access} rules, and the TCP listeners of the keys
        C{rotated} (old -> new): a change that Redis cannot take is not
        made at all.
        """
        if self._shared is None:
            return change()

        changing = self._shared.change(hosts, access, rotated=rotated)
        return changing.addCallbacks(lambda _: change(), unsharedChange)

    def _save(self, change: Callable[[dict[str, str]], object]) -> None:
        """Apply a change to the hosts file (see L{_saveTo})."""
        self._saveTo(self._hostsFile, "hosts file", updateHostsFile, change)

    def _saveTo(
        self,
        path: str | None,
        what: str,
        update: Callable[[str, Callable[[Any], object]], None],
        change: Callable[[Any], object],
    ) -> None:
        """
        Apply a change to the file C{path} (if any) with C{update}, before
        the server changes: a change that cannot be saved is not made at
        all.
        """
        if path is None:
            return
        try:
            update(path, change)
        except (OSError, ValueError) as e:
            self._log.error(
                "admin: cannot save the {what} {path}: {error}", what=what, path=path, error=e
            )
            raise JSONError(500, f"the {what} could not be saved; nothing was changed") from None


class AdminSite(PrivateSite):
    """
    A L{PrivateSite} for an L{AdminResource}: a request without the token,
    or announcing a body larger than L{MAX_BODY}, is answered before any of
    its body is read, and the connection closed.
    """
