"""
Running the twistd plugins as real processes in end-to-end tests.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import sys
from typing import Mapping

from twisted.internet import defer, protocol
from twisted.internet.error import ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.python.failure import Failure

import tunnel


def twistdCommand() -> list[str]:
    """The command that runs twistd with this Python."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class TwistdProcess(protocol.ProcessProtocol):
    """
    A twistd process whose log (on standard output) can be waited on, and
    whose use of resources can be measured.

    @ivar output: everything the process wrote so far, as text (its last
        C{maxOutput} characters, when that is set).
    @ivar maxOutput: how much of the output to keep, or L{None} for all of
        it: a long run logs a line for every request.
    @ivar ended: fires with the exit code once the process has ended.
    @ivar name: what the process is, for the messages of failures.
    """

    maxOutput: int | None = None
    name = "twistd"

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.output = ""
        self.ended: defer.Deferred[int] = defer.Deferred()
        self._waiters: list[tuple[re.Pattern[str], defer.Deferred[re.Match[str]]]] = []
        self._exitCode: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")
        if self.maxOutput is not None and len(self.output) > 2 * self.maxOutput:
            self.output = self.output[-self.maxOutput:]
        for waiter in list(self._waiters):
            pattern, found = waiter
            match = pattern.search(self.output)
            if match is not None:
                self._waiters.remove(waiter)
                found.callback(match)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self._exitCode = 0 if reason.check(ProcessDone) else reason.value.exitCode
        waiters, self._waiters = self._waiters, []
        for pattern, found in waiters:
            found.errback(RuntimeError(
                f"{self.name} exited ({self._exitCode}) before logging {pattern.pattern!r}:\n"
                + self.output[-4000:]
            ))
        self.ended.callback(self._exitCode)

    def waitFor(self, pattern: str, timeout: float = 30.0) -> defer.Deferred[re.Match[str]]:
        """
        Fire with the first match of C{pattern} in the output (earlier output
        included), or fail after C{timeout} seconds or when the process ends.
        """
        compiled = re.compile(pattern)
        match = compiled.search(self.output)
        if match is not None:
            return defer.succeed(match)
        if self._exitCode is not None:
            return defer.fail(RuntimeError(f"{self.name} has exited:\n{self.output[-4000:]}"))
        found: defer.Deferred[re.Match[str]] = defer.Deferred()
        self._waiters.append((compiled, found))
        return found.addTimeout(timeout, self._clock)

    @property
    def pid(self) -> int:
        """The process ID."""
        return self.transport.pid

    def openFiles(self) -> int:
        """How many file descriptors the process has open (Linux only)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def residentKiB(self) -> int:
        """The process's resident memory, VmRSS, in KiB (Linux only)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def signal(self, name: str) -> None:
        """Send a signal (C{"TERM"}, C{"KILL"}, C{"STOP"}, C{"CONT"}) if still running."""
        try:
            self.transport.signalProcess(getattr(signal, "SIG" + name))
        except ProcessExitedAlready:
            pass

    def stop(self) -> defer.Deferred[int]:
        """Ask the process to stop (SIGTERM) and fire with its exit code."""
        self.signal("TERM")
        return self.ended

    def kill(self) -> defer.Deferred[int]:
        """Kill the process (SIGKILL) and fire once it has ended."""
        self.signal("KILL")
        return self.ended


def spawnTwistd(
    reactor: IReactorProcess,
    plugin: str,
    arguments: list[str],
    environment: Mapping[str, str] | None = None,
) -> TwistdProcess:
    """
    Start C{twistd -n PLUGIN ARGUMENTS...} logging to standard output.

    The child's environment is ours plus C{environment}.
    """
    argv = twistdCommand() + ["--nodaemon", "--logfile=-", "--pidfile=", plugin, *arguments]
    return spawnPython(reactor, argv, environment)


def spawnPython(
    reactor: IReactorProcess,
    argv: list[str],
    environment: Mapping[str, str] | None = None,
    usePTY: bool = False,
) -> TwistdProcess:
    """
    Start a Python program (C{argv[0]} is this Python) whose output can be
    waited on, importing the same C{tunnel} package as the tests.

    @param usePTY: give it a pseudo-terminal, as a person's shell would,
        instead of pipes; its standard output and error then both arrive,
        with C{\r\n} line ends, as its output.
    """
    process = TwistdProcess(reactor)  # type: ignore[arg-type]
    # The child imports the same tunnel package (and finds its plugins)
    # whether the tests run from a checkout or from an installed copy.
    packageRoot = os.path.dirname(os.path.dirname(os.path.abspath(tunnel.__file__)))
    pythonPath = os.pathsep.join([packageRoot, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": pythonPath, **(environment or {})}
    reactor.spawnProcess(process, argv[0], argv, env=env, usePTY=usePTY)
    return process


def processMetricsAvailable() -> str | None:
    """
    L{None} if L{TwistdProcess.openFiles} and L{TwistdProcess.residentKiB}
    work here, otherwise why not, fit for a C{SkipTest} message.
    """
    if not os.path.exists(f"/proc/{os.getpid()}/status"):
        return "process metrics need Linux's /proc"
    return None


def ensureOpenFileLimit(wanted: int) -> str | None:
    """
    Raise this process's soft limit of open files (C{RLIMIT_NOFILE}) to at
    least C{wanted}, as far as the hard limit allows; the processes it
    starts afterwards inherit the limit.

    @return: L{None} if the limit is now high enough, otherwise why not,
        fit for a C{SkipTest} message.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            return f"the hard limit of open files ({hard}) is below {wanted}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return None


def listeningPort(match: re.Match[str]) -> int:
    """The port number of a match of L{LISTENING}."""
    return int(match.group("port"))


#: A pattern matching Twisted's log line for a port that started listening.
LISTENING = r"starting on (?P<port>\d+)"
