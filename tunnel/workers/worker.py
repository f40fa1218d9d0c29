"""
A worker of C{--workers N}, as its supervisor starts it
(L{tunnel.workers.command}): C{python -m tunnel.workers.worker
--listeners COUNT SERVER-ARGUMENTS...}.

It runs the tunnel server of the arguments as the console command would,
but on the COUNT listeners it inherited (file descriptors 3 on) instead
of binding its own; it logs every event as JSON to its standard output,
for the supervisor (L{tunnel.workers.logs}), and says there when it
serves. It stops on C{SIGTERM} or C{SIGINT}, and by itself once its
standard input ends: the supervisor holds the other end, so it ends with
the supervisor, however that ends.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from twisted.internet import fdesc
from twisted.internet.error import ConnectionDone, ConnectionLost, ReactorNotRunning
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.workers.command import FIRST_LISTENER
from tunnel.workers.logs import SERVING_KEY, beginWorkerLogging

# Named so: run with -m, this module is __main__.
_log = Logger(namespace="tunnel.workers.worker")


@implementer(IReadDescriptor)
class ParentWatch:
    """
    Reads a pipe from the supervisor (the worker's standard input), which
    says nothing, and calls C{onEnd} once it ends.
    """

    def __init__(self, fileno: int, onEnd: Callable[[], None]) -> None:
        self._fileno = fileno
        self._onEnd = onEnd
        self._ended = False
        fdesc.setNonBlocking(fileno)

    def fileno(self) -> int:
        return self._fileno

    def logPrefix(self) -> str:
        return "supervisor"

    def doRead(self) -> Exception | None:
        try:
            data = os.read(self._fileno, 4096)
        except BlockingIOError:
            return None
        except OSError as e:
            self._ended = True
            return ConnectionLost(str(e))
        if data:
            return None
        self._ended = True
        return ConnectionDone()

    def connectionLost(self, reason: Failure) -> None:
        # A hang-up may be told without a read; and the reactor disconnects
        # every reader as it stops, when the pipe has not ended.
        if not self._ended:
            self.doRead()
        if self._ended:
            self._onEnd()


def _arguments(argv: list[str]) -> tuple[int, list[str]]:
    """The number of inherited listeners and the server's arguments."""
    if len(argv) < 2 or argv[0] != "--listeners" or not argv[1].isdigit():
        raise usage.UsageError("a worker starts with --listeners COUNT")
    return int(argv[1]), argv[2:]


def main(argv: list[str], reactor: object = None) -> int:
    """Run a worker with the arguments C{argv}; its exit status."""
    from tunnel.cli import EXIT_FAILED, EXIT_STOPPED, EXIT_USAGE, startupProblem
    from tunnel.options import ServerOptions
    from tunnel.tap import makeServerService

    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    # Its own process group: a terminal's Ctrl-C goes to the supervisor,
    # which stops the workers in order.
    os.setpgrp()
    beginWorkerLogging(sys.stdout)
    try:
        count, arguments = _arguments(argv)
        options = ServerOptions()
        options.parseOptions(arguments)
    except usage.UsageError as e:
        _log.critical("{error}", error=str(e))
        return EXIT_USAGE
    service = makeServerService(
        options, reactor, list(range(FIRST_LISTENER, FIRST_LISTENER + count))
    )
    problem = startupProblem(service)
    if problem is not None:
        _log.critical("{problem}", problem=problem)
        return EXIT_FAILED

    def supervisorGone() -> None:
        _log.warn("The supervisor is gone: stopping")
        try:
            reactor.stop()  # type: ignore[attr-defined]
        except ReactorNotRunning:
            pass

    reactor.addReader(ParentWatch(0, supervisorGone))  # type: ignore[attr-defined]
    reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
        "before", "shutdown", service.stopService
    )
    node = options["cluster"].name if options["cluster"] is not None else "-"
    reactor.callWhenRunning(  # type: ignore[attr-defined]
        _log.info, "Node {node} serves", node=node, **{SERVING_KEY: True}
    )
    reactor.run()  # type: ignore[attr-defined]
    return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
