"""
Fuzzing of the server's HTTP layers: the parser of the local service's
responses (L{tunnel.core.http.ResponseParser}), and the public request
path (a L{tunnel.server.site.TunnelSite} serving public connections, with a
tunnel client connected in memory whose streams reach a scripted local
service).

The response parser gets well-formed responses (every framing, 1xx heads,
bodiless answers, trailers, bytes after the end), the same with mutations
(bytes flipped, line ends, NULs and folds inserted, framing headers repeated
or contradicting, numbers past every bound, runs as long as the limits,
truncations), and heads and chunk lines within a few bytes of the limits,
each cut into arbitrary pieces. It must:

- raise nothing but L{ResponseError}, and tell its receiver a legal story:
  one head, then body pieces (never empty), then the end, nothing after;
- make of a well-formed response exactly its head and body, however cut,
  and take nothing after the end of a response as body;
- make the same of any bytes however they are cut (split-invariance);
- hold at most a head and a chunk-size line's worth of bytes at any time;
- never hand on a reason phrase or header value that would break the
  public response (control characters, CR, LF, NUL).

The public path gets programs: a few public connections, each sending
pipelined requests (every method, odd and absolute-form targets, every
spelling of the control path, Host in every spelling, with ports, IP
literals, duplicated or missing, bodies framed by Content-Length, chunks,
both or neither, Expect, upgrades, forged forwarding headers, bare LFs,
heads over the limits, garbage) cut into pieces and sent only while the
server reads; the local service behind the tunnel answers each stream with
a generated response (well-formed or mutated), at once, after the head,
after the whole request, in pieces, or never; time passes. After every step
and at the end:

- no failure was logged, no exception escaped;
- what the public receives is well-formed responses, in order, one per
  request the server answered, ending in a close if anything was cut;
  once every stream has been answered and the timeouts have run, a
  connection that is still open has an answer for every complete request;
- nothing reaches the local service but single, well-formed HTTP/1.1
  requests (parsed back by h11, and stricter checks of the head), in origin
  form, never on the control path, only for a routed Host, with the
  client's address last in X-Forwarded-For, and nothing after the request
  unless the local service answered 101;
- a public connection holds no more than a request head and a read.

Each test runs C{TUNNEL_FUZZ_EXAMPLES} examples (L{CI_EXAMPLES} by default),
a few seconds in all; C{python -m tunnel.test.fuzz} runs them for longer.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

import attrs
import h11
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tunnel.core.control import CONTROL_PATH, ControlMessage
from tunnel.core.http import (
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    IResponseReceiver,
    ResponseError,
    ResponseHead,
    ResponseParser,
)
from tunnel.mux import StreamOpenTimeoutError
from tunnel.test import httpstrategies as hs
from tunnel.test.serversupport import PUBLIC_PEER, SERVER_HOST, Harness
from tunnel.test.test_yamux_fuzz import FuzzFailure, check, exampleCount, fuzzSettings

#: Examples per test in a normal run of the suite (the public path's
#: programs cost ten times a response's).
CI_EXAMPLES = 150
PUBLIC_CI_EXAMPLES = 50


def publicExampleCount() -> int:
    """The public path's examples: a third of C{TUNNEL_FUZZ_EXAMPLES}, or L{PUBLIC_CI_EXAMPLES}."""
    examples = exampleCount()
    return PUBLIC_CI_EXAMPLES if examples == 300 else max(1, examples // 3)


def responseExampleCount() -> int:
    """The response parser's examples: C{TUNNEL_FUZZ_EXAMPLES}, or L{CI_EXAMPLES}."""
    examples = exampleCount()
    return CI_EXAMPLES if examples == 300 else examples


def heldBytes(obj: object) -> int:
    """
    The bytes C{obj} holds in its attributes: byte strings, and lists,
    tuples or deques of them. It measures what a parser or a channel
    buffers without knowing how it names its buffers.
    """
    total = 0
    for value in vars(obj).values():
        if isinstance(value, (bytes, bytearray, memoryview)):
            total += len(value)
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "deque":
            total += sum(len(item) for item in value if isinstance(item, (bytes, bytearray, memoryview)))
    return total


#: Control characters: what no reason phrase or header value may carry on.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


# -- the response parser ------------------------------------------------------


@attrs.frozen
class Outcome:
    """
    What a parser made of some bytes.

    @ivar heads: the heads it reported, as (code, phrase, headers).
    @ivar body: the body, all pieces together.
    @ivar complete: whether it said the response is complete.
    @ivar failed: whether it raised L{ResponseError}.
    """

    heads: tuple[tuple[int, bytes, tuple[tuple[bytes, bytes], ...]], ...]
    body: bytes
    complete: bool
    failed: bool


@implementer(IResponseReceiver)
class CheckingReceiver:
    """
    Records what a parser tells, and whether it told a legal story: one
    head, then non-empty body pieces, then the end, and nothing after.

    @ivar wrong: what was illegal, in order.
    """

    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.body = bytearray()
        self.complete = False
        self.wrong: list[str] = []

    def headReceived(self, head: ResponseHead) -> None:
        if self.heads or self.complete:
            self.wrong.append(f"a second head, or a head after the end: {head!r}")
        if _CONTROL.search(head.phrase) or b"\r" in head.phrase:
            self.wrong.append(f"a reason phrase with control characters: {head.phrase!r}")
        for name, value in head.headers:
            if re.fullmatch(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name) is None:
                self.wrong.append(f"a header name that is not a token: {name!r}")
            if re.search(rb"[\r\n\x00]", value):
                self.wrong.append(f"a header value with CR, LF or NUL: {name!r}: {value!r}")
        self.heads.append(head)

    def bodyReceived(self, data: bytes) -> None:
        if not data:
            self.wrong.append("an empty body piece")
        if not self.heads or self.complete:
            self.wrong.append(f"body before the head or after the end: {data[:40]!r}")
        self.body += data

    def responseComplete(self) -> None:
        if not self.heads or self.complete:
            self.wrong.append("the end before the head, or twice")
        self.complete = True


def parseResponse(pieces: list[bytes], method: bytes, close: bool) -> Outcome:
    """
    Feed C{pieces} to a parser, then end the stream if C{close}; check the
    parser's story and what it holds after every call.

    @raise FuzzFailure: if it told an illegal story or held too much.
    """
    receiver = CheckingReceiver()
    parser = ResponseParser(receiver, method)
    failed = False
    bound = MAX_HEAD_BYTES + MAX_LINE_BYTES + 8
    try:
        for piece in pieces:
            parser.dataReceived(piece)
            held = heldBytes(parser)
            check(held <= bound, lambda: f"the parser holds {held} bytes")
        if close:
            parser.connectionLost()
    except ResponseError:
        failed = True
    check(not receiver.wrong, lambda: "; ".join(receiver.wrong))
    check(
        receiver.complete == (not failed and parser.complete) or failed,
        "the parser and its receiver disagree on the end",
    )
    return Outcome(
        tuple((h.code, h.phrase, tuple(h.headers)) for h in receiver.heads),
        bytes(receiver.body),
        receiver.complete,
        failed,
    )


def checkSplitInvariance(data: bytes, pieces: list[bytes], method: bytes) -> Outcome:
    """Parse C{data} whole and in C{pieces}: the outcomes must be the same."""
    whole = parseResponse([data], method, close=True)
    split = parseResponse(pieces, method, close=True)
    check(
        whole == split,
        lambda: f"whole: {summary(whole)}\nin {len(pieces)} pieces: {summary(split)}",
    )
    return whole


def summary(outcome: Outcome) -> str:
    """A short account of an L{Outcome}, for failure messages."""
    heads = [(code, phrase[:40]) for code, phrase, _ in outcome.heads]
    return (
        f"heads {heads}, {len(outcome.body)} body bytes ({outcome.body[:40]!r}), "
        f"complete={outcome.complete}, failed={outcome.failed}"
    )


@st.composite
def wellFormedAndSplit(draw: st.DrawFn) -> tuple[hs.ResponseCase, list[bytes]]:
    """A well-formed response and the pieces it arrives in."""
    case = draw(hs.wellFormedResponses())
    return case, draw(hs.splits(case.data))


@st.composite
def mutatedAndSplit(draw: st.DrawFn) -> tuple[bytes, bytes, list[bytes]]:
    """A method, a mutated response and the pieces it arrives in."""
    case = draw(hs.wellFormedResponses())
    data = draw(hs.mutated(case.data, [MAX_LINE_BYTES, MAX_HEAD_BYTES]))
    return case.method, data, draw(hs.splits(data))


@st.composite
def atTheLimitsAndSplit(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A response at the parser's limits and the pieces it arrives in."""
    data = draw(hs.responsesAtTheLimits(MAX_HEAD_BYTES, MAX_LINE_BYTES))
    return data, draw(hs.splits(data))


class ResponseParserFuzzTests(SynchronousTestCase):
    """
    L{ResponseParser} fed well-formed, mutated and limit-sized responses,
    cut into arbitrary pieces.
    """

    @fuzzSettings(responseExampleCount())
    @given(wellFormedAndSplit())
    def test_wellFormedResponses(self, generated: tuple[hs.ResponseCase, list[bytes]]) -> None:
        """
        A well-formed response yields exactly its head and body, however
        it is cut; what follows its end is not body; the stream ending
        afterwards changes nothing.
        """
        case, pieces = generated
        outcome = parseResponse(pieces, case.method, close=False)
        check(not outcome.failed, lambda: f"a well-formed response was refused: {case.data[:300]!r}")
        check(
            outcome.heads == ((case.code, case.phrase, tuple(case.headers)),),
            lambda: f"heads {outcome.heads!r}, expected {case.code} {case.phrase!r} {case.headers!r}",
        )
        check(
            outcome.complete != case.byClose,
            lambda: f"complete={outcome.complete} for a body delimited by close={case.byClose}",
        )
        check(outcome.body == case.body, lambda: f"body {outcome.body[:80]!r}, expected {case.body[:80]!r}")
        closed = parseResponse(pieces, case.method, close=True)
        check(
            closed == attrs.evolve(outcome, complete=True),
            lambda: f"after the stream ended: {summary(closed)}",
        )

    @fuzzSettings(responseExampleCount())
    @given(mutatedAndSplit())
    def test_mutatedResponses(self, generated: tuple[bytes, bytes, list[bytes]]) -> None:
        """
        Whatever the bytes, only L{ResponseError} escapes, the story is
        legal, the buffer bounded, and the outcome the same however the
        bytes are cut.
        """
        method, data, pieces = generated
        checkSplitInvariance(data, pieces, method)

    @fuzzSettings(max(1, responseExampleCount() // 3))
    @given(atTheLimitsAndSplit())
    def test_responsesAtTheLimits(self, generated: tuple[bytes, list[bytes]]) -> None:
        """
        A head or a chunk-size line within a few bytes of its limit is
        taken or refused the same however it is cut.
        """
        data, pieces = generated
        checkSplitInvariance(data, pieces, b"GET")


# -- the public request path ----------------------------------------------------

#: The client the programs connect, and the hosts routed to it.
IDENTIFIER = b"fuzz-identifier-0123456789"
#: An identifier whose client never connects (its host gets 502).
ABSENT = b"absent-identifier-0123456789"
#: The names of the routed hosts, and the port a Host must have for each
#: (L{None}: any or none).
ROUTED: dict[bytes, int | None] = {b"app.example": None, b"ported.example": 8080}
#: The ports a forwarded request may name: none, the defaults, the ports of
#: the routes and of the server's listener. Never one the public chose.
EXPOSED_PORTS = {0, 80, 443, 8080, SERVER_HOST.port}
#: The limits of the public site: small, so that heads reach them.
SITE_LIMITS = {"maxHeaderBytes": 2048, "maxHeaders": 20, "idleTimeout": 600.0, "headerTimeout": 300.0}
#: The server's timeouts.
STREAM_TIMEOUT = 10.0
RESPONSE_TIMEOUT = 60.0

_REQUEST_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.1")
# Values may carry control characters but CR, LF and NUL: the others are
# a known looseness of the response parser, checked apart (see
# ResponseHeadRegressionTests).
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n\x00]*?)[ \t]*")
_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) ([\t\x20-\x7e\x80-\xff]*)")


def normalisedPath(target: bytes) -> bytes:
    """
    The path of an origin-form target as an origin may take it: decoded,
    runs of slashes as one, dot segments resolved.
    """
    path = unquote_to_bytes(target.partition(b"?")[0].partition(b"#")[0])
    segments: list[bytes] = []
    parts = re.sub(rb"/+", b"/", path).split(b"/")
    for index, segment in enumerate(parts[1:], 1):
        last = index == len(parts) - 1
        if segment == b"..":
            if segments:
                segments.pop()
            if last:
                segments.append(b"")
        elif segment == b".":
            if last:
                segments.append(b"")
        else:
            segments.append(segment)
    return b"/" + b"/".join(segments)


def headFields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """
    The fields of strict header lines (names lower-cased).

    @raise FuzzFailure: on a line that is not C{token: value} with a value
        free of control characters (an obsolete fold included).
    """
    fields = []
    for line in lines:
        match = _FIELD.fullmatch(line)
        check(match is not None, lambda: f"malformed header line {line[:100]!r}")
        fields.append((match.group(1).lower(), match.group(2)))
    return fields


def checkForwardedHead(head: bytes, message: ControlMessage) -> None:
    """
    Check the head of a request that reached the local service (without
    its final empty line) and the control message its stream was opened
    for, beyond what h11 checks.
    """
    check(b"\0" not in head, lambda: f"a NUL reached the local service: {head[:200]!r}")
    check(
        re.search(rb"\r(?!\n)|(?<!\r)\n", head) is None,
        lambda: f"a bare CR or LF reached the local service: {head[:200]!r}",
    )
    line, *rest = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(line)
    check(match is not None, lambda: f"malformed request line reached the local service: {line!r}")
    method, target = match.groups()
    check(
        target.startswith(b"/") or (target == b"*" and method == b"OPTIONS"),
        lambda: f"a request target not in origin form reached the local service: {line!r}",
    )
    check(
        normalisedPath(target) != CONTROL_PATH,
        lambda: f"a request on the control path reached the local service: {line!r}",
    )
    fields = headFields(rest)
    hosts = [value for name, value in fields if name == b"host"]
    check(len(hosts) == 1, lambda: f"{len(hosts)} Host headers reached the local service: {head[:300]!r}")
    name, _, port = hosts[0].lower().rpartition(b":") if hosts[0].count(b":") == 1 else (hosts[0].lower(), b"", b"")
    check(
        name in ROUTED and ROUTED[name] in (None, int(port or 0)),
        lambda: f"a request for a host not routed to the client reached it: {hosts[0]!r}",
    )
    forwardedFor = b",".join(value for name, value in fields if name == b"x-forwarded-for")
    check(
        forwardedFor.split(b",")[-1].strip() == PUBLIC_PEER.host.encode(),
        lambda: f"X-Forwarded-For {forwardedFor!r} does not end with the client's address",
    )
    lengths = [value for name, value in fields if name == b"content-length"]
    encodings = [value for name, value in fields if name == b"transfer-encoding"]
    check(
        len(lengths) + len(encodings) <= 1 and [e.lower() for e in encodings] in ([], [b"chunked"]),
        lambda: f"ambiguous framing reached the local service: {lengths!r} {encodings!r}",
    )
    check(
        message.localPort in EXPOSED_PORTS,
        lambda: f"a stream was asked for port {message.localPort}, from Host {hosts[0]!r}",
    )


@attrs.frozen
class LocalScript:
    """
    How the local service answers one stream.

    @ivar response: what it answers.
    @ivar when: C{"connect"} (at once), C{"head"} (once the request head is
        in), C{"request"} (once the whole request is in), C{"step"} (when
        the program says) or C{"never"}.
    @ivar cuts: where its answer is cut into writes.
    @ivar end: what it does after answering: C{"close"}, C{"halfClose"},
        C{"abort"} or C{"open"} (nothing until the end of the program).
    @ivar acceptUpgrade: answer C{101} (and echo) to an upgrade request.
    """

    response: bytes
    when: str
    cuts: tuple[int, ...]
    end: str
    acceptUpgrade: bool


SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: fuzz\r\n\r\n"


@implementer(IHalfCloseableProtocol)
class LocalService(Protocol):
    """
    The local service on one stream: parses what arrives with h11 (and
    stricter checks of the head), answers as its L{LocalScript} says, and
    after a C{101} echoes raw bytes.

    @ivar wrong: what arrived that should not have, in order.
    """

    def __init__(self, message: ControlMessage, script: LocalScript) -> None:
        self.message = message
        self.script = script
        self.received = bytearray()
        self.parser = h11.Connection(h11.SERVER)
        self.headChecked = False
        self.request: h11.Request | None = None
        self.requestComplete = False
        self.answered = False
        self.switched = False
        self.ended = False
        self.lost = False
        self.wrong: list[str] = []

    def connectionMade(self) -> None:
        if self.script.when == "connect":
            self.answer()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.switched:
            if not self.ended:
                self.transport.write(data)
            return
        if self.wrong:
            return
        try:
            self.read(data)
        except FuzzFailure as e:
            self.wrong.append(str(e))
        except h11.ProtocolError as e:
            self.wrong.append(f"h11 refused what reached the local service ({e}): {bytes(self.received[:300])!r}")
        if self.script.when == "head" and self.request is not None:
            self.answer()
        elif self.script.when == "request" and self.requestComplete:
            self.answer()

    def read(self, data: bytes) -> None:
        """Parse C{data}: one request, and nothing after it but raw bytes after a 101."""
        if not self.headChecked and b"\r\n\r\n" in self.received:
            self.headChecked = True
            checkForwardedHead(bytes(self.received).partition(b"\r\n\r\n")[0], self.message)
        if self.requestComplete:
            check(False, lambda: f"bytes after the request reached the local service: {data[:200]!r}")
        self.parser.receive_data(data)
        while True:
            event = self.parser.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                self.request = event
            elif isinstance(event, h11.EndOfMessage):
                self.requestComplete = True
        if self.requestComplete:
            extra = self.parser.trailing_data[0]
            check(not extra, lambda: f"bytes after the request reached the local service: {extra[:200]!r}")

    def isUpgrade(self) -> bool:
        """Whether the request asks for an upgrade."""
        return self.request is not None and any(
            name == b"upgrade" for name, _ in self.request.headers
        )

    def answer(self) -> None:
        """Answer as scripted, once."""
        if self.answered or self.lost:
            return
        self.answered = True
        if self.script.acceptUpgrade and self.isUpgrade():
            self.switched = True
            self.transport.write(SWITCHING)
            return
        for piece in hs.cutInto(self.script.response, self.script.cuts):
            if piece:
                self.transport.write(piece)
        self.finish(self.script.end)

    def finish(self, how: str) -> None:
        """End the stream as said, once."""
        if self.ended or self.lost or how == "open":
            return
        self.ended = True
        if how == "close":
            self.transport.loseConnection()
        elif how == "halfClose":
            self.transport.loseWriteConnection()
        else:
            self.transport.abortConnection()

    def readConnectionLost(self) -> None:
        if self.switched:
            self.finish("close")

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = True


@attrs.frozen
class PublicReading:
    """
    What a public client made of the bytes it received.

    @ivar finals: the final status codes, in order.
    @ivar state: C{"boundary"} (between responses), C{"partial"} (inside
        one), C{"untilClose"} (a body that ends with the connection) or
        C{"raw"} (after a 101).
    """

    finals: list[int]
    state: str


def readPublic(data: bytes, methods: list[bytes]) -> PublicReading:
    """
    Read the responses in C{data} strictly, the C{n}th answering a request
    of C{methods[n]} (C{GET} past their end).

    @raise FuzzFailure: on anything that is not a well-formed response.
    """
    finals: list[int] = []
    position = 0
    while position < len(data):
        end = data.find(b"\r\n\r\n", position)
        if end < 0:
            return PublicReading(finals, "partial")
        head = data[position:end]
        check(
            re.search(rb"\r(?!\n)|(?<!\r)\n", head) is None,
            lambda: f"a bare CR or LF in a response head sent to the public: {head[:300]!r}",
        )
        status, *lines = head.split(b"\r\n")
        match = _STATUS.fullmatch(status)
        check(match is not None, lambda: f"a malformed status line sent to the public: {status[:200]!r}")
        code = int(match.group(1))
        fields = headFields(lines)
        position = end + 4
        if code == 101:
            return PublicReading(finals, "raw")
        if code < 200:
            continue
        method = methods[len(finals)] if len(finals) < len(methods) else b"GET"
        finals.append(code)
        if method == b"HEAD" or code in (204, 304):
            continue
        lengths = [value for name, value in fields if name == b"content-length"]
        encodings = [value.lower() for name, value in fields if name == b"transfer-encoding"]
        check(
            len(lengths) + len(encodings) <= 1 and encodings in ([], [b"chunked"]),
            lambda: f"ambiguous framing sent to the public: {head[:300]!r}",
        )
        if lengths:
            check(lengths[0].isdigit(), lambda: f"a malformed Content-Length sent to the public: {lengths!r}")
            position += int(lengths[0])
            if position > len(data):
                return PublicReading(finals, "partial")
        elif encodings:
            while True:
                lineEnd = data.find(b"\r\n", position)
                if lineEnd < 0:
                    return PublicReading(finals, "partial")
                size = data[position:lineEnd]
                check(
                    re.fullmatch(rb"[0-9a-fA-F]{1,16}", size) is not None,
                    lambda: f"a malformed chunk size sent to the public: {size[:100]!r}",
                )
                position = lineEnd + 2 + int(size, 16)
                if int(size, 16) == 0:
                    # No trailers: twisted.web sends none.
                    if len(data) < position + 2:
                        return PublicReading(finals, "partial")
                    check(data[position : position + 2] == b"\r\n", "trailers sent to the public")
                    position += 2
                    break
                if len(data) < position + 2:
                    return PublicReading(finals, "partial")
                check(data[position : position + 2] == b"\r\n", "a chunk longer than its size sent to the public")
                position += 2
        else:
            return PublicReading(finals, "untilClose")
    return PublicReading(finals, "boundary")


@attrs.frozen
class PublicScript:
    """
    One public connection: its requests, and the pieces their bytes are
    sent in.
    """

    requests: tuple[hs.RequestCase, ...]
    pieces: tuple[bytes, ...]
    mutated: bool = False

    @property
    def clean(self) -> bool:
        """Whether every request is well-formed and complete, as sent."""
        return not self.mutated and all(request.clean for request in self.requests)


@attrs.frozen
class PublicProgram:
    """
    A program: public connections, how the local service answers its
    streams (in the order they open, in turn), and the steps.

    Steps are C{("send", connection)}, C{("local", stream)} (the local
    service answers a stream scripted to answer when told, or ends one
    left open), C{("advance", seconds)} and C{("lose", connection)} (the
    public client goes away).
    """

    connections: tuple[PublicScript, ...]
    scripts: tuple[LocalScript, ...]
    steps: tuple[tuple[str, float], ...]


@st.composite
def localResponses(draw: st.DrawFn) -> bytes:
    """A response of the local service: well-formed mostly, sometimes mutated."""
    case = draw(hs.wellFormedResponses())
    if draw(st.integers(0, 3)) == 0:
        return draw(hs.mutated(case.data, [MAX_LINE_BYTES]))
    return case.data


@st.composite
def localScripts(draw: st.DrawFn) -> LocalScript:
    """How the local service answers one stream."""
    return LocalScript(
        response=draw(localResponses()),
        when=draw(st.sampled_from(["request", "request", "head", "connect", "step", "never"])),
        cuts=tuple(draw(st.lists(st.integers(0, 10**6), max_size=3))),
        end=draw(st.sampled_from(["close", "close", "halfClose", "abort", "open"])),
        acceptUpgrade=draw(st.booleans()),
    )


@st.composite
def publicScripts(draw: st.DrawFn, clean: bool) -> PublicScript:
    """A public connection's requests, pipelined, and its pieces."""
    requests = hs.publicRequests(SITE_LIMITS["maxHeaderBytes"], SITE_LIMITS["maxHeaders"], clean)
    cases = tuple(draw(st.lists(requests, min_size=1, max_size=4)))
    data = b"".join(case.data for case in cases)
    mutated = not clean and draw(st.integers(0, 4)) == 0
    if mutated:
        data = draw(hs.mutated(data, [SITE_LIMITS["maxHeaderBytes"]]))
    return PublicScript(cases, tuple(draw(hs.splits(data))), mutated)


@st.composite
def publicPrograms(draw: st.DrawFn, clean: bool) -> PublicProgram:
    """
    A program of the public path; with C{clean}, every public request is
    well-formed and complete.
    """
    connections = tuple(draw(st.lists(publicScripts(clean), min_size=1, max_size=3)))
    scripts = tuple(draw(st.lists(localScripts(), min_size=1, max_size=4)))
    step = st.one_of(
        st.tuples(st.just("send"), st.integers(0, len(connections) - 1)),
        st.tuples(st.just("send"), st.integers(0, len(connections) - 1)),
        st.tuples(st.just("local"), st.integers(0, 7)),
        st.tuples(st.just("advance"), st.sampled_from([0.0, 1.0, STREAM_TIMEOUT + 1, RESPONSE_TIMEOUT + 1])),
        st.tuples(st.just("lose"), st.integers(0, len(connections) - 1)),
    )
    steps = draw(st.lists(step, max_size=30))
    if clean:
        steps = [s for s in steps if s[0] != "lose"]
    return PublicProgram(connections, scripts, tuple(steps))


class TCPLikeTransport(StringTransport):
    """
    A L{StringTransport} that, as TCP transports do, lets a producer be
    unregistered when none is.
    """

    def unregisterProducer(self) -> None:
        if self.producer is not None:
            super().unregisterProducer()


class PublicClient:
    """
    One public connection of a program, over a L{StringTransport}.

    @ivar protocol: what the site built for the connection.
    @ivar channel: the HTTP channel behind it.
    """

    def __init__(self, harness: Harness, script: PublicScript) -> None:
        self.script = script
        self.pieces = list(script.pieces)
        self.protocol = harness.site.buildProtocol(PUBLIC_PEER)
        self.channel = getattr(self.protocol, "wrappedProtocol", self.protocol)
        self.transport = TCPLikeTransport(peerAddress=PUBLIC_PEER, hostAddress=SERVER_HOST)
        # As a TCP transport does, it delivers to its protocol, whichever
        # protocol took it over.
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        self.lostByPublic = False
        self.lost = False
        self.logged: list[bytes] = []

    @property
    def takenOver(self) -> bool:
        """Whether the connection was taken from its HTTP channel."""
        current = self.transport.protocol
        return getattr(current, "wrappedProtocol", current) is not self.channel

    def send(self) -> None:
        """Send the next piece, if the server reads."""
        if self.pieces and not self.lost and self.transport.producerState != "paused":
            self.transport.protocol.dataReceived(self.pieces.pop(0))

    def lose(self) -> None:
        """The public client goes away."""
        if not self.lost:
            self.lostByPublic = True
            self.loseNow()

    def loseNow(self) -> None:
        self.lost = True
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))

    def reap(self) -> None:
        """The connection ends once the server closed it."""
        if self.transport.disconnecting and not self.lost:
            self.loseNow()


class PublicPathProgram:
    """
    Runs a L{PublicProgram} against a L{TunnelServer}'s site, with a
    tunnel client connected in memory whose streams reach
    L{LocalService}s.
    """

    def __init__(self, program: PublicProgram) -> None:
        self.program = program
        self.harness = Harness(
            siteLimits=SITE_LIMITS,
            streamTimeout=STREAM_TIMEOUT,
            responseTimeout=RESPONSE_TIMEOUT,
            maxFailedConnects=None,
        )
        server = self.harness.server
        server.addHost("app.example", IDENTIFIER)
        server.addHost("ported.example:8080", IDENTIFIER)
        server.addHost("other.example", ABSENT)
        self.locals: list[LocalService] = []
        self.failures: list[Failure] = []
        self.connections: list[PublicClient] = []
        self.largestPiece = max(
            (len(piece) for script in program.connections for piece in script.pieces), default=0
        )

    def connectStream(self, message: ControlMessage) -> Protocol:
        """A local service for the stream of C{message}, scripted in turn."""
        scripts = self.program.scripts
        local = LocalService(message, scripts[len(self.locals) % len(scripts)])
        self.locals.append(local)
        return local

    def observe(self, event: dict[str, Any]) -> None:
        """Keep the failures logged, to check them."""
        failure = event.get("log_failure")
        # The in-memory tunnel client leaves the Deferreds of the streams it
        # opens unhandled: one that the server did not accept in time is
        # its own, not the server's, failure.
        if failure is not None and not failure.check(StreamOpenTimeoutError):
            self.failures.append(failure)

    def run(self) -> None:
        """Run the steps, checking after each; then let everything end and check."""
        globalLogPublisher.addObserver(self.observe)
        try:
            self.harness.tunnelClient(IDENTIFIER, self.connectStream)
            site = self.harness.site
            # Each finished request, on its connection, as the access log sees it.
            site.log = self.logRequest  # type: ignore[method-assign]
            self.connections = [PublicClient(self.harness, s) for s in self.program.connections]
            for kind, argument in self.program.steps:
                self.step(kind, argument)
            self.finish()
        finally:
            globalLogPublisher.removeObserver(self.observe)

    def logRequest(self, request: Any) -> None:
        for connection in self.connections:
            if request.channel is connection.channel:
                connection.logged.append(request.method)

    def step(self, kind: str, argument: float) -> None:
        """Take one step, pump, check."""
        if kind == "send":
            self.connections[int(argument)].send()
        elif kind == "local":
            if self.locals:
                local = self.locals[int(argument) % len(self.locals)]
                if local.script.when == "step" and not local.answered:
                    local.answer()
                elif local.answered:
                    local.finish("close")
        elif kind == "advance":
            self.harness.clock.advance(argument)
        else:
            self.connections[int(argument)].lose()
        self.settle()
        self.check()

    def settle(self) -> None:
        """Pump until nothing moves, closing what the server closed."""
        for _ in range(50):
            self.harness.flush()
            closing = [c for c in self.connections if c.transport.disconnecting and not c.lost]
            for connection in closing:
                connection.reap()
            if not closing:
                return

    def finish(self) -> None:
        """
        Send what is left, let the local service answer and end every
        stream, let the stream and response timeouts run; then every open
        connection must have answered every complete request. Then let the
        idle timeout close them.
        """
        for _ in range(sum(len(c.pieces) for c in self.connections) + 1):
            for connection in self.connections:
                connection.send()
            self.settle()
            self.check()
        for local in list(self.locals):
            if local.script.when != "never":
                local.answer()
            self.settle()
        for local in list(self.locals):
            if local.answered:
                local.finish("close")
        self.settle()
        for seconds in (STREAM_TIMEOUT + 1, RESPONSE_TIMEOUT + 1, RESPONSE_TIMEOUT + 1):
            self.harness.clock.advance(seconds)
            self.settle()
            for local in list(self.locals):
                if local.answered:
                    local.finish("close")
            self.settle()
        self.check()
        for connection in self.connections:
            reading = self.reading(connection)
            if connection.lost or reading.state == "raw" or connection.pieces or not connection.script.clean:
                continue
            check(
                reading.state == "boundary" and len(reading.finals) == len(connection.script.requests),
                lambda: (
                    f"an open connection answered {len(reading.finals)} of "
                    f"{len(connection.script.requests)} requests and waits ({reading.state}): "
                    f"{connection.transport.value()[-300:]!r}"
                ),
            )
        self.harness.clock.advance(SITE_LIMITS["idleTimeout"] + 1)
        self.settle()
        for connection in self.connections:
            if not connection.lost:
                connection.loseNow()
        self.settle()
        self.check()
        for connection in self.connections:
            if connection.lostByPublic:
                continue
            reading = self.reading(connection)
            check(
                reading.state in ("boundary", "raw") or connection.transport.disconnecting,
                lambda: f"a response was cut ({reading.state}) and the connection stays open",
            )

    def reading(self, connection: PublicClient) -> PublicReading:
        """What the public client of C{connection} received, read strictly."""
        return readPublic(connection.transport.value(), connection.logged)

    def check(self) -> None:
        """The invariants that hold after every step."""
        for failure in self.failures:
            check(False, lambda: f"logged failure {failure.getTraceback()}")
        for local in self.locals:
            check(not local.wrong, lambda: local.wrong[0])
        bound = 2 * SITE_LIMITS["maxHeaderBytes"] + self.largestPiece + 1024
        for connection in self.connections:
            if connection.lostByPublic:
                continue
            reading = self.reading(connection)
            finals, logged = len(reading.finals), len(connection.logged)
            check(
                logged <= finals <= logged + 1,
                lambda: f"{finals} responses sent to the public for {logged} requests answered",
            )
            if not connection.lost and connection.takenOver is False:
                held = heldBytes(connection.channel) + sum(
                    heldBytes(request.body)
                    for request in connection.channel.requests
                    if getattr(request, "body", None) is not None
                )
                check(held <= bound, lambda: f"a public connection holds {held} bytes")


class PublicPathFuzzTests(SynchronousTestCase):
    """
    A tunnel server's public site, with a client connected in memory,
    driven by programs of public connections, local answers and time.
    """

    def tearDown(self) -> None:
        # The programs check the failures logged themselves.
        self.flushLoggedErrors()

    @fuzzSettings(publicExampleCount())
    @given(publicPrograms(clean=True))
    def test_wellFormedRequests(self, program: PublicProgram) -> None:
        """
        Well-formed public requests, however cut and pipelined, each get
        one well-formed answer, and only well-formed requests for the
        routed hosts, off the control path, reach the local service.
        """
        PublicPathProgram(program).run()

    @fuzzSettings(publicExampleCount())
    @given(publicPrograms(clean=False))
    def test_anyRequests(self, program: PublicProgram) -> None:
        """
        Whatever the public sends, and whenever it leaves, the public
        gets well-formed answers or a close, and nothing but well-formed
        requests for the routed hosts reach the local service.
        """
        PublicPathProgram(program).run()


class PublicPathRegressionTests(SynchronousTestCase):
    """
    What the fuzzers found on the public path, reduced to one case each.
    """

    def tearDown(self) -> None:
        self.flushLoggedErrors()

    def test_streamsResetInTheReadThatOpenedThemKeepThePairing(self) -> None:
        """
        Pipelined requests whose streams the client opens, answers on and
        resets all in one write (a local service that answers at once and
        aborts): each stream still answers the oldest request waiting, so
        every request gets the answer sent before the reset, at once,
        instead of waiting for a stream that never comes.
        """
        request = b"GET / HTTP/1.1\r\nHost: app.example\r\n\r\n"
        case = hs.RequestCase(data=request, method=b"GET", clean=True)
        program = PublicProgram(
            connections=(PublicScript(requests=(case,) * 4, pieces=(request * 4,)),),
            scripts=(
                LocalScript(
                    response=b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
                    when="connect",
                    cuts=(),
                    end="abort",
                    acceptUpgrade=False,
                ),
            ),
            steps=(),
        )
        run = PublicPathProgram(program)
        run.run()
        [connection] = run.connections
        self.assertEqual(connection.transport.value().count(b"HTTP/1.1 200 "), 4)
        self.assertNotIn(b" 504 ", connection.transport.value())


class ResponseHeadRegressionTests(SynchronousTestCase):
    """
    What the fuzzers found in the response parser, reduced to one case
    each.
    """

    def test_controlCharactersInHeaderValuesAreNotRelayed(self) -> None:
        """
        A header value with a control character other than CR, LF or NUL
        (here a form feed) is refused or sanitised, not handed on to be
        relayed to the public.
        """
        receiver = CheckingReceiver()
        parser = ResponseParser(receiver, b"GET")
        try:
            parser.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Type: 0\x0c\r\nContent-Length: 0\r\n\r\n")
        except ResponseError:
            return
        [head] = receiver.heads
        self.assertEqual([v for _, v in head.headers if _CONTROL.search(v)], [])
