"""
What many of the tests need, in one place:

- L{Recorder} and L{HalfCloseRecorder}, protocols that record what happens
  to them, and L{RecordingFactory}, which builds them and keeps them;
- L{Frame}, L{FrameReader} and L{parseFrames}, which split the bytes a
  yamux session wrote back into frames, for exact assertions;
- L{until}, L{untilSteady} and L{sleep}, which wait on the real reactor;
- L{pattern} and L{goPattern}, deterministic payloads: the first for
  bodies and streams our own tests write and check, the second for what the
  Go programs under C{tunnel/test/go} send and expect;
- L{docPath}, which finds the checkout's C{doc/} files.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any, Callable, Generator, NamedTuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest
from zope.interface import implementer

import tunnel
from tunnel.yamux.frames import HEADER, HEADER_SIZE, FrameType

# -- recorders ---------------------------------------------------------------


class Recorder(Protocol):
    """
    Records what happens to it.

    @ivar made: whether the connection was made.
    @ivar chunks: every chunk of data received, as it came.
    @ivar lost: why the connection was lost, once it was.
    """

    def __init__(self) -> None:
        self.made = False
        self.chunks: list[bytes] = []
        self.lost: Failure | None = None

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = reason

    @property
    def received(self) -> bytes:
        """All the data received so far."""
        return b"".join(self.chunks)


@implementer(IHalfCloseableProtocol)
class HalfCloseRecorder(Recorder):
    """
    A L{Recorder} that supports half-close, and records either half ending.

    @ivar readEnded: whether the peer half-closed.
    @ivar writeEnded: whether our writing half was closed.
    """

    readEnded = False
    writeEnded = False

    def readConnectionLost(self) -> None:
        self.readEnded = True

    def writeConnectionLost(self) -> None:
        self.writeEnded = True


class RecordingFactory(Factory):
    """
    Builds a given protocol class and remembers every instance.

    @ivar built: the protocols built, in order.
    @ivar addresses: the address each was built for.
    """

    def __init__(self, protocolClass: Callable[[], Protocol] = Recorder) -> None:
        self.protocolClass = protocolClass
        self.built: list[Any] = []
        self.addresses: list[Any] = []

    def buildProtocol(self, addr: IAddress | Any) -> Protocol:
        protocol = self.protocolClass()
        protocol.factory = self
        self.built.append(protocol)
        self.addresses.append(addr)
        return protocol


# -- yamux frames --------------------------------------------------------------


class Frame(NamedTuple):
    """
    One decoded yamux frame. It compares equal to the plain tuple
    C{(frameType, flags, streamID, length, payload)}.

    @ivar length: the header's length field: the payload's size for Data
        frames, the delta, opaque value or code for the others.
    @ivar payload: empty but for Data frames.
    """

    frameType: int
    flags: int
    streamID: int
    length: int
    payload: bytes = b""


class FrameReader:
    """
    Splits a byte stream into L{Frame}s, however its bytes are split.

    @ivar checkVersion: whether a frame of a version other than 0 is an
        L{AssertionError}.
    """

    def __init__(self, checkVersion: bool = False) -> None:
        self.checkVersion = checkVersion
        self._buffer = bytearray()

    @property
    def pending(self) -> bytes:
        """The bytes of a frame not complete yet."""
        return bytes(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        """Take bytes; return the frames they complete."""
        buffer = self._buffer
        buffer += data
        frames: list[Frame] = []
        position = 0
        while len(buffer) - position >= HEADER_SIZE:
            version, frameType, flags, streamID, length = HEADER.unpack_from(buffer, position)
            if self.checkVersion and version != 0:
                raise AssertionError(f"version {version} at {position}")
            size = length if frameType == FrameType.DATA else 0
            start = position + HEADER_SIZE
            if len(buffer) - start < size:
                break
            frames.append(Frame(frameType, flags, streamID, length, bytes(buffer[start : start + size])))
            position = start + size
        del buffer[:position]
        return frames


def parseFrames(data: bytes) -> list[Frame]:
    """
    Split bytes a session wrote into frames.

    @return: one L{Frame} per frame.
    @raise AssertionError: if the bytes do not end on a frame boundary or a
        frame has a version other than 0.
    """
    reader = FrameReader(checkVersion=True)
    frames = reader.feed(data)
    if reader.pending:
        raise AssertionError(f"truncated frame after {len(frames)} frames: {reader.pending[:100]!r}")
    return frames


# -- waiting on the real reactor -----------------------------------------------


def sleep(seconds: float, clock: IReactorTime | None = None) -> Deferred[None]:
    """Fire with L{None} after C{seconds} on C{clock} (the global reactor by default)."""
    return deferLater(reactor if clock is None else clock, seconds, lambda: None)


@inlineCallbacks
def until(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    what: str | Callable[[], str] | None = None,
    interval: float = 0.01,
    clock: IReactorTime | None = None,
) -> Generator[Deferred[None], None, None]:
    """
    Wait until C{predicate()} holds, polling it every C{interval} seconds.

    @param what: what is awaited (or a callable returning it, evaluated only
        on failure), for the message of the failure.
    @param clock: what to wait on; the global reactor by default.
    @raise AssertionError: if it does not hold within C{timeout} seconds.
    """
    clock = reactor if clock is None else clock
    deadline = clock.seconds() + timeout
    while not predicate():
        if clock.seconds() >= deadline:
            if what is None:
                what = f"{predicate} held"
            raise AssertionError(f"{what() if callable(what) else what}: not within {timeout} s")
        yield sleep(interval, clock)


@inlineCallbacks
def untilSteady(
    read: Callable[[], int], interval: float = 0.2, rounds: int = 3
) -> Generator[Deferred[None], None, int]:
    """Wait until C{read()} gives the same value C{rounds} times in a row, C{interval} seconds apart; fire with it."""
    last, steady = -1, 0
    while steady < rounds:
        yield sleep(interval)
        now = read()
        steady, last = (steady + 1 if now == last else 0), now
    return last


# -- payloads ------------------------------------------------------------------

#: A mebibyte.
MiB = 1024 * 1024

#: The period of L{pattern}: a prime, so that no power-of-two chunking lines
#: up with it, and about a mebibyte, so that bytes lost, repeated or
#: reordered show unless they are a multiple of it.
PATTERN_PERIOD = 1_048_573

_PATTERN = random.Random(0x7E57).randbytes(PATTERN_PERIOD) * 2


def pattern(size: int, offset: int = 0) -> bytes:
    """
    C{size} bytes of a deterministic pseudo-random pattern, from C{offset}
    (taken modulo L{PATTERN_PERIOD}): C{pattern(a, offset) + pattern(b,
    offset + a) == pattern(a + b, offset)}.
    """
    start = offset % PATTERN_PERIOD
    if start + size <= len(_PATTERN):
        return _PATTERN[start : start + size]
    return (_PATTERN[start:] + _PATTERN[:PATTERN_PERIOD] * (size // PATTERN_PERIOD + 1))[:size]


def _goBlocks(seed: int | None, first: int, last: int) -> bytes:
    """Blocks C{first} to C{last} (excluded) of L{goPattern}."""
    prefix = b"" if seed is None else b"%d:" % (seed,)
    sha256 = hashlib.sha256
    return b"".join([sha256(prefix + b"%d" % (i,)).digest() for i in range(first, last)])


def goPattern(size: int, seed: int | None = None) -> bytes:
    """
    The deterministic payload of the Go programs under C{tunnel/test/go}:
    the concatenation of C{sha256(b"<i>")}, or with a seed
    C{sha256(b"<seed>:<i>")}, for i = 0, 1, 2, ... (decimal numbers), cut
    to C{size} bytes.

    Without a seed it is what the Go origin's C{/bytes?n=SIZE} serves; with
    one, what the Go yamux peers send and expect on stream C{seed}.
    """
    return _goBlocks(seed, 0, -(-size // 32))[:size]


def goPatternDigest(size: int, seed: int | None = None) -> str:
    """The SHA-256 hex digest of C{goPattern(size, seed)}, computed without holding it all."""
    digest = hashlib.sha256()
    blocks = -(-size // 32)
    step = 65536
    for first in range(0, blocks, step):
        digest.update(_goBlocks(seed, first, min(first + step, blocks))[: size - first * 32])
    return digest.hexdigest()


# -- documentation -----------------------------------------------------------


def docPath(name: str) -> str:
    """
    The path of C{doc/NAME} in the checkout the tests run from: above the
    package in an editable install, above the working directory (trial's
    temporary directory inside the checkout) otherwise.

    @raise SkipTest: if there is none: C{doc/} is not installed with the
        package.
    """
    here = os.path.abspath(os.getcwd())
    candidates = [os.path.dirname(os.path.dirname(os.path.abspath(tunnel.__file__)))]
    while os.path.dirname(here) != here:
        candidates.append(here)
        here = os.path.dirname(here)
    for candidate in candidates:
        path = os.path.join(candidate, "doc", name)
        if os.path.exists(path):
            return path
    raise SkipTest("doc/ is not installed with the package: run the tests from a checkout")
