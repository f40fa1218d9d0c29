"""
The admin API: register virtual hosts at run time.

JSON in and out, behind a bearer token::

    GET    /hosts          -> 200 {"hosts": [{"host": ..., "connected": ...}]}
    POST   /hosts          {"host": "NAME"}
                           -> 201 {"host": ..., "identifier": ...}
    DELETE /hosts/NAME     -> 200 {"deleted": NAME}; the host's session closes

A request without the right C{Authorization: Bearer TOKEN} header gets 401.
With a hosts file, registrations and deletions are saved there (atomically),
so they survive a restart.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any, Callable, Protocol as TypingProtocol

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from tunnel.hostsfile import readHostsFile, writeHostsFile
from tunnel.protocol import normaliseHost, redactIdentifier

#: The largest request body the admin API reads.
MAX_BODY = 64 * 1024


class HostRegistry(TypingProtocol):
    """What the admin API needs of the tunnel server."""

    def addHost(self, host: str, identifier: str) -> None:
        """Route C{host} to the client with C{identifier}."""

    def deleteHost(self, host: str) -> None:
        """Forget C{host}."""

    def hosts(self) -> list[Any]:
        """The hosts, each with C{.host} and C{.connected}."""


def newIdentifier() -> str:
    """A fresh random identifier: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


class _Error(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class AdminResource(Resource):
    """
    The admin API as a twisted.web resource; put it at the root of a Site
    on a private endpoint.
    """

    isLeaf = True
    _log = Logger()

    def __init__(
        self,
        registry: HostRegistry,
        token: str,
        hostsFile: str | None = None,
        identifierFactory: Callable[[], str] = newIdentifier,
    ) -> None:
        super().__init__()
        self._registry = registry
        self._token = token.encode("utf-8")
        self._hostsFile = hostsFile
        self._identifierFactory = identifierFactory

    def render(self, request: Request) -> bytes:
        """Authenticate, dispatch, and answer in JSON."""
        try:
            self._authenticate(request)
            code, body = self._dispatch(request)
        except _Error as e:
            code, body = e.code, {"error": str(e)}
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode("utf-8") + b"\n"

    def _authenticate(self, request: Request) -> None:
        header = request.getHeader(b"authorization") or b""
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(
            presented.strip(), self._token
        ):
            request.setHeader(b"www-authenticate", b'Bearer realm="tunnel-admin"')
            raise _Error(401, "a valid bearer token is required")

    def _dispatch(self, request: Request) -> tuple[int, dict[str, Any]]:
        segments = [s for s in request.path.split(b"/") if s]
        method = request.method
        if segments == [b"hosts"]:
            if method == b"GET":
                return 200, {"hosts": self._hosts()}
            if method == b"POST":
                return self._add(request)
            raise _Error(405, "use GET or POST on /hosts")
        if len(segments) == 2 and segments[0] == b"hosts":
            if method == b"DELETE":
                return self._delete(segments[1].decode("utf-8", "replace"))
            raise _Error(405, "use DELETE on /hosts/NAME")
        raise _Error(404, "no such resource; see /hosts")

    def _hosts(self) -> list[dict[str, Any]]:
        return [{"host": h.host, "connected": h.connected} for h in self._registry.hosts()]

    def _add(self, request: Request) -> tuple[int, dict[str, Any]]:
        body = request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise _Error(413, "request body too large")
        try:
            fields = json.loads(body)
            host = normaliseHost(fields["host"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise _Error(400, f'expected {{"host": "NAME"}}: {e}') from None
        if any(h.host == host for h in self._registry.hosts()):
            raise _Error(409, f"host {host} is already registered")
        identifier = self._identifierFactory()
        self._save(lambda hosts: hosts.__setitem__(host, identifier))
        self._registry.addHost(host, identifier)
        self._log.info(
            "admin: registered host {host} for identifier {identifier}",
            host=host,
            identifier=redactIdentifier(identifier),
        )
        return 201, {"host": host, "identifier": identifier}

    def _delete(self, name: str) -> tuple[int, dict[str, Any]]:
        try:
            host = normaliseHost(name)
        except ValueError:
            raise _Error(404, f"no host {name!r}") from None
        if not any(h.host == host for h in self._registry.hosts()):
            raise _Error(404, f"no host {host}")
        self._save(lambda hosts: hosts.pop(host, None))
        self._registry.deleteHost(host)
        self._log.info("admin: deleted host {host}", host=host)
        return 200, {"deleted": host}

    def _save(self, change: Callable[[dict[str, str]], object]) -> None:
        """
        Apply a change to the hosts file, before the registry changes: a
        change that cannot be saved is not made at all.
        """
        if self._hostsFile is None:
            return
        try:
            hosts = readHostsFile(self._hostsFile)
            change(hosts)
            writeHostsFile(self._hostsFile, hosts)
        except (OSError, ValueError) as e:
            self._log.error(
                "admin: cannot save the hosts file {path}: {error}",
                path=self._hostsFile,
                error=e,
            )
            raise _Error(500, "the hosts file could not be saved; nothing was changed") from None
