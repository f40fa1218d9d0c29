"""
Writes that go straight to an idle TCP socket.

A Twisted TCP transport queues every write until the reactor's next turn
finds the socket writable: each write costs a trip round the event loop
and two C{epoll_ctl} calls (start writing, stop writing), and the bytes
wait for whatever else that turn does. Most writes of a tunnel find their
socket idle, with nothing queued before them; L{writeNow} and
L{writeSequenceNow} send those at once and queue only what the socket did
not take, in order, through the transport's own write.

This module is the only one that uses the private parts of Twisted's TCP
transport (its buffers and C{writeSomeData}), as C{tunnel._hijack} is the
only one that uses twisted.web's.
"""

from __future__ import annotations

import errno
from typing import Sequence

from twisted.internet.interfaces import ITransport
from twisted.internet.tcp import Connection

#: The most buffers one C{sendmsg} call is given (the kernel's C{IOV_MAX}).
_MAX_BUFFERS = 1024

_WOULD_BLOCK = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR})


def _idle(transport: object) -> bool:
    """
    Whether C{transport} is a plain (not TLS) TCP connection, open, with
    nothing queued: then bytes sent now cannot overtake queued ones.
    """
    return (
        isinstance(transport, Connection)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport.TLS
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    )


def writeNow(transport: ITransport, data: bytes) -> None:
    """
    Write C{data} to C{transport}: straight to its socket if it is an idle
    TCP connection (the rest, if the socket takes only part, queued), else
    as C{transport.write} does.
    """
    if data and _idle(transport):
        sent = transport.writeSomeData(data)
        if isinstance(sent, int):
            if sent == len(data):
                return
            data = data[sent:]
        # A lost connection: the queued write finds it out, as it would have.
    transport.write(data)


def writeSequenceNow(transport: ITransport, data: Sequence[bytes]) -> None:
    """
    Write the buffers C{data} to C{transport}, as L{writeNow} writes one
    (with one C{sendmsg} call, not copied into one buffer first).
    """
    if not _idle(transport):
        transport.writeSequence(data)
        return
    try:
        sent = transport.socket.sendmsg(data[:_MAX_BUFFERS])
    except OSError as e:
        if e.errno not in _WOULD_BLOCK:
            # A lost connection: the queued write finds it out.
            transport.writeSequence(data)
            return
        sent = 0
    rest = list(data)
    index = 0
    while index < len(rest) and sent >= len(rest[index]):
        sent -= len(rest[index])
        index += 1
    if index < len(rest) and sent:
        rest[index] = rest[index][sent:]
    if index < len(rest):
        transport.writeSequence(rest[index:])
