"""
What the server's and the client's Prometheus metrics share: the bounds of
their histograms, and the one label of a status code.
"""

from __future__ import annotations

#: Seconds: the bounds of the histograms of requests.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: Seconds: the bounds of the histograms of round trips through the
#: tunnel (a stream opening, a keep-alive ping).
ROUND_TRIP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def statusClass(code: int | None) -> str:
    """
    The class of a status code: C{"2xx"} for 200 to 299, and so on, or
    C{"none"} without a valid one (the local service answered nothing).
    """
    if code is None or not 100 <= code <= 599:
        return "none"
    return f"{code // 100}xx"
