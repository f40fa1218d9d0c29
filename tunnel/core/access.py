"""
Who may reach a virtual host, sans I/O: the server's operator allows and
denies networks (CIDR) per host and may ask for a user name and password
(HTTP basic authentication); the server checks a public request against
them before anything is forwarded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from typing import Iterable, Union

import attrs

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def parseNetworks(text: str) -> tuple[Network, ...]:
    """
    Read a comma-separated list of networks (C{10.0.0.0/8}, C{2001:db8::/32})
    or addresses (a network of one).

    @raise ValueError: if an item is neither, or has host bits set
        (C{10.0.0.1/8}), which would say something other than meant.
    """
    networks = []
    for item in text.split(","):
        item = item.strip()
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as e:
            raise ValueError(f"{item!r} is not a network (CIDR) or address: {e}") from None
    return tuple(networks)


def parseNetworkList(items: Iterable[str]) -> tuple[Network, ...]:
    """
    The networks of several items, each as L{parseNetworks} reads it; none
    for no items.

    @raise ValueError: as L{parseNetworks} does.
    """
    return tuple(network for item in items for network in parseNetworks(item))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address C{text}, an IPv4-mapped IPv6 address as the IPv4 one."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _digest(user: bytes, password: bytes) -> bytes:
    return hashlib.sha256(user + b":" + password).digest()


def parseCredentials(text: str, origin: str) -> tuple[bytes, ...]:
    """
    Read C{USER:PASSWORD} lines (blank lines and C{#} comments aside) into
    what an L{AccessRule} keeps of them: a digest of each.

    @param origin: where the text comes from, for errors (never the text).
    @raise ValueError: if a line has no C{:} or an empty user or password,
        or there is no line at all.
    """
    digests = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        if not (colon and user and password):
            raise ValueError(f"{origin}, line {number}: expected USER:PASSWORD")
        digests.append(_digest(user.encode("utf-8"), password.encode("utf-8")))
    if not digests:
        raise ValueError(f"{origin} has no USER:PASSWORD line")
    return tuple(digests)


@attrs.frozen
class AccessRule:
    """
    Who a host admits.

    A source in a denied network is refused; otherwise, if any network is
    allowed, a source outside all of them is refused too. A source that is
    not an IP address (a Unix socket) is refused whenever there is a rule
    on networks. With credentials, a request must also carry one of them
    in an C{Authorization: Basic} header.

    @ivar allow: the networks admitted; all of them if empty.
    @ivar deny: the networks refused, whatever C{allow} says.
    @ivar credentials: digests of the C{USER:PASSWORD} pairs admitted (see
        L{parseCredentials}); none asked for if empty.
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()
    credentials: tuple[bytes, ...] = attrs.field(default=(), repr=False)

    def authorizes(self, authorization: bytes | None) -> bool:
        """
        Whether a request with this C{Authorization} header (L{None} for
        none) may reach the host. Every credential is compared, in constant
        time, so how long it takes says nothing of which came close.
        """
        if not self.credentials:
            return True
        scheme, _, encoded = (authorization or b"").strip().partition(b" ")
        try:
            pair = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, colon, password = pair.partition(b":")
        if scheme.lower() != b"basic" or not colon:
            return False
        presented = _digest(user, password)
        matches = [hmac.compare_digest(presented, digest) for digest in self.credentials]
        return any(matches)

    def permits(self, source: str) -> bool:
        """Whether a request from the address C{source} may reach the host."""
        address = _address(source)
        if address is None:
            return not (self.allow or self.deny)
        if any(address in network for network in self.deny):
            return False
        return not self.allow or any(address in network for network in self.allow)

    def merged(self, other: AccessRule) -> AccessRule:
        """
        This rule with the networks allowed and denied, and the
        credentials, of C{other} added to its own.
        """
        return AccessRule(
            self.allow + other.allow,
            self.deny + other.deny,
            self.credentials + other.credentials,
        )
