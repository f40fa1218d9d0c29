"""
Tests for L{tunnel.mux.lifecycle}: the transition table of a stream's life,
and L{tunnel.mux.stream.StreamTransport} moving along it over a session in
memory.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tunnel.mux import SessionEndedError, StreamResetError
from tunnel.mux.lifecycle import (
    DISCONNECTING,
    FINAL,
    HOLDING_END,
    TRANSITIONS,
    WRITABLE,
    StreamEvent,
    StreamLifecycle,
    StreamStateError,
    advance,
)
from tunnel.test.support import HalfCloseRecorder, Recorder, RecordingFactory
from tunnel.test.test_mux import SessionPair
from tunnel.yamux import INITIAL_WINDOW

L = StreamLifecycle
E = StreamEvent

#: The whole table, written out: C{(state, event)} to the next state.
EXPECTED = {
    (L.OPEN, E.CLOSE_WRITE): L.HALF_CLOSED_LOCAL,
    (L.OPEN, E.END_HELD_BACK): L.END_HELD,
    (L.OPEN, E.END_DELIVERED): L.HALF_CLOSED_REMOTE,
    (L.OPEN, E.CLOSE): L.CLOSING,
    (L.OPEN, E.CONNECTION_LOST): L.LOST,
    (L.HALF_CLOSED_LOCAL, E.END_HELD_BACK): L.HALF_CLOSED_LOCAL_END_HELD,
    (L.HALF_CLOSED_LOCAL, E.END_DELIVERED): L.HALF_CLOSED_BOTH,
    (L.HALF_CLOSED_LOCAL, E.CLOSE): L.CLOSING,
    (L.HALF_CLOSED_LOCAL, E.CONNECTION_LOST): L.LOST,
    (L.HALF_CLOSED_REMOTE, E.CLOSE_WRITE): L.HALF_CLOSED_BOTH,
    (L.HALF_CLOSED_REMOTE, E.CLOSE): L.CLOSING,
    (L.HALF_CLOSED_REMOTE, E.CONNECTION_LOST): L.LOST,
    (L.HALF_CLOSED_BOTH, E.CLOSE): L.CLOSING,
    (L.HALF_CLOSED_BOTH, E.CONNECTION_LOST): L.LOST,
    (L.END_HELD, E.CLOSE_WRITE): L.HALF_CLOSED_LOCAL_END_HELD,
    (L.END_HELD, E.END_DELIVERED): L.HALF_CLOSED_REMOTE,
    (L.END_HELD, E.CLOSE): L.CLOSING,
    (L.END_HELD, E.CONNECTION_LOST): L.LOST,
    (L.HALF_CLOSED_LOCAL_END_HELD, E.END_DELIVERED): L.HALF_CLOSED_BOTH,
    (L.HALF_CLOSED_LOCAL_END_HELD, E.CLOSE_HELD_BACK): L.CLOSE_HELD,
    (L.HALF_CLOSED_LOCAL_END_HELD, E.CLOSE): L.CLOSING,
    (L.HALF_CLOSED_LOCAL_END_HELD, E.CONNECTION_LOST): L.LOST,
    (L.CLOSE_HELD, E.END_DELIVERED): L.HALF_CLOSED_BOTH,
    (L.CLOSE_HELD, E.CLOSE): L.CLOSING,
    (L.CLOSE_HELD, E.CONNECTION_LOST): L.LOST,
    (L.CLOSING, E.CONNECTION_LOST): L.CLOSED,
}


class TransitionTableTests(SynchronousTestCase):
    """
    L{TRANSITIONS} and L{advance}.
    """

    def test_tableIsAsWrittenOut(self) -> None:
        """The table holds the transitions written out here, and no other."""
        self.assertEqual(dict(TRANSITIONS), EXPECTED)

    def test_everyPairGoesWhereItSays(self) -> None:
        """L{advance} moves each pair of the table to its next state."""
        for (state, event), following in EXPECTED.items():
            self.assertIs(advance(state, event), following, (state, event))

    def test_otherPairsAreRefused(self) -> None:
        """
        Every pair not in the table raises L{StreamStateError}, which names
        the state and the event.
        """
        refused = [(s, e) for s in L for e in E if (s, e) not in EXPECTED]
        self.assertEqual(len(refused), len(L) * len(E) - len(EXPECTED))
        for state, event in refused:
            error = self.assertRaises(StreamStateError, advance, state, event)
            self.assertEqual((error.state, error.event), (state, event))

    def test_errorSaysWhatWasRefused(self) -> None:
        """The error's message says the state and the event."""
        error = self.assertRaises(
            StreamStateError, advance, L.HALF_CLOSED_LOCAL, E.CLOSE_WRITE
        )
        self.assertEqual(
            str(error), "a stream that is half-closed local cannot take 'close write'"
        )

    def test_finalStatesTakeNoEvent(self) -> None:
        """Once the connection is lost, no event is taken."""
        self.assertEqual(FINAL, {L.CLOSED, L.LOST})
        for state in FINAL:
            for event in E:
                self.assertRaises(StreamStateError, advance, state, event)

    def test_everyStateIsReachedFromOpen(self) -> None:
        """Every state can be reached from L{StreamLifecycle.OPEN}."""
        reached = {L.OPEN}
        edges = [(state, following) for (state, _), following in TRANSITIONS.items()]
        while True:
            more = {following for state, following in edges if state in reached}
            if more <= reached:
                break
            reached |= more
        self.assertEqual(reached, set(L))

    def test_everyOpenStateCanBeClosedAndLost(self) -> None:
        """
        From every state the connection is not lost in, it can be lost;
        from every one but L{StreamLifecycle.CLOSING} it can be closed.
        """
        for state in set(L) - FINAL:
            self.assertIn(advance(state, E.CONNECTION_LOST), FINAL)
            if state is not L.CLOSING:
                self.assertIs(advance(state, E.CLOSE), L.CLOSING)

    def test_writableStatesAreTheOnesThatCloseWriting(self) -> None:
        """
        The protocol may write in exactly the states that take
        L{StreamEvent.CLOSE_WRITE}, and in none they lead to.
        """
        closing = {s: f for (s, e), f in TRANSITIONS.items() if e is E.CLOSE_WRITE}
        self.assertEqual(set(closing), WRITABLE)
        self.assertEqual(WRITABLE & set(closing.values()), set())

    def test_heldEndStatesAreTheOnesThatDeliverIt(self) -> None:
        """
        The peer's end is held back in exactly the states that take
        L{StreamEvent.END_DELIVERED} but not L{StreamEvent.END_HELD_BACK}.
        """
        delivering = {s for (s, e) in TRANSITIONS if e is E.END_DELIVERED}
        holding = {s for (s, e) in TRANSITIONS if e is E.END_HELD_BACK}
        self.assertEqual(HOLDING_END, delivering - holding)

    def test_disconnectingOnceClosing(self) -> None:
        """
        A transport is disconnecting from L{StreamLifecycle.CLOSING} on,
        and stays so once the connection is lost.
        """
        self.assertEqual(DISCONNECTING, {L.CLOSING, L.CLOSED})


class StreamLifecycleTests(SynchronousTestCase):
    """
    L{StreamTransport.lifecycle} as a real stream goes through its life.
    """

    def openStream(
        self, serverProtocol: type[Recorder] = HalfCloseRecorder
    ) -> tuple[SessionPair, HalfCloseRecorder, Recorder]:
        """
        Open a stream from a client session to a server session, with a
        L{HalfCloseRecorder} on the client's end and a C{serverProtocol}
        on the server's.
        """
        pair = SessionPair(serverStreams=RecordingFactory(serverProtocol))
        client = HalfCloseRecorder()
        pair.client.openStream(client)
        pair.flush()
        [server] = pair.serverStreams.built
        self.assertEqual(
            (client.transport.lifecycle, server.transport.lifecycle), (L.OPEN, L.OPEN)
        )
        return pair, client, server

    def test_halfClosesOneWayThenTheOther(self) -> None:
        """
        Our half-close, then the peer's: each side goes through its
        half-closed states and ends L{StreamLifecycle.LOST}, without having
        called C{loseConnection}.
        """
        pair, client, server = self.openStream()
        client.transport.loseWriteConnection()
        self.assertIs(client.transport.lifecycle, L.HALF_CLOSED_LOCAL)
        pair.flush()
        self.assertIs(server.transport.lifecycle, L.HALF_CLOSED_REMOTE)
        self.assertTrue(server.readEnded)
        server.transport.write(b"still writing")
        serverTransport = server.transport
        serverTransport.loseWriteConnection()
        self.assertIs(serverTransport.lifecycle, L.LOST)
        pair.flush()
        self.assertIs(client.transport.lifecycle, L.LOST)
        self.assertEqual(client.received, b"still writing")
        self.assertTrue(client.readEnded)
        for protocol in (client, server):
            protocol.lost.trap(ConnectionDone)
            self.assertEqual(
                (protocol.transport.connected, protocol.transport.disconnecting),
                (False, False),
            )

    def test_endAndCloseHeldForPausedReader(self) -> None:
        """
        The peer's end, then the stream's close, wait for a reader that
        paused with data held back; once it resumes it has the data, the
        end and the loss.
        """
        pair, client, server = self.openStream()
        transport = client.transport
        transport.pauseProducing()
        server.transport.write(b"held")
        server.transport.loseWriteConnection()
        pair.flush()
        self.assertIs(transport.lifecycle, L.END_HELD)
        transport.write(b"answer")
        transport.loseWriteConnection()
        self.assertIs(transport.lifecycle, L.CLOSE_HELD)
        self.assertEqual((client.received, client.readEnded, client.lost), (b"", False, None))
        self.assertTrue(transport.connected)
        transport.resumeProducing()
        self.assertIs(transport.lifecycle, L.LOST)
        self.assertEqual((client.received, client.readEnded), (b"held", True))
        client.lost.trap(ConnectionDone)
        pair.flush()
        self.assertEqual(server.received, b"answer")

    def test_endHeldWhileOurFinWaits(self) -> None:
        """
        The peer's end that comes while our FIN waits behind buffered data
        is held for the paused reader; so is the stream's close, once our
        FIN is sent.
        """
        pair, client, server = self.openStream()
        transport = client.transport
        server.transport.pauseProducing()
        transport.write(b"z" * (INITIAL_WINDOW + 5))
        transport.loseWriteConnection()
        transport.pauseProducing()
        server.transport.write(b"held")
        server.transport.loseWriteConnection()
        pair.flush()
        self.assertIs(transport.lifecycle, L.HALF_CLOSED_LOCAL_END_HELD)
        self.assertIs(server.transport.lifecycle, L.HALF_CLOSED_LOCAL)
        server.transport.resumeProducing()
        pair.flush()
        self.assertIs(server.transport.lifecycle, L.LOST)
        self.assertEqual(len(server.received), INITIAL_WINDOW + 5)
        self.assertIs(transport.lifecycle, L.CLOSE_HELD)
        transport.resumeProducing()
        self.assertIs(transport.lifecycle, L.LOST)
        self.assertEqual((client.received, client.readEnded), (b"held", True))
        client.lost.trap(ConnectionDone)

    def test_loseConnectionWaitsForTheBufferedData(self) -> None:
        """
        C{loseConnection} with data waiting for window is
        L{StreamLifecycle.CLOSING} until it is sent, then
        L{StreamLifecycle.CLOSED}: still disconnecting, no longer connected.
        """
        pair, client, server = self.openStream()
        transport = client.transport
        server.transport.pauseProducing()
        transport.write(b"z" * (INITIAL_WINDOW + 5))
        transport.loseConnection()
        pair.flush()
        self.assertIs(transport.lifecycle, L.CLOSING)
        self.assertEqual((transport.connected, transport.disconnecting), (True, True))
        server.transport.resumeProducing()
        pair.flush()
        self.assertIs(transport.lifecycle, L.CLOSED)
        self.assertEqual((transport.connected, transport.disconnecting), (False, True))
        client.lost.trap(ConnectionDone)

    def test_peersEndClosesProtocolThatCannotHalfClose(self) -> None:
        """
        A protocol that cannot half-close is closed at the peer's end: it
        ends L{StreamLifecycle.CLOSED}, as if it had called
        C{loseConnection}.
        """
        pair, client, server = self.openStream(Recorder)
        client.transport.loseWriteConnection()
        pair.flush()
        self.assertIs(server.transport.lifecycle, L.CLOSED)
        server.lost.trap(ConnectionDone)
        self.assertIs(client.transport.lifecycle, L.LOST)

    def test_abortAndResetAreLost(self) -> None:
        """
        A stream we abort, and the one the peer's reset ends, are
        L{StreamLifecycle.LOST}.
        """
        pair, client, server = self.openStream()
        client.transport.abortConnection()
        pair.flush()
        self.assertEqual(
            (client.transport.lifecycle, server.transport.lifecycle), (L.LOST, L.LOST)
        )
        client.lost.trap(ConnectionAborted)
        server.lost.trap(StreamResetError)

    def test_sessionEndLosesOpenAndClosingStreams(self) -> None:
        """
        When the session ends an open stream is L{StreamLifecycle.LOST}, a
        closing one L{StreamLifecycle.CLOSED}.
        """
        pair, client, server = self.openStream()
        closing = HalfCloseRecorder()
        pair.client.openStream(closing)
        pair.flush()
        pair.serverStreams.built[1].transport.pauseProducing()
        closing.transport.write(b"z" * (INITIAL_WINDOW + 5))
        closing.transport.loseConnection()
        pair.flush()
        self.assertIs(closing.transport.lifecycle, L.CLOSING)
        pair.client.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            (client.transport.lifecycle, closing.transport.lifecycle), (L.LOST, L.CLOSED)
        )
        client.lost.trap(SessionEndedError)
        closing.lost.trap(SessionEndedError)

    def test_callsAfterTheLossChangeNothing(self) -> None:
        """
        What the protocol calls once its connection is lost is ignored,
        as on a TCP transport: the stream stays where it is.
        """
        pair, client, server = self.openStream()
        transport = client.transport
        transport.abortConnection()
        transport.pauseProducing()
        transport.write(b"late")
        transport.loseWriteConnection()
        transport.loseConnection()
        transport.abortConnection()
        transport.resumeProducing()
        self.assertIs(transport.lifecycle, L.LOST)

    def test_connectedAndDisconnectingAreReadOnly(self) -> None:
        """Only the stream's state says whether it is connected or disconnecting."""
        pair, client, server = self.openStream()
        for name in ("connected", "disconnecting", "lifecycle"):
            self.assertRaises(AttributeError, setattr, client.transport, name, False)
