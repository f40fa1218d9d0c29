"""
Sending a captured request again to the local service it went to, and
recording the new exchange like any other.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from tunnel.client.local import NO_LOCAL_SERVICE, LocalConnector, noLocalServer
from tunnel.core.capture import CapturedExchange, ExchangeRecorder, Kind
from tunnel.core.http import IResponseReceiver, MessageError, ResponseHead, ResponseParser
from tunnel.core.replay import ReplayEdit, replayRequest

#: Seconds a replay waits for the local service's whole answer.
REPLAY_TIMEOUT = 30.0


@implementer(IResponseReceiver)
class _Replay(Protocol):
    """
    Writes the request, records the answer, and closes once it is whole or
    broken; it reads the answer as it comes, each byte once, to know.
    """

    def __init__(self, request: bytes, recorder: ExchangeRecorder, ended: Deferred[None]) -> None:
        self._request = request
        self._recorder = recorder
        self._ended = ended
        method = request.partition(b" ")[0]
        self._answer = ResponseParser(self, method)

    def connectionMade(self) -> None:
        self._recorder.requestData(self._request)
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._recorder.responseData(data)
        try:
            self._answer.dataReceived(data)
        except MessageError:
            self.transport.loseConnection()

    def headReceived(self, head: ResponseHead) -> None:
        pass

    def bodyReceived(self, data: bytes) -> None:
        pass

    def responseComplete(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self._ended.callback(None)


def replay(
    connector: LocalConnector,
    exchange: CapturedExchange,
    reactor: Any,
    edit: ReplayEdit = ReplayEdit(),
    timeout: float = REPLAY_TIMEOUT,
) -> Deferred[CapturedExchange]:
    """
    Send the request of C{exchange} again (changed as C{edit} says) to the
    local address it went to, and record the exchange in the connector's
    store as a replay of it.

    @return: fires with the new exchange once it ended: answered, refused
        (no local service: a C{503}, as for a tunnelled request), or cut
        after C{timeout} seconds without the whole answer.
    @raise tunnel.core.replay.ReplayError: if it cannot be replayed as asked.
    """
    request = replayRequest(exchange, edit)
    address = exchange.destination
    recorder = connector.recorder(Kind.HTTP, address, replayOf=exchange.id)
    assert recorder is not None, "a replay is recorded into the connector's store"
    ended: Deferred[None] = Deferred()
    connection: list[Protocol] = []

    def connected(protocol: Protocol) -> None:
        connection.append(protocol)

    def failed(reason: Failure) -> None:
        recorder.requestData(request)
        recorder.exchange.refusal = NO_LOCAL_SERVICE
        recorder.responseData(noLocalServer(address))
        ended.callback(None)

    def timedOut() -> None:
        recorder.exchange.problem = f"no whole answer within {timeout:g} s"
        if connection:
            connection[0].transport.abortConnection()
        else:
            dialing.cancel()

    timer = reactor.callLater(timeout, timedOut)
    factory = Factory.forProtocol(lambda: _Replay(request, recorder, ended))
    dialing = connector.endpointFor(address).connect(factory)
    dialing.addCallbacks(connected, failed)

    def done(_: None) -> CapturedExchange:
        if timer.active():
            timer.cancel()
        connector.exchangeEnded(recorder)
        return recorder.exchange

    return ended.addCallback(done)
