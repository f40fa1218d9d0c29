"""
Tests for what the client refuses a server: ports its user did not expose,
local connections past its bound, and work or memory past what its input
warrants.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tunnel.client import LocalRoutes
from tunnel.client.local import DEFAULT_MAX_LOCAL_CONNECTIONS, badGateway, serviceUnavailable
from tunnel.core.control import TransportProtocol
from tunnel.options import ClientOptions
from tunnel.sparselog import SparseCounter, isSparseCount
from tunnel.test.test_client_support import World
from tunnel.test.test_client_tunnel import Responder, connect
from tunnel.test.test_core_http import SearchCounting

HTTP = TransportProtocol.HTTP
TCP = TransportProtocol.TCP


def capturedWarnings(case: SynchronousTestCase) -> Callable[[], list[str]]:
    """Capture the warnings logged until the test ends; the result lists their text."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return lambda: [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]


class RefusedPortTests(SynchronousTestCase):
    """A port the client's routes do not expose is never dialled."""

    def test_httpGets502WithoutADial(self) -> None:
        """
        Without routes, an HTTP request for port 6379 gets a C{502} that
        names the port, and nothing is dialled.
        """
        world = World(LocalRoutes())
        connect(world)
        world.server.request(HTTP, 6379)
        world.server.request(TransportProtocol.WEBSOCKET, 22)
        world.flush()
        self.assertEqual(world.reactor.tcpClients, [])
        http, websocket = world.server.streams
        self.assertEqual(
            http.received,
            badGateway("tunnel: this client does not expose local port 6379\n"),
        )
        self.assertTrue(http.received.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"))
        self.assertTrue(http.readEnded)
        self.assertEqual(
            websocket.received, badGateway("tunnel: this client does not expose local port 22\n")
        )

    def test_tcpIsClosedWithoutADial(self) -> None:
        """A TCP connection for an unexposed port is closed, with no bytes."""
        world = World(LocalRoutes.fromStrings(["3000"]))
        connect(world)
        world.server.request(TCP, 6379)
        world.flush()
        self.assertEqual(world.reactor.tcpClients, [])
        [stream] = world.server.streams
        self.assertEqual(stream.received, b"")
        self.assertTrue(stream.readEnded)

    def test_allowedPortsAreDialled(self) -> None:
        """
        The fixed address, a mapped port, a listed port and port 0 (to 80)
        are dialled where the routes say.
        """
        world = World(LocalRoutes.fromStrings(["2222=127.0.0.1:22"], ["8000-8001"]))
        connect(world)
        world.server.request(HTTP, 0)
        world.server.request(TCP, 2222)
        world.server.request(TCP, 8001)
        world.server.request(HTTP, 8000)
        world.flush()
        self.assertEqual(
            [client[:2] for client in world.reactor.tcpClients],
            [("127.0.0.1", 80), ("127.0.0.1", 22), ("127.0.0.1", 8001), ("127.0.0.1", 8000)],
        )
        world = World(LocalRoutes.fromStrings(["localhost:4000"]))
        connect(world)
        world.server.request(HTTP, 6379)
        world.flush()
        self.assertEqual(world.reactor.tcpClients[0][:2], ("localhost", 4000))

    def test_refusalsLoggedSparinglyPerPort(self) -> None:
        """
        Each refused port is logged on its 1st, 10th and 100th refusal, not
        on every one.
        """
        warnings = capturedWarnings(self)
        world = World(LocalRoutes())
        connect(world)
        for _ in range(100):
            world.server.request(HTTP, 6379)
        world.server.request(TCP, 11211)
        world.flush()
        refusals = [w for w in warnings() if "local port" in w]
        self.assertEqual(len(refusals), 4, refusals)
        self.assertIn("6379", refusals[0])
        self.assertIn("(100 refused for this port so far)", refusals[2])
        self.assertIn("11211", refusals[3])
        self.assertEqual(len(world.server.streams), 101)


class SparseCounterTests(SynchronousTestCase):
    """L{tunnel.sparselog}."""

    def test_powersOfTen(self) -> None:
        """The 1st, 10th, 100th... occurrences are worth a line."""
        self.assertEqual(
            [n for n in range(1, 10001) if isSparseCount(n)], [1, 10, 100, 1000, 10000]
        )
        self.assertFalse(isSparseCount(0))

    def test_keysBounded(self) -> None:
        """Past C{maxKeys} keys, new keys are counted together."""
        counter = SparseCounter(maxKeys=2)
        self.assertEqual([counter.record(k) for k in "abcd"], [1, 1, 1, None])
        self.assertEqual(counter.count(None), 2)


class LocalConnectionLimitTests(SynchronousTestCase):
    """The bound on local connections open at once."""

    def test_beyondTheBoundIs503WithoutADial(self) -> None:
        """
        With at most two local connections, a third request gets a C{503}
        without a dial (a TCP one is closed); once a connection and its
        stream are closed, the next request is dialled again.
        """
        warnings = capturedWarnings(self)
        world = World(maxLocalConnections=2)
        connect(world)
        world.listen(3000, Responder)
        world.server.request(HTTP, 3000)
        world.server.request(HTTP, 3000)
        world.server.request(HTTP, 3000)
        world.server.request(TCP, 2222)
        world.flush()
        self.assertEqual(len(world.reactor.tcpClients), 2)
        first, second, third, tcp = world.server.streams
        self.assertEqual(
            third.received,
            serviceUnavailable("tunnel: this client has too many local connections open (2)\n"),
        )
        self.assertEqual(tcp.received, b"")
        self.assertTrue(tcp.readEnded)
        self.assertEqual(len([w for w in warnings() if "local connections are open" in w]), 1)
        world.completeLocalConnection()
        world.flush()
        first.transport.write(b"GET / HTTP/1.1\r\n\r\n")
        world.flush()
        self.assertTrue(first.readEnded)
        first.transport.loseConnection()
        world.flush()
        limit = world.endpoint.connector.limit
        self.assertEqual(limit.live, 1)
        world.server.request(HTTP, 3000)
        world.flush()
        # The completed connection left the pending ones; the new one dials.
        self.assertEqual(len(world.reactor.tcpClients), 2)
        self.assertEqual(limit.live, 2)
        self.assertEqual(world.server.streams[-1].received, b"")

    def test_failedDialReleases(self) -> None:
        """A dial that failed stops counting once its stream is closed."""
        world = World(maxLocalConnections=1)
        connect(world)
        world.server.request(HTTP, 3000)
        world.flush()
        world.failLocalConnection()
        world.flush()
        world.server.streams[0].transport.loseConnection()
        world.server.request(HTTP, 3000)
        world.flush()
        self.assertEqual(len(world.reactor.tcpClients), 1)
        self.assertEqual(world.endpoint.connector.limit.live, 1)

    def test_controlMessagesHeldPastTwiceTheBound(self) -> None:
        """
        Once twice the bound of streams is open, the client hands no more
        control messages on and pauses the control stream (so the server's
        window for it runs out); it serves the held messages, and reads
        again, as streams end.
        """
        world = World(maxLocalConnections=1)
        protocol, tunnel = connect(world)
        control = tunnel._control
        served: list[object] = []
        self.patch(tunnel, "_messageReceived", served.append)
        control._messageReceived = served.append
        control.holdMessages()
        for _ in range(5):
            world.server.request(HTTP, 3000)
        world.flush()
        # Unread: the bytes wait in the stream, which grants no window.
        self.assertEqual(served, [])
        self.assertTrue(control.transport._readPaused)
        tunnel._tunnel.openStreams = tunnel.settings.maxStreams
        tunnel._streamEnded(None)
        self.assertEqual((len(served), control.waiting), (5, 0))
        self.assertFalse(control.transport._readPaused)

    def test_streamsCountedUpToTwiceTheBound(self) -> None:
        """The tunnel holds the control messages once its open streams reach twice the bound."""
        world = World(maxLocalConnections=1)
        protocol, tunnel = connect(world)
        world.server.request(HTTP, 3000)
        world.flush()
        self.assertFalse(tunnel._control._holding)
        tunnel._tunnel.openStreams += 1
        world.server.request(HTTP, 3000)
        world.flush()
        self.assertTrue(tunnel._control._holding)
        world.server.request(HTTP, 3000)
        world.flush()
        self.assertEqual(len(world.server.streams), 2)
        world.server.streams[0].transport.abortConnection()
        world.flush()
        self.assertFalse(tunnel._control._holding)
        self.assertEqual(len(world.server.streams), 3)

    def test_defaultAndOption(self) -> None:
        """
        The bound is 1024 by default; C{--max-local-connections} sets it,
        and must be positive; C{--local-ports} lists dynamic ports.
        """
        options = ClientOptions()
        options.parseOptions(["--server", "h:1", "--identifier", "x"])
        self.assertEqual(options["settings"].maxLocalConnections, DEFAULT_MAX_LOCAL_CONNECTIONS)
        self.assertEqual(DEFAULT_MAX_LOCAL_CONNECTIONS, 1024)
        self.assertFalse(options["settings"].routes.dynamicPorts)
        options = ClientOptions()
        options.parseOptions(["--server", "h:1", "--identifier", "x",
                              "--max-local-connections", "7",
                              "--local-ports", "3000,8000-8100", "--local-ports", "22"])
        settings = options["settings"]
        self.assertEqual(settings.maxLocalConnections, 7)
        self.assertEqual(str(settings.routes.dynamicPorts), "22,3000,8000-8100")
        for argv in (["--max-local-connections", "0"], ["--local-ports", "0-9"]):
            error = self.assertRaises(
                usage.UsageError, ClientOptions().parseOptions,
                ["--server", "h:1", "--identifier", "x", *argv],
            )
            self.assertIn(argv[0], str(error))


class LinearReaderTests(SearchCounting):
    """
    The client's readers do work in proportion to their input (the head
    reader itself is tested in L{tunnel.test.test_core_http}).
    """

    def test_connectAnswerByteByByteIsLinear(self) -> None:
        """
        Through the tunnel protocol too: the server's C{200} with a long
        head, a byte per read, costs work linear in its size.
        """
        from tunnel.test.test_client_connect import Connection

        answer = b"HTTP/1.1 200 Connected\r\n" + b"X: " + b"y" * 8000 + b"\r\n\r\n"
        counting, _ = self.countSearches(4 * len(answer))
        connection = Connection()
        for i in range(len(answer)):
            connection.tunnel.dataReceived(answer[i : i + 1])
        self.assertIsNotNone(connection.tunnel.session)
        self.assertLess(counting.scanned, 4 * len(answer))


class _Work:
    """What the patched byte types of a module did: bytes copied and searched."""

    def __init__(self) -> None:
        self.bytes = 0


def _countingTypes(work: _Work) -> tuple[type, type]:
    """C{bytes} and C{bytearray} stand-ins that count the bytes they copy and search."""

    class CountingBytes(bytes):
        def __new__(cls, source: Any = b"") -> Any:
            value = super().__new__(cls, source)
            work.bytes += len(value)
            return value

        def split(self, *args: Any) -> Any:
            work.bytes += len(self)
            return bytes.split(self, *args)

        def partition(self, *args: Any) -> Any:
            work.bytes += len(self)
            return bytes.partition(self, *args)

        def __contains__(self, item: Any) -> bool:
            work.bytes += len(self)
            return bytes.__contains__(self, item)

    class CountingBytearray(bytearray):
        def __init__(self, source: Any = b"") -> None:
            super().__init__(source)
            work.bytes += len(self)

        def __iadd__(self, data: Any) -> Any:
            work.bytes += len(data)
            return bytearray.__iadd__(self, data)

    return CountingBytes, CountingBytearray


class LinearControlReaderTests(SynchronousTestCase):
    """
    The control-line reader of the control stream, and the announcement
    reader of the streams the server opens, copy and search each byte a
    bounded number of times, however the bytes are split.
    """

    def countIn(self, module: Any) -> tuple[_Work, type]:
        work = _Work()
        countingBytes, countingBytearray = _countingTypes(work)
        # The module's names shadow the builtins until the test ends.
        for name, value in (("bytes", countingBytes), ("bytearray", countingBytearray)):
            setattr(module, name, value)
            self.addCleanup(delattr, module, name)
        return work, countingBytes

    def test_controlMessagesByteByByte(self) -> None:
        """
        200 control messages sent a byte per read cost the control stream
        under 8 byte operations per byte, and all come out.
        """
        import tunnel.core.control
        from tunnel.client.control import ControlStream
        from tunnel.core.control import HANDSHAKE_RESPONSE, ControlMessage
        from twisted.internet.testing import StringTransport

        work, countingBytes = self.countIn(tunnel.core.control)
        received: list[ControlMessage] = []
        control = ControlStream(received.append)
        control.makeConnection(StringTransport())
        control.dataReceived(HANDSHAKE_RESPONSE)
        # Long lines (padded with spaces JSON allows) make a rescan show.
        line = ControlMessage(1, 1, 3000).encode()[:-1] + b" " * 2000 + b"\n"
        data = line * 200
        work.bytes = 0
        for i in range(len(data)):
            control.dataReceived(countingBytes(data[i : i + 1]))
        self.assertEqual(len(received), 200)
        self.assertLess(work.bytes, 8 * len(data))

    def test_announcementByteByByte(self) -> None:
        """
        An announcement sent a byte per read costs under 8 byte operations
        per byte; one longer than the bound resets the stream.
        """
        import tunnel.client.control as controlModule
        from tunnel.client.control import MAX_ANNOUNCEMENT, AnnouncedStream
        from tunnel.core.control import ControlMessage
        from twisted.internet.protocol import Protocol

        from tunnel.test.streams import StreamLikeTransport

        work, countingBytes = self.countIn(controlModule)
        served: list[ControlMessage] = []

        def serve(message: ControlMessage) -> Protocol:
            served.append(message)
            return Protocol()

        stream = AnnouncedStream(serve, lambda protocol: None)
        transport = StreamLikeTransport()
        stream.makeConnection(transport)
        line = ControlMessage(1, 1, 3000).encode()[:-1] + b" " * 900 + b"\n"
        work.bytes = 0
        for i in range(len(line)):
            stream.dataReceived(countingBytes(line[i : i + 1]))
        self.assertEqual(served, [ControlMessage(1, 1, 3000)])
        self.assertLess(work.bytes, 8 * len(line))

        stream = AnnouncedStream(serve, lambda protocol: None)
        stream.makeConnection(StreamLikeTransport())
        aborted: list[bool] = []
        stream.transport.abortConnection = lambda: aborted.append(True)
        for _ in range(MAX_ANNOUNCEMENT + 1):
            stream.dataReceived(b" ")
        self.assertEqual(aborted, [True])
