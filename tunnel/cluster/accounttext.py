"""
An account as the shared configuration stores it: C{MAX_HOSTS DIGEST}, its
host limit and the hex digest of its token (made with the cluster's key,
see L{tunnel.cluster.keys.ClusterKey.tokenDigest}); never the token.
"""

from __future__ import annotations

import re

from tunnel.server.accounts import Account, isAccountName

_STORED = re.compile(r"([0-9]{1,9}) ([0-9a-f]{64})")


def encodeAccount(account: Account) -> str:
    """The text that stands for C{account}, under its name."""
    return f"{account.maxHosts} {account.tokenDigest.hex()}"


def decodeAccount(name: str, text: str) -> Account:
    """
    The account named C{name} that L{encodeAccount} wrote as C{text}.

    @raise ValueError: if either is not what it writes.
    """
    match = _STORED.fullmatch(text)
    if match is None or not isAccountName(name):
        raise ValueError(f"the stored account {name!r} is malformed")
    return Account(name, int(match.group(1)), bytes.fromhex(match.group(2)))
