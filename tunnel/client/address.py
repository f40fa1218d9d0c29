"""
Reading the addresses a user gives the client: Twisted client endpoint
descriptions (C{tcp:...}, C{tls:...}, C{unix:...}) or bare C{HOST:PORT}.
"""

from __future__ import annotations

import re
from typing import Iterable

import attrs
from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import getPlugins

_BUILTIN_ENDPOINT_TYPES = frozenset({"tcp", "ssl", "unix"})
_PORT = re.compile(r"[0-9]{1,5}")


def isEndpointDescription(text: str) -> bool:
    """
    Whether C{text} is a Twisted client endpoint description, that is, starts
    with the name of an endpoint type (C{tcp}, C{ssl}, C{unix}, or the prefix
    of an installed endpoint parser plugin, such as C{tls}) and a colon.
    """
    kind, colon, _ = text.partition(":")
    if not colon:
        return False
    kind = kind.lower()
    if kind in _BUILTIN_ENDPOINT_TYPES:
        return True
    return any(
        plugin.prefix.lower() == kind
        for plugin in getPlugins(IStreamClientEndpointStringParserWithReactor)
    )


def parsePort(text: str) -> int:
    """
    Read a TCP port number (0 to 65535).

    @raise ValueError: if C{text} is not one.
    """
    if not _PORT.fullmatch(text) or int(text) > 0xFFFF:
        raise ValueError(f"not a port number: {text!r}")
    return int(text)


@attrs.frozen
class PortRanges:
    """
    A set of TCP ports, as ranges: what C{--local-ports 3000,8000-8100}
    lists.

    @ivar ranges: the inclusive ranges C{(low, high)}, sorted and merged.
    """

    ranges: tuple[tuple[int, int], ...] = ()

    @classmethod
    def fromStrings(cls, values: Iterable[str]) -> PortRanges:
        """
        Read comma-separated ports and ranges (C{3000,8000-8100}), from any
        number of strings. Port 0 is not a port that can be dialled.

        @raise ValueError: if an item is not a port from 1 to 65535 or a
            range C{LOW-HIGH} of such ports with C{LOW <= HIGH}.
        """
        ranges: list[tuple[int, int]] = []
        for value in values:
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                low, dash, high = item.partition("-")
                first = parsePort(low.strip())
                last = parsePort(high.strip()) if dash else first
                if first == 0 or last < first:
                    raise ValueError(f"not a port from 1 to 65535 nor a range of them: {item!r}")
                ranges.append((first, last))
        merged: list[tuple[int, int]] = []
        for first, last in sorted(ranges):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return cls(tuple(merged))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and any(
            first <= port <= last for first, last in self.ranges
        )

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __str__(self) -> str:
        return ",".join(
            str(first) if first == last else f"{first}-{last}" for first, last in self.ranges
        )


def parseHostPort(text: str) -> tuple[str, int]:
    """
    Read C{HOST:PORT}, with an IPv6 host in brackets (C{[::1]:8080}).

    @return: the host (without brackets) and the port.
    @raise ValueError: if C{text} is not of that form.
    """
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets, as in [::1]:8080: {text!r}")
    if not colon or not host:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host, parsePort(port)


def joinHostPort(host: str, port: int) -> str:
    """C{HOST:PORT}, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tcpDescription(host: str, port: int) -> str:
    """The Twisted client endpoint description of a TCP address."""
    return f"tcp:host={_escape(host)}:port={port}"


def hostFromDescription(description: str) -> str | None:
    """
    The C{HOST:PORT} a client endpoint description connects to, for an HTTP
    C{Host} header: its C{host} and C{port} arguments (by keyword or
    position), C{localhost} for a UNIX socket, or L{None} when the
    description names no host.
    """
    args, kwargs = _descriptionFields(description)
    kind = args.pop(0).lower() if args else ""
    if kind == "unix":
        return "localhost"
    host = kwargs.get("host", args.pop(0) if args else None)
    port = kwargs.get("port", args.pop(0) if args else None)
    if not host:
        return None
    return joinHostPort(host, int(port)) if port else host


def dialledHostPort(description: str) -> tuple[str, str, int] | None:
    """
    The kind (C{tcp} or C{tls}), host and port a client endpoint
    description dials, or L{None} for another kind or one without both.
    """
    args, kwargs = _descriptionFields(description)
    kind = args.pop(0).lower() if args else ""
    host = kwargs.get("host", args.pop(0) if args else None)
    port = kwargs.get("port", args.pop(0) if args else None)
    if kind not in ("tcp", "tls") or not host or not port or not port.isdigit():
        return None
    return kind, host, int(port)


def escapeField(value: str) -> str:
    """C{value} as one field of an endpoint description."""
    return _escape(value)


def _escape(value: str) -> str:
    return re.sub(r"([\\:=])", r"\\\1", value)


def _descriptionFields(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Split an endpoint description as Twisted does: fields are separated by
    unescaped colons, a field with an unescaped C{=} is a keyword argument,
    and a backslash escapes the next character.
    """
    fields: list[list[tuple[str, bool]]] = [[]]
    chars = iter(description)
    for char in chars:
        if char == "\\":
            fields[-1].append((next(chars, ""), True))
        elif char == ":":
            fields.append([])
        else:
            fields[-1].append((char, False))
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for field in fields:
        equals = [i for i, (char, escaped) in enumerate(field) if char == "=" and not escaped]
        if equals:
            key, value = field[: equals[0]], field[equals[0] + 1 :]
            kwargs["".join(c for c, _ in key)] = "".join(c for c, _ in value)
        else:
            args.append("".join(c for c, _ in field))
    return args, kwargs
