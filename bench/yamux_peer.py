"""
One side of the yamux throughput benchmark, built on L{tunnel.mux}.

It runs one yamux session over one TCP connection, listening (C{--listen},
prints C{LISTENING host:port} and accepts a single connection) or dialling
(C{--connect}), and plays one role:

    send   open C{--streams} streams at once; on each, write C{--bytes}
           bytes in C{--chunk} sized writes from a push producer registered
           on the stream (it honours pause/resume), half-close, and read the
           reply to EOF; then close the session.
    sink   accept streams until the session ends; read each stream to EOF,
           answer with the decimal byte count and C{"\\n"}, half-close.

These are the C{send} and C{sink-source} scenarios of the Go peer in
C{tunnel/test/go/yamuxpeer}, so either side can face either implementation.
The peer ends by printing one line of JSON to stdout. Both roles report
C{cpu_seconds}, the user+system CPU time the process spent from the start of
the exchange (sender: just before the first stream is opened; sink: when
the connection is made) to its end; the sender also reports C{seconds}
(first open to the last reply) and C{mbps} (payload bytes / seconds / 1e6).

Run C{python bench/yamux_peer.py --help} for the options.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import resource
import sys
import time
from typing import Any

if __name__ == "__main__":
    # Run as a script from a checkout: make the project importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IListeningPort,
    IPushProducer,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.mux import YamuxFactory, YamuxProtocol
from tunnel.yamux import SessionConfig

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
"""Where benchmark results and profiles are written."""

DEFAULT_CHUNK = 256 * 1024
"""The size of each write of the sender."""

_log = Logger()


def cpuSeconds() -> float:
    """The user+system CPU time this process has used so far, in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(line: str) -> None:
    """Write one line of the peer's output protocol to stdout at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@implementer(IHalfCloseableProtocol, IPushProducer)
class SendStream(Protocol):
    """
    Writes C{size} bytes as fast as back-pressure allows, half-closes, and
    collects the peer's reply.

    @ivar done: fires with the reply once the stream is closed.
    """

    def __init__(self, size: int, chunk: bytes) -> None:
        self.remaining = size
        self.chunk = chunk
        self.paused = False
        self.producing = False
        self.reply: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        """Register as a streaming producer and start writing."""
        self.transport.registerProducer(self, True)
        self.produce()

    def produce(self) -> None:
        """Write chunks until paused or done; half-close when done."""
        if self.producing:
            return
        self.producing = True
        try:
            chunk = self.chunk
            size = len(chunk)
            write = self.transport.write
            while not self.paused and self.remaining > 0:
                if self.remaining >= size:
                    write(chunk)
                    self.remaining -= size
                else:
                    write(chunk[: self.remaining])
                    self.remaining = 0
        finally:
            self.producing = False
        if self.remaining <= 0 and self.transport.connected:
            self.transport.unregisterProducer()
            self.transport.loseWriteConnection()

    def pauseProducing(self) -> None:
        """The stream cannot take more for now."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The stream can take more: write on."""
        self.paused = False
        self.produce()

    def stopProducing(self) -> None:
        """The stream is gone: write no more."""
        self.paused = True
        self.remaining = 0

    def dataReceived(self, data: bytes) -> None:
        """Keep the reply."""
        self.reply.append(data)

    def readConnectionLost(self) -> None:
        """The peer half-closed after its reply."""

    def writeConnectionLost(self) -> None:
        """Our FIN was sent."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """The stream is closed: hand over the reply."""
        self.done.callback(b"".join(self.reply))


@implementer(IHalfCloseableProtocol)
class SinkStream(Protocol):
    """Counts what arrives; at EOF replies with the count and half-closes."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        """Count the bytes."""
        self.count += len(data)

    def readConnectionLost(self) -> None:
        """Reply with the count and half-close."""
        self.sink.bytes += self.count
        self.transport.write(b"%d\n" % (self.count,))
        self.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        """Our FIN was sent."""


class Sink(Factory):
    """Builds a L{SinkStream} for each stream the peer opens."""

    def __init__(self) -> None:
        self.streams = 0
        self.bytes = 0

    def buildProtocol(self, addr: Any) -> SinkStream:
        """Accept every stream."""
        self.streams += 1
        return SinkStream(self)


class MeasuredFactory(YamuxFactory):
    """
    A L{YamuxFactory} that records when its connection is made.

    @ivar cpuAtStart: the CPU seconds used when the connection was made.
    @ivar session: fires with the session of the first connection.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cpuAtStart = 0.0
        self.session: defer.Deferred[YamuxProtocol] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> YamuxProtocol:
        """Build the session and note the CPU time used so far."""
        self.cpuAtStart = cpuSeconds()
        protocol = super().buildProtocol(addr)
        if not self.session.called:
            self.session.callback(protocol)
        return protocol


def parseAddress(text: str) -> tuple[str, int]:
    """Split C{host:port}."""
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def connectSession(reactor: Any, options: argparse.Namespace,
                         factory: MeasuredFactory) -> YamuxProtocol:
    """Listen for or dial the single connection and return its session."""
    if options.connect:
        host, port = parseAddress(options.connect)
        return await TCP4ClientEndpoint(reactor, host, port).connect(factory)
    host, port = parseAddress(options.listen)
    listening: IListeningPort = await TCP4ServerEndpoint(
        reactor, port, interface=host
    ).listen(factory)
    address = listening.getHost()
    emit(f"LISTENING {address.host}:{address.port}")
    session = await factory.session
    await listening.stopListening()
    return session


async def runSend(reactor: Any, options: argparse.Namespace,
                  config: SessionConfig) -> dict[str, Any]:
    """Play the sender; return the result fields."""
    factory = MeasuredFactory(isClient=options.isClient, config=config)
    session = await connectSession(reactor, options, factory)
    chunk = bytes(range(256)) * (options.chunk // 256) + bytes(options.chunk % 256)
    cpuStart = cpuSeconds()
    start = time.perf_counter()
    protocols = [SendStream(options.bytes, chunk) for _ in range(options.streams)]
    for protocol in protocols:
        session.openStream(protocol).addErrback(lambda f: None)
    replies = [(await p.done).decode("ascii", "replace") for p in protocols]
    elapsed = time.perf_counter() - start
    closed = session.whenClosed()
    session.transport.loseConnection()
    await closed
    cpu = cpuSeconds() - cpuStart
    total = options.bytes * options.streams
    expected = f"{options.bytes}\n"
    wrong = sum(1 for reply in replies if reply != expected)
    return {
        "ok": wrong == 0,
        "error": f"{wrong} streams got a wrong reply" if wrong else "",
        "scenario": "send",
        "streams": options.streams,
        "bytes": total,
        "seconds": elapsed,
        "mbps": total / elapsed / 1e6,
        "cpu_seconds": cpu,
        "cpu_at_start": cpuStart,
        "replies": replies,
    }


async def runSink(reactor: Any, options: argparse.Namespace,
                  config: SessionConfig) -> dict[str, Any]:
    """Play the sink; return the result fields."""
    sink = Sink()
    factory = MeasuredFactory(isClient=options.isClient, streamFactory=sink, config=config)
    session = await connectSession(reactor, options, factory)
    await session.whenClosed()
    return {
        "ok": True,
        "error": "",
        "scenario": "sink-source",
        "streams": sink.streams,
        "bytes": sink.bytes,
        "cpu_seconds": cpuSeconds() - factory.cpuAtStart,
        "cpu_at_start": factory.cpuAtStart,
    }


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="One side of the yamux throughput benchmark."
    )
    parser.add_argument("--role", choices=["send", "sink"], required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="HOST:PORT",
                       help="accept one connection here (port 0: any)")
    where.add_argument("--connect", metavar="HOST:PORT", help="dial this address")
    parser.add_argument("--streams", type=int, default=1,
                        help="number of parallel streams (send)")
    parser.add_argument("--bytes", type=int, default=1 << 20,
                        help="payload bytes per stream (send)")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help="size of each write (send)")
    parser.add_argument("--window", type=int, default=None,
                        help="the session's maxStreamWindow in bytes "
                             "(default: 256 KiB, as yamux)")
    parser.add_argument("--profile", nargs="?", metavar="PATH",
                        const="", default=None,
                        help="profile with cProfile and write the stats to PATH "
                             "(default: bench/results/yamux_peer-<role>.pstats)")
    options = parser.parse_args(argv)
    # As the Go peer: the dialling side is the yamux client.
    options.isClient = bool(options.connect)
    if options.streams < 1 or options.chunk < 1 or options.bytes < 0:
        parser.error("--streams and --chunk must be positive, --bytes not negative")
    return options


def main(argv: list[str] | None = None) -> int:
    """Run the peer; return the exit status."""
    options = parseArguments(sys.argv[1:] if argv is None else argv)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(
            textFileLogObserver(sys.stderr),
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
        )],
        redirectStandardIO=False,
    )
    config = SessionConfig(enableKeepAlive=False)
    if options.window is not None:
        config = SessionConfig(enableKeepAlive=False, maxStreamWindow=options.window)
    from twisted.internet import reactor

    outcome: dict[str, Any] = {}

    def finished(result: dict[str, Any]) -> None:
        outcome.update(result)

    def failed(reason: Failure) -> None:
        _log.failure("the benchmark peer failed", reason)
        outcome.update(ok=False, error=reason.getErrorMessage())

    run = runSend if options.role == "send" else runSink
    d = defer.Deferred.fromCoroutine(run(reactor, options, config))
    d.addCallbacks(finished, failed)
    d.addBoth(lambda _: reactor.stop())

    profiler = cProfile.Profile() if options.profile is not None else None
    if profiler is not None:
        profiler.enable()
    reactor.run()
    if profiler is not None:
        profiler.disable()
        path = options.profile or os.path.join(
            RESULTS_DIR, f"yamux_peer-{options.role}.pstats"
        )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        profiler.dump_stats(path)
        outcome["profile"] = path
    outcome.setdefault("ok", False)
    emit(json.dumps(outcome))
    return 0 if outcome["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
