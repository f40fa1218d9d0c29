"""
A tunnel on one machine: a tunnel server on loopback port 8080, a small local
web page, and a tunnel client that exposes the page as
C{http://demo.localhost:8080/}.

Run it with C{python -m tunnel.demo [--port PORT]}; stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import html
import secrets
import sys

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ServerEndpoint, clientFromString
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tunnel.client import LocalRoutes, TunnelClientService, TunnelEndpoint, TunnelSettings
from tunnel.server import TunnelServer

HOST = "demo.localhost"


class DemoPage(Resource):
    """The local web page: shows what the request looked like on arrival."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """Answer with a page listing the request's headers."""
        rows = "".join(
            f"<tr><td>{html.escape(name.decode())}</td>"
            f"<td>{html.escape(', '.join(v.decode() for v in values))}</td></tr>"
            for name, values in sorted(request.requestHeaders.getAllRawHeaders())
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (
            "<!doctype html><title>tunnel demo</title>"
            "<h1>Hello through the tunnel</h1>"
            "<p>This page is served by a local web server and reached you "
            "through a tunnel server and a tunnel client.</p>"
            f"<table>{rows}</table>"
        ).encode()


async def runDemo(reactor, port: int) -> None:
    """Start the page, the server and the client; run until interrupted."""
    page = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Site(DemoPage())
    )
    identifier = secrets.token_urlsafe(32)
    server = TunnelServer(reactor)
    server.addHost(HOST, identifier)
    public = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
        server.site()
    )
    publicPort = public.getHost().port
    settings = TunnelSettings(
        identifier,
        routes=LocalRoutes.fromStrings([f"127.0.0.1:{page.getHost().port}"]),
        host=f"127.0.0.1:{publicPort}",
    )
    client = TunnelClientService(
        TunnelEndpoint(
            clientFromString(reactor, f"tcp:127.0.0.1:{publicPort}"), settings, reactor
        )
    )
    connected: defer.Deferred[None] = defer.Deferred()

    def watch(state) -> None:
        if state.name == "connected" and not connected.called:
            connected.callback(None)

    client.addStateObserver(watch)
    client.startService()
    await connected
    suffix = "" if publicPort == 80 else f":{publicPort}"
    print(f"Tunnel demo running. Open http://{HOST}{suffix}/  (Ctrl-C to stop)", flush=True)
    await defer.Deferred()  # until the reactor stops


def main(argv: list[str] | None = None) -> None:
    """Entry point of C{python -m tunnel.demo}."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="public port (default 8080)")
    options = parser.parse_args(argv)
    task.react(lambda reactor: defer.Deferred.fromCoroutine(runDemo(reactor, options.port)))


if __name__ == "__main__":
    sys.exit(main())
