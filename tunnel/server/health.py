"""
Whether a tunnel server is ready to serve, for readiness probes.

L{Readiness} holds a list of checks; the server is ready when every one of
them is met. A server process checks that its public listeners listen
(L{ListenersCheck}) and that its hosts are loaded (a L{Milestone}); a
check of its own, such as a cluster store being reachable, is one more
L{ReadinessCheck} given to L{Readiness.add}.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from zope.interface import implementer


class ReadinessCheck(TypingProtocol):
    """
    One condition of readiness.

    @ivar name: what it checks, in a word; the key of its problem.
    """

    name: str

    def problem(self) -> str | None:
        """L{None} if the condition is met; else what is not ready, in one line."""


class Readiness:
    """Every condition a server must meet to be ready."""

    def __init__(self, checks: Iterable[ReadinessCheck] = ()) -> None:
        self._checks = list(checks)

    def add(self, check: ReadinessCheck) -> None:
        """Make C{check} one more condition."""
        self._checks.append(check)

    def problems(self) -> dict[str, str]:
        """What is not ready, by check name; empty when the server is ready."""
        found = ((check.name, check.problem()) for check in self._checks)
        return {name: problem for name, problem in found if problem is not None}


@attrs.define
class Milestone:
    """
    A condition met once something happened, for good.

    @ivar name: see L{ReadinessCheck.name}.
    @ivar waiting: the problem until then.
    @ivar reached: whether it happened.
    """

    name: str
    waiting: str
    reached: bool = False

    def reach(self) -> None:
        """It happened."""
        self.reached = True

    def problem(self) -> str | None:
        """L{waiting} until L{reach}."""
        return None if self.reached else self.waiting


class ListenersCheck:
    """
    Met once every endpoint it watches (see L{watch}) listens. Its problem
    counts them, and names none: it is told to probes without a token, and
    an endpoint's description may name key files.
    """

    name = "listeners"

    def __init__(self) -> None:
        self._watched = 0
        self._listening = 0

    def watch(self, endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
        """C{endpoint}, whose listening this check waits for."""
        self._watched += 1
        return _WatchedEndpoint(endpoint, self._listened)

    def _listened(self) -> None:
        self._listening += 1

    def problem(self) -> str | None:
        """How many endpoints do not listen yet, if any."""
        waiting = self._watched - self._listening
        if not waiting:
            return None
        return f"{waiting} of {self._watched} public listeners do not listen yet"


@implementer(IStreamServerEndpoint)
@attrs.frozen
class _WatchedEndpoint:
    """An endpoint that says when it listens."""

    _endpoint: IStreamServerEndpoint
    _listening: Callable[[], None]

    def listen(self, protocolFactory: Factory) -> Deferred[IListeningPort]:
        """Listen, and say so once it does."""

        def listening(port: IListeningPort) -> IListeningPort:
            self._listening()
            return port

        return self._endpoint.listen(protocolFactory).addCallback(listening)
