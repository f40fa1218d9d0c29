"""
Why setting up a tunnel failed.
"""

from __future__ import annotations


class TunnelConnectError(Exception):
    """
    The tunnel could not be set up: the server's answer was not what the
    protocol expects, the connection ended or nothing happened in time.
    """


class TunnelResponseError(TunnelConnectError):
    """
    The server answered the control request with something other than
    C{200}.

    @ivar status: the response's status code.
    @ivar reason: the response's reason phrase.
    @ivar bodyPreview: the start of the response's body, as far as it came
        with the response.
    """

    def __init__(self, status: int, reason: str, bodyPreview: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.bodyPreview = bodyPreview
        super().__init__(status, reason, bodyPreview)

    def __str__(self) -> str:
        text = f"the server answered {self.status} {self.reason}".rstrip()
        body = self.bodyPreview.decode("utf-8", "replace").strip()
        return f"{text}: {body}" if body else text


class TunnelRefusedError(TunnelResponseError):
    """
    The server refused the identifier (it answered C{403}).

    Retrying is pointless until the server learns the identifier, so this
    is worth telling the user about loudly.
    """
