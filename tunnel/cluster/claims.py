"""
What a node stores with its claim on a client's session, for the other
nodes: the client's own access rule (they check it before they forward),
and the instance the client named itself by (so that they tell one client
connected to several nodes from two clients with one identifier). JSON.
"""

from __future__ import annotations

import json

import attrs

from tunnel.cluster.accesstext import decodeAccess, encodeAccess
from tunnel.core.access import AccessRule


@attrs.frozen
class Claim:
    """
    What a claim says of its client.

    @ivar access: whom the client asked its hosts to admit, if it asked.
    @ivar instance: the client process's instance (hex), if it sent one.
    """

    access: AccessRule | None = None
    instance: str | None = None

    def encode(self) -> str:
        """The text stored with the claim."""
        return json.dumps({"access": encodeAccess(self.access), "instance": self.instance or ""})


def decodeClaim(text: str) -> Claim:
    """
    The claim L{Claim.encode} wrote.

    @raise ValueError: if C{text} is not what it writes.
    """
    fields = json.loads(text)
    if not isinstance(fields, dict) or not all(
        isinstance(fields.get(name), str) for name in ("access", "instance")
    ):
        raise ValueError("a stored claim is not an object of an access rule and an instance")
    return Claim(decodeAccess(fields["access"]), fields["instance"] or None)
