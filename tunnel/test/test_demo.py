"""
The demo that the README's first command runs.
"""

import sys

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
