"""
Tests for L{tunnel.core.access}: the networks a virtual host admits.
"""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.access import AccessRule, parseCredentials, parseNetworks


class AccessRuleTests(SynchronousTestCase):
    """Which sources a rule permits."""

    def test_noRulePermitsAll(self) -> None:
        """An empty rule admits every source, even one that is not an IP address."""
        rule = AccessRule()
        for source in ("192.0.2.1", "2001:db8::1", ""):
            self.assertTrue(rule.permits(source), source)

    def test_allowAndDeny(self) -> None:
        """Only allowed networks are admitted, and a denied one never is."""
        rule = AccessRule(
            parseNetworks("10.0.0.0/8, 2001:db8::/32"), parseNetworks("10.1.0.0/16,10.9.9.9")
        )
        permitted = {
            "10.2.3.4": True, "10.1.2.3": False, "10.9.9.9": False, "192.0.2.1": False,
            "2001:db8::7": True, "2001:db9::7": False, "fe80::1%eth0": False, "": False,
        }
        self.assertEqual({source: rule.permits(source) for source in permitted}, permitted)

    def test_denyOnly(self) -> None:
        """With only denied networks, every other source is admitted."""
        rule = AccessRule(deny=parseNetworks("192.0.2.0/24"))
        self.assertFalse(rule.permits("192.0.2.200"))
        self.assertTrue(rule.permits("198.51.100.1"))

    def test_mergedAddsBothRules(self) -> None:
        """A merged rule has the networks and credentials of both, in order."""
        first = AccessRule(allow=parseNetworks("10.0.0.0/8"), credentials=(b"one",))
        second = AccessRule(
            allow=parseNetworks("192.0.2.0/24"), deny=parseNetworks("10.1.0.0/16"),
            credentials=(b"two",),
        )
        merged = first.merged(second)
        self.assertEqual(merged.allow, parseNetworks("10.0.0.0/8,192.0.2.0/24"))
        self.assertEqual(merged.deny, parseNetworks("10.1.0.0/16"))
        self.assertEqual(merged.credentials, (b"one", b"two"))
        self.assertEqual(AccessRule().merged(first), first)

    def test_ipv4MappedAddressesAreIPv4(self) -> None:
        """An IPv4 client seen on an IPv6 socket is judged by its IPv4 address."""
        rule = AccessRule(parseNetworks("10.0.0.0/8"))
        self.assertTrue(rule.permits("::ffff:10.2.3.4"))
        self.assertFalse(rule.permits("::ffff:192.0.2.1"))

    def test_malformedNetworks(self) -> None:
        """Garbage, and a network with host bits set, are refused with the item named."""
        for text in ("10.0.0.0/33", "ten", "10.0.0.1/8", "10.0.0.0/8,"):
            with self.assertRaises(ValueError, msg=text):
                parseNetworks(text)


def basic(pair: bytes) -> bytes:
    """An C{Authorization} header for C{USER:PASSWORD}."""
    return b"Basic " + base64.b64encode(pair)


class CredentialsTests(SynchronousTestCase):
    """Basic authentication against a host's credentials."""

    def setUp(self) -> None:
        self.rule = AccessRule(
            credentials=parseCredentials("# team\nalice:s3cret\n\nbob:pa:ss:word\n", "users")
        )

    def test_rightPairs(self) -> None:
        """Each listed pair is admitted, a password holding colons included."""
        self.assertTrue(self.rule.authorizes(basic(b"alice:s3cret")))
        self.assertTrue(self.rule.authorizes(b"basic  " + base64.b64encode(b"bob:pa:ss:word")))

    def test_wrongOrMissing(self) -> None:
        """A wrong pair, another scheme, bad base64 or no header is refused."""
        for header in (None, b"", basic(b"alice:wrong"), basic(b"alice"), basic(b"carol:s3cret"),
                       b"Bearer " + base64.b64encode(b"alice:s3cret"), b"Basic !!!"):
            self.assertFalse(self.rule.authorizes(header), header)

    def test_noCredentialsAsked(self) -> None:
        """A rule without credentials admits any request."""
        self.assertTrue(AccessRule().authorizes(None))

    def test_secretsStayOut(self) -> None:
        """The rule keeps digests only, and its repr shows none of them."""
        self.assertNotIn(b"s3cret", b"".join(self.rule.credentials))
        self.assertNotIn("credentials", repr(self.rule))

    def test_malformedFiles(self) -> None:
        """A line without a pair, or a file without any, is refused without echoing it."""
        for text in ("alice\n", ":nouser\n", "alice:\n", "# only a comment\n"):
            with self.assertRaises(ValueError, msg=text) as raised:
                parseCredentials(text, "users")
            self.assertIn("users", str(raised.exception))
            self.assertNotIn("nouser", str(raised.exception))
