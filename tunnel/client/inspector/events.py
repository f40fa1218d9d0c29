"""
The inspector's live news, as server-sent events (C{GET /api/events}).

What changed is gathered and sent at most every L{FLUSH_INTERVAL} seconds,
each exchange once with its latest summary: a busy tunnel costs a few
writes a second, not several per request. An C{exchanges} event carries
the summaries of the exchanges added or changed, and the ids of those
dropped; a C{status} event the tunnel's status. A page that does not read
its stream fills its connection's buffer: it is then told nothing until it
reads again, and then told C{resync} (fetch the list anew). So a stalled
page holds no more than one batch in memory, and at most
L{MAX_STREAMS} streams are open at once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

from tunnel.client.inspector.exchangejson import summaryJSON
from tunnel.core.capture import CapturedExchange, StoreEvent
from tunnel.server.jsonapi import JSONError

if TYPE_CHECKING:
    from tunnel.client.inspector import Inspector

#: Seconds between two batches of news.
FLUSH_INTERVAL = 0.1

#: The most event streams open at once.
MAX_STREAMS = 16


def _event(name: str, data: Any) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (name.encode("ascii"), json.dumps(data).encode("utf-8"))


@implementer(IPushProducer)
class _Stream:
    """One page's event stream."""

    def __init__(self, request: Request, streams: EventStreams) -> None:
        self._request = request
        self._paused = False
        self._missed = False
        request.registerProducer(self, True)
        request.notifyFinish().addBoth(lambda _: streams.remove(self))

    def send(self, data: bytes) -> None:
        if self._paused:
            self._missed = True
        else:
            self._request.write(data)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._missed:
            self._missed = False
            self._request.write(_event("resync", {}))

    def stopProducing(self) -> None:
        self._paused = True

    def finish(self) -> None:
        self._request.unregisterProducer()
        self._request.finish()


class EventStreams:
    """The open event streams, and the news waiting for the next batch."""

    def __init__(self, inspector: Inspector) -> None:
        self._inspector = inspector
        self._streams: list[_Stream] = []
        self._changed: dict[int, CapturedExchange] = {}
        self._dropped: list[int] = []
        self._status = False
        self._flush: Any = None
        inspector.store.subscribe(self._exchangeNews)
        inspector.subscribeStatus(self._statusNews)

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, request: Request) -> None:
        """
        Answer C{request} with a stream of events, starting with the status.

        @raise JSONError: C{503}, if L{MAX_STREAMS} are open.
        """
        if len(self._streams) >= MAX_STREAMS:
            raise JSONError(503, f"the inspector has {MAX_STREAMS} event streams open already")
        request.setHeader(b"content-type", b"text/event-stream")
        request.write(b"retry: 2000\n\n" + _event("status", self._inspector.status()))
        self._streams.append(_Stream(request, self))

    def remove(self, stream: _Stream) -> None:
        """A stream ended."""
        self._streams.remove(stream)

    def _exchangeNews(self, event: StoreEvent, exchange: CapturedExchange) -> None:
        if not self._streams:
            return
        if event is StoreEvent.DROPPED:
            self._changed.pop(exchange.id, None)
            self._dropped.append(exchange.id)
        else:
            self._changed[exchange.id] = exchange
        self._schedule()

    def _statusNews(self) -> None:
        if self._streams:
            self._status = True
            self._schedule()

    def _schedule(self) -> None:
        if self._flush is None:
            self._flush = self._inspector.reactor.callLater(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        """Send what changed since the last batch to every stream."""
        self._flush = None
        data = b""
        if self._status:
            data += _event("status", self._inspector.status())
        if self._changed or self._dropped:
            now = self._inspector.store.now()
            data += _event(
                "exchanges",
                {
                    "changed": [summaryJSON(e, now) for e in self._changed.values()],
                    "dropped": self._dropped,
                },
            )
        self._status, self._changed, self._dropped = False, {}, []
        if not data:
            return
        for stream in list(self._streams):
            stream.send(data)

    def close(self) -> None:
        """End every stream (the inspector stops)."""
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        for stream in list(self._streams):
            stream.finish()
