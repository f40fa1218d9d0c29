"""
A real C{redis-server} for the tests: a process of its own on a free
loopback port, keeping nothing on disk, that a test can stop, kill and
start again on the same port.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorProcess

from tunnel.test.twistdprocess import TwistdProcess

#: Where Debian's C{redis-server} package installs the server.
DEBIAN_REDIS_SERVER = "/usr/bin/redis-server"

#: What C{redis-server} logs once it accepts connections.
READY = r"Ready to accept connections"


def redisServerPath() -> str | None:
    """The C{redis-server} to run, if there is one."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    if os.access(DEBIAN_REDIS_SERVER, os.X_OK):
        return DEBIAN_REDIS_SERVER
    return None


def redisMissing() -> str | None:
    """
    L{None} if a C{redis-server} can be run here, otherwise why not, fit
    for a C{SkipTest} message.
    """
    if redisServerPath() is None:
        return (
            f"no redis-server: neither {DEBIAN_REDIS_SERVER} nor one on the PATH"
            " (Debian's redis-server package; .ci/setup installs it)"
        )
    return None


def freeLoopbackPort() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on, as of now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """
    A C{redis-server} process on 127.0.0.1 only, without persistence
    (C{--save "" --appendonly no}), in a temporary directory of its own
    that goes with the process.

    @ivar port: the port it listens on, the same across L{restart}s.
    @ivar process: the running process, or L{None}.
    """

    def __init__(self, reactor: IReactorProcess | None = None) -> None:
        self._reactor = globalReactor if reactor is None else reactor
        self.port = freeLoopbackPort()
        self.process: TwistdProcess | None = None

    @property
    def url(self) -> str:
        """Its URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Deferred[None]:
        """
        Start it; fire once it accepts connections, or fail if it does not
        within C{timeout} seconds.
        """
        if self.process is not None:
            raise RuntimeError("redis-server is running already")
        executable = redisServerPath()
        if executable is None:
            raise RuntimeError(redisMissing())
        directory = tempfile.mkdtemp(prefix="tunnel-redis-")
        argv = [
            executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", directory,
            "--logfile", "",
            "--daemonize", "no",
        ]
        process = TwistdProcess(self._reactor)  # type: ignore[arg-type]
        process.name = "redis-server"
        process.ended.addBoth(self._ended, process, directory)
        self._reactor.spawnProcess(process, executable, argv, env=dict(os.environ))
        self.process = process
        return process.waitFor(READY, timeout).addCallback(lambda _: None)

    def _ended(self, result: object, process: TwistdProcess, directory: str) -> object:
        if self.process is process:
            self.process = None
        shutil.rmtree(directory, ignore_errors=True)
        return result

    def stop(self) -> Deferred[None]:
        """Ask it to stop (C{SIGTERM}); fire once it has exited."""
        return self._end("TERM")

    def kill(self) -> Deferred[None]:
        """Kill it (C{SIGKILL}), as a crash would; fire once it has exited."""
        return self._end("KILL")

    def _end(self, signal: str) -> Deferred[None]:
        process = self.process
        if process is None:
            return succeed(None)
        process.signal(signal)
        return process.ended.addCallback(lambda _: None)

    def restart(self) -> Deferred[None]:
        """Stop it and start it again, on the same port; it starts empty."""
        return self.stop().addCallback(lambda _: self.start())
