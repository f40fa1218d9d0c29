"""
The request target of a public request (RFC 9112, section 3.2): which form
it takes, the origin form it is forwarded in, and whether it is the control
path, or could be read as it.

The rules, strict on purpose, since what a local service makes of a path is
its own business:

  - The control path is the origin-form target C{/_controlPath/} exactly
    (a query string aside), byte for byte.
  - Any other target whose path a server could read as the control path or
    a path under it (percent-decoded, even more than once, C{%2F} and
    backslashes taken for slashes, empty and dot segments dropped, path
    parameters after C{;} dropped, letters in any case, trailing dots and
    spaces dropped) is refused: nothing is normalised, nothing forwarded.
  - An absolute-form target (C{http://authority/path}) is forwarded in
    origin form (C{/path}), and its authority replaces the Host header: a
    server must ignore the Host header of such a request and use the
    target's authority (RFC 9112, section 3.2.2), and routes by it.
  - The authority form (C{host:port}), which only proxies take, is
    refused. (The asterisk form, C{*}, never gets here: twisted.web
    answers C{OPTIONS *} itself, and any other method with it C{405}.)
"""

from __future__ import annotations

import enum
import re
from urllib.parse import unquote_to_bytes

import attrs

from tunnel.core.control import CONTROL_PATH

# How many times a path is percent-decoded, at most, to see whether it
# could be read as the control path (a server that decodes more often than
# this is broken beyond what a refusal could help).
_DECODINGS = 3

# The first segment of the control path, as compared: lower-cased.
_CONTROL_SEGMENT = CONTROL_PATH.strip(b"/").lower()

# scheme "://" authority, then the rest.
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
_SEPARATORS = re.compile(rb"[/\\]")


class TargetError(ValueError):
    """A request target that is refused; its message says why, for the public."""


class TargetForm(enum.Enum):
    """The forms of a request target (RFC 9112, section 3.2)."""

    ORIGIN = "origin"
    ABSOLUTE = "absolute"


@attrs.frozen
class RequestTarget:
    """
    A request target that may be handled.

    @ivar form: its form.
    @ivar origin: what to forward: the target in origin form (path and
        query).
    @ivar authority: the authority of an absolute-form target, else
        L{None}.
    """

    form: TargetForm
    origin: bytes
    authority: bytes | None = None

    @property
    def path(self) -> bytes:
        """The origin form's path, without its query."""
        return self.origin.partition(b"?")[0]

    @property
    def isControlPath(self) -> bool:
        """Whether this is the control path itself."""
        return self.form is TargetForm.ORIGIN and self.path == CONTROL_PATH


def parseTarget(target: bytes) -> RequestTarget:
    """
    Read the request target of a request.

    @raise TargetError: if it is refused: not in origin or absolute form;
        an absolute form with a scheme other than C{http} or C{https},
        user information, no authority or a fragment; or a path that could
        be read as the control path without being it.
    """
    if target.startswith(b"/"):
        parsed = RequestTarget(TargetForm.ORIGIN, target)
    else:
        parsed = _absolute(target)
    if not parsed.isControlPath and readsAsControlPath(parsed.path):
        raise TargetError("the request target could be read as the control path")
    return parsed


def _absolute(target: bytes) -> RequestTarget:
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise TargetError("the request target is neither a path nor an absolute URI")
    scheme, authority, rest = match.groups()
    if scheme.lower() not in (b"http", b"https"):
        raise TargetError("the request target's scheme is not http or https")
    if b"@" in authority:
        raise TargetError("the request target has user information")
    if not authority:
        raise TargetError("the request target has no authority")
    if b"#" in rest:
        raise TargetError("the request target has a fragment")
    origin = rest if rest.startswith(b"/") else b"/" + rest
    return RequestTarget(TargetForm.ABSOLUTE, origin, authority)


def readsAsControlPath(path: bytes) -> bool:
    """
    Whether a server could read C{path} as the control path, or a path
    under it (see the module's rules). Linear in the length of C{path}.
    """
    for _ in range(_DECODINGS):
        decoded = unquote_to_bytes(path)
        if decoded == path:
            break
        path = decoded
    segments: list[bytes] = []
    for segment in _SEPARATORS.split(path):
        segment = segment.partition(b";")[0]
        if segment in (b"", b"."):
            continue
        if segment == b"..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return bool(segments) and segments[0].rstrip(b". ").lower() == _CONTROL_SEGMENT
