"""
The accounts file: who may register virtual hosts for themselves under the
server's base domain (C{--domain}), and how many.

One account per line, three fields separated by spaces::

    # NAME     MAX_HOSTS  TOKEN
    alice      3          Zm9vYmFyYmF6cXV4...
    ci-bots    20         c2VjcmV0LXRva2Vu...

C{NAME} is letters, digits, C{.}, C{_} and C{-}; C{MAX_HOSTS} the most hosts
the account may hold at once; C{TOKEN} the secret its clients send (at
least L{MIN_TOKEN_LENGTH} characters, printable, no spaces). Blank lines and
lines starting with C{#} are ignored.

Tokens are secrets: they are looked up by their SHA-256 digest and compared
in constant time, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re

import attrs

#: The shortest token accepted: guessing one must be out of reach.
MIN_TOKEN_LENGTH = 16

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TOKEN = re.compile(r"[!-~]+")


class AccountsFileError(ValueError):
    """The accounts file could not be read, or a line of it is malformed."""


@attrs.frozen
class Account:
    """
    Who may register hosts for themselves.

    @ivar name: the account's name, shown in logs and the admin API.
    @ivar maxHosts: the most hosts it may hold at once.
    """

    name: str
    maxHosts: int
    _tokenDigest: bytes = attrs.field(repr=False)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class Accounts:
    """The accounts of an accounts file, found by token."""

    def __init__(self, accounts: dict[str, tuple[int, str]] | None = None) -> None:
        """
        @param accounts: for each account name, its host limit and token.
        @raise ValueError: if a name, limit or token is malformed, or two
            accounts share a token.
        """
        self._byDigest: dict[bytes, Account] = {}
        for name, (maxHosts, token) in (accounts or {}).items():
            self._add(_account(name, maxHosts, token))

    def __len__(self) -> int:
        return len(self._byDigest)

    def _add(self, account: Account) -> None:
        if account._tokenDigest in self._byDigest:
            raise ValueError(f"account {account.name} has the token of another account")
        self._byDigest[account._tokenDigest] = account

    def find(self, token: bytes) -> Account | None:
        """The account whose token is C{token}, or L{None}."""
        digest = _digest(token)
        account = self._byDigest.get(digest)
        if account is None or not hmac.compare_digest(account._tokenDigest, digest):
            return None
        return account


def _account(name: str, maxHosts: int, token: str) -> Account:
    if not _NAME.fullmatch(name):
        raise ValueError(f"account name {name!r} is not letters, digits, '.', '_' and '-'")
    if maxHosts < 0:
        raise ValueError(f"account {name}: the host limit must not be negative")
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"account {name}: the token must be printable, without spaces")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"account {name}: the token is shorter than {MIN_TOKEN_LENGTH} characters "
            "(make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return Account(name, maxHosts, _digest(token.encode("ascii")))


def readAccountsFile(path: str) -> Accounts:
    """
    Read an accounts file.

    @raise AccountsFileError: naming the file, and the line of a malformed
        entry.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        raise AccountsFileError(f"cannot read accounts file {path}: {e.strerror}") from None
    accounts = Accounts()
    names: set[str] = set()
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            fields = line.split()
            if len(fields) != 3 or not fields[1].isdigit():
                raise ValueError("expected NAME MAX_HOSTS TOKEN")
            name, maxHosts, token = fields[0], int(fields[1]), fields[2]
            if name in names:
                raise ValueError(f"account {name} is given twice")
            names.add(name)
            accounts._add(_account(name, maxHosts, token))
        except ValueError as e:
            raise AccountsFileError(f"{path}, line {number}: {e}") from None
    return accounts
