"""
What twisted.web has no public API for: taking a raw connection away from
it (its ticket 3204), and reading a request line before the request is
complete.

This module is the one place that knows how an L{HTTPChannel} holds its
connection and its request line.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocol
from twisted.web.http import HTTPChannel, Request

from tunnel.handover import handOver


def takeOverConnection(request: Request, protocol: IProtocol) -> None:
    """
    Detach the connection of C{request} from its HTTP/1.x channel and connect
    C{protocol} to it.

    Afterwards the channel is inert: it never writes to the connection nor
    closes it, and no response is ever written for C{request}. C{protocol}
    gets every byte the channel had read past the request (a request body
    already read included), then everything that arrives later, and the
    connection's loss. The connection is resumed if the channel had paused
    it; C{protocol} may pause it again from C{connectionMade} on.

    Call it at the earliest once the request's body has been read, that is
    from the resource's C{render} on.

    @param request: a request whose channel is an L{HTTPChannel}, over a
        transport that L{handOver} can hand over.
    @param protocol: the protocol to connect.
    """
    channel = request.channel
    transport = channel.transport
    # Bytes read while the request was handled wait in _dataBuffer; bytes
    # that arrived with the request's last line and were not parsed yet
    # wait in the line buffer, after them.
    buffered = b"".join(channel._dataBuffer) + channel.clearLineBuffer()
    channel._dataBuffer = []
    transport.unregisterProducer()
    channel.setTimeout(None)
    channel.transport = None
    transport.resumeProducing()
    handOver(transport, protocol, buffered)


def requestLine(channel: HTTPChannel) -> tuple[bytes, bytes, bytes]:
    """
    The method, the request target and the version of the request
    C{channel} is reading, once its request line is in.
    """
    return channel._command, channel._path, channel._version
