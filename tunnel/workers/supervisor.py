"""
What the supervisor of C{--workers N} decides: when to start, restart and
stop each worker, and when to give up. No process is started here, and no
time is read but the injected clock's: the spawner (a function of the
worker's index) and the clock are given, and what the processes do is
told (L{WorkerSupervisor.serving}, L{WorkerSupervisor.exited}).

Each worker goes through the states of L{WorkerState}, every change by
one table (L{_TRANSITIONS}): an input not in it for the state the worker
is in is a mistake of the caller (L{WorkerStateError}).

A worker that ends while the supervisor runs is started again after a
back-off that doubles with each end in a row (from
L{RestartPolicy.initialDelay} to L{RestartPolicy.maxDelay}), and starts
over from the shortest once a worker has served
L{RestartPolicy.stableUptime}. A worker that ends before it has served
L{RestartPolicy.minUptime} (or before it served at all) failed at start;
L{RestartPolicy.maxFailures} such failures of one worker in a row stop
the whole server: the supervisor stops the other workers and says why
(L{WorkerSupervisor.failure}), and its C{onGiveUp} is told.
"""

from __future__ import annotations

import enum
from typing import Callable, Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class WorkerProcess(TypingProtocol):
    """A worker's running process, as the spawner started it."""

    @property
    def pid(self) -> int:
        """Its process ID."""

    def signal(self, name: str) -> None:
        """Send it a signal: C{"TERM"}, C{"KILL"} or C{"HUP"}; nothing if it has ended."""


@attrs.frozen
class RestartPolicy:
    """
    When workers are restarted, stopped and given up on.

    @ivar minUptime: seconds a worker must serve for its end not to count
        as a failure at start.
    @ivar maxFailures: failures at start in a row of one worker that stop
        the server.
    @ivar initialDelay: seconds before the first restart of a worker.
    @ivar maxDelay: the longest wait before a restart.
    @ivar stableUptime: seconds a worker must serve for the back-off of its
        next restart to start over.
    @ivar stopTimeout: seconds a worker has to stop after C{SIGTERM},
        before C{SIGKILL}.
    """

    minUptime: float = 1.0
    maxFailures: int = 5
    initialDelay: float = 0.2
    maxDelay: float = 10.0
    stableUptime: float = 30.0
    stopTimeout: float = 10.0


class WorkerState(enum.Enum):
    """Where a worker is."""

    #: Not started yet.
    IDLE = "idle"
    #: Its process runs, and has not said yet that it serves.
    STARTING = "starting"
    #: It said it serves: its listeners and its node are up.
    SERVING = "serving"
    #: Its process ended; it is started again after its back-off.
    WAITING = "waiting"
    #: It was told to stop (C{SIGTERM}); C{SIGKILL} follows the stop timeout.
    STOPPING = "stopping"
    #: Its process ended, and it is not started again.
    STOPPED = "stopped"


class WorkerInput(enum.Enum):
    """What happens to a worker."""

    #: The supervisor starts.
    START = "start"
    #: The worker says it serves.
    SERVING = "serving"
    #: Its process ended.
    EXITED = "exited"
    #: Its back-off is over.
    RESTART_DUE = "restart-due"
    #: The supervisor stops.
    STOP = "stop"
    #: It did not stop within the stop timeout.
    KILL_DUE = "kill-due"


_S, _I = WorkerState, WorkerInput

#: Every change of a worker's state: (state, input) -> new state.
_TRANSITIONS: dict[tuple[WorkerState, WorkerInput], WorkerState] = {
    (_S.IDLE, _I.START): _S.STARTING,
    (_S.IDLE, _I.STOP): _S.STOPPED,
    (_S.STARTING, _I.SERVING): _S.SERVING,
    (_S.STARTING, _I.EXITED): _S.WAITING,
    (_S.STARTING, _I.STOP): _S.STOPPING,
    # A worker is another process: saying twice that it serves is no harm.
    (_S.SERVING, _I.SERVING): _S.SERVING,
    (_S.SERVING, _I.EXITED): _S.WAITING,
    (_S.SERVING, _I.STOP): _S.STOPPING,
    (_S.WAITING, _I.RESTART_DUE): _S.STARTING,
    (_S.WAITING, _I.STOP): _S.STOPPED,
    (_S.STOPPING, _I.SERVING): _S.STOPPING,
    (_S.STOPPING, _I.EXITED): _S.STOPPED,
    (_S.STOPPING, _I.STOP): _S.STOPPING,
    (_S.STOPPING, _I.KILL_DUE): _S.STOPPING,
    (_S.STOPPED, _I.STOP): _S.STOPPED,
}


class WorkerStateError(Exception):
    """An input a worker's state does not take."""


class SupervisorState(enum.Enum):
    """Where the supervisor is."""

    IDLE = "idle"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@attrs.define
class _Worker:
    """One worker's state and what goes with it."""

    index: int
    state: WorkerState = WorkerState.IDLE
    process: WorkerProcess | None = None
    #: Its process's ID, kept once the process has ended.
    pid: int | None = None
    #: When it said it serves, if it did since it was last started.
    servingSince: float | None = None
    #: Its failures at start in a row.
    failures: int = 0
    #: Its ends in a row since it last served L{RestartPolicy.stableUptime}.
    restarts: int = 0
    #: A C{SIGHUP} asked for while it was starting, for once it serves.
    hangUpPending: bool = False
    pending: IDelayedCall | None = None

    def change(self, what: WorkerInput) -> WorkerState:
        """Take C{what} through L{_TRANSITIONS}; the state it was in."""
        try:
            new = _TRANSITIONS[(self.state, what)]
        except KeyError:
            raise WorkerStateError(
                f"worker {self.index} is {self.state.value}: it cannot take {what.value}"
            ) from None
        old, self.state = self.state, new
        return old

    def cancelPending(self) -> None:
        if self.pending is not None and self.pending.active():
            self.pending.cancel()
        self.pending = None


class WorkerSupervisor:
    """
    Keeps C{count} workers running (see the module's description).

    @ivar state: the L{SupervisorState}.
    @ivar failure: why the supervisor gave up, once it has; L{None} until.
    """

    _log = Logger()

    def __init__(
        self,
        count: int,
        spawn: Callable[[int], WorkerProcess],
        clock: IReactorTime,
        policy: RestartPolicy = RestartPolicy(),
        onGiveUp: Callable[[str], None] | None = None,
    ) -> None:
        """
        @param count: how many workers to keep running.
        @param spawn: starts worker C{index}'s process and gives it; the
            caller then tells L{serving} and L{exited} of it.
        @param onGiveUp: told why, once, when the supervisor gives up.
        """
        if count < 1:
            raise ValueError("a supervisor needs one worker at least")
        self._workers = [_Worker(index) for index in range(count)]
        self._spawn = spawn
        self._clock = clock
        self._policy = policy
        self._onGiveUp = onGiveUp
        self._stopped: list[Deferred[None]] = []
        self.state = SupervisorState.IDLE
        self.failure: str | None = None

    def workerState(self, index: int) -> WorkerState:
        """Where worker C{index} is."""
        return self._workers[index].state

    def process(self, index: int) -> WorkerProcess | None:
        """Worker C{index}'s running process, if it has one."""
        return self._workers[index].process

    def start(self) -> None:
        """Start every worker."""
        if self.state is not SupervisorState.IDLE:
            raise RuntimeError(f"the supervisor is {self.state.value} already")
        self.state = SupervisorState.RUNNING
        for worker in self._workers:
            if self.state is not SupervisorState.RUNNING:
                break  # it gave up
            worker.change(WorkerInput.START)
            self._run(worker)

    def _run(self, worker: _Worker) -> None:
        worker.servingSince = None
        try:
            worker.process = self._spawn(worker.index)
        except Exception as e:
            # No process (too many open files, say): a failure at start.
            worker.change(WorkerInput.EXITED)
            self._ended(worker, None, "could not be started", f"{type(e).__name__}: {e}")
            return
        worker.pid = worker.process.pid
        self._log.info("Started worker {index} (pid {pid})", index=worker.index, pid=worker.pid)

    def serving(self, index: int) -> None:
        """Worker C{index} says it serves."""
        worker = self._workers[index]
        old = worker.change(WorkerInput.SERVING)
        if old is not WorkerState.STARTING:
            return
        worker.servingSince = self._clock.seconds()
        self._log.info("Worker {index} serves", index=index)
        if worker.hangUpPending:
            worker.hangUpPending = False
            self._signal(worker, "HUP")

    def exited(self, index: int, how: str, problem: str | None = None) -> None:
        """
        Worker C{index}'s process ended.

        @param how: how, in words: C{"exited with status 1"}.
        @param problem: what the worker said last of what went wrong, if
            anything.
        """
        worker = self._workers[index]
        old = worker.change(WorkerInput.EXITED)
        pid = worker.pid
        worker.process = None
        worker.hangUpPending = False
        if old is WorkerState.STOPPING:
            worker.cancelPending()
            self._log.info(
                "Worker {index} (pid {pid}) stopped: {how}", index=index, pid=pid, how=how
            )
            self._checkStopped()
            return
        self._ended(worker, pid, how, problem)

    def _ended(self, worker: _Worker, pid: int | None, how: str, problem: str | None) -> None:
        """A worker ended by itself: restart it after its back-off, or give up."""
        policy = self._policy
        now = self._clock.seconds()
        served = None if worker.servingSince is None else now - worker.servingSince
        if served is None or served < policy.minUptime:
            worker.failures += 1
        else:
            worker.failures = 0
        if served is not None and served >= policy.stableUptime:
            worker.restarts = 0
        said = f" ({problem})" if problem else ""
        if worker.failures >= policy.maxFailures:
            self._giveUp(
                f"worker {worker.index} failed at start {worker.failures} times in a row "
                f"(last: {how}{said}); stopping the server"
            )
            return
        delay = min(policy.maxDelay, policy.initialDelay * 2 ** worker.restarts)
        worker.restarts += 1
        self._log.warn(
            "Worker {index} (pid {pid}) {how}{said} {when}; restarting it in {delay:.1f} s",
            index=worker.index,
            pid=pid,
            how=how,
            said=said,
            when="before it served" if served is None else f"after serving {served:.1f} s",
            delay=delay,
        )
        worker.pending = self._clock.callLater(delay, self._restartDue, worker)

    def _restartDue(self, worker: _Worker) -> None:
        worker.pending = None
        worker.change(WorkerInput.RESTART_DUE)
        self._run(worker)

    def _giveUp(self, why: str) -> None:
        self.failure = why
        self._log.critical("{why}", why=why)
        self.stop()
        if self._onGiveUp is not None:
            self._onGiveUp(why)

    def signalAll(self, name: str) -> None:
        """
        Pass a signal on to every worker that serves. C{"HUP"} is also
        sent to a worker that is starting, once it serves: before, it may
        not handle it.
        """
        for worker in self._workers:
            if worker.state is WorkerState.SERVING:
                self._signal(worker, name)
            elif worker.state is WorkerState.STARTING and name == "HUP":
                worker.hangUpPending = True

    def _signal(self, worker: _Worker, name: str) -> None:
        if worker.process is not None:
            worker.process.signal(name)

    def stop(self) -> Deferred[None]:
        """
        Stop every worker: C{SIGTERM}, then C{SIGKILL} to those still
        running after the stop timeout; no worker is restarted any more.

        @return: fires once every worker's process has ended.
        """
        if self.state is SupervisorState.STOPPED:
            return succeed(None)
        stopped: Deferred[None] = Deferred()
        self._stopped.append(stopped)
        if self.state is not SupervisorState.STOPPING:
            self.state = SupervisorState.STOPPING
            for worker in self._workers:
                old = worker.change(WorkerInput.STOP)
                if old is WorkerState.WAITING:
                    worker.cancelPending()
                elif old in (WorkerState.STARTING, WorkerState.SERVING):
                    self._signal(worker, "TERM")
                    worker.pending = self._clock.callLater(
                        self._policy.stopTimeout, self._killDue, worker
                    )
            self._checkStopped()
        return stopped

    def _killDue(self, worker: _Worker) -> None:
        worker.pending = None
        worker.change(WorkerInput.KILL_DUE)
        self._log.warn(
            "Worker {index} did not stop within {timeout:g} s of SIGTERM: killing it",
            index=worker.index,
            timeout=self._policy.stopTimeout,
        )
        self._signal(worker, "KILL")

    def _checkStopped(self) -> None:
        if self.state is not SupervisorState.STOPPING:
            return
        if any(worker.state is not WorkerState.STOPPED for worker in self._workers):
            return
        self.state = SupervisorState.STOPPED
        waiters, self._stopped = self._stopped, []
        for waiter in waiters:
            waiter.callback(None)
