"""
Tests for C{--workers}: the options that allow it (L{tunnel.options}),
and what each worker is started with (L{tunnel.workers.command}).
"""

from __future__ import annotations

import json
import os
import site
import sys

import trustme
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

import tunnel
from tunnel import tap
from tunnel.options import ServerOptions, withPortOffset
from tunnel.workers.command import (
    sharedListeners,
    workerArguments,
    workerCommand,
    workerEnvironment,
)
from tunnel.workers.service import WorkersService

SECRET = "a cluster secret of the workers' option tests"


class WorkersOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.secret = self.mktemp()
        with open(self.secret, "w") as f:
            f.write(SECRET + "\n")
        self.cluster = ["--redis", "redis://127.0.0.1:6399", "--cluster-secret-file", self.secret]

    def parsed(self, *argv: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(list(argv))
        return options

    def refused(self, *argv: str) -> str:
        with self.assertRaises(usage.UsageError) as raised:
            self.parsed(*argv)
        return str(raised.exception)

    def test_oneWorkerByDefault(self) -> None:
        """Without --workers (or with 1), the server is the one process it always was."""
        for argv in ([], ["--workers", "1"]):
            options = self.parsed(*argv)
            self.assertEqual(options["workers"], 1)
            self.assertNotIsInstance(tap.makeServerService(options), WorkersService)

    def test_severalWorkersAreSupervised(self) -> None:
        """
        With --workers above 1, the server's service is their supervisor,
        which binds nothing yet.
        """
        service = tap.makeServerService(self.parsed("--workers", "3", *self.cluster))
        self.assertIsInstance(service, WorkersService)
        self.assertEqual((service.count, service.sockets), (3, []))

    def test_workersNeedRedis(self) -> None:
        """Workers coordinate through the cluster's Redis: without --redis they are refused."""
        self.assertEqual(
            self.refused("--workers", "2"),
            "--workers needs --redis: the workers are nodes of a cluster, and find each "
            "other's clients through its Redis",
        )
        self.assertEqual(self.refused("--workers", "0"), "--workers must be 1 at least")

    def test_theAdminAPIIsRefusedSelfServiceIsShared(self) -> None:
        """
        The admin API would change one process's hosts: with workers it is
        refused, saying why. Self-service registrations are the cluster's,
        so --domain is served, each worker with the accounts digested by the
        cluster's key.
        """
        token = self.mktemp()
        with open(token, "w") as f:
            f.write("an admin token\n")
        said = self.refused("--workers", "2", *self.cluster,
                            "--admin", "tcp:0", "--admin-token-file", token)
        self.assertTrue(said.startswith("--admin is not served with --workers"), said)
        accounts = self.mktemp()
        with open(accounts, "w") as f:
            f.write("alice 3 a-token-of-alice-0123456789\n")
        options = self.parsed("--workers", "2", *self.cluster,
                              "--domain", "tunnel.example", "--accounts-file", accounts)
        self.assertEqual(options["accounts"].digest, options["cluster"].key.tokenDigest)
        self.assertIn("--domain", workerArguments(options, 1))

    def test_unsharedListenersAreRefused(self) -> None:
        """A --listen or --tcp endpoint that is not one TCP socket is refused, naming it."""
        said = self.refused("--workers", "2", *self.cluster, "--listen", "unix:/tmp/t.sock")
        self.assertEqual(
            said,
            "--listen 'unix:/tmp/t.sock:backlog=1024': a unix: endpoint cannot be shared by "
            "workers: they share tcp:, tcp6: and ssl: listeners only",
        )

    def test_portsOfEachWorkerMustExist(self) -> None:
        """
        --cluster-listen and --metrics need a port, and the last worker's
        (the port + N - 1) must exist; so must --cluster-address's.
        """
        said = self.refused("--workers", "2", *self.cluster, "--metrics", "unix:/tmp/m.sock")
        self.assertTrue(said.startswith("--metrics 'unix:/tmp/m.sock': with --workers it needs"),
                        said)
        said = self.refused("--workers", "3", *self.cluster, "--cluster-listen", "tcp:65534")
        self.assertEqual(said, "--cluster-listen 'tcp:65534' for 3 workers: port 65534 + 2 "
                               "is past 65535")
        said = self.refused("--workers", "2", *self.cluster, "--cluster-address", "10.0.0.1:65535")
        self.assertTrue(said.startswith("--cluster-address '10.0.0.1:65535' for 2 workers"), said)
        said = self.refused("--workers", "10", *self.cluster, "--node-name", "n" * 62)
        self.assertIn("with -w9 for the last worker", said)

    def test_eachWorkersArguments(self) -> None:
        """
        A worker gets the server's arguments as given, then its own: one
        worker, its node's name, and the ports of its links and metrics
        moved up by its index (port 0 stays 0).
        """
        argv = ["--workers", "3", *self.cluster, "--node-name", "edge",
                "--listen", "tcp:8080", "--cluster-listen", "tcp:7000:interface=10.0.0.1",
                "--cluster-address", "[2001:db8::1]:7000", "--metrics", "tcp:port=9100"]
        options = self.parsed(*argv)
        self.assertEqual(workerArguments(options, 2), [
            *argv, "--workers", "1", "--node-name", "edge-w2",
            "--cluster-listen", "tcp:7002:interface=10.0.0.1",
            "--cluster-address", "[2001:db8::1]:7002", "--metrics", "tcp:port=9102",
        ])
        options = self.parsed("--workers", "2", *self.cluster, "--cluster-listen", "tcp:0", "--")
        name = options["cluster"].name
        self.assertEqual(workerArguments(options, 1)[-7:], [
            "--workers", "1", "--node-name", f"{name}-w1", "--cluster-listen", "tcp:0", "--",
        ])

    def test_aWorkerParsesItsArguments(self) -> None:
        """
        A worker's arguments parse (a configuration file's --workers
        included) into one worker, node NAME-wI, its own ports.
        """
        config = self.mktemp()
        with open(config, "w") as f:
            f.write("workers = 4\n")
        options = self.parsed("--config", config, *self.cluster, "--metrics", "tcp:9100")
        self.assertEqual(options["workers"], 4)
        worker = self.parsed(*workerArguments(options, 3))
        self.assertEqual(worker["workers"], 1)
        self.assertEqual(worker["cluster"].name, options["cluster"].name + "-w3")
        self.assertEqual(worker["cluster"].listen, "tcp:7949:interface=127.0.0.1")
        self.assertEqual(worker["metrics"], "tcp:9103")

    def test_theLinkTLSOfTheServerIsEveryWorkersOwn(self) -> None:
        """
        --cluster-tls and --cluster-ca, on the command line or in the
        configuration file, reach every worker, which links over TLS with
        the server's certificate (valid for the one host the workers share;
        their ports differ).
        """
        authority = trustme.CA()
        node = self.mktemp()
        authority.issue_cert("10.0.0.5").private_key_and_cert_chain_pem.write_to_path(node)
        authorities = self.mktemp()
        authority.cert_pem.write_to_path(authorities)
        config = self.mktemp()
        with open(config, "w") as f:
            f.write(f"cluster-tls = {json.dumps(node)}\ncluster-ca = {json.dumps(authorities)}\n")
        for argv in (["--cluster-tls", node, "--cluster-ca", authorities], ["--config", config]):
            options = self.parsed("--workers", "2", *self.cluster, *argv,
                                  "--cluster-listen", "tcp:7946:interface=10.0.0.5")
            expected = options["cluster"].linkTLS.certificate.digest()
            for index in range(2):
                worker = self.parsed(*workerArguments(options, index))
                tls = worker["cluster"].linkTLS
                self.assertEqual(tls.certificate.digest(), expected, argv)
                self.assertEqual(len(tls.authorities), 1)
                self.assertTrue(tls.validFor(worker["cluster"].listen.split("=")[-1]))

    def test_theWorkersCommand(self) -> None:
        """
        A worker is this Python running the worker module, told how many
        listeners it inherits: those of --listen, then --tcp.
        """
        options = self.parsed("--workers", "2", *self.cluster, "--listen", "tcp:8080",
                              "--listen", "tcp:8081", "--tcp", "tcp:2222=an-identifier")
        self.assertEqual(
            sharedListeners(options),
            ["tcp:8080:backlog=1024", "tcp:8081:backlog=1024", "tcp:2222"],
        )
        command = workerCommand(options, 1)
        self.assertEqual(command[:5], [sys.executable, "-m", "tunnel.workers.worker",
                                       "--listeners", "3"])
        self.assertEqual(command[5:], workerArguments(options, 1))

    def test_theWorkersEnvironment(self) -> None:
        """
        A worker inherits the environment, with the directory of this
        tunnel package first on its PYTHONPATH, once.
        """
        root = os.path.dirname(os.path.dirname(os.path.abspath(tunnel.__file__)))
        env = workerEnvironment({"HOME": "/home/a", "PYTHONPATH": "/elsewhere"})
        self.assertEqual(env["HOME"], "/home/a")
        if root in map(os.path.abspath, site.getsitepackages()):
            # An installed copy: the worker finds it where this process did.
            self.assertEqual(env["PYTHONPATH"], "/elsewhere")
        else:
            self.assertEqual(env["PYTHONPATH"], os.pathsep.join([root, "/elsewhere"]))
        self.assertEqual(workerEnvironment(env)["PYTHONPATH"], env["PYTHONPATH"])


class PortOffsetTests(SynchronousTestCase):
    def test_thePortMovesUp(self) -> None:
        """
        The port, first argument or C{port=}, moves up by the offset; port
        0 and endpoints without a port stay; past 65535 is an error.
        """
        for description, moved in [
            ("tcp:9100", "tcp:9103"),
            ("tcp:9100:interface=127.0.0.1", "tcp:9103:interface=127.0.0.1"),
            ("tcp:interface=127.0.0.1:port=9100", "tcp:interface=127.0.0.1:port=9103"),
            ("tcp6:port=9100:interface=\\:\\:1", "tcp6:port=9103:interface=\\:\\:1"),
            ("ssl:443:privateKey=C\\:\\\\k.pem", "ssl:446:privateKey=C\\:\\\\k.pem"),
            ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
            ("unix:/run/m.sock", "unix:/run/m.sock"),
        ]:
            self.assertEqual(withPortOffset(description, 3), moved)
        self.assertEqual(withPortOffset("tcp:9100", 0), "tcp:9100")
        self.assertRaises(ValueError, withPortOffset, "tcp:65535", 1)
