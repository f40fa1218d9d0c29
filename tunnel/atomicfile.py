"""
Replacing a file atomically: a temporary file in the same directory,
synced, then renamed over it, so that a crash never leaves it half written.
"""

from __future__ import annotations

import os
import tempfile


def writeAtomically(path: str, text: str) -> None:
    """
    Replace C{path} with C{text}, readable and writable by its owner only.

    @raise OSError: if it cannot be written; the old file is then intact.
    """
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=directory)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
