"""
Tests for reading the client's addresses (L{tunnel.client.address},
L{tunnel.client.local} and L{tunnel.client.endpoint}) and for the rules
choosing the local address of each tunnelled connection.
"""

from __future__ import annotations

from twisted.internet.endpoints import TCP4ClientEndpoint, UNIXClientEndpoint
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from tunnel.client import (
    LocalAddress,
    LocalRoutes,
    ServerAddress,
    parseLocalAddress,
    parseLocalOption,
    parseServerAddress,
)
from tunnel.client.address import hostFromDescription
from tunnel.protocol import ControlMessage, TransportProtocol

HTTP = TransportProtocol.HTTP
TCP = TransportProtocol.TCP
WEBSOCKET = TransportProtocol.WEBSOCKET


def message(transportProtocol: int, localPort: int) -> ControlMessage:
    return ControlMessage(1, transportProtocol, localPort)


class LocalAddressTests(SynchronousTestCase):
    """L{parseLocalAddress} and L{parseLocalOption}."""

    def test_barePort(self) -> None:
        """A bare port is on 127.0.0.1."""
        self.assertEqual(
            parseLocalAddress("3000"),
            LocalAddress("tcp:host=127.0.0.1:port=3000", "127.0.0.1:3000"),
        )

    def test_hostPort(self) -> None:
        """C{HOST:PORT} is a TCP address."""
        self.assertEqual(
            parseLocalAddress("localhost:8080"),
            LocalAddress("tcp:host=localhost:port=8080", "localhost:8080"),
        )

    def test_ipv6HostPort(self) -> None:
        """An IPv6 host in brackets is escaped in the endpoint description."""
        address = parseLocalAddress("[::1]:8080")
        self.assertEqual(address.label, "[::1]:8080")
        endpoint = address.endpoint(MemoryReactor())
        self.assertEqual((endpoint._host, endpoint._port), ("::1", 8080))

    def test_endpointDescription(self) -> None:
        """An endpoint description is kept as it is."""
        for text in ["tcp:example.com:80", "unix:/run/app.sock", "tls:example.com:443"]:
            self.assertEqual(parseLocalAddress(text), LocalAddress(text, text))

    def test_endpointBuilt(self) -> None:
        """The address's endpoint dials what it describes."""
        reactor = MemoryReactor()
        tcp = parseLocalAddress("3000").endpoint(reactor)
        self.assertIsInstance(tcp, TCP4ClientEndpoint)
        self.assertEqual((tcp._host, tcp._port), ("127.0.0.1", 3000))
        unix = parseLocalAddress("unix:/run/app.sock").endpoint(reactor)
        self.assertIsInstance(unix, UNIXClientEndpoint)
        self.assertEqual(unix._path, "/run/app.sock")

    def test_malformed(self) -> None:
        """Malformed addresses are refused with L{ValueError}."""
        for text in ["", "abc", "host:", ":80", "host:99999", "::1:80", "host:8o"]:
            with self.assertRaises(ValueError, msg=repr(text)):
                parseLocalAddress(text)

    def test_option(self) -> None:
        """C{PORT=ADDR} maps a port; C{ADDR} alone is the fixed address."""
        self.assertEqual(
            parseLocalOption("8080=localhost:3000"),
            (8080, parseLocalAddress("localhost:3000")),
        )
        self.assertEqual(parseLocalOption("0=3000"), (0, parseLocalAddress("3000")))
        self.assertEqual(parseLocalOption("3000"), (None, parseLocalAddress("3000")))
        self.assertEqual(
            parseLocalOption("tcp:host=example.com:port=80"),
            (None, LocalAddress("tcp:host=example.com:port=80", "tcp:host=example.com:port=80")),
        )

    def test_optionBadPort(self) -> None:
        """A mapped port out of range is refused."""
        with self.assertRaises(ValueError):
            parseLocalOption("70000=3000")


class LocalRoutesTests(SynchronousTestCase):
    """The rules choosing the local address of each connection."""

    def test_default(self) -> None:
        """Without configuration, connections go to 127.0.0.1:localPort."""
        routes = LocalRoutes()
        for protocol in (HTTP, WEBSOCKET, TCP):
            self.assertEqual(
                routes.addressFor(message(protocol, 3000)).label, "127.0.0.1:3000"
            )

    def test_port80WhenZero(self) -> None:
        """An HTTP request whose Host had no port goes to port 80."""
        self.assertEqual(LocalRoutes().addressFor(message(HTTP, 0)).label, "127.0.0.1:80")

    def test_fixed(self) -> None:
        """
        The fixed address takes every HTTP and WebSocket connection, even for
        a mapped port.
        """
        routes = LocalRoutes.fromStrings(["localhost:3000", "8080=4000"])
        for protocol in (HTTP, WEBSOCKET):
            for port in (0, 80, 8080):
                self.assertEqual(
                    routes.addressFor(message(protocol, port)).label, "localhost:3000"
                )

    def test_perPort(self) -> None:
        """Without a fixed address, mapped ports go to their address."""
        routes = LocalRoutes.fromStrings(["8080=4000", "0=5000"])
        self.assertEqual(routes.addressFor(message(HTTP, 8080)).label, "127.0.0.1:4000")
        self.assertEqual(routes.addressFor(message(HTTP, 0)).label, "127.0.0.1:5000")
        self.assertEqual(routes.addressFor(message(HTTP, 9090)).label, "127.0.0.1:9090")

    def test_tcpIgnoresFixed(self) -> None:
        """
        TCP connections use the port map, then 127.0.0.1:localPort; never
        the fixed address, which is for HTTP.
        """
        routes = LocalRoutes.fromStrings(["localhost:3000", "2222=unix:/run/ssh.sock"])
        self.assertEqual(routes.addressFor(message(TCP, 2222)).label, "unix:/run/ssh.sock")
        self.assertEqual(routes.addressFor(message(TCP, 7000)).label, "127.0.0.1:7000")

    def test_twoFixedAddresses(self) -> None:
        """Only one fixed address may be given."""
        with self.assertRaises(ValueError):
            LocalRoutes.fromStrings(["3000", "4000"])

    def test_portMappedTwice(self) -> None:
        """A port may be mapped once."""
        with self.assertRaises(ValueError):
            LocalRoutes.fromStrings(["80=3000", "80=4000"])


class ServerAddressTests(SynchronousTestCase):
    """L{parseServerAddress}."""

    def test_bareHostPort(self) -> None:
        """A bare C{HOST:PORT} means TCP, and names the Host header."""
        self.assertEqual(
            parseServerAddress("tunnel.example.com:8080"),
            ServerAddress("tcp:host=tunnel.example.com:port=8080", "tunnel.example.com:8080"),
        )

    def test_endpointDescriptions(self) -> None:
        """The Host header is read from endpoint descriptions."""
        self.assertEqual(
            parseServerAddress("tls:tunnel.example.com:443"),
            ServerAddress("tls:tunnel.example.com:443", "tunnel.example.com:443"),
        )
        self.assertEqual(
            parseServerAddress("tcp:host=tunnel.example.com:port=80:timeout=5").host,
            "tunnel.example.com:80",
        )
        self.assertEqual(parseServerAddress("unix:/run/tunnel.sock").host, "localhost")

    def test_hostFromDescription(self) -> None:
        """Escaped characters and IPv6 hosts are handled."""
        self.assertEqual(hostFromDescription(r"tcp:host=\:\:1:port=80"), "[::1]:80")
        self.assertEqual(hostFromDescription("tcp:port=80"), None)

    def test_endpoint(self) -> None:
        """The server address's endpoint dials it."""
        endpoint = parseServerAddress("127.0.0.1:8080").endpoint(MemoryReactor())
        self.assertEqual((endpoint._host, endpoint._port), ("127.0.0.1", 8080))

    def test_malformed(self) -> None:
        """Neither an endpoint description nor C{HOST:PORT}: L{ValueError}."""
        for text in ["tunnel.example.com", "8080", "host:port"]:
            with self.assertRaises(ValueError, msg=text):
                parseServerAddress(text)
