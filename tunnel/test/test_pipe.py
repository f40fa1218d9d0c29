"""
Tests for L{tunnel.pipe}.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tunnel.pipe import PipeEnd


class HalfCloseableTransport(StringTransport):
    """A string transport that records half-closes."""

    writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


def connectedEnd() -> tuple[PipeEnd, HalfCloseableTransport]:
    end = PipeEnd()
    transport = HalfCloseableTransport()
    end.makeConnection(transport)
    return end, transport


class PipeEndTests(SynchronousTestCase):
    """
    Two L{PipeEnd}s joined move bytes both ways with back-pressure and
    half-close.
    """

    def test_heldPausedUntilJoined(self) -> None:
        """
        An end holds its transport paused until joined, keeps what arrives
        meanwhile, and passes it on when joined.
        """
        a, aTransport = connectedEnd()
        self.assertEqual(aTransport.producerState, "paused")
        a.dataReceived(b"early")
        b, bTransport = connectedEnd()
        a.join(b)
        self.assertEqual(bTransport.value(), b"early")
        self.assertEqual(aTransport.producerState, "producing")
        self.assertEqual(bTransport.producerState, "producing")

    def test_bytesBothWays(self) -> None:
        """Bytes read on one side are written to the other."""
        a, aTransport = connectedEnd()
        b, bTransport = connectedEnd()
        a.join(b)
        a.dataReceived(b"to b")
        b.dataReceived(b"to a")
        self.assertEqual(bTransport.value(), b"to b")
        self.assertEqual(aTransport.value(), b"to a")

    def test_eachTransportProducesForTheOther(self) -> None:
        """
        Each transport is registered as the streaming producer of the other,
        so a full side pauses the one feeding it.
        """
        a, aTransport = connectedEnd()
        b, bTransport = connectedEnd()
        a.join(b)
        self.assertIs(aTransport.producer, bTransport)
        self.assertIs(bTransport.producer, aTransport)
        self.assertTrue(aTransport.streaming)

    def test_halfClosePassedOn(self) -> None:
        """A read EOF on one side half-closes the other."""
        a, aTransport = connectedEnd()
        b, bTransport = connectedEnd()
        a.join(b)
        a.readConnectionLost()
        self.assertTrue(bTransport.writeClosed)
        self.assertFalse(aTransport.writeClosed)

    def test_halfCloseUnregistersFinishedProducer(self) -> None:
        """
        A half-close first unregisters the side that ended as the producer
        of the other (a Twisted transport resumes a paused producer instead
        of half-closing); a later loss does not unregister it again.
        """
        a, aTransport = connectedEnd()
        b, bTransport = connectedEnd()
        a.join(b)
        a.readConnectionLost()
        self.assertIsNone(bTransport.producer)
        self.assertIs(aTransport.producer, bTransport)
        a.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(bTransport.disconnecting)

    def test_halfCloseBeforeJoinPassedOnAtJoin(self) -> None:
        """A half-close that came before the join is passed on at the join."""
        a, aTransport = connectedEnd()
        a.dataReceived(b"all")
        a.readConnectionLost()
        b, bTransport = connectedEnd()
        a.join(b)
        self.assertEqual(bTransport.value(), b"all")
        self.assertTrue(bTransport.writeClosed)

    def test_lossClosesOtherSide(self) -> None:
        """When one side is gone, the other is closed and the end fires."""
        a, aTransport = connectedEnd()
        b, bTransport = connectedEnd()
        a.join(b)
        ended: list[None] = []
        a.ended.addCallback(ended.append)
        a.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(bTransport.disconnecting)
        self.assertIsNone(bTransport.producer)
        self.assertEqual(ended, [None])
        a.lostReason.trap(ConnectionLost)

    def test_lossBeforeJoinClosesOtherAtJoin(self) -> None:
        """An end whose side is gone before the join closes the other at once."""
        a, aTransport = connectedEnd()
        a.dataReceived(b"last")
        a.connectionLost(Failure(ConnectionDone()))
        b, bTransport = connectedEnd()
        a.join(b)
        self.assertEqual(bTransport.value(), b"last")
        self.assertTrue(bTransport.disconnecting)
