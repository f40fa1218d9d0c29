"""
How a worker's log reaches the supervisor's: the worker writes each event
as JSON to its standard output (L{beginWorkerLogging}); the supervisor
reads them (L{WorkerLogRelay}) and publishes them in its own log, each
marked with the worker's label in its system (C{[w1 tunnel.cluster...]}),
so that they go wherever twistd sends the supervisor's: a file, syslog,
standard output. What a worker writes to its standard error (a crash
before its log began, say) is published line by line as warnings.

The worker also says this way that it serves: the event carrying
L{SERVING_KEY}.
"""

from __future__ import annotations

from typing import Callable, TextIO

from twisted.logger import (
    ILogObserver,
    LogLevel,
    Logger,
    eventFromJSON,
    formatEvent,
    globalLogBeginner,
    globalLogPublisher,
    jsonFileLogObserver,
)

#: The key of the event a worker logs once it serves.
SERVING_KEY = "tunnel_worker_serving"

#: What a worker's JSON records start with (Twisted's default).
RECORD_SEPARATOR = "\x1e"

#: The longest line kept whole; longer ones are cut there.
MAX_LINE = 1 << 20


#: The field of a worker's event that holds the traceback of its failure.
TRACEBACK_KEY = "tunnel_worker_traceback"


def workerLogObserver(stream: TextIO) -> ILogObserver:
    """
    An observer writing each event as a JSON record to C{stream}. An
    event's failure is written as its traceback, in the text of the event:
    JSON keeps no exception's value.
    """
    write = jsonFileLogObserver(stream)

    def observe(event: dict) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            event = dict(event)
            del event["log_failure"]
            event[TRACEBACK_KEY] = failure.getTraceback().rstrip("\n")
            event["log_format"] = (event.get("log_format") or "") + "\n{%s}" % (TRACEBACK_KEY,)
        write(event)

    return observe


def beginWorkerLogging(stream: TextIO) -> None:
    """
    Log every event of this process, as JSON records, to C{stream}: a
    worker's standard output, which its supervisor reads.
    """
    globalLogBeginner.beginLoggingTo([workerLogObserver(stream)], redirectStandardIO=True)


class _Lines:
    """Bytes cut into lines, with a cap on the length of one."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            lines.append(self._buffer)
            self._buffer = b""
        return [line.decode("utf-8", "replace") for line in lines]

    def rest(self) -> list[str]:
        rest, self._buffer = self._buffer, b""
        return [rest.decode("utf-8", "replace")] if rest else []


class WorkerLogRelay:
    """
    Publishes what one worker logs in this process's log.

    @ivar label: what marks the worker's events (C{"w1"}).
    @ivar lastProblem: the last error the worker logged or wrote to its
        standard error, as one line, or L{None}.
    """

    _log = Logger()

    def __init__(
        self,
        label: str,
        onServing: Callable[[], None],
        publish: ILogObserver = globalLogPublisher,
    ) -> None:
        self.label = label
        self.lastProblem: str | None = None
        self._onServing = onServing
        self._publish = publish
        self._events = _Lines()
        self._text = _Lines()

    def eventsReceived(self, data: bytes) -> None:
        """Bytes of the worker's standard output: JSON records."""
        for line in self._events.feed(data):
            self._record(line)

    def textReceived(self, data: bytes) -> None:
        """Bytes of the worker's standard error: lines of text."""
        for line in self._text.feed(data):
            self._line(line)

    def ended(self) -> None:
        """The worker's output ended: publish what is left of it."""
        for line in self._events.rest():
            self._record(line)
        for line in self._text.rest():
            self._line(line)

    def _record(self, line: str) -> None:
        text = line.lstrip(RECORD_SEPARATOR).strip()
        if not text:
            return
        try:
            event = eventFromJSON(text)
        except ValueError:
            self._line(text)
            return
        if not isinstance(event, dict):
            self._line(text)
            return
        level = event.get("log_level")
        if level in (LogLevel.error, LogLevel.critical):
            lines = [line.strip() for line in formatEvent(event).splitlines() if line.strip()]
            # A message, or a message and the error of its traceback.
            self.lastProblem = ": ".join(lines[:1] + lines[1:][-1:]) or None
        system = event.get("log_system")
        if system in (None, "-"):
            name = getattr(level, "name", "-")
            system = f"{event.get('log_namespace', '-')}#{name}"
        event["log_system"] = f"{self.label} {system}"
        self._publish(event)
        if event.get(SERVING_KEY):
            self._onServing()

    def _line(self, line: str) -> None:
        line = line.rstrip()
        if not line:
            return
        self.lastProblem = line.strip()
        self._log.emit(LogLevel.warn, "{line}", line=line, log_system=f"{self.label} stderr")

