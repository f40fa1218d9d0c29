"""
The tunnel's control protocol above yamux, sans I/O: the control request
that turns a connection into a tunnel session, the handshake on the control
stream, and the JSON control messages.

See C{doc/protocol.rst} for the protocol in words.
"""

from __future__ import annotations

import enum
import json
import re
from typing import Iterable, Sequence

import attrs

from tunnel.core.access import AccessRule, parseNetworkList
from tunnel.core.http import isValidHost

#: The path of the HTTP request that turns a connection into a tunnel session.
CONTROL_PATH = b"/_controlPath/"

#: The header carrying the client's identifier on the control request.
IDENTIFIER_HEADER = b"X-KTunnel-Identifier"

#: The server's answer to an accepted control request, byte for byte what
#: the Go server sends. Clients accept C{\r\n} line ends as well.
CONNECTED_RESPONSE = b"HTTP/1.1 200 Connected to Tunnel\n\n"

#: The header in which our client offers protocol extensions on the control
#: request, and our server says which it accepted on its C{200}. The Go
#: peers neither send nor read it, so with them nothing changes.
FEATURES_HEADER = b"X-Tunnel-Features"

#: The extension in which the server opens each stream itself, writing the
#: control message as the stream's first line, instead of asking the client
#: on the control stream and waiting for it to open one: a round trip less
#: per request.
SERVER_STREAMS = b"server-streams"

#: The extension in which the server says, on its C{200}, where the public
#: reaches the client: the URL of each virtual host and the address of each
#: TCP listener bound to its identifier, in L{ADDRESSES_HEADER}.
ADDRESSES = b"addresses"

#: The extension in which the server says, in a last control message
#: (L{Action.NOTICE}), why it closes a session: the client's host was
#: removed, a newer client replaced it, the server stops.
NOTICES = b"notices"

#: The extension in which the client asks the server to admit to its hosts
#: only some sources (L{ALLOW_HEADER}, L{DENY_HEADER}) or users
#: (L{CREDENTIALS_HEADER}), on top of what the server's operator set. A
#: client that asks must find it among the features the server accepted:
#: a server that ignored it (a Go one) would expose the hosts to everyone.
ACCESS = b"access"

#: The control request's headers of L{ACCESS}: comma-separated networks
#: (CIDR) or addresses allowed and denied, and the hex SHA-256 digests of
#: the C{USER:PASSWORD} pairs admitted (the passwords never leave the
#: client).
ALLOW_HEADER = b"X-Tunnel-Allow"
DENY_HEADER = b"X-Tunnel-Deny"
CREDENTIALS_HEADER = b"X-Tunnel-Credentials"

#: The most networks, and credentials, a client may ask for.
MAX_ACCESS_ITEMS = 64

#: The longest notice a client takes, and what it keeps of one: printable
#: ASCII only, so that a hostile server cannot write control sequences to
#: the user's terminal.
MAX_NOTICE = 300
_NOT_PRINTABLE = re.compile(r"[^ -~]")

#: The header of the server's C{200} that lists the addresses
#: (L{ADDRESSES}), comma-separated.
ADDRESSES_HEADER = b"X-Tunnel-Addresses"

#: The most addresses a client takes from the server, and the longest one:
#: what a client prints must stay a screenful.
MAX_ADDRESSES = 64
MAX_ADDRESS_LENGTH = 300

# What a client accepts as an address: a URL of printable ASCII without
# spaces or commas, so that a hostile server cannot write control sequences
# to the user's terminal.
_ADDRESS = re.compile(rb"(?:https?|tcp)://[!-+\--~]+")

#: The header of a control request carrying an account's token: a client
#: without an identifier the server knows asks it to register a virtual host
#: under its base domain (self-service hosts). Go peers never send it.
TOKEN_HEADER = b"X-Tunnel-Token"

#: The header of a control request naming the subdomain a client with a
#: token asks for; without it, the server picks a random free one.
SUBDOMAIN_HEADER = b"X-Tunnel-Subdomain"

#: The header of a control request naming the client process that sends
#: it: random, the same on each of its tunnels (one per server), so that the
#: nodes of a cluster tell one client connected to several of them from two
#: clients with one identifier. Go peers never send it.
INSTANCE_HEADER = b"X-Tunnel-Instance"

#: What an instance looks like: 32 hex digits.
INSTANCE = re.compile(rb"[0-9a-f]{32}")

#: The headers of the server's C{200} to a control request it registered a
#: host for: the client's new identifier, and the host.
REGISTERED_IDENTIFIER_HEADER = b"X-Tunnel-Identifier"
REGISTERED_HOST_HEADER = b"X-Tunnel-Host"

#: The longest identifier a client takes from the server.
MAX_IDENTIFIER_LENGTH = 256

# One DNS label: what a client may ask for as its subdomain.
_SUBDOMAIN = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

# An identifier as a server gives it: printable ASCII without spaces.
_IDENTIFIER = re.compile(rb"[!-~]{1,%d}" % MAX_IDENTIFIER_LENGTH)

#: What the client writes first on the control stream, in one Data frame.
HANDSHAKE_REQUEST = b"controlHandshake"

#: What the server answers on the control stream, in one Data frame.
HANDSHAKE_RESPONSE = b"controlOk"

#: The longest control message line accepted, as a bound on memory.
MAX_CONTROL_LINE = 64 * 1024


@attrs.frozen
class Registered:
    """
    What the server registered for a client with a token: its virtual host
    and its new identifier.
    """

    host: str
    identifier: str = attrs.field(repr=lambda identifier: redactIdentifier(identifier))


def connectedResponse(
    features: Sequence[bytes] = (),
    addresses: Sequence[bytes] = (),
    registered: Registered | None = None,
) -> bytes:
    """
    The server's answer to an accepted control request: byte for byte
    L{CONNECTED_RESPONSE} when the client took no extension, else with the
    extensions it took (C{features}), for L{ADDRESSES} the addresses, and
    what it registered for a client with a token.
    """
    lines = [b"HTTP/1.1 200 Connected to Tunnel"]
    if features:
        lines.append(b"%s: %s" % (FEATURES_HEADER, b", ".join(features)))
    if addresses:
        lines.append(b"%s: %s" % (ADDRESSES_HEADER, b", ".join(addresses)))
    if registered is not None:
        lines.append(b"%s: %s" % (REGISTERED_HOST_HEADER, registered.host.encode("ascii")))
        lines.append(
            b"%s: %s" % (REGISTERED_IDENTIFIER_HEADER, registered.identifier.encode("ascii"))
        )
    return b"\n".join(lines) + b"\n\n"


def isSubdomain(label: bytes) -> bool:
    """Whether C{label} is one DNS label, as a client may ask for."""
    return _SUBDOMAIN.fullmatch(label) is not None


def readRegistered(hosts: Sequence[bytes], identifiers: Sequence[bytes]) -> Registered | None:
    """
    What a C{200}'s L{REGISTERED_HOST_HEADER} and
    L{REGISTERED_IDENTIFIER_HEADER} fields say was registered: L{None}
    unless there is one of each, a host name and an identifier of printable
    ASCII.
    """
    if len(hosts) != 1 or len(identifiers) != 1:
        return None
    host, identifier = hosts[0].strip(), identifiers[0].strip()
    if _IDENTIFIER.fullmatch(identifier) is None or not isValidHost(host):
        return None
    return Registered(host.decode("ascii").lower(), identifier.decode("ascii"))


#: The server's answer to a control request that asked for
#: L{SERVER_STREAMS}, which it accepts.
CONNECTED_WITH_SERVER_STREAMS = connectedResponse([SERVER_STREAMS])


def publicAddresses(
    hosts: Iterable[str], tcpPorts: Iterable[int], secure: bool, listenerPort: int, serverName: str
) -> list[bytes]:
    """
    Where the public reaches a client (L{ADDRESSES}): its virtual hosts as
    URLs of the scheme and port its control connection came through (a host
    that names its own port keeps it), and its TCP listeners at the name the
    client knows the server by.

    @param secure: whether the control connection came through TLS.
    @param listenerPort: the port of the listener it came through.
    @param serverName: the name the client calls the server, without port.
    """
    scheme = "https" if secure else "http"
    suffix = "" if listenerPort == (443 if secure else 80) else f":{listenerPort}"
    urls = [
        f"{scheme}://{host}/" if ":" in host else f"{scheme}://{host}{suffix}/"
        for host in hosts
    ]
    urls += [f"tcp://{serverName}:{port}" for port in tcpPorts]
    return [url.encode("ascii") for url in urls]


def readAddresses(values: Iterable[bytes]) -> tuple[str, ...]:
    """
    The addresses of a C{200}'s L{ADDRESSES_HEADER} fields: at most
    L{MAX_ADDRESSES}, each a URL of printable ASCII; anything else is
    dropped.
    """
    addresses = []
    for value in values:
        for item in value.split(b","):
            item = item.strip()
            if (
                len(item) <= MAX_ADDRESS_LENGTH
                and _ADDRESS.fullmatch(item)
                and len(addresses) < MAX_ADDRESSES
            ):
                addresses.append(item.decode("ascii"))
    return tuple(addresses)


def requestedAccess(rule: AccessRule) -> list[tuple[bytes, str]]:
    """The header fields of the control request that ask for C{rule} (L{ACCESS})."""
    fields = [
        (ALLOW_HEADER, ", ".join(str(network) for network in rule.allow)),
        (DENY_HEADER, ", ".join(str(network) for network in rule.deny)),
        (CREDENTIALS_HEADER, ", ".join(digest.hex() for digest in rule.credentials)),
    ]
    return [(name, value) for name, value in fields if value]


def readRequestedAccess(
    allow: Sequence[bytes], deny: Sequence[bytes], credentials: Sequence[bytes]
) -> AccessRule | None:
    """
    The rule the fields of a control request's L{ACCESS} headers ask for,
    or L{None} if they ask for nothing.

    @raise ValueError: if a network or digest is malformed, or there are
        more than L{MAX_ACCESS_ITEMS} of either.
    """
    def items(values: Sequence[bytes]) -> list[str]:
        found = [
            item.strip()
            for value in values
            for item in value.decode("ascii", "replace").split(",")
            if item.strip()
        ]
        if len(found) > MAX_ACCESS_ITEMS:
            raise ValueError(f"more than {MAX_ACCESS_ITEMS} items in one access list")
        return found

    allowed = parseNetworkList(items(allow))
    denied = parseNetworkList(items(deny))
    digests = []
    for item in items(credentials):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", item):
            raise ValueError(f"{item[:80]!r} is not the hex SHA-256 digest of USER:PASSWORD")
        digests.append(bytes.fromhex(item))
    if not (allowed or denied or digests):
        return None
    return AccessRule(allowed, denied, tuple(digests))


def connectRequest(
    identifier: str,
    host: str,
    features: bytes = b"",
    token: str | None = None,
    subdomain: str | None = None,
    access: AccessRule | None = None,
    instance: str | None = None,
) -> bytes:
    """
    The control request that asks the server for a tunnel session,
    offering the protocol extensions C{features} (comma-separated) if any;
    with an account's C{token}, asking for a host (at C{subdomain}) should
    the server not know C{identifier} (which may then be empty); with
    C{access}, asking the server to admit to its hosts only whom it says;
    with C{instance}, naming the client process (L{INSTANCE_HEADER}).
    """
    fields = [(b"Host", host)]
    if identifier:
        fields.append((IDENTIFIER_HEADER, identifier))
    if features:
        fields.append((FEATURES_HEADER, features.decode("ascii")))
    if token is not None:
        fields.append((TOKEN_HEADER, token))
        if subdomain is not None:
            fields.append((SUBDOMAIN_HEADER, subdomain))
    if access is not None:
        fields += requestedAccess(access)
    if instance is not None:
        fields.append((INSTANCE_HEADER, instance))
    head = b"".join(b"%s: %s\r\n" % (name, value.encode("ascii")) for name, value in fields)
    return b"CONNECT %s HTTP/1.1\r\n%s\r\n" % (CONTROL_PATH, head)


# A control message exactly as the Go encoder writes it.
_GO_ENCODED = re.compile(
    rb'\{"action":([0-9]{1,5}),"transportProtocol":([0-9]{1,5}),"localPort":([0-9]{1,5})\}'
)

class Action(enum.IntEnum):
    """What a control message asks for."""

    REQUEST_CLIENT_SESSION = 1
    #: Why the server closes the session (L{NOTICES}); never to Go peers.
    NOTICE = 2


class TransportProtocol(enum.IntEnum):
    """What a requested stream will carry."""

    HTTP = 1
    TCP = 2
    WEBSOCKET = 3


class ControlProtocolError(Exception):
    """A control message or the handshake was malformed."""


@attrs.frozen
class ControlMessage:
    """
    One message on the control stream.

    @ivar action: an L{Action}; only L{Action.REQUEST_CLIENT_SESSION} exists.
    @ivar transportProtocol: the L{TransportProtocol} of the stream asked for.
    @ivar notice: for L{Action.NOTICE}, why the server closes the session.
    @ivar localPort: for HTTP and WebSocket, the port of the public request's
        Host header when the server's operator exposed it (a C{host:port}
        virtual host, or the port of the public listener), else 0; for TCP,
        the port of the server's listener that accepted the connection.
    """

    action: int = Action.REQUEST_CLIENT_SESSION
    transportProtocol: int = TransportProtocol.HTTP
    localPort: int = 0
    notice: str = ""

    @classmethod
    def ofNotice(cls, text: str) -> ControlMessage:
        """A L{Action.NOTICE} message saying C{text}."""
        return cls(Action.NOTICE, 0, 0, readNotice(text))

    def encode(self) -> bytes:
        """The message as one JSON line, as the Go encoder writes it."""
        if self.action == Action.NOTICE:
            return json.dumps({"action": self.action, "notice": self.notice}).encode() + b"\n"
        return (
            b'{"action":%d,"transportProtocol":%d,"localPort":%d}\n'
            % (self.action, self.transportProtocol, self.localPort)
        )

    @classmethod
    def decode(cls, line: bytes) -> ControlMessage:
        """
        Parse one JSON line.

        @raise ControlProtocolError: if it is not a JSON object with integer
            fields (a numeric string is accepted for C{localPort}).
        """
        exact = _GO_ENCODED.fullmatch(line)
        if exact is not None:
            # The form the Go encoder and ours write: no JSON parser needed.
            values = [int(value) for value in exact.groups()]
            if max(values) <= 0xFFFF:
                return cls(*values)
        try:
            fields = json.loads(line)
        except ValueError as e:
            raise ControlProtocolError(f"control message is not JSON: {e}") from None
        if not isinstance(fields, dict):
            raise ControlProtocolError("control message is not a JSON object")
        values = []
        for name in ("action", "transportProtocol", "localPort"):
            value = fields.get(name, 0)
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if type(value) is not int or not 0 <= value <= 0xFFFF:
                raise ControlProtocolError(
                    f"control message field {name!r} is not a small integer: {value!r}"
                )
            values.append(value)
        notice = fields.get("notice") if values[0] == Action.NOTICE else None
        return cls(*values, notice=readNotice(notice) if isinstance(notice, str) else "")


def readNotice(text: str) -> str:
    """A notice as it is shown: printable ASCII, at most L{MAX_NOTICE} characters."""
    return _NOT_PRINTABLE.sub("?", text[:MAX_NOTICE])


class ControlLineReader:
    """
    Splits the control stream into messages.

    @ivar maxLine: the longest line accepted.
    """

    def __init__(self, maxLine: int = MAX_CONTROL_LINE) -> None:
        self.maxLine = maxLine
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[ControlMessage]:
        """
        Take bytes from the control stream.

        Only the new bytes are searched for a line end, and the partial line
        grows in place: a line sent a byte at a time costs time in
        proportion to its length, not to its square.

        @return: the complete messages they finish.
        @raise ControlProtocolError: on a malformed message or an overlong line.
        """
        buffer = self._buffer
        buffer += data
        lines: list[bytes] = []
        if b"\n" in data:
            *lines, rest = bytes(buffer).split(b"\n")
            self._buffer = buffer = bytearray(rest)
        if len(buffer) > self.maxLine or any(len(line) > self.maxLine for line in lines):
            raise ControlProtocolError(
                f"control message longer than {self.maxLine} bytes"
            )
        return [ControlMessage.decode(line) for line in lines if line.strip()]


class HandshakeReader:
    """
    Checks the handshake one end of the control stream expects from the
    other (L{HANDSHAKE_REQUEST} on the server, L{HANDSHAKE_RESPONSE} on the
    client), however it is split.

    @ivar expected: the handshake.
    @ivar complete: whether all of it arrived.
    """

    def __init__(self, expected: bytes) -> None:
        self.expected = expected
        self.complete = False
        self._received = b""

    def feed(self, data: bytes) -> bytes | None:
        """
        Take the next bytes of the control stream.

        @return: once the handshake is complete, the bytes that followed it
            (the first control messages; perhaps none); before, L{None}.
        @raise ControlProtocolError: if the bytes are not the handshake.
        """
        if self.complete:
            return data
        self._received += data
        size = len(self.expected)
        received = self._received[:size]
        if not self.expected.startswith(received):
            raise ControlProtocolError(f"bad handshake {received!r}")
        if len(received) < size:
            return None
        rest, self._received = self._received[size:], b""
        self.complete = True
        return rest


def redactIdentifier(identifier: str | bytes) -> str:
    """
    Show an identifier in logs without giving it away: its first four
    characters only.
    """
    if isinstance(identifier, bytes):
        identifier = identifier.decode("utf-8", "replace")
    return identifier[:4] + "…" if len(identifier) > 4 else "…"
