"""
Tests for L{tunnel.client.service}: reconnection with back-off, the state
exposed to embedding code, its logs, and stopping.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tunnel.client import ClientState, TunnelClientService
from tunnel.client.service import reconnectPolicy
from tunnel.core.control import CONNECTED_RESPONSE, TransportProtocol
from tunnel.test.test_client_support import IDENTIFIER, REFUSAL, World
from tunnel.test.test_client_tunnel import Responder
from tunnel.test.test_mux import deferredResult


class Client:
    """A L{TunnelClientService} on an in-memory L{World}, watched."""

    def __init__(self, test: SynchronousTestCase, world: World, **settings: Any) -> None:
        self.world = world
        self.service = TunnelClientService(
            world.endpoint, retryPolicy=backoffPolicy(jitter=lambda: 0), **settings
        )
        self.states: list[ClientState] = []
        self.service.addStateObserver(self.states.append)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    @property
    def attempts(self) -> int:
        """How many connections to the server were made."""
        return len(self.world.serverEndpoint.servers)

    def names(self) -> list[str]:
        return [state.name for state in self.states]

    def advance(self, seconds: float) -> None:
        self.world.reactor.advance(seconds)
        self.world.flush()


class BackoffTests(SynchronousTestCase):
    """The service retries with growing delays, and starts over after a tunnel."""

    def assertNextAttemptAfter(self, client: Client, delay: float) -> None:
        """The next attempt comes C{delay} seconds later, not before."""
        attempts = client.attempts
        client.advance(delay - 0.01)
        self.assertEqual(client.attempts, attempts, f"attempt before {delay} s")
        client.advance(0.01)
        self.assertEqual(client.attempts, attempts + 1, f"no attempt after {delay} s")

    def test_growsOnRefusedIdentifier(self) -> None:
        """
        A refused identifier is a failed attempt: each retry waits longer
        (1.5, 2.25, 3.375 s with the default policy) instead of retrying in
        a loop.
        """
        client = Client(self, World(response=REFUSAL))
        client.service.startService()
        client.world.flush()
        self.assertEqual(client.attempts, 1)
        for delay in (1.5, 2.25, 3.375):
            self.assertNextAttemptAfter(client, delay)
        self.assertEqual(client.service.state.name, "waiting")

    def test_growsOnConnectionRefused(self) -> None:
        """A server that cannot be reached is retried with back-off too."""
        world = World()
        world.serverEndpoint.refusing = True
        client = Client(self, world)
        client.service.startService()
        self.assertEqual(client.service.state.name, "waiting")
        self.assertIn("no server here", client.service.state.detail)
        self.assertIn("trying again in 1.5 s", client.service.state.detail)
        client.advance(1.5)
        self.assertIn("trying again in 2.2 s", client.service.state.detail)

    def test_resetsAfterGoodSession(self) -> None:
        """
        Once a tunnel was established, the wait after it ends starts over
        from the first delay.
        """
        world = World(response=REFUSAL)
        client = Client(self, world)
        client.service.startService()
        client.advance(0)
        client.advance(1.5)
        client.advance(2.25)
        world.response = CONNECTED_RESPONSE
        client.advance(3.375)
        self.assertEqual(client.service.state.name, "connected")
        world.server.transport.loseConnection()
        client.world.flush()
        self.assertEqual(client.names()[-2:], ["disconnected", "waiting"])
        self.assertNextAttemptAfter(client, 1.5)


class ReconnectPolicyTests(SynchronousTestCase):
    """L{reconnectPolicy}: quick at first, then at most about 10 s."""

    def waits(self, jitter: float) -> list[float]:
        self.patch(random, "uniform", lambda low, high: low + jitter * (high - low))
        policy = reconnectPolicy()
        return [policy(attempts) for attempts in range(1, 30)]

    def test_firstWaitUnderASecond(self) -> None:
        """The first wait, after a tunnel ended or one failed attempt, is under a second."""
        self.assertEqual([self.waits(0)[0], self.waits(1)[0]], [0.375, 0.875])

    def test_growsThenStaysAtTenSeconds(self) -> None:
        """The waits grow, and stop growing at 10 s plus the jitter."""
        waits = self.waits(0)
        self.assertEqual(waits, sorted(waits))
        self.assertEqual(waits[-1], 10.0)
        self.assertEqual(max(self.waits(1)), 10.5)


class GiveUpTests(SynchronousTestCase):
    """A client told to give up after some refusals stops, saying why."""

    def test_stopsAfterRefusalsInARow(self) -> None:
        """
        After C{giveUpAfter} refusals in a row the client stops in state
        C{"refused"}, whose detail says what to check, and makes no more
        attempts.
        """
        client = Client(self, World(response=REFUSAL), giveUpAfter=3)
        client.service.startService()
        client.advance(0)
        client.advance(1.5)
        client.advance(2.25)
        self.assertEqual(client.attempts, 3)
        self.assertEqual(client.names()[-2:], ["stopping", "refused"])
        detail = client.service.state.detail
        self.assertIn("refused identifier", detail)
        self.assertIn("3 times in a row", detail)
        self.assertIn("check the identifier", detail)
        self.assertNotIn(IDENTIFIER, detail)
        self.assertFalse(client.service.running)
        client.advance(100)
        self.assertEqual(client.attempts, 3)
        errors = [formatEvent(e) for e in client.events if e.get("log_level") == LogLevel.error]
        self.assertIn(detail, errors)

    def test_tunnelStartsTheCountOver(self) -> None:
        """Refusals count only in a row: an established tunnel starts the count over."""
        world = World(response=REFUSAL)
        client = Client(self, world, giveUpAfter=3)
        client.service.startService()
        client.advance(0)
        client.advance(1.5)
        world.response = CONNECTED_RESPONSE
        client.advance(2.25)
        self.assertEqual(client.service.state.name, "connected")
        world.response = REFUSAL
        world.server.transport.loseConnection()
        client.world.flush()
        client.advance(1.5)
        client.advance(2.25)
        self.assertEqual(client.service.state.name, "waiting")
        client.advance(3.375)
        self.assertEqual(client.service.state.name, "refused")

    def test_stoppedAfterGivingUp(self) -> None:
        """Stopping a client that gave up is a no-op that succeeds."""
        client = Client(self, World(response=REFUSAL), giveUpAfter=1)
        client.service.startService()
        client.advance(0)
        self.assertEqual(client.service.state.name, "refused")
        self.assertEqual(deferredResult(client.service.stopService()), [None])
        self.assertEqual(client.service.state.name, "refused")


IN_USE = (
    b"HTTP/1.1 409 Conflict\r\nContent-Length: 27\r\n\r\n"
    b"another client is connected"
)


class InUseTests(SynchronousTestCase):
    """The server says another client with the identifier holds its tunnel (C{409})."""

    def test_daemonBacksOffHard(self) -> None:
        """
        A client that never gives up waits at least 30 s before it asks
        again, and takes the tunnel once the other client is gone.
        """
        world = World(response=IN_USE)
        client = Client(self, world)
        client.service.startService()
        client.advance(0)
        self.assertEqual(client.service.state.name, "waiting")
        self.assertIn("another client with identifier", client.service.state.detail)
        self.assertIn("trying again in 30.0 s", client.service.state.detail)
        client.advance(29.9)
        self.assertEqual(client.attempts, 1)
        world.response = CONNECTED_RESPONSE
        client.advance(0.1)
        self.assertEqual((client.attempts, client.service.state.name), (2, "connected"))

    def test_consoleStopsAtOnce(self) -> None:
        """A client told to give up stops at the first C{409}, saying what to do."""
        client = Client(self, World(response=IN_USE), giveUpAfter=3)
        client.service.startService()
        client.advance(0)
        self.assertEqual(client.service.state.name, "refused")
        self.assertIn("another client with identifier", client.service.state.detail)
        self.assertIn("stop one of them", client.service.state.detail)


class StateTests(SynchronousTestCase):
    """The state exposed to embedding code, and its logs."""

    def test_statesThroughALife(self) -> None:
        """
        Observers see every state change, with the clock's time: connecting,
        waiting after a refusal, connected, disconnected, stopping, stopped.
        """
        world = World(response=REFUSAL)
        client = Client(self, world)
        self.assertEqual(client.service.state.name, "stopped")
        client.service.startService()
        client.world.flush()
        world.response = CONNECTED_RESPONSE
        client.advance(1.5)
        world.server.transport.loseConnection()
        client.world.flush()
        client.advance(1.5)
        client.service.stopService()
        client.world.flush()
        self.assertEqual(
            client.names(),
            [
                "connecting",
                "waiting",
                "connecting",
                "connected",
                "disconnected",
                "waiting",
                "connecting",
                "connected",
                "stopping",
                "disconnected",
                "stopped",
            ],
        )
        self.assertEqual(client.states[3].since, 1.5)
        self.assertEqual(client.service.state, client.states[-1])

    def test_everyChangeLogged(self) -> None:
        """Each state change is logged with its name and detail."""
        client = Client(self, World())
        client.service.startService()
        client.world.flush()
        logged = [
            formatEvent(event)
            for event in client.events
            if event.get("log_namespace") == "tunnel.client.service.TunnelClientService"
        ]
        self.assertEqual(
            logged,
            [
                "Tunnel client (secr…) connecting: connecting to the tunnel server",
                "Tunnel client (secr…) connected: tunnel to localhost is up",
            ],
        )

    def test_refusedIdentifierLoggedClearly(self) -> None:
        """
        A refused identifier is logged as an error naming the (redacted)
        identifier and the server's answer; the full identifier appears in
        no log event.
        """
        client = Client(self, World(response=REFUSAL))
        client.service.startService()
        client.world.flush()
        errors = [
            formatEvent(event)
            for event in client.events
            if event.get("log_level") == LogLevel.error
        ]
        self.assertEqual(
            errors,
            [
                "Tunnel identifier secr… refused by the tunnel server: "
                "the server answered 403 Forbidden: unknown identifier"
            ],
        )
        self.assertIn("refused identifier secr…", client.service.state.detail)
        for event in client.events:
            self.assertNotIn(IDENTIFIER, formatEvent(event))

    def test_observerErrorsContained(self) -> None:
        """An observer that raises does not stop the others or the service."""
        client = Client(self, World())

        def broken(state: ClientState) -> None:
            raise RuntimeError("observer bug")

        client.service.addStateObserver(broken)
        client.service.removeStateObserver(client.states.append)
        client.service.addStateObserver(client.states.append)
        client.service.startService()
        client.world.flush()
        self.assertEqual(client.names(), ["connecting", "connected"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


class StopTests(SynchronousTestCase):
    """Stopping the service."""

    def test_gracefulWhileConnected(self) -> None:
        """
        Stopping while connected waits for the open streams, then closes,
        and makes no further attempt.
        """
        world = World()
        client = Client(self, world)
        client.service.startService()
        client.world.flush()
        world.listen(3000, Responder)
        world.server.request(TransportProtocol.HTTP, 3000)
        world.flush()
        world.completeLocalConnection()
        world.flush()
        stopped = deferredResult(client.service.stopService())
        world.flush()
        self.assertEqual(stopped, [])
        self.assertEqual(client.service.state.name, "stopping")
        self.assertIn("for the open connections (1)", client.service.state.detail)
        world.server.streams[0].transport.write(b"GET / HTTP/1.1\r\n\r\n")
        world.flush()
        self.assertEqual(stopped, [None])
        self.assertEqual(client.service.state.name, "stopped")
        client.advance(100)
        self.assertEqual(client.attempts, 1)

    def test_boundedWhileConnected(self) -> None:
        """The graceful stop gives up on open streams after the bound."""
        world = World(shutdownTimeout=3.0)
        client = Client(self, world)
        client.service.startService()
        world.flush()
        world.server.request(TransportProtocol.HTTP, 3000)
        world.flush()
        stopped = deferredResult(client.service.stopService())
        client.advance(2.9)
        self.assertEqual(stopped, [])
        client.advance(0.1)
        self.assertEqual(stopped, [None])

    def test_whileWaiting(self) -> None:
        """Stopping while waiting to retry stops at once."""
        client = Client(self, World(response=REFUSAL))
        client.service.startService()
        client.world.flush()
        stopped = deferredResult(client.service.stopService())
        self.assertEqual(stopped, [None])
        self.assertEqual(client.names()[-2:], ["stopping", "stopped"])
        client.advance(100)
        self.assertEqual(client.attempts, 1)

    def test_whileConnecting(self) -> None:
        """
        Stopping while an attempt is under way cancels it and drops its
        connection.
        """
        client = Client(self, World(response=b""))
        client.service.startService()
        client.world.flush()
        self.assertEqual(client.service.state.name, "connecting")
        stopped = deferredResult(client.service.stopService())
        client.world.flush()
        self.assertEqual(stopped, [None])
        self.assertIsNotNone(client.world.server.lost)
        self.assertEqual(client.names()[-2:], ["stopping", "stopped"])

    def test_fromStateObserver(self) -> None:
        """
        A state observer may stop the service, even on the states reported
        while the reconnection machinery is at work.
        """
        for state in ("connecting", "waiting"):
            client = Client(self, World(response=REFUSAL))
            stops: list[Any] = []

            def stopOn(current: ClientState, state: str = state) -> None:
                if current.name == state and not stops:
                    stops.append(deferredResult(client.service.stopService()))

            client.service.addStateObserver(stopOn)
            client.service.startService()
            client.advance(0)
            self.assertEqual(stops, [[None]], state)
            self.assertEqual(client.service.state.name, "stopped", state)
            client.advance(100)
            self.assertEqual(client.attempts, 1, state)

    def test_fromStateObserverAroundATunnel(self) -> None:
        """
        A state observer may stop the service when the tunnel comes up or
        goes down, too.
        """
        for state in ("connected", "disconnected"):
            world = World()
            client = Client(self, world)
            stops: list[Any] = []

            def stopOn(current: ClientState, state: str = state) -> None:
                if current.name == state and not stops:
                    stops.append(deferredResult(client.service.stopService()))

            client.service.addStateObserver(stopOn)
            client.service.startService()
            world.flush()
            if state == "disconnected":
                world.server.transport.loseConnection()
                world.flush()
            client.advance(0)
            self.assertEqual(stops, [[None]], state)
            self.assertEqual(client.service.state.name, "stopped", state)
            client.advance(100)
            self.assertEqual(client.attempts, 1, state)

    def test_restart(self) -> None:
        """A stopped service connects again when started."""
        client = Client(self, World())
        client.service.startService()
        client.world.flush()
        client.service.stopService()
        client.world.flush()
        client.service.startService()
        client.world.flush()
        self.assertEqual(client.service.state.name, "connected")
        self.assertEqual(client.attempts, 2)
