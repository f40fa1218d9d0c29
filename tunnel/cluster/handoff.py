"""
Handing a whole public connection to the node that holds its client's
session, instead of forwarding its requests one by one: the node that
accepted it sends the first request as it came and, from then on, pipes
raw bytes; the holding node reads them with its own public site, as if the
public client had connected there.

A forwarded request costs the forwarding node an HTTP parse of the request
and of the response, and a copy of both; a handed-over connection costs it
a copy of the bytes, and every later request on it costs the holding node
what a request of its own does. It is done for a request without a body
(one whose bytes twisted.web has all read) from a public client with an IP
address, on a connection no node handed over already: a connection goes
from one node to another once, never further.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.web.http import Request

from tunnel._hijack import takeOverConnection
from tunnel.cluster.relayline import Public
from tunnel.cluster.remote import RemoteSession
from tunnel.pipe import PipeEnd
from tunnel.server.forwarding import hasBody


def mayHandOff(request: Request) -> bool:
    """Whether the connection of C{request} may go to another node."""
    peer = request.getClientAddress()
    return (
        not getattr(request.channel, "relayed", True)
        and not hasBody(request)
        and isinstance(peer, (IPv4Address, IPv6Address))
        and isinstance(request.getHost(), (IPv4Address, IPv6Address))
    )


def originalHead(request: Request) -> bytes:
    """The head of C{request} as the public client sent it, but for the case of names."""
    lines = [b"%s %s %s\r\n" % (request.method, request.uri, request.clientproto)]
    for name, values in request.requestHeaders.getAllRawHeaders():
        lines.extend(b"%s: %s\r\n" % (name, value) for value in values)
    lines.append(b"\r\n")
    return b"".join(lines)


def handOff(request: Request, session: RemoteSession) -> Deferred[bool]:
    """
    Hand the connection of C{request} (see L{mayHandOff}) to a node that
    holds C{session}, the request first.

    @return: a L{Deferred} firing with whether it was handed over: if no
        holder took it, the request is still this node's to answer.
    """
    peer, host = request.getClientAddress(), request.getHost()
    stream = PipeEnd()
    taking = session.handOver(
        Public(session.key, peer.host, peer.port, host.port, request.isSecure()), stream
    )

    def taken(_: object) -> bool:
        if request.channel is None:
            stream.transport.loseConnection()
            return True
        public = PipeEnd()
        takeOverConnection(request, public)
        stream.transport.write(originalHead(request))
        public.join(stream)
        return True

    return taking.addCallbacks(taken, lambda reason: False)
