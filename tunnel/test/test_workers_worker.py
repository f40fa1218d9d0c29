"""
Tests for L{tunnel.workers.worker}: how a worker reads its command line,
and how it learns that its supervisor is gone.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionLost
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

import treq

from tunnel.options import ServerOptions
from tunnel.tap import makeServerService
from tunnel.test.support import sleep, until
from tunnel.workers.command import sharedListeners
from tunnel.workers.sockets import bindShared
from tunnel.workers.worker import ParentWatch, _arguments


class ArgumentsTests(SynchronousTestCase):
    def test_listenersThenTheServersArguments(self) -> None:
        """C{--listeners COUNT} comes first, then the server's arguments; else it is refused."""
        self.assertEqual(_arguments(["--listeners", "2", "--listen", "tcp:0"]),
                         (2, ["--listen", "tcp:0"]))
        for bad in ([], ["--listen", "tcp:0"], ["--listeners", "two"]):
            self.assertRaises(usage.UsageError, _arguments, bad)


class ParentWatchTests(TestCase):
    """A L{ParentWatch} on a pipe, as a worker's standard input is one."""

    def setUp(self) -> None:
        self.read, self.write = os.pipe()
        self.ends: list[None] = []
        self.watch = ParentWatch(self.read, lambda: self.ends.append(None))
        self.addCleanup(os.close, self.read)
        reactor.addReader(self.watch)
        self.addCleanup(reactor.removeReader, self.watch)

    def closeWrite(self) -> None:
        if self.write is not None:
            os.close(self.write)
            self.write = None

    @defer.inlineCallbacks
    def test_theEndOfThePipeIsTheSupervisorsEnd(self):
        """Bytes are no end; the pipe's end is, told once."""
        self.addCleanup(self.closeWrite)
        os.write(self.write, b"anything")
        yield sleep(0.05)
        self.assertEqual(self.ends, [])
        self.closeWrite()
        yield until(lambda: self.ends, what="the end told")
        yield sleep(0.05)
        self.assertEqual(self.ends, [None])

    def test_theReactorStoppingIsNoEnd(self) -> None:
        """The reactor disconnecting its readers as it stops does not say the supervisor ended."""
        self.addCleanup(self.closeWrite)
        self.watch.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.ends, [])


class InheritedListenersTests(TestCase):
    """A worker's server, built on listeners bound elsewhere, as its supervisor binds them."""

    def test_theServerListensOnTheInheritedListeners(self):
        """
        The public site and the TCP tunnel listen on the inherited sockets,
        in the order of --listen then --tcp: a request to the first gets
        the site's answer, and the TCP listener is bound to its client.
        """
        options = ServerOptions()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1",
                              "--tcp", "tcp:0:interface=127.0.0.1=an-identifier"])
        bound = [bindShared(description) for description in sharedListeners(options)]
        for listener in bound:
            self.addCleanup(listener.close)
        service = makeServerService(options, reactor, [listener.fileno() for listener in bound])
        service.startService()
        self.addCleanup(service.stopService)
        public, tcp = (listener.getsockname()[1] for listener in bound)
        self.assertEqual(
            [port.getHost().port for port in service.server._listeners], [tcp]
        )

        def answered(response):
            self.assertEqual(response.code, 404)

        return treq.get(f"http://127.0.0.1:{public}/", headers={"Host": "nobody.example"},
                        persistent=False).addCallback(answered)

    def test_oneInheritedListenerForEachEndpoint(self) -> None:
        """Inherited listeners that do not match the endpoints one to one are a mistake."""
        options = ServerOptions()
        options.parseOptions(["--listen", "tcp:0", "--listen", "tcp:1"])
        self.assertRaises(ValueError, makeServerService, options, reactor, [3])
