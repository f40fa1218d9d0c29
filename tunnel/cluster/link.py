"""
The links between the nodes of a cluster, over Twisted: a connection that
shakes hands (L{tunnel.cluster.handshake}) and then carries a yamux session,
our own, whose streams each carry one public request or connection to a
client whose session the listening node holds.

A node dials the others it forwards to (L{NodeLinks}), one link per node,
made when first needed and made again after it is lost; it listens for the
links of the others (L{LinkListenerFactory}) and relays each stream they
open to the client it names (L{tunnel.cluster.relay}).

With a L{LinkTLS}, a link is TLS first (L{tunnel.cluster.tls}), then the
handshake and the session inside it: the listener's factory is wrapped by
L{LinkTLS.listening}, and L{NodeLinks} wraps the endpoint of each node it
dials.
"""

from __future__ import annotations

import os
from typing import Callable

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.cluster.handshake import NONCE_BYTES, HandshakeError, LinkHandshake, Role
from tunnel.cluster.keys import ClusterKey
from tunnel.cluster.tls import LinkTLS, tlsProblem
from tunnel.handover import handOver
from tunnel.mux import YamuxProtocol
from tunnel.yamux import SessionConfig

#: Seconds the other side of a link has to complete the handshake.
HANDSHAKE_TIMEOUT = 10.0
#: Seconds a node has to accept a link dialled to it.
CONNECT_TIMEOUT = 5.0

#: The yamux settings of a link: a node that falls silent is found out
#: within five seconds (a ping every two, three to answer), and a stream it
#: does not acknowledge within five gives way to the next holder; many
#: streams may be opened at once, since one link carries the requests of
#: every client of the node.
LINK_CONFIG = SessionConfig(
    acceptBacklog=1024, keepAliveInterval=2.0, keepAliveTimeout=3.0, streamOpenTimeout=5.0
)


class LinkError(Exception):
    """A link could not be made."""


@implementer(IHandshakeListener)
class LinkProtocol(Protocol):
    """
    One end of a link while it shakes hands; then the connection is handed
    to the link's yamux session.

    Over TLS, the protocol is the one a TLS wrapper delivers to: it is told
    when TLS is set up, and says why TLS failed if it did.

    @ivar linked: fires with the yamux session once the handshake
        succeeded, or fails with why it did not.
    @ivar peer: the other node's name, once linked.
    """

    _log = Logger()

    def __init__(
        self,
        handshake: LinkHandshake,
        yamux: YamuxProtocol,
        clock: IReactorTime,
        timeout: float = HANDSHAKE_TIMEOUT,
        tls: bool = False,
    ) -> None:
        """
        @param tls: whether the connection is wrapped in TLS.
        """
        self.linked: Deferred[YamuxProtocol] = Deferred()
        self.peer: str | None = None
        self._tls = tls
        self._tlsReady = False
        self._answered = False
        self._handshake = handshake
        self._yamux = yamux
        self._clock = clock
        self._timeout = timeout
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._timer = self._clock.callLater(self._timeout, self._timedOut)
        first = self._handshake.start()
        if first:
            self.transport.write(first)

    def handshakeCompleted(self) -> None:
        """TLS is set up (the other side's certificate checked, for a dialler)."""
        self._tlsReady = True

    def dataReceived(self, data: bytes) -> None:
        self._answered = True
        try:
            answer, linked = self._handshake.receive(data)
        except HandshakeError as e:
            self._end(LinkError(str(e)))
            return
        if answer:
            self.transport.write(answer)
        if linked is not None:
            self._stopTimer()
            self.peer = linked.peer
            handOver(self.transport, self._yamux, linked.rest)
            self.linked.callback(self._yamux)

    def connectionLost(self, reason: Failure) -> None:
        self._stopTimer()
        if self.linked.called:
            return
        problem = tlsProblem(reason) if self._tls else None
        if problem is not None:
            why = f"TLS failed: {problem}"
        elif self._tls and not self._tlsReady:
            why = (
                "the connection was lost before TLS was set up (is the other side a node "
                f"without --cluster-tls?): {reason.getErrorMessage()}"
            )
        elif not self._answered and self._handshake.role is Role.DIALER:
            why = (
                "the node dialled closed the link without answering (does it speak TLS on its "
                f"links, with --cluster-tls, and this node not?): {reason.getErrorMessage()}"
            )
        else:
            why = f"the link was lost during its handshake: {reason.getErrorMessage()}"
        self.linked.errback(LinkError(why))

    def _timedOut(self) -> None:
        self._timer = None
        self._end(LinkError(f"no handshake within {self._timeout:g} s"))

    def _end(self, error: LinkError) -> None:
        self._stopTimer()
        if not self.linked.called:
            self.linked.errback(error)
        self.transport.abortConnection()

    def _stopTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class LinkListenerFactory(Factory):
    """
    Accepts the links of other nodes: each that proves it knows the
    cluster secret gets a yamux session whose streams are built by
    C{streamFactory} (a L{tunnel.cluster.relay.RelayFactory}).
    """

    _log = Logger()

    def __init__(
        self,
        key: ClusterKey,
        node: str,
        streamFactory: Factory,
        clock: IReactorTime,
        config: SessionConfig | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,
        tls: bool = False,
    ) -> None:
        """
        @param tls: whether its connections come wrapped in TLS (see
            L{LinkTLS.listening}), for what it logs.
        """
        self._key = key
        self._node = node
        self._streamFactory = streamFactory
        self._clock = clock
        self._config = config
        self._timeout = timeout
        self._tls = tls

    def buildProtocol(self, addr: IAddress) -> LinkProtocol:
        yamux = YamuxProtocol(False, self._streamFactory, self._config or LINK_CONFIG, self._clock)
        handshake = LinkHandshake(Role.LISTENER, self._key, self._node, os.urandom(NONCE_BYTES))
        protocol = LinkProtocol(handshake, yamux, self._clock, self._timeout, self._tls)
        protocol.linked.addCallbacks(
            lambda _: self._log.info(
                "Node {peer} linked from {address}{over}",
                peer=protocol.peer,
                address=addr,
                over=" over TLS" if self._tls else "",
            ),
            lambda reason: self._log.warn(
                "Refused a node link from {address}: {why}",
                address=addr,
                why=reason.getErrorMessage(),
            ),
        )
        return protocol


def hostAndPort(address: str) -> tuple[str, int]:
    """
    Read a node's link address, C{HOST:PORT} (C{[v6]:PORT} for IPv6).

    @raise ValueError: if it is not one.
    """
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]"), int(port)


class NodeLinks:
    """
    The links this node dialled, one per other node's address, made when
    first needed; a lost one is made again when next needed.

    With a L{LinkTLS}, each is dialled over TLS, the other node's
    certificate checked for the host of its address.
    """

    _log = Logger()

    def __init__(
        self,
        key: ClusterKey,
        node: str,
        reactor: IReactorTime,
        endpointFor: Callable[[str], IStreamClientEndpoint] | None = None,
        config: SessionConfig | None = None,
        timeout: float = HANDSHAKE_TIMEOUT,
        tls: LinkTLS | None = None,
    ) -> None:
        """
        @param endpointFor: the endpoint to dial a node's address with;
            TCP by default (wrapped in TLS with C{tls}).
        @param tls: this node's certificate and the nodes' authorities, to
            dial over TLS; plain links if L{None}.
        """
        self._key = key
        self._tls = tls
        self._node = node
        self._reactor = reactor
        self._endpointFor = endpointFor or self._tcp
        self._config = config
        self._timeout = timeout
        self._links: dict[str, YamuxProtocol] = {}
        self._dialling: dict[str, list[Deferred[YamuxProtocol]]] = {}

    def _tcp(self, address: str) -> IStreamClientEndpoint:
        host, port = hostAndPort(address)
        return HostnameEndpoint(self._reactor, host, port, timeout=CONNECT_TIMEOUT)

    def link(self, address: str) -> Deferred[YamuxProtocol]:
        """
        The yamux session of the link to the node at C{address}, dialled
        if there is none.

        @return: a L{Deferred} that fails with L{LinkError} if the node
            cannot be reached or does not know the secret.
        """
        existing = self._links.get(address)
        if existing is not None:
            return succeed(existing)
        waiter: Deferred[YamuxProtocol] = Deferred()
        if address in self._dialling:
            self._dialling[address].append(waiter)
        else:
            self._dialling[address] = [waiter]
            self._dial(address).addBoth(self._dialled, address)
        return waiter

    def _dial(self, address: str) -> Deferred[YamuxProtocol]:
        yamux = YamuxProtocol(True, None, self._config or LINK_CONFIG, self._reactor)
        handshake = LinkHandshake(Role.DIALER, self._key, self._node, os.urandom(NONCE_BYTES))
        protocol = LinkProtocol(
            handshake, yamux, self._reactor, self._timeout, self._tls is not None
        )
        try:
            endpoint = self._endpointFor(address)
            if self._tls is not None:
                endpoint = self._tls.dialling(hostAndPort(address)[0], endpoint, self._reactor)
        except ValueError as e:
            return fail(LinkError(str(e)))

        def notConnected(reason: Failure) -> Failure:
            return Failure(LinkError(f"cannot reach node at {address}: {reason.getErrorMessage()}"))

        def linked(session: YamuxProtocol) -> YamuxProtocol:
            self._links[address] = session
            self._log.info(
                "Linked to node {peer} at {address}{over}",
                peer=protocol.peer,
                address=address,
                over=" over TLS" if self._tls is not None else "",
            )
            session.whenClosed().addBoth(lambda _: self._lost(address, session))
            return session

        connected = endpoint.connect(Factory.forProtocol(lambda: protocol))
        return connected.addCallbacks(lambda _: protocol.linked, notConnected).addCallback(linked)

    def _dialled(self, result: YamuxProtocol | Failure, address: str) -> None:
        if isinstance(result, Failure):
            self._log.warn(
                "No link to node at {address}: {why}", address=address, why=result.getErrorMessage()
            )
        for waiter in self._dialling.pop(address):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def _lost(self, address: str, session: YamuxProtocol) -> None:
        if self._links.get(address) is session:
            del self._links[address]
            self._log.info("The link to node at {address} is closed", address=address)

    def close(self) -> Deferred[None]:
        """Close every link, at once."""
        # Through the session, which unregisters itself as the transport's
        # producer first: a TLS transport is not closed while one is.
        closing = [session.shutdown(0) for session in list(self._links.values())]
        return gatherResults(closing).addCallback(lambda _: None)

