"""
Addresses of yamux streams.
"""

from __future__ import annotations

import attrs
from zope.interface import implementer
from twisted.internet.interfaces import IAddress


@implementer(IAddress)
@attrs.frozen
class StreamAddress:
    """
    One end of a yamux stream: the address of that end of the connection
    carrying the session, and the stream's ID.

    @ivar session: the address of the connection's end (the peer's for
        C{getPeer}, ours for C{getHost}).
    @ivar streamID: the stream's ID within the session.
    """

    session: IAddress | None
    streamID: int

    def __str__(self) -> str:
        return f"{self.session} stream {self.streamID}"
