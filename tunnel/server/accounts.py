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

Tokens are secrets: they are looked up by their digest (SHA-256, or in a
cluster an HMAC under the cluster's key, see L{Accounts}) and compared in
constant time, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Callable, Iterator

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
    @ivar tokenDigest: the digest of its token (see L{Accounts}).
    """

    name: str
    maxHosts: int
    tokenDigest: bytes = attrs.field(repr=False)


#: What makes a token's digest.
TokenDigest = Callable[[bytes], bytes]


def sha256Digest(token: bytes) -> bytes:
    """The digest of a token on a server on its own: its SHA-256."""
    return hashlib.sha256(token).digest()


class Accounts:
    """
    Accounts, found by token.

    @ivar digest: what makes a token's digest, the one the accounts were
        made with.
    """

    def __init__(
        self,
        accounts: dict[str, tuple[int, str]] | None = None,
        digest: TokenDigest = sha256Digest,
    ) -> None:
        """
        @param accounts: for each account name, its host limit and token.
        @raise ValueError: if a name, limit or token is malformed, or two
            accounts share a token.
        """
        self.digest = digest
        self._byDigest: dict[bytes, Account] = {}
        for name, (maxHosts, token) in (accounts or {}).items():
            self.add(_account(name, maxHosts, token, digest))

    def __len__(self) -> int:
        return len(self._byDigest)

    def __iter__(self) -> Iterator[Account]:
        """Every account, by name."""
        return iter(sorted(self._byDigest.values(), key=lambda account: account.name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Accounts):
            return NotImplemented
        return self._byDigest == other._byDigest

    def add(self, account: Account) -> None:
        """
        Add C{account}, whose token digest L{digest} made.

        @raise ValueError: if another has its token.
        """
        if account.tokenDigest in self._byDigest:
            raise ValueError(f"account {account.name} has the token of another account")
        self._byDigest[account.tokenDigest] = account

    def find(self, token: bytes) -> Account | None:
        """The account whose token is C{token}, or L{None}."""
        digest = self.digest(token)
        account = self._byDigest.get(digest)
        if account is None or not hmac.compare_digest(account.tokenDigest, digest):
            return None
        return account


def _account(name: str, maxHosts: int, token: str, digest: TokenDigest) -> Account:
    if not isAccountName(name):
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
    return Account(name, maxHosts, digest(token.encode("ascii")))


def isAccountName(name: str) -> bool:
    """Whether C{name} can name an account."""
    return _NAME.fullmatch(name) is not None


def readAccountsFile(path: str, digest: TokenDigest = sha256Digest) -> Accounts:
    """
    Read an accounts file, making the digests of its tokens with C{digest}.

    @raise AccountsFileError: naming the file, and the line of a malformed
        entry.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except OSError as e:
        raise AccountsFileError(f"cannot read accounts file {path}: {e.strerror}") from None
    accounts = Accounts(digest=digest)
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
            accounts.add(_account(name, maxHosts, token, digest))
        except ValueError as e:
            raise AccountsFileError(f"{path}, line {number}: {e}") from None
    return accounts
