"""
A demonstration of the yamux multiplexer: a server session and a client
session over loopback TCP, with several echo streams.

Run it with C{python -m tunnel.demo}.
"""

from __future__ import annotations

import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.mux import YamuxFactory


@implementer(IHalfCloseableProtocol)
class EchoStream(Protocol):
    """Echoes a stream back, and half-closes once the peer has."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class CollectStream(Protocol):
    """Sends a message, half-closes, and collects the answer."""

    def __init__(self, message: bytes) -> None:
        self.message = message
        self.answer: defer.Deferred[bytes] = defer.Deferred()
        self._received: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.write(self.message)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self._received.append(data)

    def readConnectionLost(self) -> None:
        pass

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.answer.callback(b"".join(self._received))


async def demo(reactor) -> None:
    """Run a server and a client session and echo a few streams."""
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        YamuxFactory(isClient=False, streamFactory=Factory.forProtocol(EchoStream))
    )
    address = port.getHost()
    print(f"yamux server session listening on {address.host}:{address.port}")
    session = await TCP4ClientEndpoint(reactor, address.host, address.port).connect(
        YamuxFactory(isClient=True)
    )
    rtt = await session.ping()
    print(f"ping: {rtt * 1000:.2f} ms")
    streams = [CollectStream(f"hello from stream {i}".encode()) for i in range(5)]
    for stream in streams:
        session.openStream(stream)
    for stream in streams:
        answer = await stream.answer
        print(f"stream {stream.transport.streamID}: echoed {answer.decode()!r}")
    await session.shutdown()
    await port.stopListening()


def main() -> None:
    """Entry point of C{python -m tunnel.demo}."""
    task.react(lambda reactor: defer.Deferred.fromCoroutine(demo(reactor)))


if __name__ == "__main__":
    sys.exit(main())
