"""
The first lines of a stream on a node link, sans I/O: the forwarding node
asks for a stream to a client (C{OPEN}), the node holding the client's
session answers whether it got one (C{OK}, or C{FAIL} and why); then the
stream carries the bytes of that client stream, both ways, untouched. Or
a node asks whether the client is there and answers a ping (C{PING}, when
another client connects to it with the same identifier), and the answer
ends the stream. Or the forwarding node hands over a whole public
connection (C{PUBLIC}, naming the client it is for and where the
connection comes from): once the answer is C{OK} the stream carries the
public connection's bytes as they came, to be read by the holding node's
own public site::

    OPEN <identifier key> <transport protocol> <local port>\\r\\n
    PING <identifier key>\\r\\n
    PUBLIC <identifier key> <peer address> <peer port> <listener port> <http|https>\\r\\n
    OK\\r\\n
    FAIL <reason> <message>\\r\\n

The identifier key is the one the store knows it by
(L{tunnel.cluster.keys.ClusterKey.identifierKey}); the transport protocol
and the port are those of the control message the client is to get.
"""

from __future__ import annotations

import enum
import ipaddress
import re

import attrs

from tunnel.core.control import TransportProtocol

#: The longest first line, its line end included.
MAX_LINE = 512

_OPEN = re.compile(rb"OPEN ([0-9a-f]{64}) ([0-9]{1,3}) ([0-9]{1,5})")
_PING = re.compile(rb"PING ([0-9a-f]{64})")
_PUBLIC = re.compile(
    rb"PUBLIC ([0-9a-f]{64}) ([0-9a-fA-F.:]{2,45}) ([0-9]{1,5}) ([0-9]{1,5}) (http|https)"
)
_FAIL = re.compile(rb"FAIL ([a-z-]{1,32}) ?(.*)")


class RelayLineError(Exception):
    """A first line is malformed."""


class Unavailable(enum.Enum):
    """Why a node could not give a stream to the client asked for."""

    NOT_CONNECTED = "not-connected"
    STREAM_TIMEOUT = "stream-timeout"
    TOO_MANY_PENDING = "too-many-pending"
    NOT_READING = "not-reading"
    ENDED = "ended"


@attrs.frozen
class Open:
    """
    A request for a stream to a client.

    @ivar key: the client's identifier key.
    @ivar transportProtocol: what the stream carries.
    @ivar port: the local port of the control message.
    """

    key: str
    transportProtocol: TransportProtocol
    port: int

    def encode(self) -> bytes:
        """The line, with its line end."""
        return b"OPEN %s %d %d\r\n" % (
            self.key.encode("ascii"),
            self.transportProtocol,
            self.port,
        )


@attrs.frozen
class Ping:
    """
    A question: is the client there, and does it answer a ping?

    @ivar key: the client's identifier key.
    """

    key: str

    def encode(self) -> bytes:
        """The line, with its line end."""
        return b"PING %s\r\n" % (self.key.encode("ascii"),)


@attrs.frozen
class Public:
    """
    A public connection handed over, for the holding node to read as one
    of its own.

    @ivar key: the identifier key of the client it is for.
    @ivar peer: the public client's IP address.
    @ivar peerPort: its port.
    @ivar listenerPort: the port of the listener that accepted it.
    @ivar secure: whether it came over TLS.
    """

    key: str
    peer: str
    peerPort: int
    listenerPort: int
    secure: bool

    def encode(self) -> bytes:
        """The line, with its line end."""
        return b"PUBLIC %s %s %d %d %s\r\n" % (
            self.key.encode("ascii"),
            self.peer.encode("ascii"),
            self.peerPort,
            self.listenerPort,
            b"https" if self.secure else b"http",
        )


@attrs.frozen
class Answer:
    """
    Whether the stream is there.

    @ivar failure: why not, or L{None} if it is.
    @ivar message: what the failure says, in one line.
    """

    failure: Unavailable | None = None
    message: str = ""

    def encode(self) -> bytes:
        """The line, with its line end."""
        if self.failure is None:
            return b"OK\r\n"
        message = self.message.replace("\r", " ").replace("\n", " ")
        line = b"FAIL %s %s" % (self.failure.value.encode(), message.encode("utf-8"))
        return line[: MAX_LINE - 2] + b"\r\n"


def splitLine(buffer: bytes) -> tuple[bytes, bytes] | None:
    """
    The first line of C{buffer} without its line end, and what follows
    it; L{None} while the line is not whole.

    @raise RelayLineError: if the line is longer than L{MAX_LINE}.
    """
    end = buffer.find(b"\r\n")
    if end < 0:
        if len(buffer) >= MAX_LINE:
            raise RelayLineError("the first line of a link stream is too long")
        return None
    if end + 2 > MAX_LINE:
        raise RelayLineError("the first line of a link stream is too long")
    return buffer[:end], buffer[end + 2:]


def parseRequest(line: bytes) -> Open | Ping | Public:
    """
    Read an C{OPEN}, C{PING} or C{PUBLIC} line (without its line end).

    @raise RelayLineError: if it is none of them.
    """
    ping = _PING.fullmatch(line)
    if ping is not None:
        return Ping(ping.group(1).decode("ascii"))
    public = _PUBLIC.fullmatch(line)
    if public is not None:
        key, peer, peerPort, listenerPort, scheme = (part.decode("ascii") for part in public.groups())
        try:
            ipaddress.ip_address(peer)
        except ValueError:
            raise RelayLineError(f"{peer!r} is not an IP address") from None
        if int(peerPort) > 65535 or int(listenerPort) > 65535:
            raise RelayLineError("a port of a PUBLIC line is out of range")
        return Public(key, peer, int(peerPort), int(listenerPort), scheme == "https")
    match = _OPEN.fullmatch(line)
    if match is None:
        raise RelayLineError("a link stream did not start with OPEN, PING or PUBLIC")
    key, protocol, port = match.groups()
    try:
        transportProtocol = TransportProtocol(int(protocol))
    except ValueError:
        raise RelayLineError(f"unknown transport protocol {int(protocol)}") from None
    if int(port) > 65535:
        raise RelayLineError(f"port {int(port)} is out of range")
    return Open(key.decode("ascii"), transportProtocol, int(port))


def parseAnswer(line: bytes) -> Answer:
    """
    Read an C{OK} or C{FAIL} line (without its line end).

    @raise RelayLineError: if it is neither.
    """
    if line == b"OK":
        return Answer()
    match = _FAIL.fullmatch(line)
    if match is None:
        raise RelayLineError("the node held no OK or FAIL answer")
    reason, message = match.groups()
    try:
        failure = Unavailable(reason.decode("ascii"))
    except ValueError:
        failure = Unavailable.ENDED
    return Answer(failure, message.decode("utf-8", "replace"))
