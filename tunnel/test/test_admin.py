"""
Tests for L{tunnel.server.admin}, through treq's in-memory stub.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from tunnel.hostsfile import readHostsFile, writeHostsFile
from tunnel.server.admin import AdminResource, newIdentifier

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

    def deleteHost(self, host: str) -> None:
        del self.identifiers[host]

    def hosts(self) -> list[Status]:
        return [Status(h, h in self.connected) for h in sorted(self.identifiers)]


class AdminTests(SynchronousTestCase):
    """The admin API's endpoints, authentication and persistence."""

    def setUp(self) -> None:
        self.registry = FakeRegistry()
        self.hostsFile = self.mktemp()
        self.identifiers = iter(["fresh-1", "fresh-2"])
        self.resource = AdminResource(
            self.registry, TOKEN, self.hostsFile, lambda: next(self.identifiers)
        )
        self.treq = StubTreq(self.resource)

    def call(self, method: str, path: str, body: Any = None, headers: Any = AUTH) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        response = self.successResultOf(
            self.treq.request(method, "http://admin.invalid" + path, data=data, headers=headers)
        )
        content = self.successResultOf(response.content())
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])
        return response.code, json.loads(content)

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
