"""
Tests for C{--every-address}: one tunnel to each address a server's name
resolves to.
"""

from __future__ import annotations

from twisted.internet.endpoints import clientFromString
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from tunnel.client.address import dialledHostPort
from tunnel.client.endpoint import ServerAddress, everyAddress, parseServerAddress
from tunnel.options import ClientOptions


def resolver(*addresses: str):
    asked = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return list(addresses)

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


class EveryAddressTests(SynchronousTestCase):
    def test_oneAddressForEachAnswer(self) -> None:
        """Each dials one address, in the answer's order, once; all keep the Host."""
        resolve = resolver("10.0.0.12", "10.0.0.11", "10.0.0.12", "2001:db8::1")
        addresses = everyAddress(parseServerAddress("tunnel.example.com:8080"), resolve)
        self.assertEqual(resolve.asked, [("tunnel.example.com", 8080)])
        reactor = MemoryReactor()
        dialled = []
        for address in addresses:
            self.assertEqual(address.host, "tunnel.example.com:8080")
            endpoint = clientFromString(reactor, address.description)
            dialled.append(endpoint._host)
        self.assertEqual(dialled, ["10.0.0.12", "10.0.0.11", "2001:db8::1"])

    def test_tlsChecksTheNameWhileDiallingTheAddress(self) -> None:
        addresses = everyAddress(
            parseServerAddress("https://tunnel.example.com"), resolver("10.0.0.11", "10.0.0.12")
        )
        reactor = MemoryReactor()
        for address, ip in zip(addresses, ("10.0.0.11", "10.0.0.12")):
            endpoint = clientFromString(reactor, address.description)
            self.assertEqual((endpoint._wrappedEndpoint._host, endpoint._wrappedEndpoint._port),
                             (ip, 443))
            # Twisted checks the certificate for the host of a tls: endpoint
            # given an endpoint of its own to dial.
            self.assertEqual(dialledHostPort(address.description),
                             ("tls", "tunnel.example.com", 443))

    def test_whatNamesNoHostStaysAsItIs(self) -> None:
        """An IP address, a UNIX socket, an endpoint of its own, or a name that does not resolve."""
        def failing(host: str, port: int) -> list[str]:
            raise OSError("no such name")

        for text in ("127.0.0.1:8080", "unix:/run/tunnel.sock",
                     r"tls:host=a.example:port=443:endpoint=tcp\:10.0.0.1\:443"):
            address = parseServerAddress(text)
            self.assertEqual(everyAddress(address, resolver("10.9.9.9")), [address])
        address = parseServerAddress("tunnel.example.com:80")
        self.assertEqual(everyAddress(address, failing), [address])
        self.assertEqual(everyAddress(address, resolver()), [address])

    def test_theOptionMakesATunnelOfEachAddress(self) -> None:
        options = ClientOptions()
        options.parseOptions(["--server", "localhost:8080", "--server", "127.0.0.1:8080",
                              "--every-address", "--identifier", "an-identifier-0123",
                              "--local", "3000"])
        self.assertEqual(
            [a.description for a in options["serverAddresses"]],
            ["tcp:host=127.0.0.1:port=8080"],
        )
        self.assertIsInstance(options["serverAddresses"][0], ServerAddress)
