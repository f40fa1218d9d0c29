"""
What the client keeps of the connections going through the tunnel, sans
I/O: each HTTP exchange's heads and the first bytes of its bodies, each
WebSocket and TCP connection's byte counts, in a bounded store.

An L{ExchangeRecorder} is shown the bytes of one tunnelled connection as
they go by, each direction read with L{tunnel.core.http}'s parsers (the
one HTTP grammar); it keeps at most L{CaptureLimits.maxBodyBytes} of each
body and, once a body is past that or a message is complete or malformed,
only counts bytes: watching costs linear work, and memory that does not
grow with the exchange.

The L{CaptureStore} holds the recorded exchanges: at most
L{CaptureLimits.maxExchanges} of them and L{CaptureLimits.maxTotalBytes}
of heads and bodies in all. Past either bound the oldest exchange is
dropped, open or not (an open one stops being recorded). Observers are
told when an exchange is added, changes (its request head, its response
head, its end) or is dropped, to show them live.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Callable, Iterator

import attrs
from zope.interface import implementer

from tunnel.core.http import (
    MAX_HEAD_BYTES,
    IRequestReceiver,
    IResponseReceiver,
    MessageError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseParser,
    splitList,
)

#: The most exchanges kept, unless told otherwise.
DEFAULT_MAX_EXCHANGES = 500

#: The most bytes of each body kept, unless told otherwise.
DEFAULT_MAX_BODY_BYTES = 256 * 1024

#: The most bytes of heads and bodies kept in all, unless told otherwise.
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024 * 1024


@attrs.frozen
class CaptureLimits:
    """
    The bounds of what the store keeps.

    @ivar maxExchanges: the most exchanges kept.
    @ivar maxBodyBytes: the most bytes of each body kept; the rest is
        counted, and the body shown as truncated.
    @ivar maxTotalBytes: the most bytes of heads and bodies kept in all. It
        is at least what one exchange may keep (two heads and two bodies),
        so that the newest exchange always fits.
    """

    maxExchanges: int = DEFAULT_MAX_EXCHANGES
    maxBodyBytes: int = DEFAULT_MAX_BODY_BYTES
    maxTotalBytes: int = DEFAULT_MAX_TOTAL_BYTES

    def __attrs_post_init__(self) -> None:
        if self.maxExchanges < 1:
            raise ValueError(f"the most exchanges kept must be positive, not {self.maxExchanges}")
        if self.maxBodyBytes < 0:
            raise ValueError(f"the most body bytes kept must not be negative, not {self.maxBodyBytes}")
        needed = self.exchangeBytes
        if self.maxTotalBytes < needed:
            raise ValueError(
                f"the most bytes kept in all ({self.maxTotalBytes}) must be at least what "
                f"one exchange may keep, {needed} (two heads of {MAX_HEAD_BYTES} and two "
                f"bodies of {self.maxBodyBytes})"
            )

    @property
    def exchangeBytes(self) -> int:
        """The most bytes one exchange may keep."""
        return 2 * (MAX_HEAD_BYTES + self.maxBodyBytes)


class Kind(enum.Enum):
    """What a tunnelled connection carries."""

    HTTP = "http"
    WEBSOCKET = "websocket"
    TCP = "tcp"


class ExchangeState(enum.Enum):
    """Where a recorded exchange is."""

    #: Bytes may still go by.
    OPEN = "open"
    #: Both the stream and the local connection are closed.
    ENDED = "ended"


class MessageState(enum.Enum):
    """How far one direction of an exchange has been read."""

    #: Its head has not all come.
    HEAD = "head"
    #: Its body is being kept.
    BODY = "body"
    #: It is complete; what follows is counted only.
    COMPLETE = "complete"
    #: It is not read (a TCP connection, a WebSocket after its upgrade, a
    #: body past the budget, an exchange dropped from the store): its bytes
    #: are counted only.
    COUNTING = "counting"
    #: It broke the HTTP grammar; what follows is counted only.
    MALFORMED = "malformed"


_READING = (MessageState.HEAD, MessageState.BODY)


def _text(value: bytes) -> str:
    return value.decode("latin-1")


@attrs.define
class CapturedMessage:
    """
    One direction of a recorded exchange.

    @ivar state: how far it has been read.
    @ivar headers: its header fields, as they came.
    @ivar body: the first bytes of its body (de-chunked).
    @ivar truncated: whether the body went on past what is kept.
    @ivar wireBytes: every byte that went by in this direction.
    @ivar error: why it is malformed, if it is.
    """

    state: MessageState = MessageState.HEAD
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    body: bytearray = attrs.field(factory=bytearray)
    truncated: bool = False
    wireBytes: int = 0
    error: str | None = None

    def header(self, name: str) -> str | None:
        """The value of the first field called C{name} (any case), if any."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return _text(value)
        return None

    def textHeaders(self) -> list[tuple[str, str]]:
        """Its header fields, decoded as Latin-1."""
        return [(_text(name), _text(value)) for name, value in self.headers]


@attrs.define(eq=False)
class CapturedExchange:
    """
    One tunnelled connection as recorded: an HTTP exchange, a WebSocket or
    a TCP connection.

    @ivar id: its number in the store, from 1.
    @ivar kind: what it carries; an HTTP exchange becomes a WebSocket at
        its C{101} answer.
    @ivar started: when it began, in the store's clock's seconds.
    @ivar destination: the local address it went to, as the caller names it.
    @ivar replayOf: the id of the exchange it replays, if it is a replay.
    @ivar state: whether it is open or ended.
    @ivar ended: when it ended, once it did.
    @ivar method: the request's method, once its head came.
    @ivar target: the request's target, once its head came.
    @ivar host: the request's C{Host}, once its head came.
    @ivar source: the public address it came from (the last
        C{X-Forwarded-For} entry the tunnel server appends), if known.
    @ivar status: the response's status code, once its head came.
    @ivar reason: the response's reason phrase, once its head came.
    @ivar request: what went to the local service.
    @ivar response: what came back from it.
    @ivar refusal: why the client answered it itself instead of the local
        service (no local service, too many local connections), if it did.
    @ivar dropped: whether the store let it go (and stopped keeping it).
    @ivar retained: the bytes of heads and bodies it keeps.
    """

    id: int
    kind: Kind
    started: float
    destination: object = None
    replayOf: int | None = None
    state: ExchangeState = ExchangeState.OPEN
    ended: float | None = None
    method: str | None = None
    target: str | None = None
    host: str | None = None
    source: str | None = None
    status: int | None = None
    reason: str | None = None
    request: CapturedMessage = attrs.field(factory=CapturedMessage)
    response: CapturedMessage = attrs.field(factory=CapturedMessage)
    refusal: str | None = None
    dropped: bool = False
    retained: int = 0

    def duration(self, now: float) -> float:
        """Seconds from its start to its end, or to C{now} while it is open."""
        return max(0.0, (now if self.ended is None else self.ended) - self.started)


class StoreEvent(enum.Enum):
    """What observers of a L{CaptureStore} are told."""

    ADDED = "added"
    CHANGED = "changed"
    DROPPED = "dropped"


StoreObserver = Callable[[StoreEvent, CapturedExchange], object]


def _headSize(fields: list[tuple[bytes, bytes]], firstLine: int) -> int:
    return firstLine + sum(len(name) + len(value) + 4 for name, value in fields)


@implementer(IRequestReceiver, IResponseReceiver)
class _Direction:
    """
    Reads one direction of an exchange with its parser and keeps what the
    store lets it keep.
    """

    def __init__(self, recorder: ExchangeRecorder, message: CapturedMessage) -> None:
        self._recorder = recorder
        self.message = message
        self.parser: RequestParser | ResponseParser | None = None

    def feed(self, data: bytes) -> None:
        message = self.message
        message.wireBytes += len(data)
        if message.state not in _READING or self.parser is None:
            return
        try:
            self.parser.dataReceived(data)
        except MessageError as e:
            message.state = MessageState.MALFORMED
            message.error = str(e)
            self._recorder.changed()

    def headReceived(self, head: RequestHead | ResponseHead) -> None:
        message = self.message
        message.headers = head.headers
        message.state = MessageState.BODY
        self._recorder.headReceived(self, head)

    def bodyReceived(self, data: bytes) -> None:
        message = self.message
        room = self._recorder.room(len(message.body))
        kept = data[:room]
        if kept:
            message.body += kept
            self._recorder.charge(len(kept))
        if len(data) > room:
            message.truncated = True
            message.state = MessageState.COUNTING

    def requestComplete(self) -> None:
        self._complete()

    def responseComplete(self) -> None:
        self._complete()

    def _complete(self) -> None:
        if self.message.state in _READING:
            self.message.state = MessageState.COMPLETE

    def stopReading(self) -> None:
        """Count this direction's bytes only, from now on."""
        if self.message.state in _READING:
            self.message.state = MessageState.COUNTING


class ExchangeRecorder:
    """
    Records one tunnelled connection into its L{CapturedExchange} as its
    bytes go by.

    @ivar exchange: what it records into.
    """

    def __init__(self, exchange: CapturedExchange, store: CaptureStore | None = None) -> None:
        """
        @param store: the store that keeps the exchange; without one only
            the heads and byte counts are recorded (for a request log).
        """
        self.exchange = exchange
        self._store = store
        self._maxBody = 0 if store is None else store.limits.maxBodyBytes
        self._request = _Direction(self, exchange.request)
        self._response = _Direction(self, exchange.response)
        if exchange.kind is Kind.TCP:
            self._request.stopReading()
            self._response.stopReading()
        else:
            self._request.parser = RequestParser(self._request)

    def requestData(self, data: bytes) -> None:
        """Bytes went to the local service."""
        self._request.feed(data)

    def responseData(self, data: bytes) -> None:
        """Bytes came back from the local service."""
        response = self._response
        if response.parser is None and response.message.state is MessageState.HEAD:
            # An answer before the request head (the client's own 503):
            # read it as the answer to a plain request.
            response.parser = ResponseParser(response, b"GET")
        response.feed(data)

    def end(self, now: float) -> None:
        """Both the stream and the local connection are closed."""
        exchange = self.exchange
        if exchange.state is ExchangeState.ENDED:
            return
        exchange.state = ExchangeState.ENDED
        exchange.ended = now
        for direction in (self._request, self._response):
            parser, direction.parser = direction.parser, None
            if direction.message.state in _READING and parser is not None:
                try:
                    parser.connectionLost()
                except MessageError as e:
                    direction.message.error = str(e)
        self.changed()

    # -- what the directions report ------------------------------------------

    def headReceived(self, direction: _Direction, head: RequestHead | ResponseHead) -> None:
        exchange = self.exchange
        if isinstance(head, RequestHead):
            exchange.method = _text(head.method)
            exchange.target = _text(head.target)
            hosts = head.values(b"host")
            exchange.host = _text(hosts[0]) if hosts else None
            forwardedFor = splitList(head.values(b"x-forwarded-for"))
            exchange.source = _text(forwardedFor[-1]) if forwardedFor else None
            self._response.parser = ResponseParser(self._response, head.method, head.upgrade)
            self.charge(_headSize(head.headers, len(head.method) + len(head.target) + 11))
        else:
            exchange.status = head.code
            exchange.reason = _text(head.phrase)
            if head.code == 101:
                exchange.kind = Kind.WEBSOCKET
                self._request.stopReading()
                self._response.stopReading()
            self.charge(_headSize(head.headers, len(head.phrase) + 15))
        self.changed()

    def room(self, kept: int) -> int:
        """How many more body bytes a body that keeps C{kept} may keep."""
        if self.exchange.dropped:
            return 0
        return max(0, self._maxBody - kept)

    def charge(self, size: int) -> None:
        """The exchange keeps C{size} more bytes."""
        if self._store is not None:
            self._store.charge(self.exchange, size)

    def changed(self) -> None:
        """Tell the store's observers that the exchange changed."""
        if self._store is not None:
            self._store.changed(self.exchange)

    def drop(self) -> None:
        """The store let the exchange go: keep nothing more."""
        exchange = self.exchange
        exchange.dropped = True
        for direction in (self._request, self._response):
            direction.stopReading()
            if direction.message.body:
                direction.message.truncated = True
            direction.message.body = bytearray()
        exchange.retained = 0


class CaptureStore:
    """
    The recorded exchanges, newest last, within L{CaptureLimits}.

    @ivar limits: its bounds.
    @ivar retainedBytes: the bytes of heads and bodies kept in all.
    """

    def __init__(self, limits: CaptureLimits, clock: Callable[[], float]) -> None:
        """
        @param clock: gives the current time in seconds (the reactor's
            C{seconds}).
        """
        self.limits = limits
        self.retainedBytes = 0
        self._clock = clock
        self._recorders: OrderedDict[int, ExchangeRecorder] = OrderedDict()
        self._lastID = 0
        self._observers: list[StoreObserver] = []

    def now(self) -> float:
        """The current time, in the store's clock's seconds."""
        return self._clock()

    def record(
        self, kind: Kind, destination: object = None, replayOf: int | None = None
    ) -> ExchangeRecorder:
        """
        Start recording a new exchange, dropping the oldest beyond the
        most kept.
        """
        self._lastID += 1
        exchange = CapturedExchange(self._lastID, kind, self._clock(), destination, replayOf)
        recorder = ExchangeRecorder(exchange, self)
        self._recorders[exchange.id] = recorder
        self._tell(StoreEvent.ADDED, exchange)
        while len(self._recorders) > self.limits.maxExchanges:
            self._dropOldest()
        return recorder

    def __iter__(self) -> Iterator[CapturedExchange]:
        """The exchanges kept, oldest first."""
        return (recorder.exchange for recorder in list(self._recorders.values()))

    def __len__(self) -> int:
        return len(self._recorders)

    def get(self, exchangeID: int) -> CapturedExchange | None:
        """The exchange with that id, if it is kept."""
        recorder = self._recorders.get(exchangeID)
        return None if recorder is None else recorder.exchange

    def clear(self) -> None:
        """Let every exchange go."""
        while self._recorders:
            self._dropOldest()

    def subscribe(self, observer: StoreObserver) -> None:
        """Tell C{observer} of every exchange added, changed or dropped."""
        self._observers.append(observer)

    def unsubscribe(self, observer: StoreObserver) -> None:
        """Stop telling C{observer}."""
        self._observers.remove(observer)

    def charge(self, exchange: CapturedExchange, size: int) -> None:
        """
        C{exchange} keeps C{size} more bytes; drop the oldest others while
        the store keeps more than its most.
        """
        if exchange.dropped:
            return
        exchange.retained += size
        self.retainedBytes += size
        while self.retainedBytes > self.limits.maxTotalBytes and len(self._recorders) > 1:
            oldest = next(iter(self._recorders))
            if oldest == exchange.id:
                break
            self._dropOldest()

    def changed(self, exchange: CapturedExchange) -> None:
        """Tell the observers that C{exchange} changed, if it is still kept."""
        if not exchange.dropped:
            self._tell(StoreEvent.CHANGED, exchange)

    def _dropOldest(self) -> None:
        _, recorder = self._recorders.popitem(last=False)
        self.retainedBytes -= recorder.exchange.retained
        recorder.drop()
        self._tell(StoreEvent.DROPPED, recorder.exchange)

    def _tell(self, event: StoreEvent, exchange: CapturedExchange) -> None:
        for observer in list(self._observers):
            observer(event, exchange)
