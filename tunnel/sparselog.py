"""
Logging repeated events sparingly: a peer that repeats an offence
thousands of times must not make the log repeat it thousands of times.
"""

from __future__ import annotations

from typing import Hashable


def isSparseCount(count: int) -> bool:
    """
    Whether the C{count}th occurrence of an event is worth a log line: the
    1st, 10th, 100th, 1000th... (a log line per power of ten).
    """
    return count > 0 and str(count).strip("0") == "1"


class SparseCounter:
    """
    Counts occurrences of events by key (a port, a reason...), and says
    which occurrences are worth a log line (see L{isSparseCount}).

    At most C{maxKeys} keys are counted; the counts of further keys are
    merged under L{None}, so the memory it holds is bounded whatever the
    keys a peer makes up.
    """

    def __init__(self, maxKeys: int = 65536) -> None:
        self._counts: dict[Hashable, int] = {}
        self._maxKeys = maxKeys

    def count(self, key: Hashable = None) -> int:
        """How many times the event with C{key} happened so far."""
        return self._counts.get(key, 0)

    def record(self, key: Hashable = None) -> int | None:
        """
        Count one more occurrence of the event with C{key}.

        @return: the new count if this occurrence is worth a log line, else
            L{None}.
        """
        if key not in self._counts and len(self._counts) >= self._maxKeys:
            key = None
        count = self._counts[key] = self._counts.get(key, 0) + 1
        return count if isSparseCount(count) else None
