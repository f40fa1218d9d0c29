"""
Run the fuzz programs of L{tunnel.test.test_yamux_fuzz} and
L{tunnel.test.test_http_fuzz} for as long as asked, against the yamux core
and its Twisted adapter (client and server side), the response parser and
the public request path, in turn::

    python -m tunnel.test.fuzz --minutes 30

The programs are the suite's own tests, run in batches of new random
programs until the time is up. A failure is shrunk to a short program,
printed with the bytes that make it (to replay with hypothesis's
C{@example}), and saved in hypothesis's example database, so that the next
run (and trial on the same module) tries it first. The public path's
tests take a third of C{--batch} each round: their programs cost more. The exit
status is 0 when nothing was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Sequence

#: The fuzz tests: what they run, their module, class and name.
TESTS = [
    ("session, client side", "test_yamux_fuzz", "SessionFuzzTests", "test_clientSession"),
    ("session, server side", "test_yamux_fuzz", "SessionFuzzTests", "test_serverSession"),
    ("protocol, client side", "test_yamux_fuzz", "ProtocolFuzzTests", "test_clientProtocol"),
    ("protocol, server side", "test_yamux_fuzz", "ProtocolFuzzTests", "test_serverProtocol"),
    ("response, well-formed", "test_http_fuzz", "ResponseParserFuzzTests", "test_wellFormedResponses"),
    ("response, mutated", "test_http_fuzz", "ResponseParserFuzzTests", "test_mutatedResponses"),
    ("response, at the limits", "test_http_fuzz", "ResponseParserFuzzTests", "test_responsesAtTheLimits"),
    ("public, well-formed", "test_http_fuzz", "PublicPathFuzzTests", "test_wellFormedRequests"),
    ("public, any", "test_http_fuzz", "PublicPathFuzzTests", "test_anyRequests"),
]


def fuzz(seconds: float, batch: int, only: str | None) -> int:
    """
    Run the fuzz tests in turn, C{batch}
    programs each time, until C{seconds} have passed.

    @param only: C{"session"}, C{"protocol"}, C{"response"} or C{"public"}
        to run those tests only.
    @return: the exit status: 0, or 1 if a program failed.
    """
    os.environ["TUNNEL_FUZZ_EXAMPLES"] = str(batch)
    from twisted.logger import globalLogBeginner

    import importlib

    # The programs check the failures they log themselves: the log events
    # go nowhere, instead of piling up in memory.
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    tests = [
        (name, getattr(getattr(importlib.import_module(f"tunnel.test.{module}"), cls)(method), method))
        for name, module, cls, method in TESTS
        if only is None or name.startswith(only)
    ]
    started = time.monotonic()
    deadline = started + seconds
    rounds = 0
    while time.monotonic() < deadline:
        for name, test in tests:
            try:
                test()
            except Exception as e:
                # The failing programs are in the exception's notes.
                traceback.print_exception(e)
                print(f"\n{name}: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
        rounds += 1
        print(
            f"{time.monotonic() - started:7.0f} s  {rounds * batch} programs of each kind",
            flush=True,
        )
    print(f"Nothing found in {rounds * batch * len(tests)} programs.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and fuzz."""
    parser = argparse.ArgumentParser(
        prog="python -m tunnel.test.fuzz",
        description="Fuzz the yamux layer and the HTTP layers for a while.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (10)")
    parser.add_argument(
        "--only", choices=["session", "protocol", "response", "public"], default=None,
        help="run only the yamux core's programs, its adapter's, the response "
        "parser's or the public request path's",
    )
    parser.add_argument(
        "--batch", type=int, default=500,
        help="programs per test before the next test (500)",
    )
    options = parser.parse_args(argv)
    return fuzz(options.minutes * 60, options.batch, options.only)


if __name__ == "__main__":
    sys.exit(main())
