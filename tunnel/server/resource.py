"""
The tunnel server's web resource: the control path, where clients connect,
and every other request, routed by its Host to a client.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tunnel._hijack import takeOverConnection
from tunnel.core.access import AccessRule
from tunnel.core.control import (
    ACCESS,
    ADDRESSES,
    ALLOW_HEADER,
    CREDENTIALS_HEADER,
    DENY_HEADER,
    FEATURES_HEADER,
    IDENTIFIER_HEADER,
    INSTANCE,
    INSTANCE_HEADER,
    NOTICES,
    SERVER_STREAMS,
    SUBDOMAIN_HEADER,
    TOKEN_HEADER,
    Registered,
    connectedResponse,
    publicAddresses,
    readRequestedAccess,
    redactIdentifier,
)
from tunnel.core.http import isValidHost, parseHost, splitTokens
from tunnel.server.forwarding import (
    HTTPForwarding,
    UpgradeForwarding,
    hasBody,
    isUpgrade,
)
from tunnel.server.limits import FailureLimiter
from tunnel.server.metrics import ServerMetrics
from tunnel.server.outcome import Refusal, markRouted, refuse
from tunnel.server.registry import Registry, Route
from tunnel.server.selfservice import Registration, RegistrationError, SelfService
from tunnel.server.session import ClientSession, ISessionObserver, SessionSettings
from tunnel.server.target import RequestTarget, TargetError, TargetForm, parseTarget

if TYPE_CHECKING:
    from tunnel.cluster.directory import Holder
    from tunnel.cluster.node import ClusterNode
    from tunnel.cluster.remote import RemoteSession


#: Seconds the connected client of an identifier has to answer a ping when
#: another client connects with the same identifier: if it answers, the
#: newer one is refused (C{409}); if not, the newer one replaces it.
CONFLICT_PING_TIMEOUT = 5.0


def _conflict(existing: ClientSession, now: float) -> bytes:
    """The text of the C{409} to a second client of a connected identifier."""
    since = "" if existing.connectedSince is None else (
        f", for {now - existing.connectedSince:.0f} s"
    )
    host = getattr(existing.peer, "host", "an unknown address")
    return (
        f"another client with this identifier is connected (from {host}{since}) and "
        "answering: this one is refused so that the two do not take the tunnel from "
        "each other. Stop one of them, or give each its own identifier"
    ).encode("utf-8")


class TunnelResource(Resource):
    """
    Serves every path: C{CONNECT /_controlPath/} from clients, and public
    requests, forwarded to the client of their Host.

    Request targets follow the rules of L{tunnel.server.target}: a target
    that could be read as the control path without being it exactly gets
    C{400}; an absolute-form target is forwarded in origin form, routed
    by (and with a Host of) its authority.

    The port a request is forwarded with (the control message's
    C{localPort}) is one the server's operator exposed: see
    L{Registry.route}.

    Use it as the root of a L{tunnel.server.site.TunnelSite}, which streams
    request bodies, or anywhere in an ordinary L{Site}, which buffers them.

    A CONNECT for an identifier whose client is connected waits for that
    client to answer a ping (L{CONFLICT_PING_TIMEOUT}): if it answers, the
    CONNECT gets a C{409}; if not, the new connection replaces it. In a
    cluster, a client connected to another node counts too, unless it is
    the same client process (L{INSTANCE_HEADER}): one client may hold a
    session on each node.

    A source address whose CONNECTs fail (unknown identifier) too often is
    answered C{429} without its identifier being looked at, until
    C{limiter} lets it try again.

    @ivar registry: the routing table.
    A CONNECT with an account's token (L{TOKEN_HEADER}) and no identifier
    the server knows gets a host registered for it by C{selfService}, and
    is told the host and its new identifier on the C{200}.

    @ivar limiter: counts the failed CONNECTs of each source address, or
        L{None} to let every address try as often as it likes.
    @ivar metrics: what the server counts and measures: how long streams
        take to open and keep-alive pings to be answered.
    @ivar selfService: registers hosts for tokens, or L{None} to refuse
        them.
    @ivar sessionObserver: is told when each session becomes ready and
        ends: the registry, or what tells it (a cluster node that claims
        the sessions in its store).
    @ivar cluster: the node of a cluster this server is, if it is one:
        a request for a client whose session is held by another node is
        forwarded there.
    @ivar identifierName: what the registry knows an identifier a client
        presents by: itself, or in a cluster its key there.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        registry: Registry,
        settings: SessionSettings,
        clock: IReactorTime,
        cooperator: Cooperator,
        metrics: ServerMetrics,
        limiter: FailureLimiter | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.metrics = metrics
        self.limiter = limiter
        self.selfService: SelfService | None = None
        self.sessionObserver: ISessionObserver = registry
        self.cluster: ClusterNode | None = None
        self.identifierName: Callable[[bytes], bytes] = lambda identifier: identifier
        self._settings = settings
        self._clock = clock
        self._cooperator = cooperator

    def render(self, request: Request) -> object:
        """Handle the control path, or forward by Host."""
        request.defaultContentType = None
        try:
            target = parseTarget(request.uri)
        except TargetError as e:
            refuse(request, Refusal.BAD_REQUEST, str(e).encode("ascii"))
            return NOT_DONE_YET
        if target.isControlPath:
            self._control(request)
        else:
            self._forward(request, target)
        return NOT_DONE_YET

    def _control(self, request: Request) -> None:
        if getattr(request.channel, "relayed", False):
            refuse(
                request,
                Refusal.BAD_REQUEST,
                b"a tunnel client connects on a connection of its own",
            )
            return
        if request.method != b"CONNECT":
            request.setHeader(b"allow", b"CONNECT")
            refuse(request, Refusal.METHOD_NOT_ALLOWED, b"the control path takes CONNECT only")
            return
        peer = request.getClientAddress()
        delay = 0.0 if self.limiter is None else self.limiter.delay(peer)
        if delay:
            request.setHeader(b"retry-after", b"%d" % (math.ceil(delay),))
            refuse(request, Refusal.RATE_LIMITED, b"too many failed attempts; try again later")
            return
        if hasBody(request):
            refuse(request, Refusal.BAD_REQUEST, b"a control request has no body")
            return
        headers = request.requestHeaders
        try:
            access = self._requestedAccess(request)
        except ValueError as e:
            refuse(
                request,
                Refusal.BAD_REQUEST,
                f"the access rules asked for are malformed: {e}".encode(),
            )
            return
        identifiers = [
            self.identifierName(presented)
            for presented in headers.getRawHeaders(IDENTIFIER_HEADER, [])
        ]
        tokens = headers.getRawHeaders(TOKEN_HEADER, [])
        known = len(identifiers) == 1 and self.registry.knows(identifiers[0])
        if not known and len(identifiers) <= 1 and len(tokens) == 1:
            self._register(request, tokens[0], access)
            return
        if not known:
            self._refuse(
                request,
                f"unknown identifier {redactIdentifier(b','.join(identifiers))}",
                b"unknown identifier",
            )
            return
        identifier = identifiers[0]
        existing = self.registry.session(identifier)
        if existing is not None and existing.ready:
            self._settleConflict(request, identifier, existing, access)
        elif self.cluster is not None:
            self._settleClusterConflict(request, identifier, access)
        else:
            self._accept(request, identifier, access)

    def _refuse(self, request: Request, what: str, message: bytes) -> None:
        """
        Refuse a control request whose secret is unknown (C{403}), counting
        it as a failed attempt of its source address.
        """
        peer = request.getClientAddress()
        self._log.info("Refused a client from {peer} with {what}", peer=peer, what=what)
        if self.limiter is not None and self.limiter.failed(peer):
            self._log.warn(
                "Too many failed attempts from {peer}: its CONNECTs get 429 for "
                "{delay:.1f} s",
                peer=peer,
                delay=self.limiter.delay(peer),
            )
        refuse(request, Refusal.UNKNOWN_IDENTIFIER, message)

    def _requestedAccess(self, request: Request) -> AccessRule | None:
        """
        The rule the control request asks for its hosts (L{ACCESS}), if it
        offers the extension and asks for one.

        @raise ValueError: if what it asks for is malformed.
        """
        headers = request.requestHeaders
        if ACCESS not in splitTokens(headers.getRawHeaders(FEATURES_HEADER, [])):
            return None
        return readRequestedAccess(
            headers.getRawHeaders(ALLOW_HEADER, []),
            headers.getRawHeaders(DENY_HEADER, []),
            headers.getRawHeaders(CREDENTIALS_HEADER, []),
        )

    def _register(self, request: Request, token: bytes, access: AccessRule | None) -> None:
        """
        A control request with an account's token and no identifier this
        server knows: register a host for it, then accept it.
        """
        if self.selfService is None:
            self._refuse(
                request,
                "a token, but no self-service hosts",
                b"this server does not register hosts for tokens; ask its operator for "
                b"an identifier",
            )
            return
        account = self.selfService.account(token)
        if account is None:
            self._refuse(request, "an unknown token", b"unknown token")
            return
        subdomains = request.requestHeaders.getRawHeaders(SUBDOMAIN_HEADER, [])
        if len(subdomains) > 1:
            refuse(request, Refusal.BAD_REQUEST, b"a control request names one subdomain at most")
            return
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)

        def registered(registration: Registration) -> None:
            if gone:
                return
            identifier = registration.identifier.encode("ascii")
            self._accept(
                request,
                self.identifierName(identifier),
                access,
                Registered(registration.host, registration.identifier),
            )

        def refused(reason: Failure) -> None:
            reason.trap(RegistrationError)
            if not gone:
                code = reason.value.code
                message = str(reason.value).encode("utf-8")
                refuse(request, Refusal.REGISTRATION_REFUSED, message, code)

        registering = self.selfService.register(account, (subdomains or [None])[0])
        registering.addCallbacks(registered, refused).addErrback(
            lambda reason: self._log.failure("Registering a host failed", reason)
        )

    def _settleConflict(
        self,
        request: Request,
        identifier: bytes,
        existing: ClientSession,
        access: AccessRule | None,
    ) -> None:
        """
        A control request for an identifier whose client is connected: ping
        that client; refuse the request if it answers, accept it if not.
        """
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)

        def settle(answered: object) -> None:
            self._log.info(
                "{outcome} for {client} from {peer}: the one connected from {connected} "
                "{state}",
                outcome="Refused a second client" if answered else "Accepted a new client",
                state="answers" if answered else "no longer answers, and is replaced",
                client=existing.label,
                peer=request.getClientAddress(),
                connected=existing.peer,
            )
            if gone:
                return
            if answered:
                refuse(request, Refusal.CONFLICT, _conflict(existing, self._clock.seconds()))
            else:
                self._accept(request, identifier, access)

        pinged = existing.protocol.ping(CONFLICT_PING_TIMEOUT)
        pinged.addCallbacks(lambda roundTrip: settle(True), lambda reason: settle(False))

    def _settleClusterConflict(
        self, request: Request, identifier: bytes, access: AccessRule | None
    ) -> None:
        """
        A control request for an identifier no session of this node holds:
        refuse it if another node holds one of another client process that
        answers a ping, as L{_settleConflict} does on one node.
        """
        looking = self.cluster.rival(identifier, instanceOf(request))

        def settle(rival: Holder | None) -> None:
            if request.channel is None:
                return
            if rival is None:
                self._accept(request, identifier, access)
                return
            self._log.info(
                "Refused a second client for {client} from {peer}: node {node} holds a "
                "session of another client with this identifier, and it answers",
                client=redactIdentifier(identifier),
                peer=request.getClientAddress(),
                node=rival.node,
            )
            refuse(
                request,
                Refusal.CONFLICT,
                f"another client with this identifier is connected (to node {rival.node} "
                "of this cluster) and answering: this one is refused so that the two do "
                "not take the tunnel from each other. Stop one of them, or give each its "
                "own identifier".encode("utf-8"),
            )

        looking.addCallback(settle).addErrback(
            lambda reason: self._log.failure("Settling a conflict in the cluster failed", reason)
        )

    def _accept(
        self,
        request: Request,
        identifier: bytes,
        access: AccessRule | None,
        registered: Registered | None = None,
    ) -> None:
        """
        Turn the connection of the control request into a tunnel session
        whose hosts admit only whom C{access} permits, if it asked, telling
        the client what was C{registered} for it, if anything.
        """
        offered = splitTokens(request.requestHeaders.getRawHeaders(FEATURES_HEADER, []))
        accepted = [
            feature
            for feature in (SERVER_STREAMS, ADDRESSES, NOTICES, ACCESS)
            if feature in offered
        ]
        addresses = self._addresses(request, identifier) if ADDRESSES in accepted else []
        session = ClientSession(
            identifier,
            self._settings,
            self.sessionObserver,
            self._clock,
            self.metrics,
            SERVER_STREAMS in accepted,
            NOTICES in accepted,
        )
        session.access = access
        session.instance = instanceOf(request)
        request.transport.write(connectedResponse(accepted, addresses, registered))
        takeOverConnection(request, session.protocol)

    def _addresses(self, request: Request, identifier: bytes) -> list[bytes]:
        """
        Where the public reaches the client of C{identifier}, which made the
        control request C{request} (see L{publicAddresses}).
        """
        bindings = self.registry.bindings(identifier)
        listener = request.getHost()
        try:
            serverName = parseHost(request.getHeader(b"host") or b"").name
        except ValueError:
            serverName = getattr(listener, "host", "localhost")
        return publicAddresses(
            bindings.hosts,
            bindings.tcpPorts,
            request.isSecure(),
            getattr(listener, "port", 0),
            serverName,
        )

    def _forward(self, request: Request, target: RequestTarget) -> None:
        hosts = request.requestHeaders.getRawHeaders(b"host", [])
        if not hosts:
            refuse(request, Refusal.BAD_REQUEST, b"the request has no Host header")
            return
        if len(hosts) > 1:
            refuse(request, Refusal.BAD_REQUEST, b"the request has more than one Host header")
            return
        host = hosts[0]
        if not isValidHost(host):
            refuse(request, Refusal.BAD_REQUEST, b"the request's Host header is malformed")
            return
        if target.form is TargetForm.ABSOLUTE:
            host = target.authority
            if not isValidHost(host):
                refuse(
                    request, Refusal.BAD_REQUEST, b"the request target's authority is malformed"
                )
                return
            toOriginForm(request, target)
        route = self.registry.route(host, getattr(request.getHost(), "port", None))
        if route is None:
            refuse(request, Refusal.NO_TUNNEL, b"no tunnel for host %s" % (host,))
            return
        markRouted(request, route.host)
        if not self._admits(request, route.access, route.host):
            return
        session = route.session
        if (session is None or not session.ready) and self.cluster is not None:
            found = self.cluster.remoteSession(route.identifier)
            found.addCallback(lambda remote: self._forwardRemote(request, route, host, remote))
            found.addErrback(
                lambda reason: self._log.failure("Forwarding to another node failed", reason)
            )
            return
        self._forwardTo(request, route, host, session)

    def _forwardRemote(
        self, request: Request, route: Route, host: bytes, session: RemoteSession | None
    ) -> None:
        """
        Hand the connection of C{request} to a node that holds C{session},
        which then answers it and the requests that follow on it; or, if
        that cannot be, forward it.
        """
        cluster = self.cluster
        if session is None or request.channel is None or not cluster.mayHandOff(request):
            self._forwardTo(request, route, host, session)
            return
        handing = cluster.handOff(request, session)
        handing.addCallback(
            lambda handed: None if handed else self._forwardTo(request, route, host, session)
        )

    def _forwardTo(
        self,
        request: Request,
        route: Route,
        host: bytes,
        session: ClientSession | RemoteSession | None,
    ) -> None:
        """Forward C{request} to C{session}, the client of its C{route}, if it admits it."""
        if request.channel is None:
            return
        if session is None or not session.ready:
            refuse(
                request,
                Refusal.NOT_CONNECTED,
                b"the tunnel client for host %s is not connected" % (host,),
            )
            return
        if not self._admits(request, session.access, route.host):
            return
        if any(rule is not None and rule.credentials for rule in (route.access, session.access)):
            # The tunnel's password is not the local service's business.
            request.requestHeaders.removeHeader(b"authorization")
        forwarding = UpgradeForwarding if isUpgrade(request) else HTTPForwarding
        forwarding(
            request,
            route,
            session,
            self._cooperator,
            self._clock,
            self.metrics,
            self._settings.responseTimeout,
        ).start()

    def _admits(self, request: Request, rule: AccessRule | None, host: str) -> bool:
        """
        Whether C{rule} (the operator's for C{host}, or its client's) admits
        C{request}; if not, answer it (C{403} or C{401}).
        """
        if rule is None:
            return True
        if not rule.permits(getattr(request.getClientAddress(), "host", "")):
            refuse(
                request, Refusal.FORBIDDEN, b"this host does not accept requests from your address"
            )
            return False
        if not rule.authorizes(request.getHeader(b"authorization")):
            request.setHeader(b"www-authenticate", b'Basic realm="%s"' % (host.encode(),))
            refuse(request, Refusal.UNAUTHORIZED, b"this host needs a user name and password")
            return False
        return True


def instanceOf(request: Request) -> str | None:
    """The client process a control request names (L{INSTANCE_HEADER}), if it names one well."""
    values = request.requestHeaders.getRawHeaders(INSTANCE_HEADER, [])
    if len(values) != 1 or INSTANCE.fullmatch(values[0]) is None:
        return None
    return values[0].decode("ascii")


def toOriginForm(request: Request, target: RequestTarget) -> None:
    """
    Make C{request}, whose target is C{target} in absolute form, the
    request it stands for: its target in origin form, its Host the
    target's authority.
    """
    request.uri = target.origin
    request.path = target.path
    request.requestHeaders.setRawHeaders(b"host", [target.authority])
