"""
Self-service hosts: a client with an account's token gets a virtual host
under the server's base domain, and the identifier for it, on its control
request (see L{tunnel.core.control.TOKEN_HEADER}).

The account is part of the identifiers it gets (C{ACCOUNT~SECRET}): who
holds which host needs no record beside the hosts file, and a host counts
against its account's limit across restarts and reloads.
"""

from __future__ import annotations

import secrets
import string
from typing import Callable

import attrs
from twisted.logger import Logger

from tunnel.core.control import isSubdomain, redactIdentifier
from tunnel.core.http import normaliseHost
from tunnel.hostsfile import updateHostsFile
from tunnel.server.accounts import Account, Accounts
from tunnel.server.registry import Registry

#: Letters of a random subdomain, and how many.
_RANDOM_ALPHABET = string.ascii_lowercase + string.digits
RANDOM_SUBDOMAIN_LENGTH = 10

#: What separates the account's name from the secret in its identifiers.
ACCOUNT_SEPARATOR = "~"


class RegistrationError(Exception):
    """
    A registration was refused.

    @ivar code: the HTTP status to answer the control request with.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class Registration:
    """
    A host registered for a client.

    @ivar host: the virtual host, under the base domain.
    @ivar identifier: the client's new identifier.
    @ivar account: the account it counts against.
    """

    host: str
    identifier: str = attrs.field(repr=redactIdentifier)
    account: str


def randomSubdomain() -> str:
    """A random subdomain: a letter, then letters and digits."""
    first = secrets.choice(string.ascii_lowercase)
    rest = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(RANDOM_SUBDOMAIN_LENGTH - 1))
    return first + rest


def accountOf(identifier: bytes) -> str | None:
    """The name of the account an identifier was registered for, if any."""
    name, separator, _ = identifier.partition(ACCOUNT_SEPARATOR.encode())
    return name.decode("ascii", "replace") if separator else None


class SelfService:
    """
    Registers hosts under C{domain} for clients that present an account's
    token.

    @ivar domain: the base domain.
    @ivar accounts: who may register (replaced when the accounts file is
        reloaded).
    """

    _log = Logger()

    def __init__(
        self,
        domain: str,
        accounts: Accounts,
        registry: Registry,
        hostsFile: str | None = None,
        subdomainFactory: Callable[[], str] = randomSubdomain,
    ) -> None:
        """
        @param hostsFile: where registrations are saved, if anywhere.
        @raise ValueError: if C{domain} is not a host name without port.
        """
        self.domain = normaliseHost(domain)
        if ":" in self.domain:
            raise ValueError(f"the base domain {domain!r} must not have a port")
        self.accounts = accounts
        self._registry = registry
        self._hostsFile = hostsFile
        self._subdomainFactory = subdomainFactory

    def account(self, token: bytes) -> Account | None:
        """The account of C{token}, if it is one's."""
        return self.accounts.find(token)

    def register(self, account: Account, subdomain: bytes | None) -> Registration:
        """
        Register C{subdomain} (a random free one if L{None}) under the base
        domain for C{account}, with a new identifier, saved to the hosts
        file first if there is one.

        @raise RegistrationError: if the subdomain is malformed (400) or
            taken (409), the account holds as many hosts as it may (403),
            or the hosts file cannot be saved (500).
        """
        held = self._heldBy(account.name)
        if held >= account.maxHosts:
            raise RegistrationError(
                403,
                f"account {account.name} holds {held} hosts, as many as it may; free one "
                "(ask the server's operator to delete it) or reuse its identifier",
            )
        host = self._host(subdomain)
        identifier = f"{account.name}{ACCOUNT_SEPARATOR}{secrets.token_urlsafe(32)}"
        if self._hostsFile is not None:
            try:
                updateHostsFile(self._hostsFile, lambda hosts: hosts.__setitem__(host, identifier))
            except (OSError, ValueError) as e:
                self._log.error(
                    "Cannot save the hosts file {path} for a registration: {error}",
                    path=self._hostsFile,
                    error=e,
                )
                raise RegistrationError(500, "the server could not save the registration") from None
        self._registry.addHost(host, identifier.encode("ascii"))
        self._log.info(
            "Registered host {host} for account {account} (identifier {identifier})",
            host=host,
            account=account.name,
            identifier=redactIdentifier(identifier),
        )
        return Registration(host, identifier, account.name)

    def _heldBy(self, name: str) -> int:
        return sum(
            1
            for status in self._registry.hosts()
            if accountOf(self._registry.identifierOf(status.host)) == name
        )

    def _host(self, subdomain: bytes | None) -> str:
        if subdomain is None:
            for _ in range(20):
                host = f"{self._subdomainFactory()}.{self.domain}"
                if not self._registry.hasHost(host):
                    return host
            raise RegistrationError(503, "no free random subdomain was found; ask for one")
        if not isSubdomain(subdomain):
            raise RegistrationError(
                400,
                "a subdomain is 1 to 63 letters, digits and '-', not starting or ending "
                "with '-'",
            )
        host = f"{subdomain.decode('ascii').lower()}.{self.domain}"
        if self._registry.hasHost(host):
            raise RegistrationError(
                409, f"{host} is taken; ask for another subdomain, or for none to get a random one"
            )
        return host
