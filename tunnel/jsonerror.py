"""
The error the JSON APIs (the server's admin API, the client's inspector)
answer with: a status and a one-line reason, sent as C{{"error": REASON}}.
"""

from __future__ import annotations


class JSONError(Exception):
    """
    A request a JSON API refuses.

    @ivar code: the HTTP status of the answer.
    """

    def __init__(self, code: int, message: str) -> None:
        """
        @param code: the HTTP status of the answer.
        @param message: why, in one line; the answer's C{error}.
        """
        super().__init__(message)
        self.code = code
