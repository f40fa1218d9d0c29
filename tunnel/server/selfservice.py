"""
Self-service hosts: a client with an account's token gets a virtual host
under the server's base domain, and the identifier for it, on its control
request (see L{tunnel.core.control.TOKEN_HEADER}).

The account is part of the identifiers it gets (C{ACCOUNT~SECRET}): who
holds which host needs no record beside the hosts file, and a host counts
against its account's limit across restarts and reloads. In a cluster,
where the nodes know identifiers only by their keys, the shared
configuration records the account of each host it registers, and counts an
account's hosts on every node at once (L{SharedConfig.register}).
"""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING, Callable

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.cluster.refusals import AccountFull, HostTaken
from tunnel.cluster.scripts import StoreUnavailable
from tunnel.core.control import isSubdomain, redactIdentifier
from tunnel.core.http import normaliseHost
from tunnel.hostsfile import updateHostsFile
from tunnel.server.accounts import Account, Accounts
from tunnel.server.registry import Registry

if TYPE_CHECKING:
    from tunnel.cluster.config import SharedConfig

#: Letters of a random subdomain, and how many.
_RANDOM_ALPHABET = string.ascii_lowercase + string.digits
RANDOM_SUBDOMAIN_LENGTH = 10

#: What separates the account's name from the secret in its identifiers.
ACCOUNT_SEPARATOR = "~"
#: How many random subdomains a node of a cluster tries, when others take
#: those it picked at the same time.
RANDOM_TRIES = 5


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


def _full(account: Account, held: int) -> RegistrationError:
    return RegistrationError(
        403,
        f"account {account.name} holds {held} hosts, as many as it may; free one "
        "(ask the server's operator to delete it) or reuse its identifier",
    )


def _taken(host: str) -> RegistrationError:
    return RegistrationError(
        409, f"{host} is taken; ask for another subdomain, or for none to get a random one"
    )


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
        nameOf: Callable[[bytes], bytes] = lambda identifier: identifier,
        shared: SharedConfig | None = None,
    ) -> None:
        """
        @param hostsFile: where registrations are saved, if anywhere.
        @param nameOf: what the registry knows an identifier by.
        @param shared: in a cluster, its shared configuration, where
            registrations are made instead.
        @raise ValueError: if C{domain} is not a host name without port.
        """
        self.domain = normaliseHost(domain)
        if ":" in self.domain:
            raise ValueError(f"the base domain {domain!r} must not have a port")
        self.accounts = accounts
        self._registry = registry
        self._hostsFile = hostsFile
        self._subdomainFactory = subdomainFactory
        self._nameOf = nameOf
        self._shared = shared

    def account(self, token: bytes) -> Account | None:
        """The account of C{token}, if it is one's."""
        return self.accounts.find(token)

    def register(self, account: Account, subdomain: bytes | None) -> Deferred[Registration]:
        """
        Register C{subdomain} (a random free one if L{None}) under the base
        domain for C{account}, with a new identifier, saved to the hosts
        file first if there is one, or in a cluster to its shared
        configuration.

        @return: a L{Deferred} firing with the registration, or failing
            with a L{RegistrationError} if the subdomain is malformed (400)
            or taken (409), the account holds as many hosts as it may
            (403), the hosts file cannot be saved (500), or the cluster's
            store cannot be reached (503).
        """
        if self._shared is None:
            return maybeDeferred(self._registerHere, account, subdomain)
        return maybeDeferred(self._registerShared, self._shared, account, subdomain, RANDOM_TRIES)

    def _registerShared(
        self, shared: SharedConfig, account: Account, subdomain: bytes | None, tries: int
    ) -> Deferred[Registration]:
        host = self._host(subdomain)
        identifier = self._newIdentifier(account)
        name = self._nameOf(identifier.encode("ascii"))
        registering = shared.register(host, name.decode("ascii"), account)

        def registered(version: int) -> Registration:
            self._registry.addHost(host, name)
            return self._registered(host, identifier, account)

        def refused(failure: Failure) -> Deferred[Registration]:
            if failure.check(HostTaken):
                if subdomain is None and tries > 1:
                    return self._registerShared(shared, account, None, tries - 1)
                raise _taken(host)
            if failure.check(AccountFull):
                raise _full(account, failure.value.held)
            failure.trap(StoreUnavailable)
            self._log.error(
                "Cannot register a host for account {account}: {why}",
                account=account.name,
                why=failure.getErrorMessage(),
            )
            raise RegistrationError(
                503, "the server cannot register hosts right now; try again in a moment"
            )

        return registering.addCallbacks(registered, refused)

    def _newIdentifier(self, account: Account) -> str:
        return f"{account.name}{ACCOUNT_SEPARATOR}{secrets.token_urlsafe(32)}"

    def _registered(self, host: str, identifier: str, account: Account) -> Registration:
        self._log.info(
            "Registered host {host} for account {account} (identifier {identifier})",
            host=host,
            account=account.name,
            identifier=redactIdentifier(identifier),
        )
        return Registration(host, identifier, account.name)

    def _registerHere(self, account: Account, subdomain: bytes | None) -> Registration:
        held = self._heldBy(account.name)
        if held >= account.maxHosts:
            raise _full(account, held)
        host = self._host(subdomain)
        identifier = self._newIdentifier(account)
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
        return self._registered(host, identifier, account)

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
            raise _taken(host)
        return host
