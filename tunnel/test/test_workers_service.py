"""
Tests for L{tunnel.workers.service}: the supervisor's service binds the
public listeners, starts the workers with them once the reactor runs,
hears them, passes SIGHUP on and stops them, on a fake reactor whose
processes are records.
"""

from __future__ import annotations

import io
import signal
import socket

from twisted.internet.error import CannotListenError, ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tunnel.options import ServerOptions
from tunnel.workers.command import workerCommand, workerEnvironment
from tunnel.workers.logs import SERVING_KEY, workerLogObserver
from tunnel.workers.service import WorkersService, howItEnded
from tunnel.workers.supervisor import RestartPolicy, SupervisorState, WorkerState

SECRET = "a cluster secret of the workers' service tests"


class FakeTransport:
    """A worker's process: its pid and the signals it got."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeReactor(Clock):
    """A clock that runs when told, records the processes it spawns and its stop."""

    def __init__(self) -> None:
        super().__init__()
        self.running = False
        self.stopped = False
        self.spawned: list[dict] = []
        self._whenRunning: list[tuple] = []

    def callWhenRunning(self, f, *args, **kwargs) -> None:
        if self.running:
            f(*args, **kwargs)
        else:
            self._whenRunning.append((f, args, kwargs))

    def run(self) -> None:
        self.running = True
        for f, args, kwargs in self._whenRunning:
            f(*args, **kwargs)

    def stop(self) -> None:
        self.stopped = True

    def callFromThread(self, f, *args) -> None:
        f(*args)

    def spawnProcess(self, protocol, executable, args, env, childFDs) -> None:
        transport = FakeTransport(2000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append({"protocol": protocol, "executable": executable, "args": args,
                             "env": env, "childFDs": childFDs, "transport": transport})


def serving() -> bytes:
    """The record a worker writes once it serves."""
    stream = io.StringIO()
    Logger(observer=workerLogObserver(stream)).info("serves", **{SERVING_KEY: True})
    return stream.getvalue().encode("utf-8")


class WorkersServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        secret = self.mktemp()
        with open(secret, "w") as f:
            f.write(SECRET + "\n")
        self.cluster = ["--redis", "redis://127.0.0.1:6399", "--cluster-secret-file", secret]
        self.reactor = FakeReactor()
        self.gaveUp: list[None] = []

    def service(self, *argv: str) -> WorkersService:
        self.options = ServerOptions()
        self.options.parseOptions(["--workers", "2", *self.cluster,
                                   "--listen", "tcp:0:interface=127.0.0.1", *argv])
        service = WorkersService(
            self.options, self.reactor, RestartPolicy(), lambda: self.gaveUp.append(None)
        )
        self.addCleanup(service._close, None)
        return service

    def started(self, *argv: str) -> WorkersService:
        service = self.service(*argv)
        service.privilegedStartService()
        service.startService()
        self.reactor.run()
        return service

    def ended(self, index: int, reason: Failure) -> None:
        self.reactor.spawned[index]["protocol"].processEnded(reason)

    def test_listenersAreBoundThenWorkersStartedWithThem(self) -> None:
        """
        The listeners are bound at the privileged start; the workers start
        once the reactor runs (after twistd dropped privileges), each with
        the listeners from file descriptor 3 on, in their order.
        """
        service = self.service("--tcp", "tcp:0:interface=127.0.0.1=an-identifier")
        service.privilegedStartService()
        self.assertEqual(len(service.sockets), 2)
        for bound in service.sockets:
            self.assertEqual(bound.getsockname()[0], "127.0.0.1")
            self.assertNotEqual(bound.getsockname()[1], 0)
        service.startService()
        self.assertEqual(self.reactor.spawned, [])
        self.reactor.run()
        self.assertEqual(len(self.reactor.spawned), 2)
        for index, spawned in enumerate(self.reactor.spawned):
            self.assertEqual(spawned["args"], workerCommand(self.options, index))
            self.assertEqual(spawned["executable"], spawned["args"][0])
            self.assertEqual(spawned["env"], workerEnvironment())
            self.assertEqual(spawned["childFDs"], {
                0: "w", 1: "r", 2: "r",
                3: service.sockets[0].fileno(), 4: service.sockets[1].fileno(),
            })

    def test_aListenerThatCannotBeBoundStopsTheStart(self) -> None:
        """A port in use is L{CannotListenError}, and the listeners bound before it are closed."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        service = self.service("--listen", f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1")
        self.assertRaises(CannotListenError, service.privilegedStartService)
        self.assertEqual(service.sockets, [])

    def test_workersAreHeard(self) -> None:
        """
        A worker's serving record makes it serving; its end is told, with
        how it ended, and it is started again.
        """
        service = self.started()
        first = self.reactor.spawned[0]
        first["protocol"].childDataReceived(1, serving())
        self.assertEqual(service.supervisor.workerState(0), WorkerState.SERVING)
        self.reactor.advance(5)
        self.ended(0, Failure(ProcessTerminated(signal=signal.SIGKILL)))
        self.assertEqual(service.supervisor.workerState(0), WorkerState.WAITING)
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.reactor.spawned[2]["args"], workerCommand(self.options, 0))

    def test_givingUpStopsTheReactorWithAFailure(self) -> None:
        """
        A worker failing at start five times in a row stops the reactor,
        the process to end with a failed status.
        """
        service = self.started()
        for attempt in range(5):
            self.assertEqual(self.gaveUp, [])
            self.ended(len(self.reactor.spawned) - 1, Failure(ProcessTerminated(exitCode=1)))
            self.reactor.advance(10)
        self.assertEqual((self.gaveUp, self.reactor.stopped), ([None], True))
        self.assertIn("worker 1 failed at start 5 times in a row", service.supervisor.failure)

    def test_stopTerminatesTheWorkersThenClosesTheListeners(self) -> None:
        """
        Stopping sends each worker SIGTERM, fires once all ended, and only
        then closes the listeners.
        """
        service = self.started()
        stopped = service.stopService()
        transports = [spawned["transport"] for spawned in self.reactor.spawned]
        self.assertEqual([t.signals for t in transports], [["TERM"], ["TERM"]])
        self.ended(0, Failure(ProcessDone(0)))
        self.assertNoResult(stopped)
        self.assertNotEqual(service.sockets, [])
        [bound] = service.sockets
        self.ended(1, Failure(ProcessDone(0)))
        self.successResultOf(stopped)
        self.assertEqual((service.sockets, bound.fileno()), ([], -1))
        self.assertEqual(service.supervisor.state, SupervisorState.STOPPED)

    def test_hangUpIsPassedOnWhenThereIsAHostsFileToReload(self) -> None:
        """
        With a hosts file, SIGHUP is handled while running: it goes to the
        workers that serve; the handler before it is put back at stop.
        """
        hosts = self.mktemp()
        with open(hosts, "w") as f:
            f.write("a.example=an-identifier\n")
        before = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, before)
        service = self.started("--hosts-file", hosts)
        handler = signal.getsignal(signal.SIGHUP)
        self.assertNotEqual(handler, before)
        self.reactor.spawned[1]["protocol"].childDataReceived(1, serving())
        handler(signal.SIGHUP, None)
        self.assertEqual([s["transport"].signals for s in self.reactor.spawned], [[], ["HUP"]])
        stopped = service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
        for index in (0, 1):
            self.ended(index, Failure(ProcessDone(0)))
        self.successResultOf(stopped)

    def test_nothingToReloadLeavesHangUpAlone(self) -> None:
        """Without a file to reload, SIGHUP is left as it was, as a single process leaves it."""
        before = signal.getsignal(signal.SIGHUP)
        self.started()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)

    def test_howItEnded(self) -> None:
        """A process's end is said with its status, or the signal that killed it, by name."""
        self.assertEqual(howItEnded(Failure(ProcessDone(0))), "exited with status 0")
        self.assertEqual(howItEnded(Failure(ProcessTerminated(exitCode=3))), "exited with status 3")
        self.assertEqual(howItEnded(Failure(ProcessTerminated(signal=9))), "was killed by SIGKILL")
