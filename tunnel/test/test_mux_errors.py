"""
Tests for L{tunnel.mux.errors}: the reasons streams end read as what
happened.
"""

from twisted.trial.unittest import SynchronousTestCase

from tunnel.mux import SessionEndedError, StreamResetError


class ErrorMessageTests(SynchronousTestCase):
    """The messages of the errors streams end with."""

    def test_sessionEndedSaysSo(self) -> None:
        """A session that ended is not described as a non-clean loss."""
        message = str(SessionEndedError("the server is stopping"))
        self.assertEqual(message, "The yamux session ended: the server is stopping.")

    def test_streamResetSaysSo(self) -> None:
        """A reset stream is described as reset by the peer."""
        self.assertEqual(str(StreamResetError()), "The peer reset the stream.")
