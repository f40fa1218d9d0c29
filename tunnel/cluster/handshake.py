"""
How two nodes of a cluster show each other that they share its secret
before a link carries anything, sans I/O.

The node that dials speaks first; three lines, then the link is a yamux
session (the dialer its client)::

    dialer   -> TUNNEL-NODE/1 HELLO <dialer> <dialer nonce>
    listener -> TUNNEL-NODE/1 CHALLENGE <listener> <listener nonce> <listener proof>
    dialer   -> TUNNEL-NODE/1 PROOF <dialer proof>

Each proof is an HMAC (see L{ClusterKey.proof}) of both nonces and both
names under a key derived from the cluster secret, the role first: the
listener's is bound to the nonce the dialer just chose, the dialer's to the
listener's, so neither can be replayed from another handshake, nor one
side's reflected as the other's. The dialer checks the listener's proof
before it proves anything itself, and sends nothing else before it checked
it; the listener takes nothing from the link before the dialer's proof.
"""

from __future__ import annotations

import enum
import re

import attrs

from tunnel.cluster.keys import ClusterKey

PREFIX = b"TUNNEL-NODE/1 "
#: The longest handshake line, its line end included.
MAX_LINE = 256
#: The bytes of a nonce, before it is written in hex.
NONCE_BYTES = 16

_NODE = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_NONCE = re.compile(rb"[0-9a-f]{%d}" % (2 * NONCE_BYTES,))
_PROOF = re.compile(rb"[0-9a-f]{64}")
#: The first byte of a TLS record that may open a connection: a handshake
#: (a client's hello) or an alert (a server refusing what is not TLS).
#: No handshake line starts with either.
_TLS_RECORDS = (b"\x16", b"\x15")


class HandshakeError(Exception):
    """The other side broke the handshake, or does not know the secret."""


class Role(enum.Enum):
    """Which end of a link a node is."""

    DIALER = b"dialer"
    LISTENER = b"listener"


class Stage(enum.Enum):
    """What a handshake waits for."""

    HELLO = "hello"
    CHALLENGE = "challenge"
    PROOF = "proof"
    DONE = "done"


def isNodeName(name: str) -> bool:
    """Whether C{name} may name a node: 1 to 64 letters, digits and C{._:-}."""
    return _NODE.fullmatch(name.encode("ascii", "replace")) is not None


@attrs.frozen
class Linked:
    """
    The handshake succeeded.

    @ivar peer: the other node's name.
    @ivar rest: what came after the handshake: the start of the yamux
        session.
    """

    peer: str
    rest: bytes


class LinkHandshake:
    """
    One side of the handshake of a link.

    @ivar stage: what it waits for.
    """

    def __init__(self, role: Role, key: ClusterKey, node: str, nonce: bytes) -> None:
        """
        @param node: this node's name (see L{isNodeName}).
        @param nonce: L{NONCE_BYTES} random bytes, never used again.
        """
        if not isNodeName(node):
            raise ValueError(f"{node!r} cannot name a node")
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce has {NONCE_BYTES} bytes")
        self.role = role
        self.stage = Stage.CHALLENGE if role is Role.DIALER else Stage.HELLO
        self._key = key
        self._node = node.encode("ascii")
        self._nonce = nonce.hex().encode("ascii")
        self._peer = b""
        self._peerNonce = b""
        self._buffer = b""

    def start(self) -> bytes:
        """What to send first: the dialer's hello; nothing for the listener."""
        if self.role is Role.DIALER:
            return PREFIX + b"HELLO %s %s\r\n" % (self._node, self._nonce)
        return b""

    def receive(self, data: bytes) -> tuple[bytes, Linked | None]:
        """
        Read what the other side sent.

        @return: what to send it, and, once the handshake is over, the
            L{Linked} outcome.
        @raise HandshakeError: if what it sent is malformed, too long, or
            proves nothing.
        """
        if self.stage is Stage.DONE:
            raise HandshakeError("the handshake is over")
        first = not self._buffer and self.stage in (Stage.HELLO, Stage.CHALLENGE)
        self._buffer += data
        if first and self._buffer[:1] in _TLS_RECORDS:
            other = "dialling node" if self.role is Role.LISTENER else "node dialled"
            raise HandshakeError(
                f"the {other} speaks TLS on its links (--cluster-tls), and this one does not"
            )
        out = []
        while self.stage is not Stage.DONE:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) >= MAX_LINE:
                    raise HandshakeError("a handshake line is too long")
                return b"".join(out), None
            if end + 2 > MAX_LINE:
                raise HandshakeError("a handshake line is too long")
            line, self._buffer = self._buffer[:end], self._buffer[end + 2:]
            out.append(self._line(line))
        rest, self._buffer = self._buffer, b""
        return b"".join(out), Linked(self._peer.decode("ascii"), rest)

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(PREFIX):
            raise HandshakeError("the other side does not speak the node link protocol")
        words = line[len(PREFIX):].split(b" ")
        expected = {
            Stage.HELLO: (b"HELLO", _NODE, _NONCE),
            Stage.CHALLENGE: (b"CHALLENGE", _NODE, _NONCE, _PROOF),
            Stage.PROOF: (b"PROOF", _PROOF),
        }[self.stage]
        if len(words) != len(expected) or words[0] != expected[0] or not all(
            pattern.fullmatch(word) for pattern, word in zip(expected[1:], words[1:])
        ):
            raise HandshakeError(
                f"expected {expected[0].decode()}, got a malformed or other line"
            )
        if self.stage is Stage.HELLO:
            self._peer, self._peerNonce = words[1], words[2]
            self.stage = Stage.PROOF
            proof = self._key.proof(
                Role.LISTENER.value, self._peerNonce, self._nonce, self._node, self._peer
            )
            return PREFIX + b"CHALLENGE %s %s %s\r\n" % (self._node, self._nonce, proof)
        if self.stage is Stage.CHALLENGE:
            self._peer, self._peerNonce = words[1], words[2]
            if not self._key.checkProof(
                words[3], Role.LISTENER.value, self._nonce, self._peerNonce, self._peer, self._node
            ):
                raise HandshakeError("the node dialled does not know the cluster secret")
            self.stage = Stage.DONE
            proof = self._key.proof(
                Role.DIALER.value, self._peerNonce, self._nonce, self._node, self._peer
            )
            return PREFIX + b"PROOF %s\r\n" % (proof,)
        if not self._key.checkProof(
            words[1], Role.DIALER.value, self._nonce, self._peerNonce, self._peer, self._node
        ):
            raise HandshakeError("the dialling node does not know the cluster secret")
        self.stage = Stage.DONE
        return b""
