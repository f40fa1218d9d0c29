"""
The multiplexer over real loopback TCP sockets: many concurrent streams with
bulk data both ways and half-closes.
"""

from __future__ import annotations

import random

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from tunnel.mux import YamuxFactory, YamuxProtocol
from tunnel.test.streams import CHUNK, BulkStream, EchoStream, digest
from tunnel.test.support import until
from tunnel.yamux import INITIAL_WINDOW, SessionConfig

class LoopbackTests(TestCase):
    """
    A client and a server session in one process over loopback TCP.
    """

    timeout = 300

    @defer.inlineCallbacks
    def test_thousandStreamsOfOneMebibyteEachWay(self):
        """
        1,000 concurrent streams each send 1 MiB, half-close, and get the
        same 1 MiB echoed back: every checksum matches, no stream ever has
        more than a window and a chunk buffered, and afterwards no stream or
        buffer is left in either session.
        """
        streams, size = 1000, 1024 * 1024
        servers: list[YamuxProtocol] = []
        # A keep-alive ping waits behind up to 1,000 windows of data in the
        # send buffers: on a loaded machine, longer than its timeout.
        config = SessionConfig(enableKeepAlive=False)

        class ServerSessions(YamuxFactory):
            def buildProtocol(self, addr):
                protocol = super().buildProtocol(addr)
                servers.append(protocol)
                return protocol

        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            ServerSessions(
                isClient=False, streamFactory=Factory.forProtocol(EchoStream), config=config
            )
        )
        self.addCleanup(port.stopListening)
        client: YamuxProtocol = yield TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port
        ).connect(YamuxFactory(isClient=True, config=config))
        self.addCleanup(client.transport.loseConnection)

        expected = []
        protocols = []
        for seed in range(streams):
            payload = random.Random(seed).randbytes(size)
            expected.append(digest(payload))
            protocol = BulkStream(payload)
            protocols.append(protocol)
            client.openStream(protocol)
        results = yield defer.gatherResults([p.done for p in protocols])

        self.assertEqual(results, expected)
        self.assertLessEqual(max(p.peakBuffered for p in protocols), INITIAL_WINDOW + CHUNK)
        [server] = servers
        self.assertEqual(client.streams, {})
        self.assertEqual(client.session.streamIDs, [])
        # The server may still be reading the last FINs off the socket.
        yield until(lambda: not server.session.streamIDs, 2, "the server's streams gone")
        self.assertEqual(server.streams, {})
        self.assertEqual(server.session.streamIDs, [])
        self.assertEqual(client.session.dataToSend(), b"")

