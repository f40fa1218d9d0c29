"""
What the client keeps of the connections going through the tunnel, sans
I/O: each direction's first bytes as they went by, and its byte count.

An L{ExchangeRecorder} is shown the bytes of one tunnelled connection as
they go by and keeps the first of each direction: at most a head
(L{tunnel.core.http.MAX_HEAD_BYTES}) and L{CaptureLimits.maxBodyBytes}
more; after that it only counts. Keeping is a copy and a count, so the
tunnel pays little for it. Reading is done when someone looks: an
exchange's heads and bodies are read from what was kept with
L{tunnel.core.http}'s parsers (the one HTTP grammar), once for each state
of what was kept; the status and the request line, which the request log
and the metrics want of every exchange, are read from the first lines
alone, with the same grammar.

The L{CaptureStore} holds the recorded exchanges: at most
L{CaptureLimits.maxExchanges} of them and L{CaptureLimits.maxTotalBytes}
kept in all. Past either bound the oldest exchange is dropped, open or not
(an open one stops being kept). Observers are told when an exchange is
added, changes (its answer starts, it ends) or is dropped, to show them
live.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Callable, Iterator

import attrs
from zope.interface import implementer

from tunnel.core.http import (
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    IRequestReceiver,
    IResponseReceiver,
    MessageError,
    RequestHead,
    RequestParser,
    ResponseHead,
    ResponseHeadReader,
    ResponseParser,
    methodAndTarget,
    splitList,
    statusCode,
)

#: The most exchanges kept, unless told otherwise.
DEFAULT_MAX_EXCHANGES = 500

#: The most bytes of each body kept, unless told otherwise.
DEFAULT_MAX_BODY_BYTES = 256 * 1024

#: The most bytes kept in all, unless told otherwise.
DEFAULT_MAX_TOTAL_BYTES = 64 * 1024 * 1024

# A head one byte longer than the most is kept, so that reading it says
# it is too long rather than cut.
_HEAD_ROOM = MAX_HEAD_BYTES + 5


@attrs.frozen
class CaptureLimits:
    """
    The bounds of what the store keeps.

    @ivar maxExchanges: the most exchanges kept.
    @ivar maxBodyBytes: the most bytes of each body kept; the rest is
        counted, and the body shown as truncated.
    @ivar maxTotalBytes: the most bytes kept in all. It is at least what
        one exchange may keep (two heads and two bodies), so that the
        newest exchange always fits.
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
    def directionBytes(self) -> int:
        """The most bytes kept of one direction of an exchange."""
        return _HEAD_ROOM + self.maxBodyBytes

    @property
    def exchangeBytes(self) -> int:
        """The most bytes one exchange may keep."""
        return 2 * self.directionBytes


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
    """How much of one direction of an exchange was read."""

    #: Its head has not all come.
    HEAD = "head"
    #: Its body has not all come.
    BODY = "body"
    #: It is complete.
    COMPLETE = "complete"
    #: It is not read as HTTP (a TCP connection, a WebSocket after its
    #: upgrade) or not all kept (a body past the budget, an exchange
    #: dropped from the store): its bytes are counted.
    COUNTING = "counting"
    #: It broke the HTTP grammar.
    MALFORMED = "malformed"


def _text(value: bytes) -> str:
    return value.decode("latin-1")


@attrs.frozen
class CapturedMessage:
    """
    One direction of a recorded exchange, as read from what was kept.

    @ivar state: how much of it was read.
    @ivar headers: its header fields, as they came.
    @ivar body: the first bytes of its body (de-chunked).
    @ivar truncated: whether it went on past what was kept.
    @ivar wireBytes: every byte that went by in this direction.
    @ivar error: why it is malformed or cut, if it is.
    """

    state: MessageState = MessageState.HEAD
    headers: list[tuple[bytes, bytes]] = attrs.field(factory=list)
    body: bytes = b""
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


@attrs.define
class _Kept:
    """What was kept of one direction, the most kept, and how many bytes went by."""

    data: bytearray = attrs.field(factory=bytearray)
    wireBytes: int = 0
    limit: int = 0

    def firstLine(self) -> bytes | None:
        end = self.data.find(b"\n", 0, MAX_LINE_BYTES)
        return None if end < 0 else bytes(self.data[:end]).rstrip(b"\r")


@implementer(IRequestReceiver, IResponseReceiver)
class _Reading:
    """Reads one direction from what was kept."""

    def __init__(self, maxBody: int) -> None:
        self.head: RequestHead | ResponseHead | None = None
        self.body = bytearray()
        self.cut = False
        self._maxBody = maxBody

    def headReceived(self, head: RequestHead | ResponseHead) -> None:
        self.head = head

    def bodyReceived(self, data: bytes) -> None:
        room = self._maxBody - len(self.body)
        if len(data) > room:
            self.cut = True
        self.body += data[:room]

    def requestComplete(self) -> None:
        """The parser says so too (C{complete})."""

    responseComplete = requestComplete

    def read(
        self, parser: RequestParser | ResponseParser, kept: _Kept, ended: bool
    ) -> CapturedMessage:
        """What C{parser} makes of C{kept}."""
        whole = kept.wireBytes == len(kept.data)
        state, error = MessageState.HEAD, None
        try:
            parser.dataReceived(bytes(kept.data))
            if ended and whole and not parser.complete:
                parser.connectionLost()
        except MessageError as e:
            state, error = MessageState.MALFORMED, str(e)
        switched = isinstance(parser, ResponseParser) and parser.switched
        if state is not MessageState.MALFORMED:
            if switched or self.cut:
                state = MessageState.COUNTING
            elif parser.complete:
                state = MessageState.COMPLETE
            elif not whole:
                state = MessageState.COUNTING
            elif self.head is not None:
                state = MessageState.BODY
        truncated = state is MessageState.COUNTING and not switched
        headers = [] if self.head is None else self.head.headers
        return CapturedMessage(state, headers, bytes(self.body), truncated, kept.wireBytes, error)


@attrs.frozen
class _Read:
    """Both directions of an exchange, read."""

    request: CapturedMessage
    response: CapturedMessage
    requestHead: RequestHead | None
    responseHead: ResponseHead | None


_UNREAD = CapturedMessage(MessageState.COUNTING)


@attrs.define(eq=False)
class CapturedExchange:
    """
    One tunnelled connection as recorded: an HTTP exchange, a WebSocket or
    a TCP connection.

    Its heads and bodies are read from what was kept when they are first
    asked for, and again only once more was kept or it ended; what a
    summary shows (the host, the source, the reason) from the heads alone.

    @ivar id: its number in the store, from 1.
    @ivar started: when it began, in the store's clock's seconds.
    @ivar destination: the local address it went to, as the caller names it.
    @ivar replayOf: the id of the exchange it replays, if it is a replay.
    @ivar state: whether it is open or ended.
    @ivar ended: when it ended, once it did.
    @ivar refusal: why the client answered it itself instead of the local
        service (no local service, too many local connections), if it did.
    @ivar problem: why it ended without a whole answer, when the client
        knows more than the bytes say (a replay that timed out).
    @ivar dropped: whether the store let it go (and stopped keeping it).
    @ivar retained: the bytes it keeps.
    @ivar maxBodyBytes: the most bytes of each body it keeps.
    """

    id: int
    recordedKind: Kind
    started: float
    destination: object = None
    replayOf: int | None = None
    state: ExchangeState = ExchangeState.OPEN
    ended: float | None = None
    refusal: str | None = None
    problem: str | None = None
    dropped: bool = False
    retained: int = 0
    maxBodyBytes: int = 0
    toLocal: _Kept = attrs.field(factory=_Kept, repr=False)
    fromLocal: _Kept = attrs.field(factory=_Kept, repr=False)
    _read: _Read | None = attrs.field(default=None, repr=False)
    _readOf: tuple[int, int, ExchangeState] | None = attrs.field(default=None, repr=False)
    _heads: tuple[RequestHead | None, ResponseHead | None] | None = attrs.field(
        default=None, repr=False
    )
    _finalStatus: int | None = attrs.field(default=None, repr=False)
    _methodAndTarget: tuple[bytes, bytes] | None = attrs.field(default=None, repr=False)
    _headsOf: tuple[int, int] | None = attrs.field(default=None, repr=False)

    def duration(self, now: float) -> float:
        """Seconds from its start to its end, or to C{now} while it is open."""
        return max(0.0, (now if self.ended is None else self.ended) - self.started)

    # -- from the first lines alone ---------------------------------------

    @property
    def bytesIn(self) -> int:
        """The bytes that went to the local service."""
        return self.toLocal.wireBytes

    @property
    def bytesOut(self) -> int:
        """The bytes that came back from it."""
        return self.fromLocal.wireBytes

    @property
    def truncated(self) -> bool:
        """Whether an HTTP exchange went on past what was kept of it."""
        return self.kind is Kind.HTTP and (
            self.toLocal.wireBytes > len(self.toLocal.data)
            or self.fromLocal.wireBytes > len(self.fromLocal.data)
        )

    @property
    def status(self) -> int | None:
        """The response's status code, once its status line came."""
        if self._finalStatus is not None:
            return self._finalStatus
        line = self.fromLocal.firstLine() if self.recordedKind is not Kind.TCP else None
        code = None if line is None else statusCode(line)
        if code is not None and 100 <= code < 200 and code != 101:
            # Informational answers come first: the final one is further on.
            head = self.heads()[1]
            return None if head is None else head.code
        # What was kept only grows: a final status, once read, stays.
        self._finalStatus = code
        return code

    @property
    def kind(self) -> Kind:
        """What it carries: an HTTP exchange answered C{101} is a WebSocket."""
        if self.recordedKind is Kind.HTTP and self.status == 101:
            return Kind.WEBSOCKET
        return self.recordedKind

    def _requestLine(self) -> tuple[bytes, bytes] | None:
        if self._methodAndTarget is None:
            line = self.toLocal.firstLine() if self.recordedKind is not Kind.TCP else None
            self._methodAndTarget = None if line is None else methodAndTarget(line)
        return self._methodAndTarget

    @property
    def method(self) -> str | None:
        """The request's method, once its request line came."""
        line = self._requestLine()
        return None if line is None else _text(line[0])

    @property
    def target(self) -> str | None:
        """The request's target, once its request line came."""
        line = self._requestLine()
        return None if line is None else _text(line[1])

    # -- read from what was kept ----------------------------------------------

    def reading(self) -> _Read:
        """Both directions, read from what was kept (again only if that changed)."""
        key = (len(self.toLocal.data), len(self.fromLocal.data), self.state)
        if self._read is None or self._readOf != key:
            self._read, self._readOf = self._readNow(self.toLocal, self.fromLocal), key
        return self._read

    def heads(self) -> tuple[RequestHead | None, ResponseHead | None]:
        """
        Both heads, read from at most a head's worth of each direction: what
        a summary shows costs no reading of the bodies.
        """
        key = (len(self.toLocal.data), len(self.fromLocal.data), self.state)
        if self._read is not None and self._readOf == key:
            return self._read.requestHead, self._read.responseHead
        headsKey = (min(key[0], _HEAD_ROOM), min(key[1], _HEAD_ROOM))
        if self._heads is None or self._headsOf != headsKey:
            read = self._readNow(*(
                _Kept(kept.data[:_HEAD_ROOM], kept.wireBytes) for kept in (self.toLocal, self.fromLocal)
            ))
            self._heads, self._headsOf = (read.requestHead, read.responseHead), headsKey
        return self._heads

    def _readNow(self, toLocal: _Kept, fromLocal: _Kept) -> _Read:
        if self.recordedKind is Kind.TCP:
            request = attrs.evolve(_UNREAD, wireBytes=toLocal.wireBytes)
            response = attrs.evolve(_UNREAD, wireBytes=fromLocal.wireBytes)
            return _Read(request, response, None, None)
        ended = self.state is ExchangeState.ENDED
        requestReading = _Reading(self.maxBodyBytes)
        request = requestReading.read(RequestParser(requestReading), toLocal, ended)
        requestHead = requestReading.head
        assert requestHead is None or isinstance(requestHead, RequestHead)
        method, upgrade = (b"GET", False) if requestHead is None else (
            requestHead.method, requestHead.upgrade
        )
        responseReading = _Reading(self.maxBodyBytes)
        response = responseReading.read(
            ResponseParser(responseReading, method, upgrade), fromLocal, ended
        )
        responseHead = responseReading.head
        assert responseHead is None or isinstance(responseHead, ResponseHead)
        return _Read(request, response, requestHead, responseHead)

    @property
    def request(self) -> CapturedMessage:
        """What went to the local service."""
        return self.reading().request

    @property
    def response(self) -> CapturedMessage:
        """What came back from it."""
        return self.reading().response

    @property
    def host(self) -> str | None:
        """The request's C{Host}, once its head came."""
        head = self.heads()[0]
        hosts = [] if head is None else head.values(b"host")
        return _text(hosts[0]) if hosts else None

    @property
    def source(self) -> str | None:
        """
        The public address it came from (the last C{X-Forwarded-For} entry,
        which the tunnel server appends), if known.
        """
        head = self.heads()[0]
        forwardedFor = [] if head is None else splitList(head.values(b"x-forwarded-for"))
        return _text(forwardedFor[-1]) if forwardedFor else None

    @property
    def reason(self) -> str | None:
        """The response's reason phrase, once its head came."""
        head = self.heads()[1]
        return None if head is None else _text(head.phrase)


class StoreEvent(enum.Enum):
    """What observers of a L{CaptureStore} are told."""

    ADDED = "added"
    CHANGED = "changed"
    DROPPED = "dropped"


StoreObserver = Callable[[StoreEvent, CapturedExchange], object]


class ExchangeRecorder:
    """
    Keeps the first bytes of one tunnelled connection, and counts them
    all, as they go by.

    @ivar exchange: what it records into.
    """

    def __init__(self, exchange: CapturedExchange, store: CaptureStore | None = None) -> None:
        """
        @param store: the store that keeps the exchange; without one only
            the first lines are kept (for a request log and the metrics).
        """
        self.exchange = exchange
        self._store = store
        if exchange.recordedKind is Kind.TCP:
            limit = 0
        elif store is None:
            limit = MAX_LINE_BYTES
        else:
            limit = store.limits.directionBytes
            exchange.maxBodyBytes = store.limits.maxBodyBytes
        exchange.toLocal.limit = exchange.fromLocal.limit = limit
        self._answered = False
        # Only a store keeps more than the first line, frames included.
        self._watchForSwitch = store is not None and limit > 0
        self._switchHead: ResponseHeadReader | None = None
        self._switchFed = 0

    def requestData(self, data: bytes) -> None:
        """Bytes went to the local service."""
        self._keep(self.exchange.toLocal, data)

    def responseData(self, data: bytes) -> None:
        """Bytes came back from the local service."""
        fromLocal = self.exchange.fromLocal
        self._keep(fromLocal, data)
        if not self._answered:
            # The answer started: its status line is there to be shown.
            self._answered = True
            self.changed()
        if self._switchHead is not None:
            self._readSwitchHead(data)
        elif self._watchForSwitch and fromLocal.firstLine() is not None:
            self._watchForSwitch = False
            if self.exchange.status == 101:
                self._switchHead = ResponseHeadReader()
                self._readSwitchHead(bytes(fromLocal.data))

    def _readSwitchHead(self, data: bytes) -> None:
        """
        Read the C{101} head as it comes (each byte once); once it is all
        kept, keep nothing more: what follows either way is WebSocket
        frames, counted only, so that a chatty WebSocket does not push the
        HTTP exchanges out of the store. A head that breaks the grammar
        stops the keeping where it is.
        """
        assert self._switchHead is not None
        fromLocal = self.exchange.fromLocal
        self._switchFed += len(data)
        try:
            found = self._switchHead.feed(data)
        except MessageError:
            headLength = len(fromLocal.data)
        else:
            if found is None:
                return
            headLength = self._switchFed - len(found[1])
        self._switchHead = None
        kept = min(headLength, len(fromLocal.data))
        freed = len(fromLocal.data) - kept
        fromLocal.data = fromLocal.data[:kept]
        fromLocal.limit = kept
        self.exchange.toLocal.limit = len(self.exchange.toLocal.data)
        if self._store is not None:
            self._store.charge(self.exchange, -freed)

    def _keep(self, kept: _Kept, data: bytes) -> None:
        kept.wireBytes += len(data)
        room = kept.limit - len(kept.data)
        if room > 0:
            piece = data[:room]
            kept.data += piece
            if self._store is not None:
                self._store.charge(self.exchange, len(piece))

    def end(self, now: float) -> None:
        """Both the stream and the local connection are closed."""
        exchange = self.exchange
        if exchange.state is ExchangeState.ENDED:
            return
        exchange.state = ExchangeState.ENDED
        exchange.ended = now
        self.changed()

    def changed(self) -> None:
        """Tell the store's observers that the exchange changed."""
        if self._store is not None:
            self._store.changed(self.exchange)

    def drop(self) -> None:
        """
        The store let the exchange go: keep no more than the first lines,
        for the request log and the metrics.
        """
        exchange = self.exchange
        exchange.dropped = True
        exchange.retained = 0
        for kept in (exchange.toLocal, exchange.fromLocal):
            end = kept.data.find(b"\n", 0, MAX_LINE_BYTES)
            kept.data = kept.data[: MAX_LINE_BYTES if end < 0 else end + 1]
            kept.limit = min(kept.limit, MAX_LINE_BYTES if end < 0 else end + 1)


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
