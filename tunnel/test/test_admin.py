"""
Tests for L{tunnel.server.admin} (and its C{/tcp} calls,
L{tunnel.server.admintcp}), through treq's in-memory stub, and through an
L{AdminSite} over an in-memory connection.
"""

from __future__ import annotations

import errno
import json
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactor,
    RaisingMemoryReactor,
    StringTransportWithDisconnection,
)
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tunnel.cluster.scripts import StoreUnavailable
from tunnel.hostsfile import readHostsFile, writeHostsFile
from tunnel.options import ServerOptions
from tunnel.server import TunnelServer
from tunnel.server.accessfile import readAccessFile
from tunnel.server.admin import MAX_BODY, AdminResource, AdminSite, newIdentifier
from tunnel.test.serversupport import Harness

TOKEN = "admin-token"
AUTH = {b"Authorization": [b"Bearer " + TOKEN.encode()]}


@attrs.frozen
class Status:
    host: str
    connected: bool


class FakeRegistry:
    """Records the admin API's calls like the tunnel server would."""

    def __init__(self) -> None:
        self.identifiers: dict[str, str] = {}
        self.connected: set[str] = set()

    def addHost(self, host: str, identifier: str) -> None:
        self.identifiers[host] = identifier

    def nameOf(self, identifier: str) -> bytes:
        return identifier.encode()

    def addHostByName(self, host: str, name: bytes) -> None:
        self.identifiers[host] = name.decode()

    def deleteHost(self, host: str) -> None:
        del self.identifiers[host]

    def hosts(self) -> list[Status]:
        return [Status(h, h in self.connected) for h in sorted(self.identifiers)]

    def hasHost(self, host: str) -> bool:
        return host in self.identifiers


class AdminCalls(SynchronousTestCase):
    """Calls the admin API of C{self.treq} with the token."""

    treq: StubTreq

    def call(self, method: str, path: str, body: Any = None, headers: Any = AUTH) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        response = self.successResultOf(
            self.treq.request(method, "http://admin.invalid" + path, data=data, headers=headers)
        )
        content = self.successResultOf(response.content())
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        return response.code, json.loads(content)


class AdminTests(AdminCalls):
    """The admin API's endpoints, authentication and persistence."""

    def setUp(self) -> None:
        self.registry = FakeRegistry()
        self.hostsFile = self.mktemp()
        self.identifiers = iter(["fresh-1", "fresh-2"])
        self.resource = AdminResource(
            self.registry, TOKEN, self.hostsFile, lambda: next(self.identifiers)
        )
        self.treq = StubTreq(self.resource)

    def test_unauthenticatedRequestsGet401(self) -> None:
        """No token, a wrong token or another scheme: 401 and nothing changes."""
        for headers in ({}, {b"Authorization": [b"Bearer wrong"]},
                        {b"Authorization": [b"Basic " + TOKEN.encode()]}):
            code, body = self.call("POST", "/hosts", {"host": "a.example"}, headers)
            self.assertEqual(code, 401)
            self.assertIn("bearer token", body["error"])
        self.assertEqual(self.registry.identifiers, {})

    def test_addReturnsFreshIdentifierAndSavesIt(self) -> None:
        """
        Adding a host registers it with a fresh identifier, returns the
        identifier, and saves it in the hosts file.
        """
        code, body = self.call("POST", "/hosts", {"host": "Demo.Example.com"})
        self.assertEqual((code, body), (201, {"host": "demo.example.com", "identifier": "fresh-1"}))
        self.assertEqual(self.registry.identifiers, {"demo.example.com": "fresh-1"})
        self.assertEqual(readHostsFile(self.hostsFile), {"demo.example.com": "fresh-1"})

    def test_addKeepsOtherEntriesOfTheHostsFile(self) -> None:
        """Saving keeps the hosts the file already had."""
        writeHostsFile(self.hostsFile, {"old.example": "old-id"})
        self.call("POST", "/hosts", {"host": "new.example"})
        self.assertEqual(
            readHostsFile(self.hostsFile), {"old.example": "old-id", "new.example": "fresh-1"}
        )

    def test_addExistingHostConflicts(self) -> None:
        """Adding a host that exists is a 409."""
        self.call("POST", "/hosts", {"host": "a.example"})
        code, _ = self.call("POST", "/hosts", {"host": "A.example"})
        self.assertEqual(code, 409)
        self.assertEqual(self.registry.identifiers, {"a.example": "fresh-1"})

    def test_addMalformedIs400(self) -> None:
        """A body that is not {"host": NAME} with a valid name is a 400."""
        for body in ([], {"name": "x"}, {"host": "not a host"}, {"host": 5}):
            code, _ = self.call("POST", "/hosts", body)
            self.assertEqual(code, 400)

    def test_listShowsConnectionStateWithoutIdentifiers(self) -> None:
        """Listing shows each host and whether its client is connected."""
        self.call("POST", "/hosts", {"host": "a.example"})
        self.call("POST", "/hosts", {"host": "b.example"})
        self.registry.connected.add("b.example")
        code, body = self.call("GET", "/hosts")
        self.assertEqual(code, 200)
        self.assertEqual(body, {"hosts": [{"host": "a.example", "connected": False},
                                          {"host": "b.example", "connected": True}]})
        self.assertNotIn("fresh", json.dumps(body))

    def test_deleteRemovesHostAndSaves(self) -> None:
        """Deleting a host forgets it and removes it from the hosts file."""
        self.call("POST", "/hosts", {"host": "a.example"})
        code, body = self.call("DELETE", "/hosts/a.example")
        self.assertEqual((code, body), (200, {"deleted": "a.example"}))
        self.assertEqual(self.registry.identifiers, {})
        self.assertEqual(readHostsFile(self.hostsFile), {})

    def test_deleteUnknownIs404(self) -> None:
        """Deleting a host that does not exist is a 404."""
        self.assertEqual(self.call("DELETE", "/hosts/nope.example")[0], 404)

    def test_unknownPathsAndMethods(self) -> None:
        """Other paths are 404, other methods 405."""
        self.assertEqual(self.call("GET", "/")[0], 404)
        self.assertEqual(self.call("PUT", "/hosts")[0], 405)
        self.assertEqual(self.call("GET", "/hosts/a.example")[0], 405)

    def test_withoutHostsFileNothingIsWritten(self) -> None:
        """Without a hosts file, registrations live in memory only."""
        resource = AdminResource(self.registry, TOKEN)
        treq = StubTreq(resource)
        response = self.successResultOf(treq.post(
            "http://admin.invalid/hosts", json={"host": "a.example"}, headers=AUTH))
        self.assertEqual(response.code, 201)
        self.assertEqual(readHostsFile(self.hostsFile), {})

    def test_unsavableChangeIsNotMade(self) -> None:
        """
        When the hosts file cannot be written, adding or deleting answers 500
        and changes nothing, so the request can simply be retried.
        """
        self.call("POST", "/hosts", {"host": "kept.example"})
        broken = AdminResource(self.registry, TOKEN, "/nonexistent/directory/hosts")
        treq = StubTreq(broken)
        for method, path, body in [("POST", "/hosts", {"host": "new.example"}),
                                   ("DELETE", "/hosts/kept.example", None)]:
            response = self.successResultOf(treq.request(
                method, "http://admin.invalid" + path, json=body, headers=AUTH))
            self.assertEqual(response.code, 500)
            self.successResultOf(response.content())
        self.assertEqual(self.registry.identifiers, {"kept.example": "fresh-1"})
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_newIdentifierIsLongAndRandom(self) -> None:
        """Fresh identifiers are long and do not repeat."""
        identifiers = {newIdentifier() for _ in range(100)}
        self.assertEqual(len(identifiers), 100)
        self.assertTrue(all(len(i) >= 43 for i in identifiers))


#: The address of an admin client.
ADMIN_PEER = IPv4Address("TCP", "192.0.2.10", 40000)
#: A token that is not the admin token.
WRONG_TOKEN = b"wrong-token-that-must-not-be-logged"


def postHead(headers: bytes, authorization: bytes | None = b"Bearer " + TOKEN.encode()) -> bytes:
    """The head of a POST /hosts with C{headers} (complete lines) and C{authorization}."""
    if authorization is not None:
        headers += b"Authorization: " + authorization + b"\r\n"
    return b"POST /hosts HTTP/1.1\r\nHost: admin\r\n" + headers + b"\r\n"


#: A valid body of POST /hosts.
HOST_BODY = json.dumps({"host": "a.example"}).encode()


def dechunked(data: bytes) -> bytes:
    """The body of a response sent in chunks, C{data}."""
    body = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        if not int(size, 16):
            return body
        body += data[: int(size, 16)]
        data = data[int(size, 16) + 2 :]


class AdminSiteTests(SynchronousTestCase):
    """
    Served by an L{AdminSite}, a request is answered as soon as its head
    is in when it has no valid token or announces too large a body, and a
    chunked body is read no further than L{MAX_BODY}.
    """

    def setUp(self) -> None:
        self.registry = FakeRegistry()
        resource = AdminResource(self.registry, TOKEN, identifierFactory=lambda: "fresh-1")
        self.site = AdminSite(resource, reactor=Clock())
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def send(self, data: bytes) -> StringTransportWithDisconnection:
        """Open a connection to the site and send C{data} on it."""
        channel = self.site.buildProtocol(ADMIN_PEER)
        transport = StringTransportWithDisconnection(peerAddress=ADMIN_PEER)
        transport.protocol = channel
        channel.makeConnection(transport)
        channel.dataReceived(data)
        return transport

    def assertAnswered(
        self, transport: StringTransportWithDisconnection, code: int, closed: bool = True
    ) -> Any:
        """
        The connection got a JSON response with C{code}, and was closed (or
        not, if not C{closed}); return the response's body.
        """
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 %d " % (code,)), head)
        self.assertEqual(transport.connected, not closed)
        return json.loads(dechunked(body))

    def test_requestWithoutTheTokenIsRefusedBeforeItsBody(self) -> None:
        """
        A POST without the token, or with a wrong one, announcing 200 MB
        gets a 401 as soon as its head is in: none of its body is needed.
        """
        for authorization in (None, b"Bearer " + WRONG_TOKEN):
            transport = self.send(postHead(b"Content-Length: 200000000\r\n", authorization))
            self.assertIn("bearer token", self.assertAnswered(transport, 401)["error"])
        self.assertEqual(self.registry.identifiers, {})

    def test_announcedBodyTooLargeIsRefusedBeforeItIsRead(self) -> None:
        """
        With the token, a POST announcing more than 64 KiB gets a 413 as
        soon as its head is in.
        """
        transport = self.send(postHead(b"Content-Length: %d\r\n" % (MAX_BODY + 1,)))
        self.assertIn("larger than 65536", self.assertAnswered(transport, 413)["error"])

    def test_chunkedBodyTooLargeIsStopped(self) -> None:
        """
        A chunked body that grows past 64 KiB gets a 413 once it does, and
        the connection is closed: what follows is not read.
        """
        chunk = b"x" * 1024
        transport = self.send(postHead(b"Transfer-Encoding: chunked\r\n"))
        for _ in range(64):
            transport.protocol.dataReceived(b"400\r\n" + chunk + b"\r\n")
        self.assertEqual(transport.value(), b"")
        transport.protocol.dataReceived(b"1\r\nx\r\n")
        self.assertAnswered(transport, 413)
        self.assertEqual(self.registry.identifiers, {})

    def test_bodyWithinTheLimitIsRead(self) -> None:
        """
        A POST /hosts whose body follows its head registers the host (201),
        and the connection stays open for the next request.
        """
        transport = self.send(postHead(b"Content-Length: %d\r\n" % (len(HOST_BODY),)))
        self.assertEqual(transport.value(), b"")
        transport.protocol.dataReceived(HOST_BODY)
        self.assertEqual(
            self.assertAnswered(transport, 201, closed=False),
            {"host": "a.example", "identifier": "fresh-1"},
        )
        self.assertEqual(self.registry.identifiers, {"a.example": "fresh-1"})

    def test_tokensAreNeverLogged(self) -> None:
        """
        Neither the admin token nor a wrong one shows in the log, whether
        the request is refused or served; refusals are logged sparsely.
        """
        for _ in range(10):
            self.send(postHead(b"Content-Length: 0\r\n", b"Bearer " + WRONG_TOKEN))
        self.send(postHead(b"Content-Length: %d\r\n" % (len(HOST_BODY),)) + HOST_BODY)
        refusals = [e for e in self.logged if "without a valid token" in e.get("log_format", "")]
        self.assertEqual([e["count"] for e in refusals], [1, 10])
        self.assertEqual(self.registry.identifiers, {"a.example": "fresh-1"})
        for event in self.logged:
            for token in (TOKEN, WRONG_TOKEN.decode()):
                self.assertNotIn(token, repr(event))


class ServerAdminTests(AdminCalls):
    """The endpoints that act on identifiers, against a real tunnel server."""

    def setUp(self) -> None:
        self.harness = Harness()
        self.server = self.harness.server
        self.hostsFile = self.mktemp()
        self.identifiers = iter(["fresh-identifier-1", "fresh-identifier-2"])
        self.resource = AdminResource(
            self.server, TOKEN, self.hostsFile, lambda: next(self.identifiers)
        )
        self.treq = StubTreq(self.resource)

    def test_addSameAs(self) -> None:
        """A host added C{sameAs} another is bound to that host's identifier."""
        self.call("POST", "/hosts", {"host": "a.example"})
        code, body = self.call("POST", "/hosts", {"host": "b.example", "sameAs": "A.example"})
        self.assertEqual((code, body), (201, {"host": "b.example", "identifier": "fresh-identifier-1"}))
        self.assertEqual(self.server.identifierOf("b.example"), b"fresh-identifier-1")
        self.assertEqual(readHostsFile(self.hostsFile)["b.example"], "fresh-identifier-1")
        code, body = self.call("POST", "/hosts", {"host": "c.example", "sameAs": "nowhere.example"})
        self.assertEqual(code, 404)
        self.assertEqual(self.call("POST", "/hosts", {"host": "c.example", "sameAs": 3})[0], 400)

    def test_rotate(self) -> None:
        """
        Rotating a host gives it and every host and TCP listener sharing its
        identifier a fresh one, saved; the old identifier is no longer
        known, and its connected client is disconnected.
        """
        self.call("POST", "/hosts", {"host": "a.example"})
        self.call("POST", "/hosts", {"host": "b.example", "sameAs": "a.example"})
        self.server.addHost("other.example", "other-identifier")
        listening = self.server.bindTCP(
            serverFromString(MemoryReactor(), "tcp:2222"), "fresh-identifier-1"
        )
        port = self.successResultOf(listening)
        client = self.harness.tunnelClient(b"fresh-identifier-1", lambda message: None)
        self.assertEqual(len(self.server.clients()), 1)
        code, body = self.call("POST", "/hosts/a.example/rotate")
        self.assertEqual(
            (code, body),
            (200, {"hosts": ["a.example", "b.example"], "tcpPorts": [2222],
                   "identifier": "fresh-identifier-2"}),
        )
        # The listener's connections go to the new identifier: the old one
        # is forgotten, listener and all.
        self.assertFalse(self.server._registry.knows(b"fresh-identifier-1"))
        self.assertEqual(
            [(status.port, status.host) for status in self.server.tcpListeners()],
            [(2222, "a.example")],
        )
        self.addCleanup(self.server.unbindTCP, port)
        self.assertEqual(
            readHostsFile(self.hostsFile),
            {"a.example": "fresh-identifier-2", "b.example": "fresh-identifier-2"},
        )
        self.assertEqual(self.server.identifierOf("other.example"), b"other-identifier")
        self.harness.flush()
        self.assertIsNotNone(client.lost)
        self.assertEqual(self.server.clients(), [])
        self.assertEqual(self.call("POST", "/hosts/nowhere.example/rotate")[0], 404)
        self.assertEqual(self.call("GET", "/hosts/a.example/rotate")[0], 405)

    def test_clients(self) -> None:
        """GET /clients lists the connected clients, identifiers redacted."""
        self.server.addHost("a.example", "a-long-identifier")
        self.assertEqual(self.call("GET", "/clients"), (200, {"clients": []}))
        self.harness.tunnelClient(b"a-long-identifier", lambda message: None)
        code, body = self.call("GET", "/clients")
        self.assertEqual(code, 200)
        [client] = body["clients"]
        self.assertEqual(
            (client["identifier"], client["hosts"], client["peer"]),
            ("a-lo…", ["a.example"], "203.0.113.7:50000"),
        )
        self.assertNotIn("a-long-identifier", json.dumps(body))


#: The identifier of the host TCP listeners are added for.
TCP_IDENTIFIER = b"tcp-admin-identifier"


class TCPAdminTests(AdminCalls):
    """
    The C{/tcp} calls, against a real tunnel server whose listeners listen
    on an in-memory reactor.
    """

    def setUp(self) -> None:
        self.harness = Harness()
        self.server = self.harness.server
        self.server.addHost("a.example", TCP_IDENTIFIER)
        self.reactor = MemoryReactor()
        self.treq = self.treqFor(self.reactor)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def treqFor(self, reactor: Any) -> StubTreq:
        """The admin API of C{self.server}, listening with C{reactor}."""
        return StubTreq(AdminResource(self.server, TOKEN, reactor=reactor))

    def add(self, listen: str, sameAs: str = "a.example") -> tuple[int, Any]:
        """POST /tcp."""
        return self.call("POST", "/tcp", {"listen": listen, "sameAs": sameAs})

    def test_addListDelete(self) -> None:
        """
        A listener added for a host listens for its identifier's client, is
        listed (with the host, and whether the client is connected, never
        the identifier) and stops when deleted; then it is gone.
        """
        code, body = self.add("tcp:2222:interface=127.0.0.1", "A.Example")
        self.assertEqual(
            (code, body),
            (201, {"port": 2222, "listen": "tcp:2222:interface=127.0.0.1", "host": "a.example"}),
        )
        [(port, factory, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (2222, "127.0.0.1"))
        self.assertEqual(
            self.call("GET", "/tcp"),
            (200, {"listeners": [{"port": 2222, "host": "a.example", "connected": False}]}),
        )
        self.assertIsNone(factory.sessionFor())
        self.harness.tunnelClient(TCP_IDENTIFIER, lambda message: None)
        self.assertIsNotNone(factory.sessionFor())
        code, body = self.call("GET", "/tcp")
        self.assertEqual(body["listeners"][0]["connected"], True)
        self.assertEqual(self.call("DELETE", "/tcp/2222"), (200, {"deleted": 2222}))
        self.assertEqual(self.server.tcpListeners(), [])
        self.assertEqual(self.call("GET", "/tcp"), (200, {"listeners": []}))
        self.assertEqual(self.call("DELETE", "/tcp/2222")[0], 404)
        for event in self.logged:
            self.assertNotIn(TCP_IDENTIFIER.decode(), repr(event))

    def test_barePortMeansTCP(self) -> None:
        """A bare port means tcp:PORT, as --tcp takes it."""
        code, body = self.add(" 2222 ")
        self.assertEqual((code, body["listen"]), (201, "tcp:2222"))
        self.assertEqual([server[0] for server in self.reactor.tcpServers], [2222])

    def test_malformedIs400(self) -> None:
        """
        A malformed body, an endpoint --tcp would refuse, or one without a
        port is a 400 saying why, and nothing listens.
        """
        for body, words in [
            ([], "expected"),
            ({"listen": "tcp:2222"}, "sameAs"),
            ({"listen": 2222, "sameAs": "a.example"}, "must be strings"),
            ({"listen": "tcp:99999", "sameAs": "a.example"}, "from 0 to 65535"),
            ({"listen": "nonsense:2222", "sameAs": "a.example"}, "nonsense"),
            ({"listen": "unix:/run/tunnel.sock", "sameAs": "a.example"}, "needs a port"),
        ]:
            code, answer = self.call("POST", "/tcp", body)
            self.assertEqual(code, 400, body)
            self.assertIn(words, answer["error"])
            self.assertNotIn("\n", answer["error"])
        self.assertEqual(self.reactor.tcpServers, [])

    def test_unknownHostIs404(self) -> None:
        """A listener for a host that is not registered is a 404."""
        for host in ("nowhere.example", "not a host"):
            self.assertEqual(self.add("tcp:2222", host)[0], 404)
        self.assertEqual(self.reactor.tcpServers, [])

    def test_portWithAListenerIs409(self) -> None:
        """
        A port a listener has already, from --tcp or from the API, is a
        409; port 0 (any free port) is not.
        """
        endpoint = serverFromString(self.reactor, "tcp:2222")
        self.successResultOf(self.server.bindTCP(endpoint, b"other-identifier"))
        self.assertEqual(self.add("tcp:2223")[0], 201)
        for listen in ("tcp:2222", "tcp:2223:interface=127.0.0.1"):
            code, body = self.add(listen)
            self.assertEqual(code, 409)
            self.assertIn("has a TCP listener already", body["error"])
        self.assertEqual(self.add("tcp:0")[0], 201)
        self.assertEqual(len(self.reactor.tcpServers), 3)

    def test_listenerOfTCPOptionIsNotDeleted(self) -> None:
        """A listener the API did not add is not deleted through it (409)."""
        endpoint = serverFromString(self.reactor, "tcp:2222")
        self.successResultOf(self.server.bindTCP(endpoint, b"other-identifier"))
        code, body = self.call("DELETE", "/tcp/2222")
        self.assertEqual(code, 409)
        self.assertIn("--tcp", body["error"])
        self.assertEqual([status.port for status in self.server.tcpListeners()], [2222])
        for port in ("2223", "http", "²"):
            self.assertEqual(self.call("DELETE", "/tcp/" + port)[0], 404)

    def test_portThatCannotBeBound(self) -> None:
        """
        A port in use is a 409, one that may not be bound a 500, each with
        the reason in one line; nothing is logged as a failure, and the API
        keeps serving.
        """
        for error, code, words in [
            (OSError(errno.EADDRINUSE, "Address already in use"), 409, "another program"),
            (OSError(errno.EACCES, "Permission denied"), 500, "ports below 1024"),
        ]:
            failing = RaisingMemoryReactor(CannotListenError("127.0.0.1", 80, error))
            treq = self.treqFor(failing)
            response = self.successResultOf(treq.post(
                "http://admin.invalid/tcp", headers=AUTH,
                json={"listen": "tcp:80:interface=127.0.0.1", "sameAs": "a.example"},
            ))
            answer = json.loads(self.successResultOf(response.content()))
            self.assertEqual(response.code, code)
            self.assertTrue(answer["error"].startswith("cannot listen on port 80 of 127.0.0.1: "))
            self.assertIn(words, answer["error"])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.server.tcpListeners(), [])
        self.assertEqual(self.call("GET", "/tcp"), (200, {"listeners": []}))

    def test_listenersStopWithTheServer(self) -> None:
        """
        Closing the server stops the listeners the API added; deleting one
        afterwards is a 404.
        """
        self.add("tcp:2222")
        self.successResultOf(self.server.close())
        self.assertEqual(self.server.tcpListeners(), [])
        self.assertEqual(self.call("DELETE", "/tcp/2222")[0], 404)

    def test_deletingTheLastBindingClosesTheSession(self) -> None:
        """
        Once its host is deleted, deleting its identifier's last listener
        closes the client's session.
        """
        self.add("tcp:2222")
        client = self.harness.tunnelClient(TCP_IDENTIFIER, lambda message: None)
        self.server.deleteHost("a.example")
        self.harness.flush()
        self.assertIsNone(client.lost)
        self.assertEqual(
            self.call("GET", "/tcp"),
            (200, {"listeners": [{"port": 2222, "host": None, "connected": True}]}),
        )
        self.call("DELETE", "/tcp/2222")
        self.harness.flush()
        self.assertIsNotNone(client.lost)
        self.assertEqual(self.server.clients(), [])

    def test_otherMethodsAre405(self) -> None:
        """/tcp takes GET and POST, /tcp/PORT DELETE."""
        self.assertEqual(self.call("PUT", "/tcp")[0], 405)
        self.assertEqual(self.call("GET", "/tcp/2222")[0], 405)


class AccessAPITests(AdminCalls):
    """C{/hosts/NAME/access}: the operator guards a host at run time."""

    def setUp(self) -> None:
        self.harness = Harness()
        self.server = self.harness.server
        self.server.addHost("app.example", "app-identifier-0123")
        self.treq = StubTreq(AdminResource(self.server, TOKEN))

    def publicStatus(self, authorization: bytes | None = None) -> int:
        """The status a public request to the host gets (its client is not connected)."""
        headers = {b"host": [b"app.example"]}
        if authorization is not None:
            headers[b"authorization"] = [authorization]
        client = self.harness.httpClient()
        return self.successResultOf(self.harness.request(client, b"GET", b"/", headers)).code

    def test_ruleIsSetShownAndCleared(self) -> None:
        """
        PUT sets the host's rule, checked at once (403 from a denied
        address, 401 without the password); GET shows it without
        passwords; DELETE opens the host again.
        """
        self.assertEqual(self.call("GET", "/hosts/app.example/access"),
                         (200, {"host": "app.example", "access": None}))
        code, body = self.call("PUT", "/hosts/App.Example/access",
                               {"deny": ["203.0.113.0/24"], "basicAuth": ["alice:s3cret"]})
        shown = {"allow": [], "deny": ["203.0.113.0/24"], "basicAuthUsers": 1}
        self.assertEqual((code, body), (200, {"host": "app.example", "access": shown}))
        self.assertEqual(self.publicStatus(), 403)
        self.call("PUT", "/hosts/app.example/access", {"basicAuth": ["alice:s3cret"]})
        self.assertEqual(self.publicStatus(), 401)
        self.assertEqual(self.publicStatus(b"Basic YWxpY2U6czNjcmV0"), 502)
        self.assertNotIn("s3cret", json.dumps(self.call("GET", "/hosts/app.example/access")))
        self.assertEqual(self.call("DELETE", "/hosts/app.example/access")[0], 200)
        self.assertIsNone(self.server.accessOf("app.example"))
        self.assertEqual(self.publicStatus(), 502)

    def test_mistakesAreAnswered(self) -> None:
        """An unknown host is 404; a malformed rule 400, leaving the old rule."""
        self.assertEqual(self.call("PUT", "/hosts/nope.example/access", {})[0], 404)
        for body in ({"allow": "10.0.0.0/8"}, {"allow": ["10.0.0.1/8"]},
                     {"basicAuth": ["no-colon"]}, {"other": []}, [1]):
            code, answer = self.call("PUT", "/hosts/app.example/access", body)
            self.assertEqual(code, 400, body)
            self.assertIn("expected {", answer["error"])
        self.assertIsNone(self.server.accessOf("app.example"))
        self.assertEqual(self.call("POST", "/hosts/app.example/access", {})[0], 405)

    def test_rulesAreSavedAndReadAtStart(self) -> None:
        """
        With an access file, a rule set through the API is saved there
        (digests, no password) and read by the next start; DELETE removes
        it; a rule that cannot be saved is not set.
        """
        path = self.mktemp()
        self.treq = StubTreq(AdminResource(self.server, TOKEN, accessFile=path))
        self.call("PUT", "/hosts/app.example/access",
                  {"allow": ["10.0.0.0/8"], "basicAuth": ["alice:s3cret"]})
        rule = self.server.accessOf("app.example")
        self.assertEqual(readAccessFile(path), {"app.example": rule})
        with open(path) as f:
            self.assertNotIn("s3cret", f.read())
        options = ServerOptions()
        options.parseOptions(["--access-file", path])
        self.assertEqual(options["access"], {"app.example": rule})
        self.assertEqual(self.call("DELETE", "/hosts/app.example/access")[0], 200)
        self.assertEqual(readAccessFile(path), {})

        self.treq = StubTreq(AdminResource(self.server, TOKEN, accessFile=path + "/no/such"))
        code, body = self.call("PUT", "/hosts/app.example/access", {"deny": ["10.0.0.0/8"]})
        self.assertEqual((code, body["error"]),
                         (500, "the access file could not be saved; nothing was changed"))
        self.assertIsNone(self.server.accessOf("app.example"))

    def test_malformedAccessFileStopsTheStart(self) -> None:
        """An access file that is not the server's JSON is a usage error naming it."""
        path = self.mktemp()
        for content in ("{", '{"hosts": {"a.example": {"allow": ["10.0.0.1/8"]}}}', "[]"):
            with open(path, "w") as f:
                f.write(content)
            error = self.assertRaises(
                usage.UsageError, ServerOptions().parseOptions, ["--access-file", path]
            )
            self.assertIn(f"access file {path} is malformed", str(error))


class SharedConfigStandIn:
    """A cluster's shared configuration that records changes, or refuses them."""

    def __init__(self) -> None:
        self.changes: list[tuple[dict, dict]] = []
        self.unavailable = False

    def change(self, hosts: dict = {}, access: dict = {}, rotated: dict = {}) -> Deferred[int]:
        if self.unavailable:
            return fail(StoreUnavailable("unreachable", "no answer within 5 s"))
        self.changes.append((dict(hosts), dict(access)))
        return succeed(len(self.changes))


class SharedAdminTests(AdminCalls):
    """The admin API of a node of a cluster: the shared configuration first."""

    def setUp(self) -> None:
        self.registry = TunnelServer(reactor=Clock())
        self.shared = SharedConfigStandIn()
        self.resource = AdminResource(
            self.registry, TOKEN, None, lambda: "fresh-1", shared=self.shared
        )
        self.treq = StubTreq(self.resource)

    def test_changesGoToTheSharedConfigurationFirst(self) -> None:
        code, body = self.call("POST", "/hosts", {"host": "a.example"})
        self.assertEqual((code, body), (201, {"host": "a.example", "identifier": "fresh-1"}))
        self.call("PUT", "/hosts/a.example/access", {"deny": ["10.0.0.0/8"]})
        self.call("DELETE", "/hosts/a.example")
        hosts = [hosts for hosts, access in self.shared.changes]
        self.assertEqual(hosts, [{"a.example": "fresh-1"}, {}, {"a.example": ""}])
        self.assertIn("10.0.0.0/8", self.shared.changes[1][1]["a.example"])
        self.assertEqual(self.registry.hosts(), [])
        self.assertIsNotNone(self.registry.accessOf("a.example"))

    def test_aChangeRedisCannotTakeIsNotMade(self) -> None:
        """Redis unreachable: 503, saying so, and this node changes nothing either."""
        self.shared.unavailable = True
        code, body = self.call("POST", "/hosts", {"host": "a.example"})
        self.assertEqual(code, 503)
        self.assertIn("Redis unreachable", body["error"])
        self.assertIn("nothing was changed", body["error"])
        self.assertEqual(self.registry.hosts(), [])
