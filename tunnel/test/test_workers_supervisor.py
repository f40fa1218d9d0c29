"""
Tests for L{tunnel.workers.supervisor}: when workers are started,
restarted, signalled, stopped and given up on, on a L{Clock}, with
processes that are records.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tunnel.workers.supervisor import (
    RestartPolicy,
    SupervisorState,
    WorkerState,
    WorkerStateError,
    WorkerSupervisor,
)


class FakeProcess:
    """A worker's process that records the signals it is sent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signal(self, name: str) -> None:
        self.signals.append(name)


class Spawner:
    """Starts L{FakeProcess}es, each with a pid of its own, and keeps them."""

    def __init__(self) -> None:
        self.spawned: list[tuple[int, FakeProcess]] = []

    def __call__(self, index: int) -> FakeProcess:
        process = FakeProcess(1000 + len(self.spawned))
        self.spawned.append((index, process))
        return process

    def indices(self) -> list[int]:
        return [index for index, _ in self.spawned]


POLICY = RestartPolicy(
    minUptime=1.0, maxFailures=5, initialDelay=0.2, maxDelay=3.0, stableUptime=30.0,
    stopTimeout=10.0,
)


class SupervisorTests(SynchronousTestCase):
    """A L{WorkerSupervisor} of three workers."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.spawner = Spawner()
        self.gaveUp: list[str] = []
        self.supervisor = WorkerSupervisor(3, self.spawner, self.clock, POLICY, self.gaveUp.append)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def serveAll(self) -> None:
        for index in range(3):
            self.supervisor.serving(index)

    def restartDelay(self) -> float:
        """In how many seconds the one restart waiting is due."""
        [call] = self.clock.getDelayedCalls()
        return round(call.getTime() - self.clock.seconds(), 6)

    def said(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def test_startStartsEveryWorker(self) -> None:
        """Starting starts each worker once; each serves once it says so."""
        self.supervisor.start()
        self.assertEqual(self.spawner.indices(), [0, 1, 2])
        self.assertEqual(self.supervisor.state, SupervisorState.RUNNING)
        self.assertEqual(self.supervisor.workerState(1), WorkerState.STARTING)
        self.supervisor.serving(1)
        self.assertEqual(self.supervisor.workerState(1), WorkerState.SERVING)
        self.assertIn("Started worker 2 (pid 1002)", self.said())
        self.assertRaises(RuntimeError, self.supervisor.start)

    def test_aWorkerThatEndsIsStartedAgainAfterItsBackOff(self) -> None:
        """
        A worker that served a while and ends is started again after the
        initial delay, with a warning saying how it ended; the others are
        left alone.
        """
        self.supervisor.start()
        self.serveAll()
        self.clock.advance(60)
        self.supervisor.exited(1, "was killed by SIGKILL")
        self.assertEqual(self.supervisor.workerState(1), WorkerState.WAITING)
        self.assertIsNone(self.supervisor.process(1))
        self.assertEqual(self.restartDelay(), 0.2)
        self.assertEqual(self.spawner.indices(), [0, 1, 2])
        self.clock.advance(0.2)
        self.assertEqual(self.spawner.indices(), [0, 1, 2, 1])
        self.assertEqual(self.supervisor.workerState(1), WorkerState.STARTING)
        self.assertIs(self.supervisor.process(1), self.spawner.spawned[-1][1])
        self.assertIn(
            "Worker 1 (pid 1001) was killed by SIGKILL after serving 60.0 s; "
            "restarting it in 0.2 s",
            self.said(),
        )
        for _, process in self.spawner.spawned:
            self.assertEqual(process.signals, [])

    def test_theBackOffDoublesUntilAWorkerServesLongEnough(self) -> None:
        """
        Each end in a row of a worker that served less than the stable
        uptime doubles its back-off, up to the longest; one that served that
        long is started again after the shortest.
        """
        self.supervisor.start()
        delays = []
        for _ in range(6):
            self.supervisor.serving(0)
            self.clock.advance(2.0)
            self.supervisor.exited(0, "exited with status 1")
            delays.append(self.restartDelay())
            self.clock.advance(delays[-1])
            self.assertEqual(self.supervisor.workerState(0), WorkerState.STARTING)
        self.assertEqual(delays, [0.2, 0.4, 0.8, 1.6, 3.0, 3.0])
        self.supervisor.serving(0)
        self.clock.advance(30.0)
        self.supervisor.exited(0, "exited with status 1")
        self.assertEqual(self.restartDelay(), 0.2)
        self.assertEqual(self.supervisor.failure, None)

    def test_fiveFailuresAtStartInARowGiveUp(self) -> None:
        """
        A worker that ends five times in a row before it served a second
        (or served at all) makes the supervisor give up: it says why, with
        what the worker said last, stops the other workers and tells
        C{onGiveUp}.
        """
        self.supervisor.start()
        self.serveAll()
        for attempt in range(4):
            if attempt % 2:
                self.supervisor.serving(2)
                self.clock.advance(0.5)
            self.supervisor.exited(2, "exited with status 1", "cannot listen on port 7948")
            self.clock.advance(10)
            self.assertEqual(self.supervisor.workerState(2), WorkerState.STARTING)
        self.assertEqual(self.gaveUp, [])
        self.assertIn(
            "Worker 2 (pid 1004) exited with status 1 (cannot listen on port 7948) before it "
            "served; restarting it in 0.8 s",
            self.said(),
        )
        self.supervisor.exited(2, "exited with status 1", "cannot listen on port 7948")
        why = (
            "worker 2 failed at start 5 times in a row (last: exited with status 1 "
            "(cannot listen on port 7948)); stopping the server"
        )
        self.assertEqual(self.gaveUp, [why])
        self.assertEqual(self.supervisor.failure, why)
        self.assertIn(why, self.said())
        self.assertEqual(self.supervisor.state, SupervisorState.STOPPING)
        self.assertEqual(self.supervisor.workerState(2), WorkerState.STOPPED)
        for index in (0, 1):
            self.assertEqual(self.supervisor.process(index).signals, ["TERM"])
        self.clock.advance(60)
        self.assertEqual(len(self.spawner.spawned), 3 + 4)

    def test_servingASecondEndsTheFailuresInARow(self) -> None:
        """
        Ends after serving a second or more are no failures at start: four
        failures, one such end, four failures again do not give up.
        """
        self.supervisor.start()
        for round in range(2):
            for _ in range(4):
                self.supervisor.exited(0, "exited with status 1")
                self.clock.advance(10)
            if not round:
                self.supervisor.serving(0)
                self.clock.advance(1.0)
                self.supervisor.exited(0, "exited with status 1")
                self.clock.advance(10)
        self.assertEqual(self.gaveUp, [])
        self.assertEqual(self.supervisor.workerState(0), WorkerState.STARTING)

    def test_stopTerminatesThenKills(self) -> None:
        """
        Stopping sends each running worker SIGTERM, and SIGKILL to those
        still running after the stop timeout; it fires once every one
        ended, and none is started again.
        """
        self.supervisor.start()
        self.serveAll()
        stopped = self.supervisor.stop()
        processes = [self.supervisor.process(index) for index in range(3)]
        self.assertEqual([p.signals for p in processes], [["TERM"]] * 3)
        self.supervisor.exited(0, "exited with status 0")
        self.supervisor.exited(1, "exited with status 0")
        self.clock.advance(9.9)
        self.assertNoResult(stopped)
        self.assertEqual(processes[2].signals, ["TERM"])
        self.clock.advance(0.1)
        self.assertEqual([p.signals for p in processes], [["TERM"], ["TERM"], ["TERM", "KILL"]])
        self.assertIn("Worker 2 did not stop within 10 s of SIGTERM: killing it", self.said())
        self.assertNoResult(stopped)
        self.supervisor.exited(2, "was killed by SIGKILL")
        self.successResultOf(stopped)
        self.assertEqual(self.supervisor.state, SupervisorState.STOPPED)
        self.clock.advance(60)
        self.assertEqual(len(self.spawner.spawned), 3)
        self.assertEqual([p.signals for p in processes], [["TERM"], ["TERM"], ["TERM", "KILL"]])
        self.successResultOf(self.supervisor.stop())

    def test_stopWhileWaitingCancelsTheRestart(self) -> None:
        """A worker waiting for its restart is not started again once the supervisor stops."""
        self.supervisor.start()
        self.serveAll()
        self.supervisor.exited(0, "exited with status 1")
        stopped = self.supervisor.stop()
        self.assertEqual(self.supervisor.workerState(0), WorkerState.STOPPED)
        self.supervisor.exited(1, "exited with status 0")
        self.supervisor.exited(2, "exited with status 0")
        self.successResultOf(stopped)
        self.clock.advance(60)
        self.assertEqual(len(self.spawner.spawned), 3)

    def test_stopBeforeStart(self) -> None:
        """A supervisor stopped before it started has nothing to wait for, and starts nothing."""
        self.successResultOf(self.supervisor.stop())
        self.assertEqual(self.spawner.spawned, [])

    def test_aWorkerStartingWhenStoppedIsStoppedToo(self) -> None:
        """
        A worker that has not said it serves is told to stop as well; its
        saying so later changes nothing.
        """
        self.supervisor.start()
        stopped = self.supervisor.stop()
        self.supervisor.serving(0)
        self.assertEqual(self.supervisor.workerState(0), WorkerState.STOPPING)
        for index in range(3):
            self.assertEqual(self.supervisor.process(index).signals, ["TERM"])
            self.supervisor.exited(index, "exited with status 0")
        self.successResultOf(stopped)

    def test_hangUpIsPassedOnToServingWorkers(self) -> None:
        """
        A SIGHUP goes to each worker that serves; one still starting (it may
        not handle it yet) gets it once it serves.
        """
        self.supervisor.start()
        self.supervisor.serving(0)
        self.supervisor.serving(1)
        self.supervisor.signalAll("HUP")
        signals = [self.supervisor.process(index).signals for index in range(3)]
        self.assertEqual(signals, [["HUP"], ["HUP"], []])
        self.supervisor.serving(2)
        self.assertEqual(signals, [["HUP"], ["HUP"], ["HUP"]])
        self.supervisor.serving(2)
        self.assertEqual(signals[2], ["HUP"])

    def test_aPendingHangUpDiesWithItsWorker(self) -> None:
        """A worker that ends before serving does not pass a SIGHUP on to the next one."""
        self.supervisor.start()
        self.supervisor.signalAll("HUP")
        self.supervisor.exited(0, "exited with status 1")
        self.clock.advance(1)
        self.supervisor.serving(0)
        self.assertEqual(self.supervisor.process(0).signals, [])

    def test_inputsAStateDoesNotTakeAreMistakes(self) -> None:
        """Being told a worker without a process ended is the caller's mistake, said."""
        self.supervisor.start()
        self.supervisor.exited(0, "exited with status 1")
        with self.assertRaises(WorkerStateError) as raised:
            self.supervisor.exited(0, "exited with status 1")
        self.assertEqual(str(raised.exception), "worker 0 is waiting: it cannot take exited")

    def test_aSupervisorNeedsAWorker(self) -> None:
        """No worker to supervise is a mistake."""
        self.assertRaises(ValueError, WorkerSupervisor, 0, self.spawner, self.clock)


class SpawnFailureTests(SynchronousTestCase):
    """A spawner that cannot start a process."""

    def test_aProcessThatCannotStartIsAFailureAtStart(self) -> None:
        """
        A worker whose process cannot be started is tried again after its
        back-off, as one that ended at once; five such failures in a row
        give up.
        """
        clock = Clock()
        attempts: list[int] = []

        def spawn(index: int) -> FakeProcess:
            attempts.append(index)
            raise OSError(24, "Too many open files")

        gaveUp: list[str] = []
        supervisor = WorkerSupervisor(2, spawn, clock, POLICY, gaveUp.append)
        supervisor.start()
        self.assertEqual(supervisor.workerState(0), WorkerState.WAITING)
        for _ in range(60):
            clock.advance(1)
        self.assertEqual(attempts, [0, 1] * 4 + [0])
        self.assertEqual(gaveUp, [
            "worker 0 failed at start 5 times in a row (last: could not be started (OSError: "
            "[Errno 24] Too many open files)); stopping the server"
        ])
        self.assertEqual(supervisor.state, SupervisorState.STOPPED)
        self.assertEqual(supervisor.workerState(1), WorkerState.STOPPED)

    def test_givingUpWhileStartingStartsNoMore(self) -> None:
        """A supervisor that gives up as it starts its first worker starts none after it."""
        attempts: list[int] = []

        def spawn(index: int) -> FakeProcess:
            attempts.append(index)
            raise OSError(24, "Too many open files")

        supervisor = WorkerSupervisor(3, spawn, Clock(), RestartPolicy(maxFailures=1))
        supervisor.start()
        self.assertEqual(attempts, [0])
        self.assertEqual(supervisor.state, SupervisorState.STOPPED)
        self.assertEqual([supervisor.workerState(i) for i in range(3)], [WorkerState.STOPPED] * 3)
