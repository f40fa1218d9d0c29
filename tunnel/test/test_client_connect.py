"""
Tests for L{tunnel.client.connect}: the bytes the client's tunnel
connection writes and how it reads the server's answers, on a
L{StringTransport}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tunnel.client import (
    TunnelClientProtocol,
    TunnelConnectError,
    TunnelRefusedError,
    TunnelResponseError,
    TunnelSettings,
)
from tunnel.client.local import LocalConnector
from tunnel.core.control import (
    CONNECTED_WITH_SERVER_STREAMS,
    HANDSHAKE_REQUEST,
    HANDSHAKE_RESPONSE,
    MAX_CONTROL_LINE,
)
from tunnel.test.support import Recorder, parseFrames
from tunnel.test.test_client_support import IDENTIFIER, REFUSAL, TEST_ROUTES
from tunnel.test.test_mux import deferredResult
from tunnel.yamux import Flag, FrameType, encodeFrame

INSTANCE = "0123456789abcdef" * 2

REQUEST = (
    b"CONNECT /_controlPath/ HTTP/1.1\r\n"
    b"Host: tunnel.example:8080\r\n"
    b"X-KTunnel-Identifier: secret-identifier-1234\r\n"
    b"X-Tunnel-Instance: 0123456789abcdef0123456789abcdef\r\n"
    b"\r\n"
)

ACK_CONTROL = encodeFrame(FrameType.WINDOW_UPDATE, Flag.ACK, 1, 0)


def data(streamID: int, payload: bytes) -> bytes:
    """A Data frame."""
    return encodeFrame(FrameType.DATA, 0, streamID, len(payload), payload)


class Connection:
    """A L{TunnelClientProtocol} connected to a L{StringTransport}."""

    def __init__(self, host: str | None = "tunnel.example:8080", **settings: object) -> None:
        self.reactor = MemoryReactorClock()
        settings.setdefault("routes", TEST_ROUTES)
        settings.setdefault("instance", INSTANCE)
        self.settings = TunnelSettings(IDENTIFIER, host=host, **settings)
        self.wrapped = Recorder()
        self.tunnel = TunnelClientProtocol(
            self.wrapped,
            self.settings,
            LocalConnector(self.settings.routes, self.reactor),
            self.reactor,
        )
        self.established = deferredResult(self.tunnel.established)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 8080))
        # As a TCP transport does, it delivers to whichever protocol it
        # serves: the tunnel, then the yamux session it hands over to.
        self.transport.protocol = self.tunnel
        self.tunnel.makeConnection(self.transport)

    def receive(self, data: bytes) -> None:
        """Deliver bytes from the server."""
        self.transport.protocol.dataReceived(data)

    def lose(self) -> None:
        """End the connection."""
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))

    def written(self) -> bytes:
        """What was written since the last call."""
        value = self.transport.value()
        self.transport.clear()
        return value

    def answerHandshake(self) -> None:
        """Accept the CONNECT and answer the handshake."""
        self.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        self.receive(ACK_CONTROL + data(1, HANDSHAKE_RESPONSE))


class ConnectRequestTests(SynchronousTestCase):
    """The control request the client sends."""

    def test_requestBytes(self) -> None:
        """
        On connecting, a client that offers no extension writes exactly the
        CONNECT request with the Host, identifier and instance headers, and
        nothing else.
        """
        connection = Connection(
            offerServerStreams=False, offerAddresses=False, offerNotices=False
        )
        self.assertEqual(connection.written(), REQUEST)

    def test_requestOffersExtensions(self) -> None:
        """
        By default the request offers the server-streams, addresses and
        notices extensions in one more header line, which servers that do
        not know them ignore.
        """
        connection = Connection()
        self.assertEqual(
            connection.written(),
            REQUEST.replace(
                b"X-Tunnel-Instance",
                b"X-Tunnel-Features: server-streams, addresses, notices\r\nX-Tunnel-Instance",
            ),
        )

    def test_hostDefaultsToServerAddress(self) -> None:
        """Without a configured host, the Host header is the server's address."""
        connection = Connection(host=None)
        self.assertIn(b"\r\nHost: 192.0.2.7:8080\r\n", connection.written())
        self.assertEqual(connection.tunnel.serverName, "192.0.2.7:8080")

    def test_identifierMustBeHeaderSafe(self) -> None:
        """An identifier that would break the request head is refused."""
        for bad in ["", "a\r\nX-Evil: 1", " padded", "naïve"]:
            with self.assertRaises(ValueError, msg=repr(bad)):
                TunnelSettings(bad)

    def test_identifierRedactedInRepr(self) -> None:
        """The settings' repr shows the identifier's first characters only."""
        text = repr(TunnelSettings(IDENTIFIER))
        self.assertNotIn(IDENTIFIER, text)
        self.assertIn("secr…", text)


class ResponseTests(SynchronousTestCase):
    """How the client reads the server's answer to the control request."""

    def assertSessionStarted(self, connection: Connection) -> None:
        """The control stream was opened and the handshake sent."""
        self.assertEqual(
            parseFrames(connection.written()),
            [
                (FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0, b""),
                (FrameType.DATA, 0, 1, len(HANDSHAKE_REQUEST), HANDSHAKE_REQUEST),
            ],
        )

    def test_acceptedWithLF(self) -> None:
        """The Go server's C{200} ends with C{\\n\\n}; the session starts."""
        connection = Connection()
        connection.written()
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        self.assertSessionStarted(connection)

    def test_acceptedWithCRLF(self) -> None:
        """A C{200} ending with C{\\r\\n\\r\\n} starts the session too."""
        connection = Connection()
        connection.written()
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\r\n\r\n")
        self.assertSessionStarted(connection)

    def test_acceptedWithHeaders(self) -> None:
        """Headers in the C{200} are skipped."""
        connection = Connection()
        connection.written()
        connection.receive(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n")
        self.assertSessionStarted(connection)

    def test_nothingWrittenBeforeWholeResponse(self) -> None:
        """
        No yamux byte is written until the empty line ending the response
        was read, however the response is split.
        """
        connection = Connection()
        connection.written()
        for piece in [b"HTTP/1.1 200 Conn", b"ected to Tunnel\r", b"\n", b"\r"]:
            connection.receive(piece)
            self.assertEqual(connection.written(), b"", piece)
        connection.receive(b"\n")
        self.assertSessionStarted(connection)

    def test_bytesAfterHeadGoToSession(self) -> None:
        """
        Bytes that arrive with the head belong to the yamux session: a ping
        following the C{200} is answered.
        """
        connection = Connection()
        connection.written()
        connection.receive(
            b"HTTP/1.1 200 Connected to Tunnel\n\n"
            + encodeFrame(FrameType.PING, Flag.SYN, 0, 77)
        )
        self.assertIn(
            (FrameType.PING, Flag.ACK, 0, 77, b""), parseFrames(connection.written())
        )

    def test_connectionHandedOverAtConnected(self) -> None:
        """
        At the C{200} the connection is handed over to the yamux session, as
        a protocol switch: the transport delivers to it from then on, and
        its loss reaches the tunnel through it.
        """
        connection = Connection()
        connection.answerHandshake()
        self.assertIs(connection.transport.protocol, connection.tunnel.session)
        self.assertIs(connection.tunnel.session.transport, connection.transport)
        connection.lose()
        self.assertIsNotNone(connection.wrapped.lost)

    def test_wrapperHandedOver(self) -> None:
        """
        Over a transport that wraps another (TLS), the session takes the
        wrapper's C{wrappedProtocol}.
        """
        connection = Connection()
        connection.transport.wrappedProtocol = connection.tunnel
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        self.assertIs(connection.transport.wrappedProtocol, connection.tunnel.session)
        self.assertIs(connection.transport.protocol, connection.tunnel)

    def test_refusedIdentifier(self) -> None:
        """
        A C{403} fails with L{TunnelRefusedError} carrying the status, reason
        and body; the client writes nothing more and closes the connection.
        """
        connection = Connection()
        connection.written()
        connection.receive(REFUSAL)
        [failure] = connection.established
        failure.trap(TunnelRefusedError)
        self.assertEqual(
            (failure.value.status, failure.value.reason, failure.value.bodyPreview),
            (403, "Forbidden", b"unknown identifier\n"),
        )
        self.assertEqual(
            str(failure.value), "the server answered 403 Forbidden: unknown identifier"
        )
        self.assertEqual(connection.written(), b"")
        self.assertTrue(connection.transport.disconnecting)
        self.assertIsNone(connection.tunnel.session)

    def test_refusalBodyAwaited(self) -> None:
        """
        The body a refusal's Content-Length announces is awaited, so the
        error can tell what the server said.
        """
        connection = Connection()
        head, body = REFUSAL.split(b"\r\n\r\n")
        connection.receive(head + b"\r\n\r\nunknown")
        self.assertEqual(connection.established, [])
        connection.receive(b" identifier\n")
        [failure] = connection.established
        self.assertEqual(failure.value.bodyPreview, b"unknown identifier\n")

    def test_refusalWhoseBodyNeverComes(self) -> None:
        """
        If the connection ends before the promised body, the error holds
        what came.
        """
        connection = Connection()
        connection.receive(REFUSAL[:-6])
        connection.lose()
        [failure] = connection.established
        failure.trap(TunnelRefusedError)
        self.assertEqual(failure.value.bodyPreview, b"unknown ident")

    def test_otherStatus(self) -> None:
        """
        Any other status fails with L{TunnelResponseError}, not a refusal.
        """
        connection = Connection()
        connection.receive(b"HTTP/1.1 404 Not Found\r\n\r\n")
        [failure] = connection.established
        failure.trap(TunnelResponseError)
        self.assertNotIsInstance(failure.value, TunnelRefusedError)
        self.assertEqual(failure.value.status, 404)

    def test_notHTTP(self) -> None:
        """An answer that is not HTTP fails the attempt."""
        connection = Connection()
        connection.receive(b"SSH-2.0-OpenSSH\r\n\r\n")
        [failure] = connection.established
        failure.trap(TunnelConnectError)
        self.assertIn("not a valid HTTP response", str(failure.value))
        self.assertTrue(connection.transport.disconnecting)

    def test_headTooLong(self) -> None:
        """A head that goes on past the limit fails the attempt."""
        connection = Connection()
        connection.receive(b"HTTP/1.1 200 OK\r\n")
        connection.receive(b"X: " + b"y" * 16 * 1024)
        [failure] = connection.established
        failure.trap(TunnelConnectError)
        self.assertIn("longer than 16384 bytes", str(failure.value))


class HandshakeTests(SynchronousTestCase):
    """The handshake on the control stream."""

    def test_established(self) -> None:
        """
        Once the server answers the handshake, the wrapped protocol is
        connected with the tunnel as its transport, and C{established}
        fires with it.
        """
        connection = Connection()
        connection.answerHandshake()
        self.assertEqual(connection.established, [connection.wrapped])
        self.assertIs(connection.wrapped.transport, connection.tunnel)
        self.assertTrue(connection.wrapped.made)

    def test_answerInPieces(self) -> None:
        """An answer split over several frames is collected."""
        connection = Connection()
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        connection.receive(ACK_CONTROL + data(1, b"contr"))
        self.assertEqual(connection.established, [])
        connection.receive(data(1, b"olOk"))
        self.assertEqual(connection.established, [connection.wrapped])

    def test_wrongAnswer(self) -> None:
        """A wrong answer fails the attempt and closes the connection."""
        connection = Connection()
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        connection.receive(ACK_CONTROL + data(1, b"controlNo"))
        [failure] = connection.established
        failure.trap(TunnelConnectError)
        self.assertIn("controlNo", str(failure.value))
        self.assertTrue(connection.transport.disconnecting)
        self.assertIsNone(connection.transport.producer)
        self.assertFalse(connection.wrapped.made)

    def test_wrongStartFailsAtOnce(self) -> None:
        """An answer that starts wrong fails without waiting for the rest."""
        connection = Connection()
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        connection.receive(ACK_CONTROL + data(1, b"no"))
        [failure] = connection.established
        failure.trap(TunnelConnectError)

    def test_controlStreamRefused(self) -> None:
        """A server that resets the control stream fails the attempt."""
        connection = Connection()
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        connection.receive(encodeFrame(FrameType.WINDOW_UPDATE, Flag.RST, 1, 0))
        [failure] = connection.established
        failure.trap(TunnelConnectError)
        self.assertIn("control stream ended", str(failure.value))

    def test_setupTimeout(self) -> None:
        """
        Without an answer within the setup timeout the attempt fails and the
        connection is dropped.
        """
        connection = Connection(setupTimeout=5.0)
        connection.receive(b"HTTP/1.1 200 Connected to Tunnel\n\n")
        connection.reactor.advance(4.9)
        self.assertEqual(connection.established, [])
        connection.reactor.advance(0.1)
        [failure] = connection.established
        failure.trap(TunnelConnectError)
        self.assertIn("no tunnel within 5.0 s", str(failure.value))
        self.assertTrue(connection.transport.disconnecting)

    def test_noTimeoutOnceEstablished(self) -> None:
        """The setup timer is cancelled once the tunnel is established."""
        connection = Connection()
        connection.answerHandshake()
        connection.reactor.advance(31)
        self.assertFalse(connection.transport.disconnecting)

    def test_connectionLostBeforeSetup(self) -> None:
        """A connection lost during setup fails the attempt."""
        connection = Connection()
        connection.lose()
        [failure] = connection.established
        failure.trap(TunnelConnectError)
        self.assertIn("the connection ended before the tunnel was set up", str(failure.value))

    def test_cancel(self) -> None:
        """Cancelling the setup drops the connection."""
        connection = Connection()
        connection.tunnel.established.cancel()
        [failure] = connection.established
        failure.trap(CancelledError)
        self.assertTrue(connection.transport.disconnecting)
        connection.lose()
        self.assertIsNone(connection.wrapped.lost)

    def test_connectionLostAfterSetup(self) -> None:
        """The wrapped protocol loses its connection when the tunnel ends."""
        connection = Connection()
        connection.answerHandshake()
        connection.lose()
        self.assertIsNotNone(connection.wrapped.lost)

    def test_serverOpenedStreamsRefused(self) -> None:
        """Without the server-streams extension, streams the server opens are refused."""
        connection = Connection()
        connection.answerHandshake()
        connection.written()
        connection.receive(encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0))
        self.assertEqual(
            parseFrames(connection.written()),
            [(FrameType.WINDOW_UPDATE, Flag.RST, 2, 0, b"")],
        )


ANNOUNCEMENT = b'{"action":1,"transportProtocol":1,"localPort":3000}\n'


class ServerStreamsTests(SynchronousTestCase):
    """
    With a server that accepted the server-streams extension, the client
    serves the streams the server opens, each announced by its first line.
    """

    def established(self, **settings: object) -> Connection:
        connection = Connection(**settings)
        connection.receive(CONNECTED_WITH_SERVER_STREAMS)
        connection.receive(ACK_CONTROL + data(1, HANDSHAKE_RESPONSE))
        connection.written()
        return connection

    def openStream(self, connection: Connection, payload: bytes) -> list[tuple]:
        """The server opens stream 2 with C{payload}; return the frames written."""
        connection.receive(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 2, 0) + data(2, payload)
        )
        return parseFrames(connection.written())

    def test_announcedStreamIsPipedToItsLocalService(self) -> None:
        """
        The stream is accepted, the local service of its announcement is
        dialled, and gets what followed the announcement.
        """
        connection = self.established()
        written = self.openStream(connection, ANNOUNCEMENT + b"GET / HTTP/1.1\r\n\r\n")
        self.assertEqual(written[0][:3], (FrameType.WINDOW_UPDATE, Flag.ACK, 2))
        [(host, port, factory, _, _)] = connection.reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 3000))
        local = StringTransport()
        factory.buildProtocol(None).makeConnection(local)
        self.assertEqual(local.value(), b"GET / HTTP/1.1\r\n\r\n")

    def test_announcementInPieces(self) -> None:
        """An announcement split across frames is put together."""
        connection = self.established()
        self.openStream(connection, ANNOUNCEMENT[:10])
        self.assertEqual(connection.reactor.tcpClients, [])
        connection.receive(data(2, ANNOUNCEMENT[10:]))
        self.assertEqual(len(connection.reactor.tcpClients), 1)

    def test_badAnnouncementResetsTheStream(self) -> None:
        """A first line that is not a control message resets the stream only."""
        connection = self.established()
        written = self.openStream(connection, b"not json\n")
        self.assertEqual(written[-1][:3], (FrameType.WINDOW_UPDATE, Flag.RST, 2))
        self.assertEqual(connection.reactor.tcpClients, [])
        self.assertIsNone(connection.wrapped.lost)

    def test_endlessAnnouncementResetsTheStream(self) -> None:
        """An announcement longer than a control line may be resets the stream."""
        connection = self.established()
        written = self.openStream(connection, b"x" * (MAX_CONTROL_LINE + 1))
        self.assertEqual(written[-1][:3], (FrameType.WINDOW_UPDATE, Flag.RST, 2))

    def test_announcedStreamsCountForTheGracefulClose(self) -> None:
        """A graceful close waits for a stream the server opened."""
        connection = self.established(shutdownTimeout=10.0)
        self.openStream(connection, ANNOUNCEMENT)
        connection.tunnel.loseConnection()
        self.assertFalse(connection.transport.disconnecting)
        connection.reactor.advance(10)
        self.assertTrue(connection.transport.disconnecting)

    def test_burstOfStreamsInOneReadIsAllTaken(self) -> None:
        """
        1,000 streams the server opens at once (more than yamux's accept
        backlog of 256), arriving in one read, are all accepted and each
        dials its local service: none is refused.
        """
        connection = self.established()
        burst = 1000
        connection.receive(b"".join(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, streamID, 0)
            + data(streamID, ANNOUNCEMENT)
            for streamID in range(2, 2 * burst + 2, 2)
        ))
        written = parseFrames(connection.written())
        self.assertEqual(
            [flags for kind, flags, *_ in written if kind == FrameType.WINDOW_UPDATE],
            [Flag.ACK] * burst,
        )
        self.assertEqual(len(connection.reactor.tcpClients), burst)
