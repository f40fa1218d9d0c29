"""
Tests for L{tunnel._hijack.takeOverConnection}, with a real twisted.web
L{Site} over in-memory connections, plain and TLS.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from tunnel._hijack import takeOverConnection
from tunnel.test.serversupport import tlsOptions
from tunnel.test.support import Recorder

ADDRESS = IPv4Address("TCP", "127.0.0.1", 80)


class TakeOver(Resource):
    """
    Takes the connection over, at once or when L{later} is called.

    @ivar pending: the requests whose take-over waits for L{later}.
    """

    isLeaf = True

    def __init__(self, protocol: Protocol, deferred: bool = False) -> None:
        super().__init__()
        self.protocol = protocol
        self.deferred = deferred
        self.pending: list[Request] = []

    def render(self, request: Request) -> object:
        if self.deferred:
            self.pending.append(request)
        else:
            takeOverConnection(request, self.protocol)
        return NOT_DONE_YET

    def later(self) -> None:
        takeOverConnection(self.pending.pop(0), self.protocol)


def connectInMemory(
    serverFactory: Callable[[], Protocol], clientProtocol: Protocol, clock: Clock
) -> iosim.IOPump:
    """
    Connect a server protocol built now with a client protocol in memory;
    pumping runs C{clock}'s due calls.
    """
    server = serverFactory()
    return iosim.connect(
        server,
        iosim.makeFakeServer(server),
        clientProtocol,
        iosim.makeFakeClient(clientProtocol),
        greet=False,
        clock=clock,
    )


class PlainTakeOverTests(SynchronousTestCase):
    """
    Taking over a plain connection from a L{Site}.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.client = Recorder()

    def connect(self, resource: Resource) -> iosim.IOPump:
        site = Site(resource, reactor=self.clock)
        return connectInMemory(
            lambda: site.buildProtocol(ADDRESS), self.client, self.clock
        )

    def test_bytesPipelinedAfterTheRequestHeadReachTheNewProtocol(self) -> None:
        """
        Bytes sent in the same packet right after the request head, still in
        the channel's line buffer when the resource renders, reach the new
        protocol, and nothing reaches the client.
        """
        pump = self.connect(TakeOver(self.recorder))
        self.client.transport.write(
            b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\nfirst frame\r\n\r\nGET / HTTP/1.1\r\n"
        )
        pump.flush()
        self.assertEqual(
            self.recorder.received, b"first frame\r\n\r\nGET / HTTP/1.1\r\n"
        )
        self.assertEqual(self.client.received, b"")

    def test_bytesAfterARequestBodyReachTheNewProtocol(self) -> None:
        """
        Bytes that arrived in the same packet as the end of a request body
        reach the new protocol; the body does not.
        """
        pump = self.connect(TakeOver(self.recorder))
        self.client.transport.write(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloEXTRA"
        )
        pump.flush()
        self.assertEqual(self.recorder.received, b"EXTRA")
        self.assertEqual(self.client.received, b"")

    def test_bytesReadWhileTheRequestWaitedReachTheNewProtocolInOrder(self) -> None:
        """
        When the take-over happens after the resource rendered, the bytes the
        channel buffered meanwhile reach the new protocol, in order, before
        anything that arrives later.
        """
        resource = TakeOver(self.recorder, deferred=True)
        pump = self.connect(resource)
        self.client.transport.write(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\none ")
        pump.flush()
        self.client.transport.write(b"two ")
        pump.flush()
        resource.later()
        self.client.transport.write(b"three")
        pump.flush()
        self.assertEqual(self.recorder.received, b"one two three")
        self.assertEqual(self.client.received, b"")

    def test_newProtocolWritesReachTheClientAlone(self) -> None:
        """
        What the new protocol writes reaches the client byte for byte, with
        no HTTP response before or after it, even once the request would
        have timed out.
        """
        pump = self.connect(TakeOver(self.recorder))
        self.client.transport.write(b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n")
        pump.flush()
        self.recorder.transport.write(b"raw answer")
        self.clock.advance(60 * 60 * 24)
        pump.flush()
        self.assertEqual(self.client.received, b"raw answer")

    def test_connectionLossReachesTheNewProtocol(self) -> None:
        """
        When the connection closes, the new protocol is told, and the channel
        is not.
        """
        pump = self.connect(TakeOver(self.recorder))
        self.client.transport.write(b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n")
        pump.flush()
        self.client.transport.loseConnection()
        pump.flush()
        self.assertIsNotNone(self.recorder.lost)


class TransportStateTests(SynchronousTestCase):
    """
    What the take-over does to the transport: producer, pause, protocol.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.resource = TakeOver(self.recorder, deferred=True)
        site = Site(self.resource, reactor=self.clock)
        self.channel = site.buildProtocol(ADDRESS)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)

    def test_transportIsResumedAfterTheChannelPausedIt(self) -> None:
        """
        The channel pauses its transport when much is buffered while a
        request is handled; the take-over resumes it and hands over every
        buffered byte.
        """
        self.channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        flood = b"x" * (64 * 1024)
        self.channel.dataReceived(flood)
        self.assertEqual(self.transport.producerState, "paused")
        self.resource.later()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(self.recorder.received, flood)

    def test_channelIsNoLongerTheProducerAndNewProtocolOwnsTheTransport(self) -> None:
        """
        The channel is unregistered as the transport's producer, so the new
        protocol may register its own, and the transport delivers to the new
        protocol.
        """
        self.channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.resource.later()
        self.assertIsNone(self.transport.producer)
        self.assertIs(self.transport.protocol, self.recorder)
        self.assertIs(self.recorder.transport, self.transport)

    def test_idleTimeoutNoLongerCloses(self) -> None:
        """
        The channel's idle timeout is stopped: the connection stays open.
        """
        self.channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        self.resource.later()
        self.clock.advance(60 * 60 * 24)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TLSTakeOverTests(SynchronousTestCase):
    """
    Taking over a TLS connection: the new protocol is attached below the TLS
    layer's wrapper, and bytes flow encrypted both ways.
    """

    def test_tlsConnectionIsTakenOverWithPipelinedBytes(self) -> None:
        """
        Over TLS, pipelined bytes reach the new protocol, its writes reach
        the client, nothing else does, and the request is seen as secure.
        """
        serverOptions, clientOptions = tlsOptions()
        recorder = Recorder()
        secure: list[bool] = []

        class Checking(TakeOver):
            def render(self, request: Request) -> object:
                secure.append(request.isSecure())
                return super().render(request)

        clock = Clock()
        site = Site(Checking(recorder), reactor=clock)
        serverFactory = TLSMemoryBIOFactory(serverOptions, False, site, clock)
        client = Recorder()
        clientFactory = TLSMemoryBIOFactory(clientOptions, True, _Once(client), clock)
        clientTLS = clientFactory.buildProtocol(ADDRESS)
        pump = connectInMemory(
            lambda: serverFactory.buildProtocol(ADDRESS), clientTLS, clock
        )
        pump.flush()
        client.transport.write(
            b"CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\npipelined"
        )
        pump.flush()
        self.assertEqual(secure, [True])
        self.assertEqual(recorder.received, b"pipelined")
        recorder.transport.write(b"raw answer")
        client.transport.write(b" and more")
        pump.flush()
        self.assertEqual(client.received, b"raw answer")
        self.assertEqual(recorder.received, b"pipelined and more")


class _Once:
    """A factory that hands out one given protocol."""

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def buildProtocol(self, addr: object) -> Protocol:
        return self.protocol
