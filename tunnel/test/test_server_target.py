"""
Tests for L{tunnel.server.target}: the forms of request targets and the
rule of the control path.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tunnel.server import target as targetModule
from tunnel.server.target import (
    RequestTarget,
    TargetError,
    TargetForm,
    parseTarget,
    readsAsControlPath,
)


class ParseTargetTests(SynchronousTestCase):
    """L{parseTarget} tells the forms apart, and refuses what it does not take."""

    def test_originForm(self) -> None:
        """A target starting with a slash is in origin form, kept as it is."""
        parsed = parseTarget(b"/a/b?c=/d")
        self.assertEqual(parsed, RequestTarget(TargetForm.ORIGIN, b"/a/b?c=/d"))
        self.assertEqual(parsed.path, b"/a/b")
        self.assertFalse(parsed.isControlPath)

    def test_controlPath(self) -> None:
        """The control path is C{/_controlPath/} exactly, a query aside."""
        self.assertTrue(parseTarget(b"/_controlPath/").isControlPath)
        self.assertTrue(parseTarget(b"/_controlPath/?x=1").isControlPath)
        self.assertRaises(TargetError, parseTarget, b"http://a/_controlPath/")

    def test_absoluteForm(self) -> None:
        """
        An absolute-form target gives its authority and its origin form
        (C{/} for an empty path); the scheme's case does not matter.
        """
        self.assertEqual(
            parseTarget(b"HTTPS://Host.Example:8443/p?q"),
            RequestTarget(TargetForm.ABSOLUTE, b"/p?q", b"Host.Example:8443"),
        )
        self.assertEqual(parseTarget(b"http://h").origin, b"/")
        self.assertEqual(parseTarget(b"http://h?q").origin, b"/?q")

    def test_refusedForms(self) -> None:
        """Other schemes, user information, no authority, fragments, the authority form."""
        for target in (
            b"ftp://h/",
            b"http://u:p@h/",
            b"http:///",
            b"http://h/#f",
            b"h:80",
            b"*",
            b"",
            b"mailto:x",
        ):
            self.assertRaises(TargetError, parseTarget, target)


class ControlPathRuleTests(SynchronousTestCase):
    """L{readsAsControlPath}: what some server could read as the control path."""

    def test_readings(self) -> None:
        """Encodings, separators, dot segments, case and parameters are seen through."""
        for path in (
            b"/_controlPath/",
            b"/_controlPath",
            b"/_controlPath/deeper",
            b"/%5FcontrolPath/",
            b"/%5f%63ontrolpath/",
            b"/%255FcontrolPath/",
            b"/%25255FcontrolPath/",
            b"//_controlPath/",
            b"/\\_controlPath/",
            b"/%2F_controlPath/",
            b"/a/../_controlPath/",
            b"/%2e/_controlPath/",
            b"/_controlPath;jsessionid=1/",
            b"/_controlPath. /",
        ):
            self.assertTrue(readsAsControlPath(path), path)
        for path in (
            b"/",
            b"/_controlPathology",
            b"/a/_controlPath/",
            b"/_controlPath/../x",
            b"/%2525255FcontrolPath/",
            b"/_control%2FPath/",
        ):
            self.assertFalse(readsAsControlPath(path), path)

    def test_linearWork(self) -> None:
        """
        However deeply a path is percent-encoded, it is decoded at most
        three times: the work is linear in its length.
        """
        decoded: list[int] = []
        unquote = targetModule.unquote_to_bytes

        def counting(data: Any) -> bytes:
            decoded.append(len(data))
            return unquote(data)

        self.patch(targetModule, "unquote_to_bytes", counting)
        path = b"/%" + b"25" * 50_000 + b"5FcontrolPath/"
        readsAsControlPath(path)
        self.assertLessEqual(sum(decoded), 3 * len(path))
