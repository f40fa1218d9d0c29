"""
A soak of the inspector's capture: many exchanges with large bodies
recorded through a client's L{LocalConnector} (the calls its forwarders
make as bytes go by), with the inspector's default bounds, while the
process's resident memory is watched.

Each exchange is a C{PUT} of C{--body-bytes} answered by as many bytes,
both delivered in 64 KiB pieces as a socket would. The resident memory
before the first exchange is the baseline; the soak fails (exit status 1)
if it ever grows past the baseline by more than the store's byte budget
(C{maxTotalBytes}) and L{RSS_TOLERANCE_BYTES}, or if the store keeps more
than its budget. Run it as::

    python -m tunnel.test.capturesoak --exchanges 10000 --body-bytes 1048576

It prints a JSON summary. The test suite runs it in full
(L{tunnel.test.test_client_inspector.CaptureSoakTests}).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.internet.task import Clock

from tunnel.client.inspector import Inspector
from tunnel.client.local import LocalConnector, LocalRoutes, tcpLocalAddress
from tunnel.core.capture import CaptureLimits, Kind

#: How much the resident memory may grow beyond the store's budget: the
#: interpreter's and the C library's own slack.
RSS_TOLERANCE_BYTES = 24 * 1024 * 1024

_PIECE = 64 * 1024


def residentBytes() -> int:
    """This process's resident memory, from C{/proc/self/status}."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def runSoak(exchanges: int, bodyBytes: int, limits: CaptureLimits) -> dict[str, Any]:
    """Record C{exchanges} exchanges; return what was measured."""
    clock = Clock()
    inspector = Inspector(clock, limits)
    connector = LocalConnector(
        LocalRoutes(), clock, capture=inspector.store, metrics=inspector.metrics
    )
    address = tcpLocalAddress("127.0.0.1", 3000)
    piece = b"x" * _PIECE
    requestHead = b"PUT /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: %d\r\n\r\n" % (
        bodyBytes,
    )
    responseHead = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % (
        bodyBytes,
    )
    baseline = peak = residentBytes()
    mostRetained = 0
    for number in range(exchanges):
        recorder = connector.recorder(Kind.HTTP, address)
        assert recorder is not None
        for head, feed in ((requestHead, recorder.requestData), (responseHead, recorder.responseData)):
            feed(head)
            for _ in range(bodyBytes // _PIECE):
                feed(piece)
            feed(piece[: bodyBytes % _PIECE])
        clock.advance(0.001)
        connector.exchangeEnded(recorder)
        mostRetained = max(mostRetained, inspector.store.retainedBytes)
        if number % 100 == 0:
            peak = max(peak, residentBytes())
    peak = max(peak, residentBytes())
    growth = peak - baseline
    return {
        "exchanges": exchanges,
        "bodyBytes": bodyBytes,
        "bytesRecorded": 2 * exchanges * bodyBytes,
        "kept": len(inspector.store),
        "mostRetainedBytes": mostRetained,
        "budgetBytes": limits.maxTotalBytes,
        "baselineRSS": baseline,
        "peakRSS": peak,
        "growthBytes": growth,
        "withinBudget": mostRetained <= limits.maxTotalBytes
        and growth <= limits.maxTotalBytes + RSS_TOLERANCE_BYTES,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=10_000)
    parser.add_argument("--body-bytes", type=int, default=1024 * 1024)
    arguments = parser.parse_args(argv)
    report = runSoak(arguments.exchanges, arguments.body_bytes, CaptureLimits())
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0 if report["withinBudget"] else 1


if __name__ == "__main__":
    sys.exit(main())
