"""
Tests for how a server node is told to join a cluster: the Redis URL and
the C{--redis} family of options of C{twistd tunnel-server}.
"""

from __future__ import annotations

import attrs
import trustme
from cryptography.hazmat.primitives import serialization
from twisted.internet.ssl import Certificate
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


class LinkTLSOptionsTests(SynchronousTestCase):
    """
    C{--cluster-tls} and C{--cluster-ca}: this node's certificate and key,
    and the authorities of the nodes' certificates, read and checked at
    start.
    """

    def setUp(self) -> None:
        self.secret = self.write("a secret of enough bytes\n".encode())
        self.ca = trustme.CA()
        self.issued = self.ca.issue_cert("10.0.0.11", "edge-1.nodes.example")
        self.node = self.write(self.issued.private_key_and_cert_chain_pem.bytes())
        self.authorities = self.write(self.ca.cert_pem.bytes())

    def write(self, content: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(content)
        return path

    def parse(self, *argv: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(
            ["--redis", "redis://127.0.0.1", "--cluster-secret-file", self.secret, *argv]
        )
        return options

    def refused(self, *argv: str) -> str:
        with self.assertRaises(usage.UsageError) as raised:
            self.parse(*argv)
        return str(raised.exception)

    def test_withoutThemLinksArePlain(self) -> None:
        self.assertIsNone(self.parse()["cluster"].linkTLS)

    def test_theCertificateKeyAndAuthoritiesAreRead(self) -> None:
        tls = self.parse("--cluster-tls", self.node, "--cluster-ca", self.authorities)[
            "cluster"
        ].linkTLS
        self.assertEqual(
            tls.certificate.digest(), self.pemCertificate(self.issued.cert_chain_pems[0]).digest()
        )
        self.assertEqual(
            [a.digest() for a in tls.authorities], [self.pemCertificate(self.ca.cert_pem).digest()]
        )
        self.assertEqual(tls.chain, ())
        self.assertTrue(tls.validFor("10.0.0.11"))
        self.assertTrue(tls.validFor("edge-1.nodes.example"))
        self.assertFalse(tls.validFor("10.0.0.12"))

    def pemCertificate(self, blob: trustme.Blob) -> Certificate:
        return Certificate.loadPEM(blob.bytes())

    def test_anIntermediateAuthorityIsPresentedAfterTheCertificate(self) -> None:
        intermediate = self.ca.create_child_ca()
        issued = intermediate.issue_cert("edge-1.nodes.example")
        node = self.write(issued.private_key_and_cert_chain_pem.bytes())
        tls = self.parse("--cluster-tls", node, "--cluster-ca", self.authorities)[
            "cluster"
        ].linkTLS
        self.assertEqual(
            [c.digest() for c in tls.chain], [self.pemCertificate(intermediate.cert_pem).digest()]
        )

    def test_theKeyAndTheCertificateMayComeInEitherOrder(self) -> None:
        node = self.write(
            self.issued.cert_chain_pems[0].bytes() + self.issued.private_key_pem.bytes()
        )
        self.assertIsNotNone(
            self.parse("--cluster-tls", node, "--cluster-ca", self.authorities)["cluster"].linkTLS
        )

    def test_eachNeedsTheOther(self) -> None:
        self.assertIn("--cluster-tls needs --cluster-ca", self.refused("--cluster-tls", self.node))
        self.assertIn(
            "--cluster-ca is only used with --cluster-tls",
            self.refused("--cluster-ca", self.authorities),
        )

    def test_theyAreOnlyUsedWithRedis(self) -> None:
        for option, path in (("--cluster-tls", self.node), ("--cluster-ca", self.authorities)):
            options = ServerOptions()
            with self.assertRaises(usage.UsageError) as raised:
                options.parseOptions([option, path])
            self.assertIn(f"{option} is only used with --redis", str(raised.exception))

    def test_unreadableFilesAreRefused(self) -> None:
        missing = self.mktemp()
        self.assertIn(
            f"--cluster-tls: cannot read {missing}: No such file",
            self.refused("--cluster-tls", missing, "--cluster-ca", self.authorities),
        )
        self.assertIn(
            f"--cluster-ca: cannot read {missing}: No such file",
            self.refused("--cluster-tls", self.node, "--cluster-ca", missing),
        )
        self.assertIn(
            "holds no PEM certificate",
            self.refused("--cluster-tls", self.node, "--cluster-ca", self.write(b"junk\n")),
        )

    def test_aFileWithoutItsKeyIsRefused(self) -> None:
        certificateOnly = self.write(self.issued.cert_chain_pems[0].bytes())
        self.assertIn(
            f"--cluster-tls: {certificateOnly} holds no PEM private key",
            self.refused("--cluster-tls", certificateOnly, "--cluster-ca", self.authorities),
        )

    def test_aKeyNotOfTheCertificateIsRefused(self) -> None:
        other = self.ca.issue_cert("edge-2.nodes.example")
        mismatched = self.write(
            other.private_key_pem.bytes() + self.issued.cert_chain_pems[0].bytes()
        )
        message = self.refused("--cluster-tls", mismatched, "--cluster-ca", self.authorities)
        self.assertIn("is not that of its certificate", message)
        self.assertNotIn("PRIVATE KEY", message)

    def test_anEncryptedKeyIsRefusedWithoutAPrompt(self) -> None:
        key = serialization.load_pem_private_key(self.issued.private_key_pem.bytes(), None)
        encrypted = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
        node = self.write(encrypted + self.issued.cert_chain_pems[0].bytes())
        self.assertIn(
            "is encrypted",
            self.refused("--cluster-tls", node, "--cluster-ca", self.authorities),
        )

    def test_aCertificateOfAnotherAuthorityIsRefused(self) -> None:
        """
        A node whose certificate the authorities did not sign would be
        refused by every other node: it is refused at start instead.
        """
        other = self.write(trustme.CA().cert_pem.bytes())
        message = self.refused("--cluster-tls", self.node, "--cluster-ca", other)
        self.assertIn("does not check against the authorities of --cluster-ca", message)
        self.assertIn("unable to get local issuer certificate", message)

    def test_theKeyIsNeverShown(self) -> None:
        cluster = self.parse("--cluster-tls", self.node, "--cluster-ca", self.authorities)[
            "cluster"
        ]
        self.assertEqual(repr(cluster.linkTLS), "LinkTLS()")
        self.assertNotIn("LinkTLS", repr(cluster))
