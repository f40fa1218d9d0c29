"""
Tests for how a server node is told to join a cluster: the Redis URL and
the C{--redis} family of options of C{twistd tunnel-server}.
"""

from __future__ import annotations

import attrs
import trustme
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tunnel.cluster.settings import (
    DEFAULT_CLUSTER_LISTEN,
    NodeAddress,
    RedisAddress,
    SentinelAddress,
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


class SentinelURLTests(SynchronousTestCase):
    def test_sentinelsServiceAndDatabase(self) -> None:
        self.assertEqual(
            parseRedisURL("redis+sentinel://s1,S2:26380,[::1]:7000,10.0.0.4/main/2"),
            SentinelAddress(
                (NodeAddress("s1", 26379), NodeAddress("s2", 26380), NodeAddress("::1", 7000),
                 NodeAddress("10.0.0.4", 26379)),
                "main", 2,
            ),
        )

    def test_defaultsPasswordAndTLS(self) -> None:
        address = parseRedisURL("rediss+sentinel://:p%40ss@sentinel.internal/main-1")
        self.assertEqual(
            address,
            SentinelAddress((NodeAddress("sentinel.internal", 26379),), "main-1", 0, True, "p@ss"),
        )
        self.assertIsNone(address.sentinelPassword)

    def test_itSaysWhereItIsButNeverThePassword(self) -> None:
        address = parseRedisURL("redis+sentinel://:hunter22@s1,[::1]:7000/main/3")
        address = attrs.evolve(address, sentinelPassword="swordfish")
        shown = repr(address) + str(address)
        self.assertNotIn("hunter22", shown)
        self.assertNotIn("swordfish", shown)
        self.assertEqual(str(address), "redis+sentinel://s1:26379,[::1]:7000/main/3")
        self.assertEqual(parseRedisURL(str(address)), attrs.evolve(address, password=None,
                                                                  sentinelPassword=None))

    def test_malformedSentinelURLsAreRefused(self) -> None:
        for url, why in [
            ("redis+sentinel://s1", "names no service"),
            ("redis+sentinel://s1/", "names no service"),
            ("redis+sentinel://s1/main/0/1", "/SERVICE[/DB]"),
            ("redis+sentinel://s1/main/zero", "must be a number"),
            ("redis+sentinel://s1/ma%20in", "letters, digits"),
            ("redis+sentinel://s1/" + "m" * 65, "1 to 64"),
            ("redis+sentinel:///main", "without a host"),
            ("redis+sentinel://s1,,s2/main", "without a host"),
            ("redis+sentinel://s1:port/main", "port of the sentinel"),
            ("redis+sentinel://s1:0/main", "port of the sentinel"),
            ("redis+sentinel://s1:65536/main", "port of the sentinel"),
            ("redis+sentinel://::1/main", "[ADDRESS]:PORT"),
            ("redis+sentinel://[::1]x/main", "malformed"),
            ("redis+sentinel://user:pw@s1/main", "a password only"),
            ("redis+sentinel://s1/main?db=1", "no query"),
            ("sentinel://s1/main", "redis+sentinel://"),
        ]:
            with self.assertRaises(ValueError) as raised:
                parseRedisURL(url)
            self.assertIn(why, str(raised.exception), url)


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

    def test_aNodeOfAClusterOnSentinel(self) -> None:
        password, sentinelPassword = self.mktemp(), self.mktemp()
        for path, text in ((password, "primary's\n"), (sentinelPassword, "sentinels'\n")):
            with open(path, "w") as f:
                f.write(text)
        ca = self.mktemp()
        with open(ca, "wb") as f:
            f.write(trustme.CA().cert_pem.bytes())
        cluster = self.parse(
            "--redis", "rediss+sentinel://10.0.0.1,10.0.0.2:26380/main/1",
            "--redis-password-file", password, "--redis-sentinel-password-file",
            sentinelPassword, "--redis-ca", ca, "--cluster-secret-file", self.secret,
        )["cluster"]
        self.assertEqual(
            cluster.redis,
            SentinelAddress((NodeAddress("10.0.0.1", 26379), NodeAddress("10.0.0.2", 26380)),
                            "main", 1, True, "primary's", "sentinels'"),
        )
        self.assertEqual(len(cluster.redisCA), 1)

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
            (["--redis", "redis+sentinel://s1/main", "--cluster-secret-file", self.secret,
              "--redis-ca", "ca.pem"], "rediss+sentinel://"),
            (redis + ["--cluster-secret-file", self.secret,
                      "--redis-sentinel-password-file", self.secret], "redis+sentinel://"),
            (["--redis-sentinel-password-file", self.secret], "only used with --redis"),
            (["--redis", "redis+sentinel://s1", "--cluster-secret-file", self.secret],
             "--redis: the Redis Sentinel URL names no service"),
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
