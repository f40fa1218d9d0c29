"""
The admin API's access rules: the body of C{PUT /hosts/NAME/access}.
"""

from __future__ import annotations

import json

from tunnel.core.access import AccessRule, parseCredentials, parseNetworkList
from tunnel.server.accessfile import stringList
from tunnel.server.jsonapi import JSONError

#: What the body of C{PUT /hosts/NAME/access} looks like, for errors.
ACCESS_FORM = '{"allow": [NETWORK, ...], "deny": [NETWORK, ...], "basicAuth": ["USER:PASSWORD", ...]}'


def accessRuleFromBody(body: bytes) -> AccessRule:
    """
    The rule a C{PUT /hosts/NAME/access} body asks for; each key may be
    left out, and an empty list asks for nothing.

    @raise JSONError: C{400}, saying what is malformed (never a password).
    """
    try:
        fields = json.loads(body)
        if not isinstance(fields, dict) or set(fields) - {"allow", "deny", "basicAuth"}:
            raise ValueError("expected an object with allow, deny and basicAuth only")
        users = stringList(fields, "basicAuth")
        return AccessRule(
            parseNetworkList(stringList(fields, "allow")),
            parseNetworkList(stringList(fields, "deny")),
            parseCredentials("\n".join(users), "basicAuth") if users else (),
        )
    except ValueError as e:
        raise JSONError(400, f"expected {ACCESS_FORM}: {e}") from None


def describeAccess(rule: AccessRule | None) -> dict[str, object] | None:
    """A rule as the admin API lists it: networks, and how many users."""
    if rule is None:
        return None
    return {
        "allow": [str(network) for network in rule.allow],
        "deny": [str(network) for network in rule.deny],
        "basicAuthUsers": len(rule.credentials),
    }
