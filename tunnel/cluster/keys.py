"""
The cluster secret, and what is derived from it: the keys identifiers are
stored under (so that Redis never holds one in clear), and the proofs nodes
give each other when they link.
"""

from __future__ import annotations

import hashlib
import hmac

#: The fewest bytes a cluster secret may have.
MIN_SECRET_BYTES = 16


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"tunnel cluster " + purpose, hashlib.sha256).digest()


class ClusterKey:
    """
    The secret every node of a cluster shares.

    Three keys are derived from it, one per use, so that a proof of one
    kind can never stand for another: one names identifiers in the shared
    store, one makes the digests of account tokens kept there, one
    authenticates the links between nodes.
    """

    def __init__(self, secret: bytes) -> None:
        """
        @raise ValueError: if C{secret} has fewer than L{MIN_SECRET_BYTES}
            bytes.
        """
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"a cluster secret needs {MIN_SECRET_BYTES} bytes at least; "
                f"this one has {len(secret)}"
            )
        self._names = _derive(secret, b"identifier names")
        self._tokens = _derive(secret, b"account tokens")
        self._links = _derive(secret, b"node links")

    def identifierKey(self, identifier: bytes) -> str:
        """
        The name C{identifier} is stored under: hex, the same on every node,
        that says nothing of the identifier to whoever reads the store.
        """
        return hmac.new(self._names, identifier, hashlib.sha256).hexdigest()

    def tokenDigest(self, token: bytes) -> bytes:
        """
        The digest an account's C{token} is known by in the cluster (see
        L{tunnel.server.accounts.Accounts}): the same on every node, and of
        no use to guess the token with to whoever reads the store.
        """
        return hmac.new(self._tokens, token, hashlib.sha256).digest()

    def proof(self, role: bytes, *parts: bytes) -> bytes:
        """
        What a node in C{role} (C{b"dialer"} or C{b"listener"}) sends to show
        it knows the secret, bound to C{parts} (the nonces and node names
        of one handshake), hex.
        """
        mac = hmac.new(self._links, role, hashlib.sha256)
        for part in parts:
            mac.update(b"\0" + part)
        return mac.hexdigest().encode("ascii")

    def checkProof(self, proof: bytes, role: bytes, *parts: bytes) -> bool:
        """Whether C{proof} is L{proof} of these, compared in constant time."""
        return hmac.compare_digest(proof, self.proof(role, *parts))
