"""
Reloading the hosts file and the accounts file into a running server, as
C{SIGHUP} asks.
"""

from __future__ import annotations

import os
import signal
from typing import Any, Callable, Mapping, Protocol, Sequence

from twisted.application.service import Service
from twisted.logger import Logger

from tunnel.hostsfile import readHostsFile
from tunnel.server import TunnelServer
from tunnel.server.accounts import (
    Accounts,
    AccountsFileError,
    TokenDigest,
    readAccountsFile,
    sha256Digest,
)


class Reloader(Protocol):
    """Something a C{SIGHUP} reads again."""

    def reload(self) -> bool:
        """Read it again and apply it; whether that worked."""


class HostsReloader:
    """
    Makes a server's virtual hosts those of its hosts file again, plus the
    hosts given on the command line (which win, as at start).

    A host that is gone from the file stops being routed, a new one is
    added, one whose identifier changed moves to it; a client left without
    any host or TCP listener is disconnected. A file that is missing, cannot
    be read or has a malformed line changes nothing.

    @ivar path: the hosts file.
    """

    _log = Logger()

    def __init__(self, server: TunnelServer, path: str, fixed: Mapping[str, str]) -> None:
        self.path = path
        self._server = server
        self._fixed = dict(fixed)

    def reload(self) -> bool:
        """
        Read the file and apply it, logging what changed.

        @return: whether the file was read and applied.
        """
        try:
            if not os.path.exists(self.path):
                raise OSError("it does not exist")
            # Both come normalised: readHostsFile and --host normalise hosts.
            wanted = {**readHostsFile(self.path), **self._fixed}
        except (OSError, ValueError) as e:
            self._log.error(
                "Cannot reload the hosts file {path} ({error}); the {count} hosts in "
                "use stay as they are",
                path=self.path,
                error=e,
                count=len(self._server.hosts()),
            )
            return False
        gone = [status.host for status in self._server.hosts() if status.host not in wanted]
        for host in gone:
            self._server.deleteHost(host)
        for host, identifier in wanted.items():
            self._server.addHost(host, identifier)
        self._log.info(
            "Reloaded the hosts file {path}: {count} hosts{removed}",
            path=self.path,
            count=len(wanted),
            removed=f"; no longer routed: {', '.join(gone)}" if gone else "",
        )
        return True


class AccountsReloader:
    """
    Makes a server's accounts (for self-service hosts) those of its
    accounts file again: new tokens work at once, removed ones are refused
    from then on (the hosts they registered stay). A file that cannot be
    read or has a malformed line changes nothing.

    @ivar path: the accounts file.
    """

    _log = Logger()

    def __init__(
        self,
        path: str,
        apply: Callable[[Accounts], object],
        digest: TokenDigest = sha256Digest,
    ) -> None:
        """
        @param apply: makes the accounts read those in force: the server's
            L{TunnelServer.setAccounts}, or in a cluster what shares them
            with every node.
        @param digest: what makes the digests of their tokens.
        """
        self.path = path
        self._apply = apply
        self._digest = digest

    def reload(self) -> bool:
        """
        Read the file and apply it, logging how many accounts it has.

        @return: whether the file was read and applied.
        """
        try:
            accounts = readAccountsFile(self.path, self._digest)
        except AccountsFileError as e:
            self._log.error("Cannot reload the accounts file: {error}; the accounts in use "
                            "stay as they are", error=e)
            return False
        self._log.info("Reloaded the accounts file {path}: {count} accounts",
                       path=self.path, count=len(accounts))
        self._apply(accounts)
        return True


class ReloadOnHangUp(Service):
    """Reloads the hosts file, the accounts file or both on each C{SIGHUP} while running."""

    def __init__(self, reloaders: Sequence[Reloader], reactor: Any) -> None:
        self.reloaders = list(reloaders)
        self._reactor = reactor
        self._previous: Any = None

    def startService(self) -> None:
        """Handle C{SIGHUP}."""
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._hangUp)

    def stopService(self) -> None:
        """Restore the previous C{SIGHUP} handler."""
        super().stopService()
        signal.signal(signal.SIGHUP, self._previous or signal.SIG_DFL)

    def _hangUp(self, signum: int, frame: object) -> None:
        for reloader in self.reloaders:
            self._reactor.callFromThread(reloader.reload)
