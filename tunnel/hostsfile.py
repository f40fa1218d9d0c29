"""
The hosts file: virtual hosts and their identifiers, one C{HOST=IDENTIFIER}
per line, so that identifiers need not appear on a command line.

Blank lines and lines starting with C{#} are ignored. The file is rewritten
atomically (a temporary file in the same directory, then a rename), so a
crash never leaves it half written.
"""

from __future__ import annotations

from typing import Callable

from tunnel.atomicfile import writeAtomically

from tunnel.core.http import normaliseHost

_HEADER = (
    "# tunnel-server hosts file: one HOST=IDENTIFIER per line.\n"
    "# Identifiers are secrets: keep this file readable by the server only.\n"
)


class HostsFileError(ValueError):
    """The hosts file could not be read."""


def parseAssignment(text: str, form: str, fromRight: bool = False) -> tuple[str, str]:
    """
    Split C{NAME=VALUE} at the first C{=} (or the last one, C{fromRight}).

    @param form: how the value should look, for the error message.
    @raise ValueError: if either side is empty or there is no C{=}.
    """
    left, sep, right = text.rpartition("=") if fromRight else text.partition("=")
    if not sep or not left.strip() or not right.strip():
        raise ValueError(f"expected {form}, got {text!r}")
    return left.strip(), right.strip()


def readHostsFile(path: str) -> dict[str, str]:
    """
    Read a hosts file.

    @return: identifiers by lower-cased host; an absent file reads as empty.
    @raise HostsFileError: naming the file and line of a malformed entry.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise HostsFileError(f"cannot read hosts file {path}: {e.strerror}") from None
    hosts = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            host, identifier = parseAssignment(line, "HOST=IDENTIFIER")
            hosts[normaliseHost(host)] = identifier
        except ValueError as e:
            raise HostsFileError(f"{path}, line {number}: {e}") from None
    return hosts


def writeHostsFile(path: str, hosts: dict[str, str]) -> None:
    """
    Replace the hosts file atomically with the given hosts, readable and
    writable by the owner only.
    """
    writeAtomically(path, _HEADER + "".join(f"{host}={hosts[host]}\n" for host in sorted(hosts)))


def updateHostsFile(path: str, change: Callable[[dict[str, str]], object]) -> None:
    """
    Read the hosts file, apply C{change} to its hosts, and write it back
    atomically.

    @raise OSError: if it cannot be written.
    @raise HostsFileError: if it cannot be read.
    """
    hosts = readHostsFile(path)
    change(hosts)
    writeHostsFile(path, hosts)
