"""
A tunnel on one machine: a tunnel server on loopback port 8080, a small local
web page, and a tunnel client that exposes the page as
C{http://demo.localhost:8080/}.

The page shows the request's headers as they arrived, and polls C{/live}, a
JSON answer of the same local page, once a second through the tunnel: it
says "Live" with the round-trip time while the answers come, "Offline" when
they stop.

Run it with C{python -m tunnel.demo [--port PORT]}; stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import html
import json
import secrets
import sys
from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ServerEndpoint, clientFromString
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tunnel.client import LocalRoutes, TunnelClientService, TunnelEndpoint, TunnelSettings
from tunnel.server import TunnelServer

HOST = "demo.localhost"

#: The page's style: system fonts, readable on a phone, light or dark as the
#: reader's system prefers; nothing is fetched from elsewhere.
STYLE = """
:root {
  color-scheme: light dark;
  --bg: #f6f7f9; --card: #ffffff; --text: #1d2330; --muted: #5d6778;
  --line: #e3e6ec; --live: #16a34a; --off: #dc2626;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1218; --card: #171b23; --text: #e6e9ef; --muted: #9aa3b2;
    --line: #2a303c; --live: #22c55e; --off: #f87171;
  }
}
* { box-sizing: border-box; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    Arial, "Noto Sans", sans-serif;
}
main { max-width: 46rem; margin: 0 auto; padding: 2rem 1rem 3rem; }
h1 { font-size: clamp(1.6rem, 5vw, 2.2rem); line-height: 1.2; margin: 0 0 .5rem; }
h2 { font-size: 1.05rem; margin: 0 0 .75rem; }
p.lead { color: var(--muted); margin: 0 0 1.5rem; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.card {
  background: var(--card); border: 1px solid var(--line); border-radius: 12px;
  padding: 1rem 1.25rem; margin: 0 0 1.25rem;
  box-shadow: 0 1px 2px rgb(0 0 0 / 6%);
}
.panel { display: flex; flex-wrap: wrap; align-items: center; gap: .75rem 1.5rem; }
.status {
  display: inline-flex; align-items: center; gap: .5rem; font-weight: 600;
  padding: .25rem .75rem; border-radius: 999px; border: 1px solid var(--line);
}
.status::before {
  content: ""; width: .6rem; height: .6rem; border-radius: 50%;
  background: var(--muted);
}
.status.live { color: var(--live); }
.status.live::before { background: var(--live); box-shadow: 0 0 0 3px rgb(34 197 94 / 25%); }
.status.offline { color: var(--off); }
.status.offline::before { background: var(--off); }
.metric { color: var(--muted); }
.metric span { color: var(--text); font-variant-numeric: tabular-nums; font-weight: 600; }
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-size: .9rem; }
th, td { text-align: left; vertical-align: top; padding: .45rem .5rem;
  border-bottom: 1px solid var(--line); }
th { color: var(--muted); font-weight: 600; }
td:first-child { white-space: nowrap; font-weight: 600; }
td:last-child { overflow-wrap: anywhere; }
tr:last-child td { border-bottom: 0; }
@media (max-width: 34rem) {
  tr:first-child { display: none; }
  td { display: block; padding: .1rem 0; border: 0; }
  td:last-child { padding-bottom: .6rem; border-bottom: 1px solid var(--line); }
}
"""

#: The page's script: ask C{/live} once a second and show the answer.
SCRIPT = """
(function () {
  var status = document.getElementById("status");
  var rtt = document.getElementById("rtt");
  var served = document.getElementById("served");
  var time = document.getElementById("time");
  function show(live) {
    status.textContent = live ? "Live" : "Offline";
    status.className = "status " + (live ? "live" : "offline");
  }
  function poll() {
    var controller = new AbortController();
    var timer = setTimeout(function () { controller.abort(); }, 3000);
    var started = performance.now();
    fetch("/live", {cache: "no-store", signal: controller.signal})
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (answer) {
        rtt.textContent = Math.round(performance.now() - started);
        served.textContent = answer.served;
        time.textContent = new Date(answer.time).toLocaleTimeString();
        show(true);
      })
      .catch(function () { show(false); })
      .finally(function () { clearTimeout(timer); setTimeout(poll, 1000); });
  }
  poll();
})();
"""


class DemoPage(Resource):
    """
    The local web page: shows what the request looked like on arrival, and
    at C{/live} answers how many requests it has answered so far.

    @ivar served: how many requests this page has answered.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.served = 0

    def render_GET(self, request: Request) -> bytes:
        """Answer C{/live} with JSON, and anything else with the page."""
        self.served += 1
        if request.path == b"/live":
            return self.renderLive(request)
        return self.renderPage(request)

    def renderLive(self, request: Request) -> bytes:
        """Answer with the count of requests answered and the time, never cached."""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        return json.dumps({"served": self.served, "time": now}).encode()

    def renderPage(self, request: Request) -> bytes:
        """Answer with a page listing the request's headers and a live status."""
        rows = "".join(
            f"<tr><td>{html.escape(name.decode('utf-8', 'replace'))}</td>"
            f"<td>{html.escape(', '.join(v.decode('utf-8', 'replace') for v in values))}</td></tr>"
            for name, values in sorted(request.requestHeaders.getAllRawHeaders())
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            '<link rel=icon href="data:,">'
            f"<title>tunnel demo</title><style>{STYLE}</style></head><body><main>"
            "<h1>Hello through the tunnel</h1>"
            '<p class=lead>This page is served by a local web server and reached '
            "you through a tunnel server and a tunnel client.</p>"
            '<section class="card panel" aria-live=polite>'
            '<span id=status class=status>Connecting</span>'
            '<span class=metric>Round trip <span id=rtt>–</span> ms</span>'
            f'<span class=metric>Requests answered <span id=served>{self.served}</span></span>'
            '<span class=metric>Last answer <span id=time>–</span></span>'
            "</section>"
            "<section class=card><h2>Your request as it arrived</h2>"
            "<div class=table-wrap><table id=headers>"
            f"<tr><th>Header</th><th>Value</th></tr>{rows}</table></div></section>"
            f"</main><script>{SCRIPT}</script></body></html>"
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
