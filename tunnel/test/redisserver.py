"""
A real C{redis-server} for the tests: a process of its own on a free
loopback port, keeping nothing on disk, that a test can stop, kill and
start again on the same port; and a real Redis Sentinel watching one.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Sequence

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

    #: What it logs once it accepts connections.
    ready = READY

    def __init__(
        self, reactor: IReactorProcess | None = None, arguments: Sequence[str] = ()
    ) -> None:
        """
        @param arguments: more arguments of C{redis-server}, such as
            C{["--replicaof", "127.0.0.1", "6379"]}.
        """
        self._reactor = globalReactor if reactor is None else reactor
        self.port = freeLoopbackPort()
        self.process: TwistdProcess | None = None
        self._arguments = list(arguments)

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
        argv = [executable, *self._argv(directory)]
        process = TwistdProcess(self._reactor)  # type: ignore[arg-type]
        process.name = "redis-server"
        process.ended.addBoth(self._ended, process, directory)
        self._reactor.spawnProcess(process, executable, argv, env=dict(os.environ))
        self.process = process
        return process.waitFor(self.ready, timeout).addCallback(lambda _: None)

    def _argv(self, directory: str) -> list[str]:
        """The arguments of C{redis-server}, to run in C{directory}."""
        return [
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", directory,
            "--logfile", "",
            "--daemonize", "no",
            *self._arguments,
        ]

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


class RedisSentinel(RedisServer):
    """
    A Redis Sentinel (C{redis-server CONF --sentinel}) on 127.0.0.1 only,
    monitoring one primary as C{service} with a quorum of one, quick to
    find it down (C{down-after-milliseconds}) and to fail it over; its
    configuration file, which it rewrites, is in its temporary directory.
    """

    ready = r"\+monitor master"

    def __init__(
        self,
        primary: RedisServer,
        service: str = "main",
        reactor: IReactorProcess | None = None,
        downAfter: int = 1000,
        failoverTimeout: int = 3000,
        password: str | None = None,
        sentinelPassword: str | None = None,
    ) -> None:
        """
        @param downAfter: milliseconds without an answer from the primary
            before the sentinel fails it over.
        @param password: the password of the primary and its replicas.
        @param sentinelPassword: the sentinel's own password, if any.
        """
        super().__init__(reactor)
        self._primary = primary.port
        self._service = service
        self._downAfter = downAfter
        self._failoverTimeout = failoverTimeout
        self._password = password
        self._sentinelPassword = sentinelPassword

    def _argv(self, directory: str) -> list[str]:
        conf = os.path.join(directory, "sentinel.conf")
        with open(conf, "w") as f:
            f.write(
                f"port {self.port}\n"
                "bind 127.0.0.1\n"
                f"dir {directory}\n"
                'logfile ""\n'
                "daemonize no\n"
                f"sentinel monitor {self._service} 127.0.0.1 {self._primary} 1\n"
                f"sentinel down-after-milliseconds {self._service} {self._downAfter}\n"
                f"sentinel failover-timeout {self._service} {self._failoverTimeout}\n"
            )
            if self._password is not None:
                f.write(f"sentinel auth-pass {self._service} {self._password}\n")
            if self._sentinelPassword is not None:
                f.write(f"requirepass {self._sentinelPassword}\n")
        return [conf, "--sentinel"]
