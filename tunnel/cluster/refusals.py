"""
Why the shared configuration refuses to register a host for an account
(see L{tunnel.cluster.config.SharedConfig.register}).
"""

from __future__ import annotations


class HostTaken(Exception):
    """The host to register is registered already."""


class AccountFull(Exception):
    """
    The account to register a host for holds as many as it may.

    @ivar held: how many it holds.
    """

    def __init__(self, held: int) -> None:
        super().__init__(f"the account holds {held} hosts")
        self.held = held
