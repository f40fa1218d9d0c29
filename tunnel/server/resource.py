"""
The tunnel server's web resource: the control path, where clients connect,
and every other request, routed by its Host to a client.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tunnel._hijack import takeOverConnection
from tunnel.protocol import CONNECTED_RESPONSE, CONTROL_PATH, IDENTIFIER_HEADER, redactIdentifier
from tunnel.server.forwarding import (
    HTTPForwarding,
    UpgradeForwarding,
    hasBody,
    isUpgrade,
    writeError,
)
from tunnel.server.registry import Registry
from tunnel.server.session import ClientSession, SessionSettings


class TunnelResource(Resource):
    """
    Serves every path: C{CONNECT /_controlPath/} from clients, and public
    requests, forwarded to the client of their Host.

    Use it as the root of a L{tunnel.server.site.TunnelSite}, which streams
    request bodies, or anywhere in an ordinary L{Site}, which buffers them.

    @ivar registry: the routing table.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        registry: Registry,
        settings: SessionSettings,
        clock: IReactorTime,
        cooperator: Cooperator,
    ) -> None:
        super().__init__()
        self.registry = registry
        self._settings = settings
        self._clock = clock
        self._cooperator = cooperator

    def render(self, request: Request) -> object:
        """Handle the control path, or forward by Host."""
        request.defaultContentType = None
        if request.path == CONTROL_PATH:
            self._control(request)
        else:
            self._forward(request)
        return NOT_DONE_YET

    def _control(self, request: Request) -> None:
        if request.method != b"CONNECT":
            request.setHeader(b"allow", b"CONNECT")
            writeError(request, 405, b"the control path takes CONNECT only")
            return
        if hasBody(request):
            writeError(request, 400, b"a control request has no body")
            return
        identifiers = request.requestHeaders.getRawHeaders(IDENTIFIER_HEADER, [])
        if len(identifiers) != 1 or not self.registry.knows(identifiers[0]):
            self._log.info(
                "Refused a client from {peer} with unknown identifier {client}",
                peer=request.getClientAddress(),
                client=redactIdentifier(b",".join(identifiers)),
            )
            writeError(request, 403, b"unknown identifier")
            return
        session = ClientSession(identifiers[0], self._settings, self.registry, self._clock)
        request.transport.write(CONNECTED_RESPONSE)
        takeOverConnection(request, session.protocol)

    def _forward(self, request: Request) -> None:
        host = request.getHeader(b"host") or b""
        route = self.registry.route(host)
        if route is None:
            writeError(request, 404, b"no tunnel for host %s" % (host,))
            return
        session = route.session
        if session is None or not session.ready:
            writeError(
                request,
                502,
                b"the tunnel client for host %s is not connected" % (host,),
            )
            return
        if isUpgrade(request):
            UpgradeForwarding(request, route, session).start()
        else:
            HTTPForwarding(request, route, session, self._cooperator).start()
