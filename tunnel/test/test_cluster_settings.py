"""
Tests for how a server node is told to join a cluster: the Redis URL and
the C{--redis} family of options of C{twistd tunnel-server}.
"""

from __future__ import annotations

import trustme
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tunnel.cluster.settings import (
    DEFAULT_CLUSTER_LISTEN,
    RedisAddress,
    parseRedisURL,
    readCertificates,
)
from tunnel.options import ServerOptions


class RedisURLTests(SynchronousTestCase):
    def test_defaultsAndParts(self) -> None:
        self.assertEqual(parseRedisURL("redis://localhost"), RedisAddress("localhost"))
        self.assertEqual(
            parseRedisURL("rediss://:p%40ss@redis.internal:6380/3"),
            RedisAddress("redis.internal", 6380, 3, True, "p@ss"),
        )
        self.assertEqual(parseRedisURL("redis://[::1]:7000/0").host, "::1")

    def test_thePasswordIsNeverShown(self) -> None:
        address = parseRedisURL("redis://:hunter22@localhost/1")
        self.assertNotIn("hunter22", repr(address) + str(address))
        self.assertEqual(str(address), "redis://localhost:6379/1")

    def test_malformedURLsAreRefused(self) -> None:
        for url in ("http://localhost", "redis://", "redis://host:port", "redis://host/db",
                    "redis://host/0?x=1", "localhost:6379"):
            self.assertRaises(ValueError, parseRedisURL, url)


class ClusterOptionsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.secret = self.mktemp()
        with open(self.secret, "w") as f:
            f.write("a secret of enough bytes\n")

    def parse(self, *argv: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(list(argv))
        return options

    def test_noRedisNoCluster(self) -> None:
        self.assertIsNone(self.parse()["cluster"])

    def test_aNodeMayTakeItsAccountsFromTheCluster(self) -> None:
        """
        With --redis, --domain needs no accounts file: the node has no
        account of its own, and makes token digests with the cluster's key.
        """
        options = self.parse("--redis", "redis://127.0.0.1", "--cluster-secret-file",
                             self.secret, "--domain", "tunnel.example")
        accounts = options["accounts"]
        self.assertEqual((len(accounts), accounts.digest), (0, options["cluster"].key.tokenDigest))

    def test_aNodeOfACluster(self) -> None:
        password = self.mktemp()
        with open(password, "w") as f:
            f.write("from-a-file\n")
        cluster = self.parse(
            "--redis", "redis://127.0.0.1:6390/2", "--redis-password-file", password,
            "--cluster-secret-file", self.secret, "--node-name", "edge-1", "--lease", "4",
            "--cluster-address", "10.0.0.5:7946",
        )["cluster"]
        self.assertEqual(cluster.redis, RedisAddress("127.0.0.1", 6390, 2, False, "from-a-file"))
        self.assertEqual(
            (cluster.name, cluster.lease, cluster.address, cluster.listen),
            ("edge-1", 4.0, "10.0.0.5:7946", DEFAULT_CLUSTER_LISTEN),
        )
        self.assertNotIn("a secret of enough bytes", repr(cluster))

    def test_mistakesAreSaidClearly(self) -> None:
        redis = ["--redis", "redis://127.0.0.1"]
        short = self.mktemp()
        with open(short, "w") as f:
            f.write("short\n")
        for argv, message in [
            (redis, "--redis needs --cluster-secret-file"),
            (["--cluster-secret-file", self.secret], "only used with --redis"),
            (["--redis", "http://x", "--cluster-secret-file", self.secret], "--redis: "),
            (redis + ["--cluster-secret-file", short], "16 bytes at least"),
            (redis + ["--cluster-secret-file", self.secret, "--node-name", "a b"], "--node-name"),
            (redis + ["--cluster-secret-file", self.secret, "--redis-ca", "ca.pem"], "rediss://"),
            (redis + ["--cluster-secret-file", self.secret, "--cluster-address", "nowhere"],
             "--cluster-address"),
            (redis + ["--cluster-secret-file", self.secret, "--lease", "0.5"], "--lease"),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                self.parse(*argv)
            self.assertIn(message, str(raised.exception), argv)


class CertificatesTests(SynchronousTestCase):
    def test_everyCertificateOfTheFileIsTrusted(self) -> None:
        path = self.mktemp()
        first, second = trustme.CA(), trustme.CA()
        with open(path, "wb") as f:
            f.write(first.cert_pem.bytes() + b"\n" + second.cert_pem.bytes())
        self.assertEqual(len(readCertificates(path)), 2)
        secret = self.mktemp()
        with open(secret, "w") as f:
            f.write("a secret of enough bytes\n")
        options = ServerOptions()
        options.parseOptions(["--redis", "rediss://redis.internal", "--redis-ca", path,
                              "--cluster-secret-file", secret])
        self.assertEqual(len(options["cluster"].redisCA), 2)

    def test_aFileWithoutCertificatesIsRefused(self) -> None:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("not a certificate\n")
        for bad in (path, path + ".missing"):
            self.assertRaises(ValueError, readCertificates, bad)
