"""
A soak of the tunnel: a long run of mixed public traffic through a
L{LoopbackTunnel} (C{twistd tunnel-server} and C{twistd tunnel-client} as
real processes, the Go origin behind the client): small GETs, some on
keep-alive connections, large downloads, large uploads echoed back or
hashed, and WebSocket exchanges. Every answer is checked byte for byte.

After a warm-up and again at the end, once every connection is closed, the
open files and resident memory of the server and the client are measured:
the files must be the same, and the memory within 5%.

The warm-up matters. The largest bodies take each process's buffers to
their high-water mark at once, but over the first tens of thousands of
mixed exchanges the resident memory of the server still grows by about 5%
before it holds still, while the number of blocks Python has allocated
does not grow: the C library's heap fragments. With
C{MALLOC_MMAP_THRESHOLD_=65536} in the environment (the processes inherit
it), allocations of 64 KiB and more, such as the buffers sockets are read
into, bypass the heap, and the growth is under 2%. The start is therefore
measured after a warm-up of a fifth of the run by default.

Run it (on Linux, with the Go toolchain and the yamux Go source the test
peers need; see C{tunnel/test/go/README.rst})::

    python -m tunnel.test.soak --requests 100000

It prints its progress and a summary, and exits with status 1 if an
exchange failed or a process kept more than it should. The test suite runs
a short version (L{tunnel.test.test_e2e_load.SoakTests}).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from typing import Any, Callable, Generator

import attrs
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorCore

from tunnel.test import exchanges
from tunnel.test.loopbacktunnel import LoopbackTunnel, Usage, unavailable
from tunnel.test.support import goPattern
from tunnel.test.twistdprocess import ensureOpenFileLimit

KiB = 1024
MiB = 1024 * KiB

#: The most a process's resident memory may grow over a run, a fraction of
#: its size at the start.
RSS_TOLERANCE = 0.05

#: How long one exchange may take, in seconds.
EXCHANGE_TIMEOUT = 60.0

#: The kinds of exchange and their weights.
MIX = {
    "get": 50,
    "keepalive": 10,
    "download": 12,
    "echo": 10,
    "upload": 8,
    "websocket": 10,
}

#: The largest WebSocket message.
LARGEST_MESSAGE = 16 * KiB

#: How many exchanges with the largest bodies each concurrent worker makes
#: at the start of a warm-up.
LARGEST_ROUNDS = 4

#: The largest small GET.
LARGEST_SMALL = 4 * KiB


@attrs.define
class SoakReport:
    """
    The outcome of a soak run.

    @ivar requests: how many exchanges were made after the warm-up.
    @ivar warmUp: how many exchanges the warm-up made.
    @ivar kinds: how many of each kind.
    @ivar failures: what went wrong, one line each.
    @ivar start: the server's and the client's usage at the start.
    @ivar end: their usage at the end.
    @ivar seconds: how long the exchanges took.
    @ivar bytesMoved: how many body bytes went through the tunnel.
    """

    requests: int
    warmUp: int = 0
    kinds: dict[str, int] = attrs.Factory(dict)
    failures: list[str] = attrs.Factory(list)
    start: dict[str, Usage] = attrs.Factory(dict)
    end: dict[str, Usage] = attrs.Factory(dict)
    seconds: float = 0.0
    bytesMoved: int = 0

    def problems(self, rssTolerance: float = RSS_TOLERANCE) -> list[str]:
        """
        What makes the run a failure, one line each: failed exchanges, a
        process with other than as many files open at the end as at the
        start, or one whose memory grew more than C{rssTolerance} (a
        fraction) of its size at the start.
        """
        found = []
        if self.failures:
            found.append(f"{len(self.failures)} exchanges failed, first: {self.failures[0]}")
        for name, start in self.start.items():
            end = self.end[name]
            if end.openFiles != start.openFiles:
                found.append(
                    f"the {name} has {end.openFiles} files open, {start.openFiles} at the start"
                )
            if end.residentKiB > start.residentKiB * (1 + rssTolerance):
                found.append(
                    f"the {name}'s RSS grew from {start.residentKiB} KiB to "
                    f"{end.residentKiB} KiB, more than {rssTolerance:.0%}"
                )
        return found

    def summary(self) -> str:
        """The report, for people."""
        lines = [
            f"{self.requests} exchanges in {self.seconds:.1f} s "
            f"({self.requests / max(self.seconds, 1e-9):.0f}/s) after {self.warmUp} to warm up, "
            f"{self.bytesMoved / MiB:.0f} MiB of bodies, {len(self.failures)} failed",
            "  " + ", ".join(f"{kind}: {count}" for kind, count in sorted(self.kinds.items())),
        ]
        for name, start in self.start.items():
            end = self.end.get(name)
            if end is None:
                continue
            growth = (end.residentKiB - start.residentKiB) / start.residentKiB
            lines.append(
                f"  {name}: open files {start.openFiles} -> {end.openFiles}, "
                f"RSS {start.residentKiB} -> {end.residentKiB} KiB ({growth:+.1%})"
            )
        lines.extend(f"  failure: {failure}" for failure in self.failures[:10])
        return "\n".join(lines)


class Soak:
    """
    Mixed traffic through a tunnel, C{concurrency} exchanges at a time,
    chosen at random by their weights in L{MIX}.
    """

    def __init__(
        self,
        tunnel: LoopbackTunnel,
        concurrency: int = 50,
        largest: int = MiB,
        seed: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        """
        @param tunnel: the started tunnel.
        @param concurrency: how many exchanges run at once.
        @param largest: the largest download or upload, in bytes; they
            range from a sixteenth of it to all of it.
        @param seed: seeds the choice of exchanges and sizes.
        @param progress: told about progress, one line at a time.
        """
        self.tunnel = tunnel
        self.concurrency = concurrency
        self.largest = largest
        self.random = random.Random(seed)
        self.progress = progress or (lambda line: None)
        self._pattern = goPattern(largest)
        self._payload = os.urandom(largest)
        self._warming = False

    @defer.inlineCallbacks
    def run(self, requests: int, warmUp: int = 0) -> Generator[Any, Any, SoakReport]:
        """
        Warm up, measure, make C{requests} exchanges, measure again; fire
        with the report of the C{requests} exchanges, or of the warm-up if
        one of its exchanges failed.

        The warm-up, unless C{warmUp} is 0, is L{LARGEST_ROUNDS} exchanges
        per concurrent worker whose downloads and uploads have the largest
        bodies, which take each process's buffers to their high-water mark,
        then C{warmUp} exchanges of the regular mix, over which the
        fragmentation of the processes' heaps settles (see the module's
        docstring). What a process holds after the warm-up is the baseline
        the run must come back to.
        """
        report = SoakReport(requests)
        if warmUp:
            largest = LARGEST_ROUNDS * self.concurrency
            report.warmUp = largest + warmUp
            self.progress(
                f"warming up: {largest} exchanges of the largest bodies, then {warmUp} mixed"
            )
            for count, warming in ((largest, True), (warmUp, False)):
                warm = SoakReport(count)
                self._warming = warming
                try:
                    yield self._exchanges(warm)
                finally:
                    self._warming = False
                if warm.failures:
                    return warm
        report.start = yield self.tunnel.settledUsage()
        self.progress(f"start: {_usageLine(report.start)}")
        started = self.tunnel.reactor.seconds()
        yield self._exchanges(report)
        report.seconds = self.tunnel.reactor.seconds() - started
        report.end = yield self.tunnel.settledUsage(report.start)
        self.progress(f"end: {_usageLine(report.end)}")
        return report

    def _exchanges(self, report: SoakReport) -> defer.Deferred[None]:
        """Make C{report.requests} exchanges, recording them in C{report}."""
        numbers = iter(range(report.requests))
        step = max(report.requests // 20, 1)
        finished = 0

        @defer.inlineCallbacks
        def worker() -> Generator[Any, Any, None]:
            nonlocal finished
            for number in numbers:
                kind = self.random.choices(list(MIX), list(MIX.values()))[0]
                report.kinds[kind] = report.kinds.get(kind, 0) + 1
                try:
                    moved = yield self._start(kind).addTimeout(
                        EXCHANGE_TIMEOUT, self.tunnel.reactor
                    )
                    report.bytesMoved += moved
                except Exception as e:
                    report.failures.append(f"#{number} {kind}: {e!r}"[:300])
                finished += 1
                if finished % step == 0:
                    self.progress(
                        f"{finished}/{report.requests} exchanges, {len(report.failures)} failed; "
                        f"{_usageLine(self.tunnel.usage())}"
                    )

        return defer.gatherResults(
            [worker() for _ in range(self.concurrency)], consumeErrors=True
        ).addCallback(lambda _: None)

    def _size(self) -> int:
        """The size of a large body."""
        if self._warming:
            return self.largest
        return self.random.randint(self.largest // 16, self.largest)

    def _smallSize(self) -> int:
        """The size of a small GET's answer."""
        return self.random.randint(1, LARGEST_SMALL)

    def _start(self, kind: str) -> defer.Deferred[int]:
        """Start an exchange of C{kind}."""
        tunnel = self.tunnel
        if kind == "get":
            return exchanges.get(tunnel, self._smallSize())
        if kind == "keepalive":
            return exchanges.keepAlive(tunnel, [self._smallSize() for _ in range(5)])
        if kind == "download":
            size = self._size()
            return exchanges.download(tunnel, size, self._pattern[:size])
        if kind == "echo":
            return exchanges.echo(tunnel, self._payload[:self._size()])
        if kind == "upload":
            return exchanges.upload(tunnel, self._payload[:self._size()])
        if kind == "websocket":
            messages = []
            for _ in range(self.random.randint(1, 3)):
                size = self.random.randint(1, LARGEST_MESSAGE)
                offset = self.random.randint(0, self.largest - size)
                messages.append(self._payload[offset:offset + size])
            return exchanges.webSocket(tunnel, messages)
        raise ValueError(f"no exchange of kind {kind!r}")


def _usageLine(usage: dict[str, Usage]) -> str:
    return "; ".join(
        f"{name} {each.openFiles} files, RSS {each.residentKiB} KiB" for name, each in usage.items()
    )


@defer.inlineCallbacks
def runSoak(
    reactor: Any,
    workDirectory: str,
    requests: int,
    warmUp: int,
    concurrency: int = 50,
    largest: int = MiB,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Generator[Any, Any, SoakReport]:
    """
    Start a L{LoopbackTunnel} in C{workDirectory}, run a L{Soak} of
    C{warmUp} and C{requests} exchanges through it, stop it; fire with the
    L{SoakReport}.
    """
    tunnel = LoopbackTunnel(reactor, workDirectory)
    try:
        yield tunnel.start()
        soak = Soak(tunnel, concurrency, largest, seed, progress)
        report = yield soak.run(requests, warmUp)
    finally:
        yield tunnel.stop()
    return report


def openFilesNeeded(concurrency: int) -> int:
    """The limit of open files a soak of C{concurrency} exchanges at once needs."""
    return 4 * concurrency + 256


def main(reactor: IReactorCore, *argv: str) -> defer.Deferred[None]:
    """Run a soak from the command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m tunnel.test.soak",
        description="Soak the tunnel with mixed traffic through real twistd processes.",
    )
    parser.add_argument("--requests", type=int, default=100_000,
                        help="exchanges after the warm-up (default 100000)")
    parser.add_argument("--warm-up", type=int, default=None,
                        help="mixed exchanges before the start is measured, after "
                             "%d per concurrent exchange with the largest bodies "
                             "(default: 20%% of --requests, at least 2000)" % LARGEST_ROUNDS)
    parser.add_argument("--concurrency", type=int, default=50,
                        help="exchanges at once (default 50)")
    parser.add_argument("--largest", type=int, default=MiB,
                        help="the largest download or upload in bytes (default 1 MiB)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the choice of exchanges and sizes (default 0)")
    parser.add_argument("--rss-tolerance", type=float, default=RSS_TOLERANCE,
                        help="the most the RSS may grow, a fraction (default 0.05)")
    arguments = parser.parse_args(argv)
    if arguments.largest < LARGEST_MESSAGE:
        parser.error(f"--largest must be at least {LARGEST_MESSAGE}")
    reason = unavailable() or ensureOpenFileLimit(openFilesNeeded(arguments.concurrency))
    if reason is not None:
        raise SystemExit(f"cannot soak here: {reason}")
    warmUp = arguments.warm_up
    if warmUp is None:
        warmUp = max(2000, arguments.requests // 5)

    def progress(line: str) -> None:
        print(line, flush=True)

    @defer.inlineCallbacks
    def soak() -> Generator[Any, Any, None]:
        with tempfile.TemporaryDirectory(prefix="tunnel-soak-") as workDirectory:
            report = yield runSoak(
                reactor, workDirectory, arguments.requests, warmUp, arguments.concurrency,
                arguments.largest, arguments.seed, progress,
            )
        print(report.summary())
        problems = report.problems(arguments.rss_tolerance)
        for problem in problems:
            print(f"PROBLEM: {problem}")
        if problems:
            raise SystemExit(1)
        print("OK")

    return soak()


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
