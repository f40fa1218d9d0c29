"""
Tests for L{tunnel.yamux.frames}: the frame header codec and its constants.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tunnel.yamux import HEADER_SIZE, INITIAL_WINDOW, Flag, FrameType, GoAwayCode
from tunnel.yamux.frames import (
    HEADER,
    MAX_UINT32,
    PROTOCOL_VERSION,
    describeHeader,
    encodeFrame,
)


class ConstantsTests(SynchronousTestCase):
    """
    The numeric values of the protocol's constants are those of yamux
    version 0.
    """

    def test_headerIsTwelveBytes(self) -> None:
        """The header is 12 bytes long."""
        self.assertEqual(HEADER_SIZE, 12)
        self.assertEqual(HEADER.size, 12)

    def test_protocolVersionIsZero(self) -> None:
        """Version 0 is the only version spoken."""
        self.assertEqual(PROTOCOL_VERSION, 0)

    def test_initialWindowIs256KiB(self) -> None:
        """Every stream starts with a 256 KiB window."""
        self.assertEqual(INITIAL_WINDOW, 262144)

    def test_maxUint32(self) -> None:
        """The largest 32-bit field value is 2**32 - 1."""
        self.assertEqual(MAX_UINT32, 2**32 - 1)

    def test_frameTypeValues(self) -> None:
        """Data 0, Window Update 1, Ping 2, Go Away 3, and nothing else."""
        self.assertEqual(
            {t.name: t.value for t in FrameType},
            {"DATA": 0, "WINDOW_UPDATE": 1, "PING": 2, "GO_AWAY": 3},
        )

    def test_flagValues(self) -> None:
        """SYN 0x1, ACK 0x2, FIN 0x4, RST 0x8."""
        self.assertEqual(Flag.NONE, 0)
        self.assertEqual(Flag.SYN, 0x1)
        self.assertEqual(Flag.ACK, 0x2)
        self.assertEqual(Flag.FIN, 0x4)
        self.assertEqual(Flag.RST, 0x8)

    def test_goAwayCodeValues(self) -> None:
        """Normal 0, protocol error 1, internal error 2."""
        self.assertEqual(
            {c.name: c.value for c in GoAwayCode},
            {"NORMAL": 0, "PROTOCOL_ERROR": 1, "INTERNAL_ERROR": 2},
        )


class EncodeFrameTests(SynchronousTestCase):
    """
    L{encodeFrame} produces the exact bytes of the big-endian header,
    followed by the payload.
    """

    def test_synWindowUpdate(self) -> None:
        """A SYN window update with delta 0 for stream 1."""
        self.assertEqual(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.SYN, 1, 0),
            b"\x00\x01\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00",
        )

    def test_ackWindowUpdateWithDelta(self) -> None:
        """An ACK window update for stream 2 granting 0x00030000 bytes more."""
        self.assertEqual(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.ACK, 2, 0x30000),
            b"\x00\x01\x00\x02\x00\x00\x00\x02\x00\x03\x00\x00",
        )

    def test_dataFrameWithPayload(self) -> None:
        """A Data frame: header with the payload's length, then the payload."""
        self.assertEqual(
            encodeFrame(FrameType.DATA, 0, 3, 5, b"hello"),
            b"\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x05hello",
        )

    def test_dataFrameWithFin(self) -> None:
        """A Data frame carrying FIN has flags 0x0004."""
        self.assertEqual(
            encodeFrame(FrameType.DATA, Flag.FIN, 5, 1, b"x"),
            b"\x00\x00\x00\x04\x00\x00\x00\x05\x00\x00\x00\x01x",
        )

    def test_rstWindowUpdate(self) -> None:
        """An RST is a window update with flags 0x0008."""
        self.assertEqual(
            encodeFrame(FrameType.WINDOW_UPDATE, Flag.RST, 7, 0),
            b"\x00\x01\x00\x08\x00\x00\x00\x07\x00\x00\x00\x00",
        )

    def test_pingRequest(self) -> None:
        """A ping request: type 2, SYN, stream 0, opaque value in length."""
        self.assertEqual(
            encodeFrame(FrameType.PING, Flag.SYN, 0, 0x01020304),
            b"\x00\x02\x00\x01\x00\x00\x00\x00\x01\x02\x03\x04",
        )

    def test_pingReply(self) -> None:
        """A ping reply: type 2, ACK, stream 0, the same opaque value."""
        self.assertEqual(
            encodeFrame(FrameType.PING, Flag.ACK, 0, 0x01020304),
            b"\x00\x02\x00\x02\x00\x00\x00\x00\x01\x02\x03\x04",
        )

    def test_goAway(self) -> None:
        """A Go Away with code 1: type 3, no flags, stream 0."""
        self.assertEqual(
            encodeFrame(FrameType.GO_AWAY, 0, 0, GoAwayCode.PROTOCOL_ERROR),
            b"\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01",
        )

    def test_combinedFlagsAndLargeFields(self) -> None:
        """All flags set and 32-bit fields at their maximum."""
        self.assertEqual(
            encodeFrame(
                FrameType.WINDOW_UPDATE,
                Flag.SYN | Flag.ACK | Flag.FIN | Flag.RST,
                MAX_UINT32,
                MAX_UINT32,
            ),
            b"\x00\x01\x00\x0f\xff\xff\xff\xff\xff\xff\xff\xff",
        )

    def test_multiByteStreamID(self) -> None:
        """The stream ID is big-endian across all four bytes."""
        self.assertEqual(
            encodeFrame(FrameType.DATA, 0, 0x01020305, 0),
            b"\x00\x00\x00\x00\x01\x02\x03\x05\x00\x00\x00\x00",
        )

    def test_roundTrip(self) -> None:
        """The header struct decodes what L{encodeFrame} encoded."""
        encoded = encodeFrame(FrameType.DATA, Flag.ACK | Flag.FIN, 9, 3, b"abc")
        self.assertEqual(
            HEADER.unpack_from(encoded), (0, 0, Flag.ACK | Flag.FIN, 9, 3)
        )
        self.assertEqual(encoded[HEADER_SIZE:], b"abc")


class DescribeHeaderTests(SynchronousTestCase):
    """
    L{describeHeader} names a header's type, flags and fields for logs.
    """

    def test_dataWithFlags(self) -> None:
        """Type and flag names joined by C{|}, then stream and length."""
        self.assertEqual(
            describeHeader(0, FrameType.DATA, Flag.SYN | Flag.ACK, 3, 5),
            "DATA SYN|ACK stream=3 length=5",
        )

    def test_noFlags(self) -> None:
        """No flags are shown as C{-}."""
        self.assertEqual(
            describeHeader(0, FrameType.GO_AWAY, 0, 0, 1),
            "GO_AWAY - stream=0 length=1",
        )

    def test_allFlags(self) -> None:
        """All four flags, in bit order."""
        self.assertEqual(
            describeHeader(0, FrameType.WINDOW_UPDATE, 0xF, 1, 2),
            "WINDOW_UPDATE SYN|ACK|FIN|RST stream=1 length=2",
        )

    def test_ping(self) -> None:
        """A ping is named C{PING}."""
        self.assertEqual(
            describeHeader(0, FrameType.PING, Flag.ACK, 0, 42),
            "PING ACK stream=0 length=42",
        )

    def test_unknownTypeAndVersion(self) -> None:
        """
        An unknown type is shown by number, and a version other than 0 is
        appended.
        """
        self.assertEqual(
            describeHeader(1, 7, 0, 0, 0), "type7 - stream=0 length=0 version=1"
        )
