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
from tunnel.client.address import PortRanges, hostFromDescription
from tunnel.core.control import ControlMessage, TransportProtocol

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
    """
    The rules choosing the local address of each connection: the client
    dials only what its user configured.
    """

    def label(self, routes: LocalRoutes, protocol: int, port: int) -> str | None:
        address = routes.addressFor(message(protocol, port))
        return None if address is None else address.label

    def test_defaultIsPort80Only(self) -> None:
        """
        Without configuration, an HTTP or WebSocket connection for port 0 (a
        Host without port) or 80 goes to 127.0.0.1:80, the protocol's
        default; every other port is refused, and so is every TCP
        connection.
        """
        routes = LocalRoutes()
        for protocol in (HTTP, WEBSOCKET):
            self.assertEqual(self.label(routes, protocol, 0), "127.0.0.1:80")
            self.assertEqual(self.label(routes, protocol, 80), "127.0.0.1:80")
            for port in (22, 3000, 6379, 8080, 65535):
                self.assertIsNone(self.label(routes, protocol, port), port)
        for port in (0, 22, 80, 3000, 6379):
            self.assertIsNone(self.label(routes, TCP, port), port)

    def test_addressForPublic(self) -> None:
        """
        A public address the server said leads where a request through it
        would go: a URL's port is the request's C{localPort}, none is 0; a
        C{tcp://} address is a TCP connection.
        """
        routes = LocalRoutes.fromStrings(["3000", "2222=127.0.0.1:22"])

        def label(address: str) -> str | None:
            local = routes.addressForPublic(address)
            return None if local is None else local.label

        self.assertEqual(label("https://app.example/"), "127.0.0.1:3000")
        self.assertEqual(label("http://app.example:8080/"), "127.0.0.1:3000")
        self.assertEqual(label("tcp://tunnel.example:2222"), "127.0.0.1:22")
        self.assertIsNone(label("tcp://tunnel.example:2223"))
        self.assertIsNone(label("http://app.example:99999/"))
        self.assertEqual(
            LocalRoutes.fromStrings(["8080=4000"]).addressForPublic("http://a.example:8080/"),
            LocalRoutes.fromStrings(["4000"]).fixed,
        )

    def test_fixed(self) -> None:
        """
        The fixed address takes every HTTP and WebSocket connection, even for
        a mapped port.
        """
        routes = LocalRoutes.fromStrings(["localhost:3000", "8080=4000"])
        for protocol in (HTTP, WEBSOCKET):
            for port in (0, 80, 6379, 8080):
                self.assertEqual(self.label(routes, protocol, port), "localhost:3000")

    def test_perPort(self) -> None:
        """
        Without a fixed address, mapped ports go to their address; port 0
        to the address mapped to 0, else to the one mapped to 80; other
        ports are refused.
        """
        routes = LocalRoutes.fromStrings(["8080=4000", "0=5000"])
        self.assertEqual(self.label(routes, HTTP, 8080), "127.0.0.1:4000")
        self.assertEqual(self.label(routes, HTTP, 0), "127.0.0.1:5000")
        self.assertEqual(self.label(routes, HTTP, 80), "127.0.0.1:80")
        self.assertIsNone(self.label(routes, HTTP, 9090))
        routes = LocalRoutes.fromStrings(["80=4000"])
        self.assertEqual(self.label(routes, HTTP, 0), "127.0.0.1:4000")
        self.assertEqual(self.label(routes, WEBSOCKET, 80), "127.0.0.1:4000")

    def test_tcpIgnoresFixed(self) -> None:
        """
        TCP connections use the port map only, never the fixed address,
        which is for HTTP: any other port is refused.
        """
        routes = LocalRoutes.fromStrings(["localhost:3000", "2222=unix:/run/ssh.sock"])
        self.assertEqual(self.label(routes, TCP, 2222), "unix:/run/ssh.sock")
        self.assertIsNone(self.label(routes, TCP, 7000))
        self.assertIsNone(self.label(routes, TCP, 80))

    def test_dynamicPorts(self) -> None:
        """
        The listed ports are dialled on 127.0.0.1 at the port the message
        names, for HTTP, WebSocket and TCP alike; ports outside the list
        are still refused; a mapping wins over the list.
        """
        routes = LocalRoutes.fromStrings(["3001=4000"], ["3000-3001", "8000"])
        for protocol in (HTTP, WEBSOCKET, TCP):
            self.assertEqual(self.label(routes, protocol, 3000), "127.0.0.1:3000")
            self.assertEqual(self.label(routes, protocol, 8000), "127.0.0.1:8000")
            self.assertEqual(self.label(routes, protocol, 3001), "127.0.0.1:4000")
            for port in (2999, 3002, 7999, 8001, 6379):
                self.assertIsNone(self.label(routes, protocol, port), (protocol, port))
        self.assertEqual(self.label(routes, HTTP, 0), "127.0.0.1:80")

    def test_dynamicPortsWithFixed(self) -> None:
        """With a fixed address, the listed ports are for TCP only."""
        routes = LocalRoutes.fromStrings(["5000"], ["3000"])
        self.assertEqual(self.label(routes, HTTP, 3000), "127.0.0.1:5000")
        self.assertEqual(self.label(routes, TCP, 3000), "127.0.0.1:3000")

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

    def test_url(self) -> None:
        """
        The server's URL: C{http://} over TCP, C{https://} over TLS, at the
        scheme's port unless it names one.
        """
        self.assertEqual(
            parseServerAddress("http://127.0.0.1:8080"),
            ServerAddress("tcp:host=127.0.0.1:port=8080", "127.0.0.1:8080"),
        )
        self.assertEqual(
            parseServerAddress("HTTPS://tunnel.example.com/"),
            ServerAddress("tls:host=tunnel.example.com:port=443", "tunnel.example.com:443"),
        )
        self.assertEqual(parseServerAddress("http://[::1]").host, "[::1]:80")
        self.assertEqual(parseServerAddress("http://[::1]:81").host, "[::1]:81")

    def test_urlWithMoreThanAServer(self) -> None:
        """A URL with another scheme, a path, a query or a user: L{ValueError}, saying so."""
        for text in ["ftp://tunnel.example.com", "http://h/app", "http://h?x=1", "http://u@h"]:
            with self.assertRaises(ValueError, msg=text) as raised:
                parseServerAddress(text)
            self.assertIn("server URL", str(raised.exception))

    def test_malformed(self) -> None:
        """Neither an endpoint description nor C{HOST:PORT}: L{ValueError}."""
        for text in ["tunnel.example.com", "8080", "host:port"]:
            with self.assertRaises(ValueError, msg=text):
                parseServerAddress(text)


class PortRangesTests(SynchronousTestCase):
    """L{PortRanges}: what C{--local-ports} reads."""

    def test_portsAndRanges(self) -> None:
        """Ports and inclusive ranges, comma-separated, from several strings."""
        ports = PortRanges.fromStrings(["3000, 8000-8002", "22"])
        self.assertEqual(ports.ranges, ((22, 22), (3000, 3000), (8000, 8002)))
        for port in (22, 3000, 8000, 8001, 8002):
            self.assertIn(port, ports)
        for port in (0, 21, 23, 2999, 3001, 7999, 8003, 65535):
            self.assertNotIn(port, ports)
        self.assertEqual(str(ports), "22,3000,8000-8002")

    def test_overlapsMerged(self) -> None:
        """Overlapping and adjacent ranges are merged."""
        ports = PortRanges.fromStrings(["10-20,15-30,31,40"])
        self.assertEqual(ports.ranges, ((10, 31), (40, 40)))

    def test_empty(self) -> None:
        """No string, or empty items, list no port."""
        self.assertFalse(PortRanges.fromStrings([]))
        self.assertFalse(PortRanges.fromStrings([" , "]))
        self.assertNotIn(80, PortRanges())

    def test_malformed(self) -> None:
        """Port 0, ports past 65535, reversed ranges and words are refused."""
        for bad in ["0", "65536", "20-10", "http", "1-", "-5", "1-2-3", "0-10"]:
            with self.assertRaises(ValueError, msg=bad):
                PortRanges.fromStrings([bad])
