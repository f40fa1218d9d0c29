"""
Build and run the Go test peers in C{tunnel/test/go}.

The peers are small Go programs built on HashiCorp's yamux library, the
reference implementation the Python code must interoperate with. Each peer
prints C{LISTENING host:port} when it listens, and ends by printing one line
of JSON describing its result; see C{tunnel/test/go/yamuxpeer/main.go}.

Typical use in a trial test::

    reason = goAvailable()
    if reason is not None:
        raise SkipTest(reason)
    binary = buildGoPeer("yamuxpeer")
    peer = spawnGoPeer(reactor, binary, ["-role", "server",
                                         "-listen", "127.0.0.1:0",
                                         "-scenario", "echo"])
    self.addCleanup(peer.kill)
    host, port = yield peer.listening
    ...
    result = yield peer.result
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.internet.interfaces import IReactorProcess
from twisted.python.failure import Failure

__all__ = [
    "GO_PEERS_DIR",
    "GoPeerError",
    "GoPeerKilled",
    "GoPeerProcess",
    "buildGoPeer",
    "goAvailable",
    "spawnGoPeer",
]

GO_PEERS_DIR: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "go")
"""Directory holding one Go package (a directory) per test peer."""

_GOPATH = "/usr/share/gocode"
_YAMUX_SOURCE = os.path.join(_GOPATH, "src", "github.com", "hashicorp", "yamux")


class GoPeerError(RuntimeError):
    """
    A Go peer failed to build, or ended without the output it owes.
    """


class GoPeerKilled(GoPeerError):
    """
    A Go peer was terminated by L{GoPeerProcess.kill} before it finished.
    """


def goAvailable() -> str | None:
    """
    Tell whether the Go peers can be built here.

    @return: L{None} when they can, otherwise the reason they cannot, fit
        for a C{SkipTest} message.
    """
    if shutil.which("go") is None:
        return "the go toolchain is not on PATH"
    if not os.path.isdir(_YAMUX_SOURCE):
        return f"the yamux Go source is not installed in {_YAMUX_SOURCE}"
    return None


def _cacheDir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return os.path.join(base, "tunnel-test-go")


def _sourceDigest(packageDir: str) -> str:
    digest = hashlib.sha256()
    for name in sorted(os.listdir(packageDir)):
        if name.endswith(".go"):
            with open(os.path.join(packageDir, name), "rb") as f:
                content = f.read()
            digest.update(b"%d:%s\0%d:" % (len(name), name.encode(), len(content)))
            digest.update(content)
    return digest.hexdigest()


def buildGoPeer(name: str) -> str:
    """
    Build the Go peer C{name} (a package directory in L{GO_PEERS_DIR}),
    unless a binary built from the same sources is already cached.

    Binaries are cached in C{$XDG_CACHE_HOME/tunnel-test-go} (by default
    C{~/.cache/tunnel-test-go}) under a name that includes a digest of the
    package's C{.go} files. The build blocks; it is meant for test set-up.

    @param name: The package directory name, for instance C{"yamuxpeer"}.
    @return: The path of the executable.
    @raise GoPeerError: If the build fails; the message holds go's output.
    """
    packageDir = os.path.join(GO_PEERS_DIR, name)
    if not os.path.isdir(packageDir):
        raise GoPeerError(f"no Go peer named {name!r} in {GO_PEERS_DIR}")
    cache = _cacheDir()
    binary = os.path.join(cache, f"{name}-{_sourceDigest(packageDir)}")
    if os.access(binary, os.X_OK):
        return binary
    os.makedirs(cache, exist_ok=True)
    env = dict(os.environ, GOPATH=_GOPATH, GO111MODULE="off", GOFLAGS="")
    env.setdefault("GOCACHE", os.path.join(cache, "gocache"))
    # Build beside the final path and rename, so that concurrent test runs
    # never see a half-written binary.
    fd, partial = tempfile.mkstemp(prefix=f".{name}-", dir=cache)
    os.close(fd)
    try:
        completed = subprocess.run(
            ["go", "build", "-o", partial, "."],
            cwd=packageDir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if completed.returncode != 0:
            raise GoPeerError(
                f"building Go peer {name!r} failed:\n"
                + completed.stdout.decode("utf-8", "replace")
            )
        os.chmod(partial, 0o755)
        os.replace(partial, binary)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return binary


def _ignoreKilled(failure: Failure) -> None:
    failure.trap(GoPeerKilled)
    return None


class GoPeerProcess(protocol.ProcessProtocol):
    """
    A running Go peer.

    @ivar listening: Fires with C{(host, port)} once the peer listens. If the
        peer ends first, it fails with L{GoPeerError} (or L{GoPeerKilled}).
    @ivar result: Fires with the peer's final JSON line, as a L{dict}, once
        the process has ended. It fails with L{GoPeerError} if the peer ended
        without printing one, and with L{GoPeerKilled} if L{kill} ended it
        first.
    @ivar exitCode: The process exit code once it has ended, or L{None}
        (also when a signal ended it).
    """

    def __init__(self, expectListening: bool = True) -> None:
        """
        @param expectListening: Whether the peer was told to listen. If not,
            L{listening} is left unfired when the peer ends instead of failing.
        """
        self.listening: defer.Deferred[tuple[str, int]] = defer.Deferred()
        self.result: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.exitCode: int | None = None
        self._expectListening = expectListening
        self._stdout = b""
        self._lines: list[bytes] = []
        self._stderr: list[bytes] = []
        self._ended = False
        self._killed = False
        self._endWaiters: list[defer.Deferred[None]] = []
        self._lineWaiters: list[tuple[bytes, defer.Deferred[bytes]]] = []

    @property
    def stderr(self) -> str:
        """
        Everything the peer wrote to stderr so far, decoded leniently.
        """
        return b"".join(self._stderr).decode("utf-8", "replace")

    def outReceived(self, data: bytes) -> None:
        """
        Split stdout into lines; fire L{listening} on C{LISTENING host:port}.
        """
        self._stdout += data
        *lines, self._stdout = self._stdout.split(b"\n")
        for line in lines:
            self._lines.append(line)
            if line.startswith(b"LISTENING ") and not self.listening.called:
                host, _, port = line[len(b"LISTENING ") :].decode().rpartition(":")
                self.listening.callback((host.strip("[]"), int(port)))
            waiting, self._lineWaiters = self._lineWaiters, []
            for prefix, waiter in waiting:
                if line.startswith(prefix):
                    waiter.callback(line)
                else:
                    self._lineWaiters.append((prefix, waiter))

    def waitForLine(self, prefix: bytes) -> defer.Deferred[bytes]:
        """
        The first stdout line starting with C{prefix}, printed already or
        to come.

        @return: A L{defer.Deferred} firing with the line (without its end),
            or failing with L{GoPeerError} if the peer ends without one.
        """
        for line in self._lines:
            if line.startswith(prefix):
                return defer.succeed(line)
        waiter: defer.Deferred[bytes] = defer.Deferred()
        if self._ended:
            waiter.errback(self._failure(f"ended without printing {prefix!r}"))
        else:
            self._lineWaiters.append((prefix, waiter))
        return waiter

    def errReceived(self, data: bytes) -> None:
        """
        Keep the peer's diagnostics.
        """
        self._stderr.append(data)

    def processEnded(self, reason: Failure) -> None:
        """
        Fire L{result} (and L{listening} if it is still waiting).
        """
        self._ended = True
        if reason.check(error.ProcessDone, error.ProcessTerminated):
            self.exitCode = reason.value.exitCode
        if self._stdout:
            self._lines.append(self._stdout)
            self._stdout = b""
        outcome = self._parseResult()
        if self._expectListening and not self.listening.called:
            self.listening.errback(self._failure("ended before listening"))
        if isinstance(outcome, dict):
            self.result.callback(outcome)
        else:
            self.result.errback(self._failure(outcome))
        lineWaiters, self._lineWaiters = self._lineWaiters, []
        for prefix, lineWaiter in lineWaiters:
            lineWaiter.errback(self._failure(f"ended without printing {prefix!r}"))
        waiters, self._endWaiters = self._endWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _parseResult(self) -> dict[str, Any] | str:
        for line in reversed(self._lines):
            if line.strip():
                try:
                    parsed = json.loads(line)
                except ValueError:
                    break
                if isinstance(parsed, dict):
                    return parsed
                break
        return "ended without a JSON result line"

    def _failure(self, what: str) -> Failure:
        kind = GoPeerKilled if self._killed else GoPeerError
        tail = self.stderr[-4000:]
        return Failure(
            kind(f"Go peer {what} (exit code {self.exitCode}); stderr:\n{tail}")
        )

    def kill(self) -> defer.Deferred[None]:
        """
        Terminate the peer if it is still running.

        Any of L{listening} and L{result} still waiting then fail with
        L{GoPeerKilled}; callbacks added before this call see that failure,
        and it is not reported as an unhandled error otherwise.

        @return: A L{defer.Deferred} that fires once the process has ended,
            so that it can be returned from a cleanup function.
        """
        if self._ended:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._endWaiters.append(waiter)
        if not self._killed:
            self._killed = True
            for d in (self.listening, self.result):
                if not d.called:
                    d.addErrback(_ignoreKilled)
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
        return waiter


def spawnGoPeer(
    reactor: IReactorProcess, binary: str, args: list[str]
) -> GoPeerProcess:
    """
    Start a Go peer.

    @param reactor: The reactor that runs the process.
    @param binary: The executable, as returned by L{buildGoPeer}.
    @param args: Its command-line arguments (without the program name).
    @return: The running peer.
    """
    listens = any(a.lstrip("-").split("=", 1)[0] == "listen" for a in args)
    peer = GoPeerProcess(expectListening=listens)
    reactor.spawnProcess(peer, binary, [binary, *args], env=None)
    return peer

