"""
The supervisor of C{--workers N} as a Twisted service: what
C{makeServerService} gives for more than one worker.

It binds the public listeners (C{--listen}, C{--tcp}) before privileges
are dropped, so that a port that cannot be bound stops the server at
once, in one line, as a single process's would; it starts the workers
once the reactor runs (after twistd dropped privileges, so that they run
as the user twistd runs as), each with the listeners as inherited file
descriptors; it relays their logs, passes C{SIGHUP} on to them if there
is something to reload (as a single process would reload it), and stops
them when it stops. What it does when a worker ends is
L{tunnel.workers.supervisor}'s.

If it gives up (a worker failing at start again and again), it stops the
reactor, and the process exits with status 1 (the console command's
C{EXIT_FAILED}) whether twistd or the console command runs it.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
from typing import Any, Callable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.workers.command import (
    FIRST_LISTENER,
    sharedListeners,
    workerCommand,
    workerEnvironment,
)
from tunnel.workers.logs import WorkerLogRelay
from tunnel.workers.sockets import bindShared
from tunnel.workers.supervisor import RestartPolicy, WorkerProcess, WorkerSupervisor

#: The exit status of a server whose supervisor gave up (C{EXIT_FAILED}).
EXIT_GAVE_UP = 1


def howItEnded(reason: Failure) -> str:
    """How a process ended, in words, from the reason C{processEnded} gives."""
    if reason.check(ProcessDone):
        return "exited with status 0"
    value = reason.value
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            try:
                name = signal.Signals(value.signal).name
            except ValueError:
                name = str(value.signal)
            return f"was killed by {name}"
        return f"exited with status {value.exitCode}"
    return f"ended ({reason.getErrorMessage()})"


class WorkerProcessProtocol(ProcessProtocol):
    """
    One worker's process, as the supervisor sees it: its output relayed
    to the log, its start and end told to the L{WorkerSupervisor}.
    """

    def __init__(self, supervisor: WorkerSupervisor, index: int) -> None:
        self._supervisor = supervisor
        self._index = index
        self.relay = WorkerLogRelay(f"w{index}", lambda: supervisor.serving(index))

    @property
    def pid(self) -> int:
        """The worker's process ID."""
        return self.transport.pid  # type: ignore[no-any-return]

    def signal(self, name: str) -> None:
        """Send the worker a signal (C{"TERM"}, C{"KILL"}, C{"HUP"}) if it still runs."""
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 1:
            self.relay.eventsReceived(data)
        elif childFD == 2:
            self.relay.textReceived(data)

    def processEnded(self, reason: Failure) -> None:
        self.relay.ended()
        self._supervisor.exited(self._index, howItEnded(reason), self.relay.lastProblem)


def _exitGaveUpAtExit() -> None:
    """Make this process exit with L{EXIT_GAVE_UP} once it is done, whoever runs it."""

    def exit() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(EXIT_GAVE_UP)

    atexit.register(exit)


class WorkersService(Service):
    """
    Runs the workers of a server's options (see the module's description).

    @ivar supervisor: the L{WorkerSupervisor}, once started.
    @ivar sockets: the bound public listeners, in the order of
        L{sharedListeners}, while running.
    """

    _log = Logger()

    def __init__(
        self,
        options: Mapping[str, Any],
        reactor: Any,
        policy: RestartPolicy = RestartPolicy(),
        exitGaveUp: Callable[[], None] = _exitGaveUpAtExit,
    ) -> None:
        """
        @param exitGaveUp: makes the process exit with a failure once it
            is done; called when the supervisor gives up, before the
            reactor is stopped.
        """
        self._options = options
        self._reactor = reactor
        self._policy = policy
        self._exitGaveUp = exitGaveUp
        self.supervisor: WorkerSupervisor | None = None
        self.sockets: list[socket.socket] = []
        self._previousHangUp: Any = None
        self._handlesHangUp = False

    @property
    def count(self) -> int:
        """How many workers it runs."""
        return int(self._options["workers"])

    def privilegedStartService(self) -> None:
        """
        Bind the public listeners.

        @raise twisted.internet.error.CannotListenError: if one cannot be
            bound (those bound before it are closed).
        """
        super().privilegedStartService()
        self._bind()

    def _bind(self) -> None:
        if self.sockets:
            return
        bound = []
        try:
            for description in sharedListeners(self._options):
                bound.append(bindShared(description))
                host, port = bound[-1].getsockname()[:2]
                self._log.info(
                    "Listening on {host} port {port} for {count} workers",
                    host=host,
                    port=port,
                    count=self.count,
                )
        except BaseException:
            for listener in bound:
                listener.close()
            raise
        self.sockets = bound

    def startService(self) -> None:
        """Bind, unless done already; start the workers once the reactor runs."""
        self._bind()
        super().startService()
        self.supervisor = WorkerSupervisor(
            self.count, self._spawn, self._reactor, self._policy, self._gaveUp
        )
        if self._reloads():
            self._previousHangUp = signal.signal(signal.SIGHUP, self._hangUp)
            self._handlesHangUp = True
        self._reactor.callWhenRunning(self._startWorkers)

    def _startWorkers(self) -> None:
        if self.running and self.supervisor is not None:
            self.supervisor.start()

    def _reloads(self) -> bool:
        """Whether the workers reload something on C{SIGHUP}, as a single process would."""
        return bool(self._options["hosts-file"]) or self._options["accounts"] is not None

    def _hangUp(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._passHangUp)

    def _passHangUp(self) -> None:
        if self.supervisor is not None:
            self._log.info("SIGHUP: passing it on to the workers")
            self.supervisor.signalAll("HUP")

    def _spawn(self, index: int) -> WorkerProcess:
        assert self.supervisor is not None
        protocol = WorkerProcessProtocol(self.supervisor, index)
        childFDs: dict[int, int | str] = {0: "w", 1: "r", 2: "r"}
        for offset, listener in enumerate(self.sockets):
            childFDs[FIRST_LISTENER + offset] = listener.fileno()
        argv = workerCommand(self._options, index)
        self._reactor.spawnProcess(
            protocol, argv[0], argv, env=workerEnvironment(), childFDs=childFDs
        )
        return protocol

    def _gaveUp(self, why: str) -> None:
        self._exitGaveUp()
        if self._reactor.running:
            self._reactor.stop()

    def stopService(self) -> Deferred[None]:
        """Stop the workers, then close the listeners."""
        super().stopService()
        if self._handlesHangUp:
            signal.signal(signal.SIGHUP, self._previousHangUp or signal.SIG_DFL)
            self._handlesHangUp = False
        if self.supervisor is None:
            stopping: Deferred[None] = Deferred()
            stopping.callback(None)
        else:
            stopping = self.supervisor.stop()
        return stopping.addBoth(self._close)

    def _close(self, result: object) -> object:
        sockets, self.sockets = self.sockets, []
        for listener in sockets:
            listener.close()
        return result
