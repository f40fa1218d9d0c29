"""
Which source addresses may reach a virtual host, sans I/O: the server's
operator allows and denies networks (CIDR) per host, and the server checks
a public request's address against them before anything is forwarded.
"""

from __future__ import annotations

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


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address C{text}, an IPv4-mapped IPv6 address as the IPv4 one."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@attrs.frozen
class AccessRule:
    """
    The networks a host admits.

    A source in a denied network is refused; otherwise, if any network is
    allowed, a source outside all of them is refused too. A source that is
    not an IP address (a Unix socket) is refused whenever there is a rule.

    @ivar allow: the networks admitted; all of them if empty.
    @ivar deny: the networks refused, whatever C{allow} says.
    """

    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    def permits(self, source: str) -> bool:
        """Whether a request from the address C{source} may reach the host."""
        address = _address(source)
        if address is None:
            return not (self.allow or self.deny)
        if any(address in network for network in self.deny):
            return False
        return not self.allow or any(address in network for network in self.allow)

    def adding(self, allow: Iterable[Network] = (), deny: Iterable[Network] = ()) -> AccessRule:
        """This rule with more networks allowed and denied."""
        return AccessRule(self.allow + tuple(allow), self.deny + tuple(deny))
