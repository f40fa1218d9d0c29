"""
Tests for L{tunnel.core.bodyview} and L{tunnel.core.replay}: how the
inspector shows a captured body, and the request it sends again.
"""

from __future__ import annotations

import gzip

from twisted.trial.unittest import SynchronousTestCase

from tunnel.core.bodyview import MAX_SHOWN_BYTES, BodyKind, viewBody
from tunnel.core.capture import CaptureLimits, CaptureStore, Kind
from tunnel.core.replay import ReplayEdit, ReplayError, replayRequest


class ViewTests(SynchronousTestCase):
    """Each kind of body, shown."""

    def test_json(self) -> None:
        """JSON is pretty-printed; broken JSON is shown as text."""
        view = viewBody(b'{"a":[1,2],"b":"\xc3\xa9"}', "application/json; charset=utf-8", None, True)
        self.assertEqual(view.kind, BodyKind.JSON)
        self.assertEqual(view.text, '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "é"\n}')
        self.assertEqual(view.contentType, "application/json")
        self.assertEqual(viewBody(b'{"a":', "application/problem+json", None, False).kind, BodyKind.TEXT)

    def test_form(self) -> None:
        """A form shows a field per line, decoded."""
        view = viewBody(b"name=Ada+L&x=%26&empty=", "application/x-www-form-urlencoded", None, True)
        self.assertEqual((view.kind, view.text), (BodyKind.FORM, "name = Ada L\nx = &\nempty = "))

    def test_text(self) -> None:
        """Text is shown; a text body cut in the middle of a character still is."""
        self.assertEqual(viewBody("héllo".encode(), "text/html", None, True).text, "héllo")
        cut = "é".encode() * 10
        self.assertEqual(viewBody(cut[:-1], "text/plain", None, False).text, "é" * 9)
        self.assertEqual(viewBody(b"plain words", None, None, True).kind, BodyKind.TEXT)

    def test_binary(self) -> None:
        """Binary bodies are summarised as a hex dump of their first bytes."""
        view = viewBody(bytes(range(256)) * 4, "image/png", None, True)
        self.assertEqual(view.kind, BodyKind.BINARY)
        self.assertTrue(view.text.startswith("00000000  00 01 02"), view.text[:40])
        self.assertEqual(len(view.text.splitlines()), 16)
        self.assertEqual(viewBody(b"\x00\x01text", None, None, True).kind, BodyKind.BINARY)

    def test_hostile(self) -> None:
        """
        JSON nested past the interpreter's stack, and a form of a million
        fields, are shown as text, not as an error.
        """
        deep = viewBody(b"[" * 200_000, "application/json", None, False)
        self.assertEqual((deep.kind, len(deep.text)), (BodyKind.TEXT, 200_000))
        fields = viewBody(b"a&" * 1_000_000, "application/x-www-form-urlencoded", None, True)
        self.assertEqual(fields.kind, BodyKind.TEXT)

    def test_empty(self) -> None:
        self.assertEqual(viewBody(b"", "text/plain", None, True).kind, BodyKind.EMPTY)

    def test_compressed(self) -> None:
        """
        A whole gzip body is shown decompressed, at most L{MAX_SHOWN_BYTES}
        of it however far it inflates; a truncated one is binary.
        """
        body = gzip.compress(b'{"ok": true}')
        view = viewBody(body, "application/json", "gzip", True)
        self.assertEqual((view.kind, view.decoded, view.encoding), (BodyKind.JSON, True, "gzip"))
        self.assertEqual(viewBody(body[:10], "application/json", "gzip", False).kind, BodyKind.BINARY)
        bomb = gzip.compress(b"a" * (50 * MAX_SHOWN_BYTES))
        self.assertEqual(len(viewBody(bomb, "text/plain", "gzip", True).text), MAX_SHOWN_BYTES)
        self.assertEqual(viewBody(b"not gzip", "text/plain", "gzip", True).kind, BodyKind.BINARY)


def captured(request: bytes, maxBodyBytes: int = 1024):
    captures = CaptureStore(CaptureLimits(maxBodyBytes=maxBodyBytes), lambda: 0.0)
    recorder = captures.record(Kind.HTTP)
    recorder.requestData(request)
    return recorder.exchange


class ReplayTests(SynchronousTestCase):
    """The bytes of a request sent again."""

    def test_asCaptured(self) -> None:
        """
        The request is sent as it came, de-chunked with a Content-Length,
        asking for the connection to close.
        """
        exchange = captured(
            b"POST /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n"
            b"X-A: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        self.assertEqual(
            replayRequest(exchange),
            b"POST /f HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        )

    def test_edited(self) -> None:
        """Method, target, headers and body can be changed."""
        exchange = captured(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        edit = ReplayEdit("PUT", "/x?y=1", [("Host", "a"), ("X-New", "v")], b"{}")
        self.assertEqual(
            replayRequest(exchange, edit),
            b"PUT /x?y=1 HTTP/1.1\r\nHost: a\r\nX-New: v\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )

    def test_badEdits(self) -> None:
        """An edit that does not make exactly one well-formed request is refused."""
        exchange = captured(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        for edit in [
            ReplayEdit(target="/a b"),
            ReplayEdit(method="GE T"),
            ReplayEdit(headers=[("X", "a\r\nInjected: 1")]),
            ReplayEdit(headers=[("Bad Name", "a")]),
            ReplayEdit(headers=[("X", "\u2603")]),
            ReplayEdit(target="/\r\n\r\nGET /other"),
        ]:
            self.assertRaises(ReplayError, replayRequest, exchange, edit)

    def test_notWhole(self) -> None:
        """A request whose body was not kept whole is sent only with a new body."""
        exchange = captured(b"PUT / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + b"a" * 100, 10)
        with self.assertRaises(ReplayError) as caught:
            replayRequest(exchange)
        self.assertIn("not kept whole", str(caught.exception))
        self.assertTrue(replayRequest(exchange, ReplayEdit(body=b"b")).endswith(b"\r\n\r\nb"))

    def test_notHTTP(self) -> None:
        """Only HTTP exchanges whose request was read can be replayed."""
        captures = CaptureStore(CaptureLimits(), lambda: 0.0)
        self.assertRaises(ReplayError, replayRequest, captures.record(Kind.TCP).exchange)
        self.assertRaises(ReplayError, replayRequest, captures.record(Kind.HTTP).exchange)
