"""
How the inspector shows a captured body, sans I/O: JSON and forms
pretty-printed, text shown, anything else summarised.

A body compressed with C{gzip} or C{deflate} is shown decompressed when it
was kept whole, to at most L{MAX_SHOWN_BYTES}: a small body that inflates
to gigabytes costs no more than that.
"""

from __future__ import annotations

import enum
import json
import zlib
from urllib.parse import parse_qsl

import attrs

#: The most bytes of a body shown, decompressed or not.
MAX_SHOWN_BYTES = 1024 * 1024

#: The most fields of a form shown a field per line; a longer one is shown as text.
MAX_FORM_FIELDS = 10_000

#: The bytes of a binary body shown, as hexadecimal.
HEX_PREVIEW_BYTES = 256

_TEXT_TYPES = ("text/", "application/xml", "application/javascript", "application/x-ndjson")
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class BodyKind(enum.Enum):
    """How a body is shown."""

    EMPTY = "empty"
    JSON = "json"
    FORM = "form"
    TEXT = "text"
    BINARY = "binary"


@attrs.frozen
class BodyView:
    """
    A body as the inspector shows it.

    @ivar kind: how it is shown.
    @ivar text: what is shown: the pretty-printed JSON or form, the text, or
        for a binary body a hexadecimal dump of its first bytes.
    @ivar contentType: its C{Content-Type}, without parameters, if any.
    @ivar encoding: its C{Content-Encoding}, if any.
    @ivar decoded: whether C{text} shows it decompressed.
    """

    kind: BodyKind
    text: str
    contentType: str | None
    encoding: str | None
    decoded: bool = False


def _inflate(body: bytes, encoding: str) -> bytes | None:
    """C{body} decompressed (at most L{MAX_SHOWN_BYTES}), or L{None} if it cannot be."""
    decoder = zlib.decompressobj(_DECODERS[encoding])
    try:
        return decoder.decompress(body, MAX_SHOWN_BYTES)
    except zlib.error:
        return None


def _hexDump(body: bytes) -> str:
    rows = []
    for offset in range(0, min(len(body), HEX_PREVIEW_BYTES), 16):
        row = body[offset : offset + 16]
        printable = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        rows.append(f"{offset:08x}  {row.hex(' '):<47}  {printable}")
    return "\n".join(rows)


def _asText(body: bytes, declared: bool) -> str | None:
    """C{body} as UTF-8 text, or L{None} if it does not read as text."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        # A body cut in the middle of a character is still text.
        if e.start < len(body) - 3 or not declared:
            return None
        text = body[: e.start].decode("utf-8")
    if not declared and any(c < " " and c not in "\t\r\n" for c in text):
        return None
    return text


def viewBody(
    body: bytes, contentType: str | None, encoding: str | None, complete: bool
) -> BodyView:
    """
    How to show C{body}.

    @param contentType: its C{Content-Type} field, if any.
    @param encoding: its C{Content-Encoding} field, if any.
    @param complete: whether C{body} is the whole body (not truncated).
    """
    mediaType = None if contentType is None else contentType.partition(";")[0].strip().lower()
    coding = None if encoding is None else encoding.strip().lower() or None
    decoded = False
    if coding in _DECODERS and complete:
        inflated = _inflate(body, coding)
        if inflated is not None:
            body, decoded = inflated, True
    view = lambda kind, text: BodyView(kind, text, mediaType, coding, decoded)
    if not body:
        return view(BodyKind.EMPTY, "")
    if coding is not None and not decoded and coding != "identity":
        return view(BodyKind.BINARY, _hexDump(body))
    shown = body[:MAX_SHOWN_BYTES]
    isJSON = mediaType is not None and (mediaType == "application/json" or mediaType.endswith("+json"))
    if isJSON:
        try:
            return view(BodyKind.JSON, json.dumps(json.loads(shown), indent=2, ensure_ascii=False))
        except (ValueError, RecursionError):
            # Not JSON, or nested deeper than the interpreter's stack: as text.
            pass
    if mediaType == "application/x-www-form-urlencoded":
        text = _asText(shown, True)
        try:
            pairs = None if text is None else parse_qsl(
                text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
            )
        except ValueError:
            pairs = None
        if pairs is not None:
            return view(BodyKind.FORM, "\n".join(f"{name} = {value}" for name, value in pairs))
    declared = mediaType is not None and mediaType.startswith(_TEXT_TYPES)
    text = _asText(shown, declared or isJSON)
    if text is not None:
        return view(BodyKind.TEXT, text)
    return view(BodyKind.BINARY, _hexDump(shown))
