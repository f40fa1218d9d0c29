"""
The systemd unit files in C{doc/systemd}: their commands are valid command
lines of the console commands.
"""

from __future__ import annotations

import os
import shlex

import trustme
from twisted.trial.unittest import SynchronousTestCase

from tunnel import cli
from tunnel.test.support import docPath


def execStart(unit: str) -> list[str]:
    """The words of a unit file's C{ExecStart}, continuation lines joined."""
    with open(docPath(os.path.join("systemd", unit))) as f:
        text = f.read().replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line[len("ExecStart="):])


class UnitTests(SynchronousTestCase):
    """Each unit's C{ExecStart} passes its command's option checks."""

    def setUp(self) -> None:
        self.credentials = self.mktemp()
        os.makedirs(self.credentials)
        ca = trustme.CA()
        certificate = ca.issue_cert("tunnel.example.com")
        certificate.private_key_pem.write_to_path(self.path("key.pem"))
        certificate.cert_chain_pems[0].write_to_path(self.path("cert.pem"))
        ca.cert_pem.write_to_path(self.path("redis-ca.pem"))
        nodes = trustme.CA()
        nodes.issue_cert("10.0.0.11").private_key_and_cert_chain_pem.write_to_path(
            self.path("node.pem")
        )
        nodes.cert_pem.write_to_path(self.path("nodes-ca.pem"))
        for secret in ("admin-token", "identifier", "cluster-secret", "redis-password"):
            with open(self.path(secret), "w") as f:
                f.write("a-long-random-secret-of-the-right-size-0123456789\n")
        with open(self.path("hosts"), "w") as f:
            f.write("app.tunnel.example.com=a-long-random-identifier-0123456789\n")

    def path(self, name: str) -> str:
        return os.path.join(self.credentials, name)

    def parse(self, command: cli.Command, unit: str) -> dict:
        program, *arguments = execStart(unit)
        self.assertEqual(os.path.basename(program), command.name)
        arguments = [
            word.replace("${CREDENTIALS_DIRECTORY}", self.credentials).replace(
                "/var/lib/tunnel", self.credentials
            )
            for word in arguments
        ]
        options = command.options()
        options.parseOptions(arguments)
        return dict(options)

    def test_server(self) -> None:
        """The server's unit listens on 443 with TLS and on 80, with the admin API on loopback."""
        options = self.parse(cli.SERVER, "tunnel-server.service")
        self.assertEqual(len(options["listen"]), 2)
        self.assertIn("interface=127.0.0.1", options["admin"])

    def test_node(self) -> None:
        """
        The node's unit joins the cluster on Redis over TLS, as edge-1,
        taking links on its private address, over TLS with a certificate
        valid for it, with the admin API on loopback.
        """
        options = self.parse(cli.SERVER, "tunnel-node.service")
        cluster = options["cluster"]
        self.assertIsNotNone(cluster)
        self.assertEqual(cluster.name, "edge-1")
        self.assertEqual(
            (cluster.redis.host, cluster.redis.tls, cluster.redis.password),
            ("redis.internal", True, "a-long-random-secret-of-the-right-size-0123456789"),
        )
        self.assertEqual(cluster.listen, "tcp:7946:interface=10.0.0.11")
        self.assertTrue(cluster.linkTLS.validFor("10.0.0.11"))
        self.assertIn("interface=127.0.0.1", options["admin"])
        self.assertIn("interface=10.0.0.11", options["metrics"])
        self.assertEqual(list(options["hosts"]), ["app.tunnel.example.com"])

    def test_client(self) -> None:
        """The client's unit reads its identifier from the credential."""
        options = self.parse(cli.CLIENT, "tunnel-client.service")
        self.assertEqual(
            options["identifier"], "a-long-random-secret-of-the-right-size-0123456789"
        )
