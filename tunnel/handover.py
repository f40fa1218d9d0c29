"""
Handing a connection from one protocol to another, as a protocol switch
does: the one place that knows where a transport delivers what it reads.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocol, ITransport


def handOver(transport: ITransport, protocol: IProtocol, buffered: bytes = b"") -> None:
    """
    Connect C{protocol} to C{transport} in place of the protocol it serves:
    from now on C{protocol} gets everything the transport reads, and its
    loss. The protocol it served before hears nothing more from it.

    @param transport: a TCP or TLS transport, or any that delivers to
        C{transport.protocol} or, as wrappers do, to
        C{transport.wrappedProtocol}.
    @param protocol: the protocol to connect.
    @param buffered: bytes already read from the transport that are
        C{protocol}'s; it gets them first.
    """
    if hasattr(transport, "wrappedProtocol"):
        transport.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    if buffered:
        protocol.dataReceived(buffered)
