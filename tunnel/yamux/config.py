"""
Settings of a yamux session.
"""

from __future__ import annotations

import attrs

from tunnel.yamux.frames import INITIAL_WINDOW, MAX_UINT32


def _atLeastInitialWindow(
    instance: object, attribute: attrs.Attribute, value: int
) -> None:
    if not INITIAL_WINDOW <= value <= MAX_UINT32:
        raise ValueError(
            f"{attribute.name} must be between {INITIAL_WINDOW} and {MAX_UINT32}, not {value}"
        )


def _positive(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, not {value}")


@attrs.frozen
class SessionConfig:
    """
    Settings of a yamux session. The defaults are those of HashiCorp's yamux.

    @ivar acceptBacklog: how many streams the peer may have opened that are
        not accepted yet; a SYN beyond that is refused with RST.
    @ivar maxStreamWindow: the receive window of each stream. The protocol
        starts every stream at 256 KiB; a larger value is announced to the
        peer in the window update that carries the SYN or ACK.
    @ivar enableKeepAlive: whether to ping the peer every C{keepAliveInterval}.
    @ivar keepAliveInterval: seconds between keep-alive pings.
    @ivar keepAliveTimeout: seconds to wait for a keep-alive ping's answer
        before the session is considered dead (yamux's connection write
        timeout); also how long a connection the Twisted adapter closed may
        take to be gone (the peer not reading what is left) before it is
        aborted.
    @ivar streamOpenTimeout: seconds to wait for the peer to acknowledge a
        stream we opened before the stream is reset and its opener told.
    @ivar streamCloseTimeout: seconds a stream we closed may wait for the
        peer's FIN before it is reset, so that a peer that never closes its
        side cannot make the session hold the stream forever.
    @ivar maxInboundStreams: the most streams the peer may have open at
        once; a SYN beyond that is refused with RST.
    @ivar maxUnsentReplies: the most frames the session may queue in answer
        to the peer (ping acknowledgements, RSTs refusing its streams) while
        its transport is paused, that is while the peer does not read what
        we send: a peer that asks for more is dropped, so that it cannot
        make the session buffer without bound. The core counts the answers
        (L{Session.repliesQueued}); the Twisted adapter enforces the limit.
    @ivar maxSessionBuffer: the most bytes the session may hold for a peer
        that does not read (written to streams while the connection is
        paused, and written to the connection since it paused) before the
        Twisted adapter says it is full (a tunnel server then refuses the
        requests for that peer). It does not depend
        on the windows the peer grants: while the connection is paused,
        streams' producers are paused and their data is held back, so that
        what the session holds grows only by what writers write after being
        told to pause. Enforced by the Twisted adapter.
    @ivar writeStallTimeout: seconds the connection may stay paused, the
        peer reading nothing of what is queued for it, before the Twisted
        adapter drops the session.
    """

    acceptBacklog: int = attrs.field(default=256, validator=_positive)
    maxStreamWindow: int = attrs.field(
        default=INITIAL_WINDOW, validator=_atLeastInitialWindow
    )
    enableKeepAlive: bool = True
    keepAliveInterval: float = attrs.field(default=30.0, validator=_positive)
    keepAliveTimeout: float = attrs.field(default=10.0, validator=_positive)
    streamOpenTimeout: float = attrs.field(default=75.0, validator=_positive)
    streamCloseTimeout: float = attrs.field(default=300.0, validator=_positive)
    maxInboundStreams: int = attrs.field(default=65536, validator=_positive)
    maxUnsentReplies: int = attrs.field(default=1000, validator=_positive)
    maxSessionBuffer: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)
    writeStallTimeout: float = attrs.field(default=60.0, validator=_positive)
