"""
The yamux frame header: constants and the codec.

Every frame starts with a 12-byte big-endian header::

    version (1) | type (1) | flags (2) | stream ID (4) | length (4)

Only Data frames carry a payload (of I{length} bytes); for the other types the
length field is a window delta (Window Update), an opaque value (Ping) or an
error code (Go Away).
"""

from __future__ import annotations

import enum
import struct

HEADER = struct.Struct(">BBHII")
HEADER_SIZE = HEADER.size
PROTOCOL_VERSION = 0

#: The window each direction of every stream starts with.
INITIAL_WINDOW = 256 * 1024

#: The largest value a 32-bit header field can hold.
MAX_UINT32 = 0xFFFFFFFF


class FrameType(enum.IntEnum):
    """The four frame types of yamux version 0."""

    DATA = 0
    WINDOW_UPDATE = 1
    PING = 2
    GO_AWAY = 3


class Flag(enum.IntFlag):
    """Flags in the header's flags field."""

    NONE = 0
    SYN = 0x1
    ACK = 0x2
    FIN = 0x4
    RST = 0x8


class GoAwayCode(enum.IntEnum):
    """The error codes a Go Away frame carries."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


def encodeFrame(
    frameType: int, flags: int, streamID: int, length: int, payload: bytes = b""
) -> bytes:
    """
    Encode one frame.

    @param frameType: a L{FrameType}.
    @param flags: a combination of L{Flag}s.
    @param streamID: the stream, or 0 for the session.
    @param length: the header's length field; for a Data frame it must equal
        C{len(payload)}.
    @param payload: the payload of a Data frame.
    @return: the frame's bytes.
    """
    return HEADER.pack(PROTOCOL_VERSION, frameType, flags, streamID, length) + payload


def describeHeader(
    version: int, frameType: int, flags: int, streamID: int, length: int
) -> str:
    """
    Describe a decoded header for log messages, e.g. C{"DATA SYN|ACK stream=3 length=5"}.
    """
    try:
        typeName = FrameType(frameType).name
    except ValueError:
        typeName = f"type{frameType}"
    flagNames = "|".join(f.name for f in Flag if f and flags & f) or "-"
    versionNote = "" if version == PROTOCOL_VERSION else f" version={version}"
    return f"{typeName} {flagNames} stream={streamID} length={length}{versionNote}"
