"""
What to tell people when a listener cannot start: the console commands
say it when the server cannot start, the admin API when a TCP listener
added at run time cannot.
"""

from __future__ import annotations

import errno

from twisted.internet.error import CannotListenError


def listenProblem(error: CannotListenError) -> str:
    """Why a listener could not start, and what to do about it, in one line."""
    where = f"port {error.port}" + (f" of {error.interface}" if error.interface else "")
    reason = error.socketError
    code = getattr(reason, "errno", None)
    said = getattr(reason, "strerror", None) or str(reason)
    if code == errno.EADDRINUSE:
        said += " (another program listens there: stop it or choose another port)"
    elif code == errno.EACCES:
        said += " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
    return f"cannot listen on {where}: {said}"
