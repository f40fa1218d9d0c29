"""
Exchanges a public client makes with the Go origin through a
L{LoopbackTunnel}, each on a connection of its own, each checking its
answer byte for byte: an answer meant for another request, short, or
altered fails the exchange with L{ExchangeError}.

Every exchange fires with the number of body bytes it moved, and closes its
connection however it ends, cancelled included.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any, Callable, Generator

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from tunnel.test.loopbacktunnel import LoopbackTunnel
from tunnel.test.support import goPattern

KiB = 1024

#: The body of the origin's C{/}.
HELLO = b"hello from origin\n"


class ExchangeError(Exception):
    """An answer was not the one expected."""


class Exchange(Protocol):
    """
    One public connection: collects what comes back, and fires L{done} with
    it when the connection ends.

    @ivar received: what arrived so far.
    @ivar done: fires with everything received once the connection ends.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self._waiting: tuple[Callable[[bytearray], bool], defer.Deferred[None]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self._waiting is not None and self._waiting[0](self.received):
            waiting, self._waiting = self._waiting[1], None
            waiting.callback(None)

    def until(self, condition: Callable[[bytearray], bool]) -> defer.Deferred[None]:
        """
        Fire once C{condition} holds for what was received; fail with
        L{ExchangeError} if the connection ends first.
        """
        if condition(self.received):
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred()
        self._waiting = (condition, waiting)
        return waiting

    def connectionLost(self, reason: Failure) -> None:
        if self._waiting is not None:
            waiting, self._waiting = self._waiting[1], None
            waiting.errback(ExchangeError(
                f"connection closed early, after {bytes(self.received[:200])!r}"
            ))
        self.done.callback(bytes(self.received))


@defer.inlineCallbacks
def exchange(
    tunnel: LoopbackTunnel, talk: Callable[[Exchange], defer.Deferred[int]]
) -> Generator[Any, Any, int]:
    """
    Connect to the tunnel's public port and C{talk}; abort the connection
    if talking fails or is cancelled. Fire with what C{talk} fires with.
    """
    connection = yield tunnel.connect(Exchange())
    try:
        moved = yield talk(connection)
    finally:
        connection.transport.abortConnection()
    return moved


def splitResponse(response: bytes, status: bytes = b"200") -> tuple[bytes, bytes]:
    """The head and body of a complete response, which must have C{status}."""
    head, separator, body = response.partition(b"\r\n\r\n")
    if not separator or not head.startswith(b"HTTP/1.1 " + status + b" "):
        raise ExchangeError(f"unexpected response {response[:200]!r}")
    return head, body


def completeResponses(data: bytes | bytearray) -> list[bytes]:
    """
    The bodies of the complete responses at the start of C{data}, each
    delimited by its C{Content-Length}.
    """
    bodies = []
    offset = 0
    while True:
        end = data.find(b"\r\n\r\n", offset)
        if end < 0:
            return bodies
        head = bytes(data[offset:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            raise ExchangeError(f"a response without Content-Length: {head[:200]!r}")
        length = int(head[marker + 17:].split(b"\r\n", 1)[0])
        start = end + 4
        if len(data) < start + length:
            return bodies
        bodies.append(bytes(data[start:start + length]))
        offset = start + length


def get(tunnel: LoopbackTunnel, size: int) -> defer.Deferred[int]:
    """A GET of C{size} bytes from C{/bytes}, its body checked."""

    @defer.inlineCallbacks
    def talk(connection: Exchange) -> Generator[Any, Any, int]:
        connection.transport.write(
            tunnel.head(b"GET", b"/bytes?n=%d" % (size,), b"Connection: close\r\n")
        )
        response = yield connection.done
        _, body = splitResponse(response)
        if body != goPattern(size):
            raise ExchangeError(f"a body of {len(body)} bytes for /bytes?n={size}")
        return size

    return exchange(tunnel, talk)


def keepAlive(tunnel: LoopbackTunnel, sizes: list[int]) -> defer.Deferred[int]:
    """
    GETs of C{/bytes} of each of C{sizes}, one after the other on one
    connection, each body checked.
    """

    @defer.inlineCallbacks
    def talk(connection: Exchange) -> Generator[Any, Any, int]:
        for count, size in enumerate(sizes, 1):
            connection.transport.write(tunnel.head(b"GET", b"/bytes?n=%d" % (size,)))
            yield connection.until(lambda data: len(completeResponses(data)) >= count)
        connection.transport.loseConnection()
        bodies = completeResponses((yield connection.done))
        if bodies != [goPattern(size) for size in sizes]:
            raise ExchangeError(
                f"bodies of {[len(body) for body in bodies]} bytes for {sizes}"
            )
        return sum(sizes)

    return exchange(tunnel, talk)


def download(tunnel: LoopbackTunnel, size: int, expected: bytes) -> defer.Deferred[int]:
    """
    A download of C{size} bytes from C{/bytes}, which must be C{expected}
    (the start of L{goPattern}, computed once by the caller).
    """

    @defer.inlineCallbacks
    def talk(connection: Exchange) -> Generator[Any, Any, int]:
        connection.transport.write(
            tunnel.head(b"GET", b"/bytes?n=%d" % (size,), b"Connection: close\r\n")
        )
        response = yield connection.done
        _, body = splitResponse(response)
        if body != expected:
            raise ExchangeError(f"a body of {len(body)} bytes for /bytes?n={size}, or altered")
        return size

    return exchange(tunnel, talk)


def echo(tunnel: LoopbackTunnel, payload: bytes) -> defer.Deferred[int]:
    """An upload to C{/echo}, which sends it back while it arrives."""

    @defer.inlineCallbacks
    def talk(connection: Exchange) -> Generator[Any, Any, int]:
        connection.transport.write(tunnel.head(
            b"POST", b"/echo", b"Content-Length: %d\r\nConnection: close\r\n" % (len(payload),)
        ))
        connection.transport.write(payload)
        response = yield connection.done
        _, body = splitResponse(response)
        if body != payload:
            raise ExchangeError(f"an echo of {len(body)} bytes for {len(payload)}, or altered")
        return 2 * len(payload)

    return exchange(tunnel, talk)


def upload(tunnel: LoopbackTunnel, payload: bytes, piece: int = 256 * KiB) -> defer.Deferred[int]:
    """
    A chunked upload to C{/sha256}, in chunks of C{piece} bytes; the
    origin's answer must be the payload's digest and length.
    """

    @defer.inlineCallbacks
    def talk(connection: Exchange) -> Generator[Any, Any, int]:
        connection.transport.write(tunnel.head(
            b"POST", b"/sha256", b"Transfer-Encoding: chunked\r\nConnection: close\r\n"
        ))
        for offset in range(0, len(payload), piece):
            chunk = payload[offset:offset + piece]
            connection.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.transport.write(b"0\r\n\r\n")
        response = yield connection.done
        _, body = splitResponse(response)
        if body != digestLine(payload):
            raise ExchangeError(f"the digest {body[:100]!r} for {len(payload)} bytes")
        return len(payload)

    return exchange(tunnel, talk)


def digestLine(payload: bytes) -> bytes:
    """The origin's answer to C{payload} sent to C{/sha256}."""
    return b"%s %d\n" % (hashlib.sha256(payload).hexdigest().encode(), len(payload))


def maskedFrame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A client's (masked, final) WebSocket frame."""
    size = len(payload)
    if size < 126:
        length = bytes([0x80 | size])
    elif size < 65536:
        length = bytes([0x80 | 126]) + struct.pack(">H", size)
    else:
        length = bytes([0x80 | 127]) + struct.pack(">Q", size)
    key = (mask * (size // 4 + 1))[:size]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")
    return bytes([0x80 | opcode]) + length + mask + masked


def serverFrame(opcode: int, payload: bytes) -> bytes:
    """A server's (unmasked, final) WebSocket frame."""
    size = len(payload)
    if size < 126:
        length = bytes([size])
    elif size < 65536:
        length = bytes([126]) + struct.pack(">H", size)
    else:
        length = bytes([127]) + struct.pack(">Q", size)
    return bytes([0x80 | opcode]) + length + payload


#: The close frame the origin answers a normal close with.
NORMAL_CLOSE = struct.pack(">H", 1000)


def webSocket(tunnel: LoopbackTunnel, messages: list[bytes]) -> defer.Deferred[int]:
    """
    A WebSocket to C{/ws}: the upgrade, each of C{messages} sent as a binary
    message and echoed back, then a close from the public client, which
    the origin answers with its own close and the end of the connection.
    """

    @defer.inlineCallbacks
    def talk(connection: Exchange) -> Generator[Any, Any, int]:
        connection.transport.write(tunnel.head(
            b"GET", b"/ws",
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
        ))
        yield connection.until(lambda data: b"\r\n\r\n" in data)
        head, _, _ = bytes(connection.received).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            raise ExchangeError(f"no upgrade: {head[:200]!r}")
        start = len(head) + 4
        expected = b""
        for message in messages:
            connection.transport.write(maskedFrame(0x2, message, os.urandom(4)))
            expected += serverFrame(0x2, message)
            yield connection.until(lambda data: len(data) >= start + len(expected))
        connection.transport.write(maskedFrame(0x8, NORMAL_CLOSE, os.urandom(4)))
        received = yield connection.done
        if received[start:] != expected + serverFrame(0x8, NORMAL_CLOSE):
            raise ExchangeError(
                f"{len(received) - start} bytes of frames for {len(messages)} messages "
                f"of {sum(map(len, messages))} bytes and a close, or altered"
            )
        return 2 * sum(map(len, messages))

    return exchange(tunnel, talk)
