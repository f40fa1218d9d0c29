"""
The access file: the access rules the admin API set, kept so that they
survive a restart. JSON, rewritten atomically, readable by the server
only::

    {"hosts": {"app.tunnel.example.com": {
        "allow": ["10.0.0.0/8"], "deny": [], "credentials": ["<hex SHA-256>"]}}}

Credentials are the digests of C{USER:PASSWORD}, as the server keeps them:
the file holds no password.
"""

from __future__ import annotations

import json
from typing import Callable

from tunnel.atomicfile import writeAtomically
from tunnel.core.access import AccessRule, parseNetworkList
from tunnel.core.http import normaliseHost


class AccessFileError(ValueError):
    """The access file could not be read, or is malformed."""


def stringList(fields: dict, name: str) -> list[str]:
    """
    The list of strings under C{name} in a JSON object; none if absent.

    @raise ValueError: if it is something else.
    """
    value = fields.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of strings")
    return value


def _rule(fields: object) -> AccessRule:
    if not isinstance(fields, dict):
        raise ValueError("a rule is an object")
    return AccessRule(
        parseNetworkList(stringList(fields, "allow")),
        parseNetworkList(stringList(fields, "deny")),
        tuple(bytes.fromhex(digest) for digest in stringList(fields, "credentials")),
    )


def readAccessFile(path: str) -> dict[str, AccessRule]:
    """
    Read an access file; one that does not exist reads as no rules.

    @raise AccessFileError: naming the file and what is wrong.
    """
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
        hosts = content["hosts"]
        return {normaliseHost(host): _rule(fields) for host, fields in hosts.items()}
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise AccessFileError(f"cannot read access file {path}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise AccessFileError(f"access file {path} is malformed: {e}") from None


def updateAccessFile(
    path: str, change: Callable[[dict[str, AccessRule]], object]
) -> None:
    """
    Read the access file, apply C{change} to its rules, and write it back
    atomically.

    @raise OSError: if it cannot be written.
    @raise AccessFileError: if it cannot be read.
    """
    rules = readAccessFile(path)
    change(rules)
    content = {
        host: {
            "allow": [str(network) for network in rule.allow],
            "deny": [str(network) for network in rule.deny],
            "credentials": [digest.hex() for digest in rule.credentials],
        }
        for host, rule in sorted(rules.items())
    }
    writeAtomically(path, json.dumps({"hosts": content}, indent=2) + "\n")
