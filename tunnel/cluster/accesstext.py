"""
A client's own access rule as it is stored with its claim, for the nodes
that forward to it to check: the fields of the control request that asked
for it, as JSON (the passwords are digests, as the rule holds them).
"""

from __future__ import annotations

import json

from tunnel.core.access import AccessRule
from tunnel.core.control import (
    ALLOW_HEADER,
    CREDENTIALS_HEADER,
    DENY_HEADER,
    readRequestedAccess,
    requestedAccess,
)

_ACCESS_FIELDS = (ALLOW_HEADER, DENY_HEADER, CREDENTIALS_HEADER)


def encodeAccess(rule: AccessRule | None) -> str:
    """The text that stands for C{rule}; empty for none."""
    if rule is None:
        return ""
    return json.dumps({name.decode(): value for name, value in requestedAccess(rule)})


def decodeAccess(text: str) -> AccessRule | None:
    """
    The rule L{encodeAccess} wrote.

    @raise ValueError: if C{text} is not what it writes.
    """
    if not text:
        return None
    fields = json.loads(text)
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise ValueError("a stored access rule is not an object of strings")
    values = (fields.get(name.decode(), "").encode("ascii") for name in _ACCESS_FIELDS)
    return readRequestedAccess(*([value] for value in values))
