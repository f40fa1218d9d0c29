"""
Run the fuzz programs of L{tunnel.test.test_yamux_fuzz} for as long as
asked, against the yamux core and its Twisted adapter, client and server
side in turn::

    python -m tunnel.test.fuzz --minutes 30

The programs are the suite's own tests, run in batches of new random
programs until the time is up. A failure is shrunk to a short program,
printed with the bytes that make it (to replay with hypothesis's
C{@example}), and saved in hypothesis's example database, so that the next
run (and C{trial tunnel.test.test_yamux_fuzz}) tries it first. The exit
status is 0 when nothing was found, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from typing import Sequence

#: The fuzz tests: what they run, their class and their name.
TESTS = [
    ("session, client side", "SessionFuzzTests", "test_clientSession"),
    ("session, server side", "SessionFuzzTests", "test_serverSession"),
    ("protocol, client side", "ProtocolFuzzTests", "test_clientProtocol"),
    ("protocol, server side", "ProtocolFuzzTests", "test_serverProtocol"),
]


def fuzz(seconds: float, batch: int, only: str | None) -> int:
    """
    Run the tests of L{tunnel.test.test_yamux_fuzz} in turn, C{batch}
    programs each time, until C{seconds} have passed.

    @param only: C{"session"} or C{"protocol"} to run those tests only.
    @return: the exit status: 0, or 1 if a program failed.
    """
    os.environ["TUNNEL_FUZZ_EXAMPLES"] = str(batch)
    from twisted.logger import globalLogBeginner

    from tunnel.test import test_yamux_fuzz

    # The programs check the failures they log themselves: the log events
    # go nowhere, instead of piling up in memory.
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    tests = [
        (name, getattr(getattr(test_yamux_fuzz, cls)(method), method))
        for name, cls, method in TESTS
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
        description="Fuzz the yamux core and its Twisted adapter for a while.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (10)")
    parser.add_argument(
        "--only", choices=["session", "protocol"], default=None,
        help="run the core's programs only, or the adapter's",
    )
    parser.add_argument(
        "--batch", type=int, default=500,
        help="programs per test before the next test (500)",
    )
    options = parser.parse_args(argv)
    return fuzz(options.minutes * 60, options.batch, options.only)


if __name__ == "__main__":
    sys.exit(main())
