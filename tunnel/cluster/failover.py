"""
Which Redis is the primary, from what its sentinels say: the decisions of
a connection to a Redis that Sentinel fails over, without any I/O.

L{PrimarySearch} is told what happened (a sentinel answered, a connection
was made or lost, a command met a replica, a wait ended) and answers with
what to do next, as a list of actions (L{Ask}, L{Connect}, L{Use}, L{Drop},
L{Fail}, L{Wait}); L{tunnel.cluster.sentinel} does them over the network.
Every action that expects an answer carries an C{attempt} number, and an
answer to an attempt that is no longer the one awaited (the search moved
on) is ignored, so that a late answer never undoes a later decision.

The search, in L{State}s:

  - C{ASKING}: one sentinel is asked C{SENTINEL get-master-addr-by-name}.
    One that cannot be reached, or knows no primary of the service, gives
    way to the next; the first that answered is asked first from then on.
  - C{CONNECTING}: the primary a sentinel named is connected to, and asked
    its C{ROLE}. One that cannot be reached, or is no C{master}, is taken
    as that sentinel's failure: the next sentinel is asked.
  - C{CONNECTED}: commands go to it. It is given up when its connection is
    lost or a command meets a replica (C{READONLY}), and when the sentinels
    name another primary: they are asked again every C{checkInterval}
    (L{PrimarySearch.check}), since a primary that Sentinel replaced keeps
    accepting writes until Sentinel makes it a replica, seconds later.
  - C{WAITING}: every sentinel failed, in one round: the commands waiting
    for a primary fail (L{Fail}), and so do those issued until the next
    round, after a delay that doubles with each round that failed.
  - C{STOPPED}: for good.
"""

from __future__ import annotations

import enum
from typing import Sequence, Union

import attrs

from tunnel.cluster.settings import NodeAddress

#: Seconds before the second round of asking the sentinels, after a first
#: that failed; it doubles with each round that fails, up to L{MAX_DELAY}.
FIRST_DELAY = 0.2
#: The longest wait between two rounds.
MAX_DELAY = 2.0


class State(enum.Enum):
    """Where a L{PrimarySearch} is (see the module's description)."""

    ASKING = "asking"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING = "waiting"
    STOPPED = "stopped"


@attrs.frozen
class Ask:
    """
    Ask C{sentinel} for the primary of the service; answer with
    L{PrimarySearch.sentinelAnswered} or L{PrimarySearch.sentinelFailed}.
    """

    attempt: int
    sentinel: NodeAddress


@attrs.frozen
class Connect:
    """
    Connect to C{primary} (authenticate, select the database) and ask its
    C{ROLE}; answer with L{PrimarySearch.connected} or
    L{PrimarySearch.connectFailed}.

    @ivar sentinel: the sentinel that named it.
    """

    attempt: int
    primary: NodeAddress
    sentinel: NodeAddress


@attrs.frozen
class Use:
    """
    The connection of the last L{Connect} is to the primary: send it the
    commands, those waiting first.
    """

    primary: NodeAddress
    sentinel: NodeAddress


@attrs.frozen
class Drop:
    """Close the connection to C{primary}, in use or being made: C{why}."""

    primary: NodeAddress
    why: str


@attrs.frozen
class Fail:
    """
    Fail the commands waiting for a primary, and those issued until the
    next round: C{why}.
    """

    why: str


@attrs.frozen
class Wait:
    """
    Wait C{seconds}, then call L{PrimarySearch.waited} (or
    L{PrimarySearch.check}, once C{CONNECTED}).
    """

    attempt: int
    seconds: float


Action = Union[Ask, Connect, Use, Drop, Fail, Wait]


class PrimarySearch:
    """
    Finds the primary of a Sentinel service, and finds it again when it
    changes (see the module's description).

    @ivar state: the L{State} it is in.
    @ivar primary: the primary in use or being connected to, or L{None}.
    @ivar why: why the last round failed, once C{WAITING}.
    """

    def __init__(
        self, sentinels: Sequence[NodeAddress], service: str, checkInterval: float = 1.0
    ) -> None:
        """
        @param sentinels: the sentinels, asked in this order at first.
        @param service: the name they monitor the primary under.
        @param checkInterval: seconds between two questions to the
            sentinels while a primary is in use.
        """
        if not sentinels:
            raise ValueError("a primary search needs a sentinel at least")
        self._sentinels = list(sentinels)
        self._service = service
        self._checkInterval = checkInterval
        self.state = State.WAITING
        self.primary: NodeAddress | None = None
        self.why = "not started"
        self._attempt = 0
        # the sentinel asked first in a round: the last one that answered
        self._first = 0
        # the sentinel of the round being asked, as an offset from _first
        self._tried = 0
        self._failures: list[str] = []
        self._rounds = 0
        self._checking = False

    @property
    def attempt(self) -> int:
        """
        The number of the last action that awaits an answer: an action of
        another number is no longer to be done.
        """
        return self._attempt

    def _next(self) -> int:
        self._attempt += 1
        return self._attempt

    def _current(self) -> NodeAddress:
        return self._sentinels[(self._first + self._tried) % len(self._sentinels)]

    # -- inputs --------------------------------------------------------------

    def start(self) -> list[Action]:
        """Begin: ask the first sentinel."""
        if self.state is State.STOPPED:
            return []
        return self._round()

    def sentinelAnswered(self, attempt: int, primary: NodeAddress | None) -> list[Action]:
        """
        The sentinel of the L{Ask} of C{attempt} names C{primary} (L{None}:
        it knows no primary of the service).
        """
        if attempt != self._attempt:
            return []
        sentinel = self._current()
        if self.state is State.ASKING:
            if primary is None:
                return self._failed(f"sentinel {sentinel} knows no primary of {self._service}")
            self.state = State.CONNECTING
            self.primary = primary
            return [Connect(self._next(), primary, sentinel)]
        if self.state is State.CONNECTED and self._checking:
            self._checking = False
            current = self.primary
            assert current is not None
            if primary is None or primary == current:
                return [Wait(self._next(), self._checkInterval)]
            why = f"sentinel {sentinel} names {primary} the primary of {self._service} now"
            self.primary = primary
            self.state = State.CONNECTING
            return [Drop(current, why), Connect(self._next(), primary, sentinel)]
        return []

    def sentinelFailed(self, attempt: int, why: str) -> list[Action]:
        """The sentinel of the L{Ask} of C{attempt} could not be asked: C{why}."""
        if attempt != self._attempt:
            return []
        if self.state is State.ASKING:
            return self._failed(f"sentinel {self._current()}: {why}")
        if self.state is State.CONNECTED and self._checking:
            # the primary still answers: ask another sentinel next time
            self._checking = False
            self._first = (self._first + 1) % len(self._sentinels)
            return [Wait(self._next(), self._checkInterval)]
        return []

    def connected(self, attempt: int, role: str) -> list[Action]:
        """The primary of the L{Connect} of C{attempt} is connected, and is a C{role}."""
        if attempt != self._attempt or self.state is not State.CONNECTING:
            return []
        primary = self.primary
        assert primary is not None
        if role != "master":
            self.primary = None
            why = f"{primary}, named by sentinel {self._current()}, is a {role}, not the primary"
            return [Drop(primary, why)] + self._failed(why)
        self.state = State.CONNECTED
        # the sentinel that named it is asked first from now on
        self._first = (self._first + self._tried) % len(self._sentinels)
        self._tried = 0
        self._rounds = 0
        self._failures = []
        self._checking = False
        return [Use(primary, self._current()), Wait(self._next(), self._checkInterval)]

    def connectFailed(self, attempt: int, why: str) -> list[Action]:
        """The primary of the L{Connect} of C{attempt} could not be connected to: C{why}."""
        if attempt != self._attempt or self.state is not State.CONNECTING:
            return []
        primary = self.primary
        self.primary = None
        return self._failed(f"the primary {primary}, named by sentinel {self._current()}: {why}")

    def lost(self, primary: NodeAddress, why: str) -> list[Action]:
        """
        The connection to C{primary} was lost, or it turned out a replica:
        C{why}. Ignored unless it is the primary in use.
        """
        if self.state is not State.CONNECTED or primary != self.primary:
            return []
        self.primary = None
        return [Drop(primary, why)] + self._round()

    def waited(self, attempt: int) -> list[Action]:
        """The L{Wait} of C{attempt} is over."""
        if attempt != self._attempt:
            return []
        if self.state is State.WAITING:
            return self._round()
        if self.state is State.CONNECTED:
            self._checking = True
            return [Ask(self._next(), self._sentinels[self._first])]
        return []

    def stop(self) -> list[Action]:
        """End: drop the primary, fail what waits for one; nothing follows."""
        primary, self.primary = self.primary, None
        self.state = State.STOPPED
        self.why = "the connection to Redis is closed"
        self._next()
        actions: list[Action] = [] if primary is None else [Drop(primary, self.why)]
        return actions + [Fail(self.why)]

    # -- rounds --------------------------------------------------------------

    def _round(self) -> list[Action]:
        """Ask the sentinels again, the one that answered last first."""
        self.state = State.ASKING
        self._tried = 0
        self._failures = []
        self._checking = False
        return [Ask(self._next(), self._current())]

    def _failed(self, why: str) -> list[Action]:
        """The sentinel of the round failed: ask the next, or wait."""
        self._failures.append(why)
        self._tried += 1
        if self._tried < len(self._sentinels):
            self.state = State.ASKING
            return [Ask(self._next(), self._current())]
        self._tried = 0
        self._rounds += 1
        self.state = State.WAITING
        failures = "; ".join(self._failures)
        self.why = f"no sentinel names a primary of {self._service} that answers ({failures})"
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (self._rounds - 1))
        return [Fail(self.why), Wait(self._next(), delay)]
