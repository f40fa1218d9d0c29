"""
Profile our tunnel server and client under load: the twistd plugins in
front of the Go origin, loaded with wrk (C{GET /}, 32 connections by
default), each process profiled on its own.

With cProfile (the default) each process runs twistd under a profiler that
is switched on by C{SIGUSR1} after the warm-up and switched off and saved by
C{SIGUSR2} at the end of the measured wrk run, so start-up and warm-up are
left out. With C{--tool py-spy} (C{pip install py-spy}) the processes run
unprofiled and are sampled by py-spy during the measured run, which slows
them down much less.

For each process it prints the top functions by own time and by cumulative
time (cProfile: seconds, share of the profiled time, calls per request;
py-spy: share of the samples). Profiles are saved in C{bench/results/}.

C{profile_tunnel.py --child OUTPUT -- TWISTD-ARGUMENTS} is how the profiled
processes are started: twistd with the profiler switched by the signals.

Usage::

    python bench/profile_tunnel.py [--tool cprofile|py-spy] [--seconds 10]
                                   [--connections 32] [--limit 25]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from types import FrameType
from typing import Callable

import tunnel_bench
from tunnel_bench import Launcher, Target, runWrk

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(HERE, "results")
START, STOP = signal.SIGUSR1, signal.SIGUSR2
PY_SPY_RATE = 250
"""Samples per second taken by py-spy."""

Row = tuple[str, float, float, float, float, int | None]
"""A profile line: function, own, own share, cumulative, cumulative share, calls."""


# -- inside a profiled twistd ----------------------------------------------------


def runProfiledTwistd(output: str, arguments: list[str]) -> None:
    """
    Run twistd with C{arguments}; profile between C{SIGUSR1} and
    C{SIGUSR2}, then write the profile to C{output}.
    """
    profiler = cProfile.Profile()

    def start(number: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(number: int, frame: FrameType | None) -> None:
        profiler.disable()
        partial = output + ".partial"
        profiler.dump_stats(partial)
        os.replace(partial, output)

    signal.signal(START, start)
    signal.signal(STOP, stop)
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *arguments]
    run()


# -- reading profiles ----------------------------------------------------------------


def shortPath(path: str) -> str:
    """A file name without the installation prefixes that say nothing."""
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            return path.split("/", 1)[1] if marker == "lib/python3" else path
    return os.path.relpath(path, tunnel_bench.ROOT) if path.startswith("/") else path


def cProfileRows(path: str) -> tuple[float, list[Row]]:
    """The total profiled time of a cProfile file, and one row per function."""
    stats = pstats.Stats(path)
    rows: list[Row] = []
    total = stats.total_tt or 1.0
    for (filename, line, name), (_, calls, own, cumulative, _) in stats.stats.items():
        label = f"{name} ({shortPath(filename)}:{line})" if line else name
        rows.append((label, own, own / total, cumulative, cumulative / total, calls))
    return stats.total_tt, rows


def pySpyRows(path: str) -> tuple[float, list[Row]]:
    """
    The sampled seconds of a py-spy C{raw} (collapsed stacks) file, and one
    row per function: own samples are those where it is the innermost frame,
    cumulative ones those where it is anywhere on the stack.
    """
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    samples = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            n = int(count)
            samples += n
            own[frames[-1]] += n
            for frame in set(frames):
                cumulative[frame] += n
    total = samples or 1
    rows = [(frame, own[frame] / PY_SPY_RATE, own[frame] / total,
             cumulative[frame] / PY_SPY_RATE, cumulative[frame] / total, None)
            for frame in cumulative]
    return samples / PY_SPY_RATE, rows


def formatRows(rows: list[Row], key: Callable[[Row], float], limit: int,
               requests: int) -> str:
    """The top C{limit} rows by C{key}, as a text table."""
    lines = [f"{'own s':>8} {'own %':>6} {'cum s':>8} {'cum %':>6} {'calls/req':>9}  function"]
    for label, own, ownShare, cumulative, cumulativeShare, calls in sorted(
            rows, key=key, reverse=True)[:limit]:
        perRequest = "" if calls is None or not requests else f"{calls / requests:.2f}"
        lines.append(f"{own:8.3f} {ownShare * 100:6.1f} {cumulative:8.3f} "
                     f"{cumulativeShare * 100:6.1f} {perRequest:>9}  {label}")
    return "\n".join(lines)


def report(role: str, path: str, tool: str, limit: int, requests: int) -> str:
    """The top functions of one process's profile, by own and cumulative time."""
    total, rows = cProfileRows(path) if tool == "cprofile" else pySpyRows(path)
    what = "profiled seconds" if tool == "cprofile" else "seconds of samples"
    return "\n".join([
        f"== {role}: {total:.2f} {what}, {requests} requests ({path})",
        "-- by own time",
        formatRows(rows, lambda r: r[1], limit, requests),
        "-- by cumulative time",
        formatRows(rows, lambda r: r[3], limit, requests),
    ])


# -- the run -----------------------------------------------------------------------------


def waitForFile(path: str, timeout: float = 60.0) -> None:
    """Wait until C{path} exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise tunnel_bench.BenchError(f"no profile written to {path}")
        time.sleep(0.1)


def profile(options: argparse.Namespace, workDir: str) -> tuple[dict[str, str], int]:
    """
    Start the origin and our server and client, warm up, profile one wrk run.

    @return: the profile of each process, by role, and the requests done.
    """
    os.makedirs(RESULTS_DIR, exist_ok=True)
    extension = "pstats" if options.tool == "cprofile" else "pyspy.txt"
    paths = {role: os.path.join(RESULTS_DIR, f"profile-tunnel-{role}.{extension}")
             for role in tunnel_bench.ROLES}
    for path in paths.values():
        if os.path.exists(path):
            os.unlink(path)

    def twistd(role: str) -> list[str]:
        if options.tool == "cprofile":
            return [sys.executable, os.path.abspath(__file__), "--child", paths[role], "--"]
        return tunnel_bench.twistdCommand()

    launcher = Launcher(workDir, tunnel_bench.buildGoPeer("origin"),
                        tunnel_bench.buildGoPeer("tunnelpeer"))
    try:
        _, origin = launcher.origin()
        tunnel = launcher.ours(origin, twistd, tuple(options.client_option))
        target = Target("ours", tunnel.port, tunnel.processes)
        runWrk(target, options.connections, 2)
        samplers = []
        if options.tool == "cprofile":
            for child in tunnel.processes.values():
                os.kill(child.pid, START)
        else:
            samplers = [subprocess.Popen(
                [options.py_spy, "record", "--pid", str(child.pid), "--rate", str(PY_SPY_RATE),
                 "--duration", str(options.seconds + 1), "--function", "--nonblocking",
                 "--format", "raw", "--output", paths[role]],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for role, child in tunnel.processes.items()]
        result = runWrk(target, options.connections, options.seconds)
        if options.tool == "cprofile":
            for child in tunnel.processes.values():
                os.kill(child.pid, STOP)
        for sampler in samplers:
            sampler.wait()
        for path in paths.values():
            waitForFile(path)
    finally:
        launcher.close()
    cpu = ", ".join(f"{role} {value:.2f}" for role, value in result["cpu_per_10k"].items())
    print(f"{options.connections} connections, {options.seconds} s under {options.tool}: "
          f"{result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms; "
          f"CPU s per 10k requests: {cpu}\n")
    return paths, result["requests"]


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Profile our tunnel server and client under wrk load")
    parser.add_argument("--tool", choices=("cprofile", "py-spy"), default="cprofile")
    parser.add_argument("--seconds", type=int, default=10, help="length of the profiled run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--limit", type=int, default=25, help="functions listed per table")
    parser.add_argument("--client-option", action="append", default=[],
                        help="an option of the client, e.g. --client-option=--inspect="
                             "--client-option=tcp:0:interface=127.0.0.1 (repeatable)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Profile, print the tops; return the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        runProfiledTwistd(argv[1], argv[3:])
        return 0
    options = parseArguments(argv)
    problems = tunnel_bench.missingTools()
    options.py_spy = shutil.which("py-spy") or os.path.join(
        os.path.dirname(sys.executable), "py-spy")
    if options.tool == "py-spy" and not os.access(options.py_spy, os.X_OK):
        problems.append("py-spy is not installed: pip install py-spy")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tunnel-profile-") as workDir:
        paths, requests = profile(options, workDir)
    for role, path in paths.items():
        print(report(role, path, options.tool, options.limit, requests))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
