"""
The console commands C{tunnel-server} and C{tunnel-client}, and how both
they and the twistd plugins report the mistakes people make.

The commands take the options of the twistd plugins and run the same
services in the foreground, logging to standard error one line per event.
Their exit status is L{EXIT_STOPPED} after a stop by C{SIGINT} or
C{SIGTERM}, L{EXIT_FAILED} when the service cannot start (a port in use, a
port it may not bind) or the server refused the client's identifier
C{--give-up-after} times in a row (3 by default here, never under twistd;
with several servers, every server did), and L{EXIT_USAGE} for a usage
error, which is said
in two lines, the second naming the fix, never as the whole help and never
as a traceback.
"""

from __future__ import annotations

import difflib
import re
import sys
from typing import Any, Callable, Mapping, Sequence, TextIO

import attrs
from twisted.application.service import IService, MultiService
from twisted.internet.error import CannotListenError
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.python import usage

from tunnel import tap
from tunnel.client import ClientState, Forward
from tunnel.client.inspector import DEFAULT_INSPECT
from tunnel.listening import listenProblem
from tunnel.options import ClientOptions, ServerOptions

#: The exit status after a stop by a signal.
EXIT_STOPPED = 0

#: The exit status when the service cannot start.
EXIT_FAILED = 1

#: The exit status of a usage error.
EXIT_USAGE = 2

_log = Logger()

@attrs.frozen
class Command:
    """
    One side of the tunnel as a command.

    @ivar name: the console command's name.
    @ivar options: the options class, shared with the twistd plugin.
    @ivar makeService: builds the service from parsed options and a reactor.
    @ivar synonyms: words people type for an option, by the option they
        mean (C{port} for the client's C{local}), for "did you mean".
    @ivar defaults: the command's own defaults of options, where they
        differ from the twistd plugin's.
    """

    name: str
    options: type[usage.Options]
    makeService: Callable[[usage.Options, object], IService]
    synonyms: Mapping[str, str] = attrs.field(factory=dict)
    defaults: Mapping[str, Any] = attrs.field(factory=dict)


SERVER = Command(
    "tunnel-server",
    ServerOptions,
    tap.makeServerService,  # type: ignore[arg-type]
    {"port": "listen", "bind": "listen", "address": "listen"},
)
CLIENT = Command(
    "tunnel-client",
    ClientOptions,
    tap.makeClientService,  # type: ignore[arg-type]
    {"port": "local", "to": "local", "target": "local", "url": "server", "id": "identifier"},
    # A person at a terminal is told of a refused identifier and the
    # command ends (a daemon keeps trying), and sees a line per request.
    # The inspector is at hand on loopback.
    {"give-up-after": 3, "log-requests": "yes", "inspect": DEFAULT_INSPECT},
)

# getopt's and usage.Options' words for an option they do not know.
_UNKNOWN_OPTION = re.compile(r"option -{1,2}([\w-]+) not recognized|No such option '([\w-]+)'")


def suggestOption(command: Command, options: usage.Options, unknown: str) -> str | None:
    """
    The long option of C{options} that someone who typed C{unknown} most
    likely meant, or L{None}.
    """
    if unknown in command.synonyms:
        return command.synonyms[unknown]
    known = [name.rstrip("=") for name in options.longOpt]
    close = difflib.get_close_matches(unknown, known, n=1, cutoff=0.6)
    return close[0] if close else None


def usageErrorMessage(
    program: str, command: Command, options: usage.Options, error: usage.UsageError
) -> str:
    """
    The two lines that tell of a usage error: what is wrong (with the option
    meant, for an unknown one) and where the options are listed.

    @param program: the command as typed, e.g. C{twistd tunnel-server}.
    """
    text = str(error)
    unknown = _UNKNOWN_OPTION.search(text)
    if unknown is not None:
        meant = suggestOption(command, options, unknown.group(1) or unknown.group(2))
        if meant is not None:
            text += f" (did you mean --{meant}?)"
    return f"{program}: {text}\nRun '{program} --help' to see every option.\n"


def startupProblem(service: IService) -> str | None:
    """
    Start C{service}: L{None} if it started, otherwise what stops it, in
    one line.
    """
    try:
        service.privilegedStartService()
        service.startService()
    except CannotListenError as e:
        return listenProblem(e)
    return None


class OneLineStartupErrors(MultiService):
    """
    The service of a twistd plugin: its one child started as the console
    command starts it, so that what stops it is said in one line, not in a
    traceback, and twistd exits with L{EXIT_FAILED}.
    """

    def __init__(self, program: str, service: IService) -> None:
        super().__init__()
        self._program = program
        self._started = False
        service.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """Start the child's listeners (twistd does this before dropping privileges)."""
        self._started = True
        self._startOrExit()

    def startService(self) -> None:
        """Start the child, unless L{privilegedStartService} did."""
        if not self._started:
            self._startOrExit()
        self.running = 1

    def _startOrExit(self) -> None:
        for child in self:
            problem = startupProblem(child)
            if problem is not None:
                raise SystemExit(f"{self._program}: {problem}")


def oneLineUsageErrors(command: Command, program: str) -> type[usage.Options]:
    """
    The options class of C{command} for a twistd plugin: a usage error is
    said as L{usageErrorMessage} says it, and ends the process with
    L{EXIT_USAGE}, instead of under twistd's whole help.
    """

    class Options(command.options):  # type: ignore[misc, valid-type]
        __doc__ = command.options.__doc__

        def parseOptions(self, options: list[str] | None = None) -> None:
            try:
                super().parseOptions(options)
            except usage.UsageError as e:
                sys.stderr.write(usageErrorMessage(program, command, self, e))
                raise SystemExit(EXIT_USAGE) from None

    Options.__name__ = Options.__qualname__ = command.options.__name__
    return Options


def forwardsBlock(forwards: Sequence[Forward]) -> str:
    """
    What the console client prints on standard output each time the tunnel
    is up: a line per public address, aligned, and where it leads.
    """
    width = max(len(forward.public) for forward in forwards)
    return "".join(
        f"Forwarding  {forward.public:<{width}}  ->  {forward.destination}\n"
        for forward in forwards
    )


def beginTerminalLogging(stream: TextIO) -> None:
    """Log events of level info and above to C{stream}, a line each."""
    observer = FilteringLogObserver(
        textFileLogObserver(stream, timeFormat="%H:%M:%S"),
        [LogLevelFilterPredicate(LogLevel.info)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def run(command: Command, argv: list[str], reactor: object = None) -> int:
    """
    Run C{command} with the arguments C{argv} until it is stopped.

    @return: the exit status (L{EXIT_STOPPED}, L{EXIT_FAILED} or L{EXIT_USAGE}).
    """
    options = command.options()
    options.update(command.defaults)
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        sys.stderr.write(usageErrorMessage(command.name, command, options, e))
        return EXIT_USAGE
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    beginTerminalLogging(sys.stderr)
    service = command.makeService(options, reactor)
    problem = startupProblem(service)
    if problem is not None:
        sys.stderr.write(f"{command.name}: {problem}\n")
        return EXIT_FAILED
    refusals: dict[int, str] = {}
    clients = tap.clientServicesOf(service)
    for index, client in enumerate(clients):

        def watch(state: ClientState, index: int = index) -> None:
            if state.forwards:
                sys.stdout.write(forwardsBlock(state.forwards))
                sys.stdout.flush()
            if state.name == "refused":
                refusals[index] = state.detail
                # With several servers, the client goes on while one serves.
                if len(refusals) == len(clients):
                    reactor.stop()  # type: ignore[attr-defined]

        client.addStateObserver(watch)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)  # type: ignore[attr-defined]
    reactor.callWhenRunning(  # type: ignore[attr-defined]
        _log.info, "{command} is running; Ctrl-C stops it", command=command.name
    )
    reactor.run()  # type: ignore[attr-defined]
    if clients and len(refusals) == len(clients):
        for index in sorted(refusals):
            sys.stderr.write(f"{command.name}: {refusals[index]}\n")
        return EXIT_FAILED
    return EXIT_STOPPED


def server() -> None:
    """The C{tunnel-server} console command."""
    sys.exit(run(SERVER, sys.argv[1:]))


def client() -> None:
    """The C{tunnel-client} console command."""
    sys.exit(run(CLIENT, sys.argv[1:]))
