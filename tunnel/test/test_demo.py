"""
The demo that the README's first command runs.
"""

import sys
from datetime import datetime

import treq
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tunnel.test.twistdprocess import spawnPython


class DemoTests(TestCase):
    """C{python -m tunnel.demo} as a user runs it."""

    timeout = 60

    @defer.inlineCallbacks
    def test_demoServesPageThroughTunnel(self):
        """
        The demo prints the address to open, and that address serves the
        local page through the tunnel.
        """
        demo = spawnPython(reactor, [sys.executable, "-m", "tunnel.demo", "--port", "0"])
        self.addCleanup(demo.kill)
        match = yield demo.waitFor(r"Open http://demo\.localhost:(\d+)/")
        port = int(match.group(1))
        response = yield treq.get(
            f"http://127.0.0.1:{port}/",
            headers={"Host": [f"demo.localhost:{port}"]},
            persistent=False,
        )
        body = yield response.content()
        self.assertEqual(response.code, 200)
        self.assertIn(b"Hello through the tunnel", body)
        self.assertIn(b"X-Forwarded-For", body)

    @defer.inlineCallbacks
    def test_liveAnswersThroughTunnel(self):
        """
        C{/live} of the demo's address answers, through the tunnel, with JSON
        that counts the requests the local page has answered and the time,
        and tells caches not to keep it; the page around it escapes what the
        request brought.
        """
        demo = spawnPython(reactor, [sys.executable, "-m", "tunnel.demo", "--port", "0"])
        self.addCleanup(demo.kill)
        match = yield demo.waitFor(r"Open http://demo\.localhost:(\d+)/")
        port = int(match.group(1))
        host = {"Host": [f"demo.localhost:{port}"]}

        page = yield treq.get(
            f"http://127.0.0.1:{port}/",
            headers={**host, "X-Probe": ['<script>alert("x")</script>']},
            persistent=False,
        )
        body = yield page.content()
        self.assertEqual(page.code, 200)
        self.assertIn(b'&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;', body)
        self.assertNotIn(b'<script>alert("x")', body)
        for element in (b"id=status", b"id=rtt", b"id=served"):
            self.assertIn(element, body)

        answers = []
        for _ in range(2):
            response = yield treq.get(
                f"http://127.0.0.1:{port}/live", headers=host, persistent=False
            )
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
            self.assertEqual(
                response.headers.getRawHeaders("content-type"), ["application/json"]
            )
            answers.append((yield response.json()))
        first, second = answers
        self.assertEqual(second["served"], first["served"] + 1)
        self.assertGreaterEqual(first["served"], 2)  # the page, then this
        self.assertIsNotNone(datetime.fromisoformat(second["time"]).tzinfo)
