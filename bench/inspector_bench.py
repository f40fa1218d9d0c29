"""
What the client's request inspector costs: our tunnel (the twistd plugins)
in front of the Go origin, its client without and with C{--inspect}, in the
same run, alternating (the order swaps each round).

For each, on fresh processes each round:

    1. GET / (a small response) with wrk at 1 and 32 connections:
       requests/s, p99 latency, and the client's CPU seconds per 10,000
       requests;
    2. the time of a 100 MiB download and of a 100 MiB upload with curl:
       the inspector records both (their bodies up to its budget).

Medians over the rounds are printed with the inspected / plain ratios and
written to C{doc/benchmarks.rst} (section "Inspector cost"), and with every
measurement to C{bench/results/} as JSON. The target: capture costs at most
10% of throughput (a ratio of at least 0.90 for requests/s, at most 1.11
for transfer times).

Usage::

    python bench/inspector_bench.py [--rounds N] [--seconds S] [--no-doc]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import time
from typing import Any

from tunnel_bench import (
    DOC,
    TRANSFER_SIZE,
    Launcher,
    Target,
    download,
    makeUploadFile,
    median,
    missingTools,
    rstTable,
    runWrk,
    saveResults,
    sourceRevision,
    textTable,
    upload,
    wrkVersion,
    writeDoc,
)
from yamux_bench import machine

from tunnel.test.gopeer import buildGoPeer

SECTION_TITLE = "Inspector cost"
KINDS = ("plain", "inspected")
INSPECT = ("--inspect", "tcp:0:interface=127.0.0.1")

#: The summary's rows: label, measurement, value, digits, and the rule on
#: the inspected / plain ratio (">=" or "<=" and its bound).
ROWS = (
    ("GET / requests/s, 1 connection", "get-c1", ("rps",), 0, (">=", 0.90)),
    ("GET / requests/s, 32 connections", "get-c32", ("rps",), 0, (">=", 0.90)),
    ("GET / p99 ms, 32 connections", "get-c32", ("p99_ms",), 2, None),
    ("client CPU s/10k req, 32 connections", "get-c32", ("cpu_per_10k", "client"), 2, None),
    ("100 MiB download, s", "download", ("seconds",), 2, ("<=", 1.11)),
    ("100 MiB upload, s", "upload", ("seconds",), 2, ("<=", 1.11)),
)


def runRound(launcher: Launcher, origin: str, roundIndex: int, seconds: int,
             uploadFile: tuple[str, str]) -> list[dict[str, Any]]:
    """Measure both clients, one after the other, on fresh processes."""
    records = []
    order = KINDS if roundIndex % 2 == 0 else tuple(reversed(KINDS))
    for kind in order:
        tunnel = launcher.ours(origin, clientArguments=INSPECT if kind == "inspected" else ())
        if kind == "inspected":
            tunnel.client.waitFor(r"Inspecting requests at")
        target = Target(kind, tunnel.port, tunnel.processes)
        try:
            runWrk(target, 32, 1)
            for connections in (1, 32):
                result = runWrk(target, connections, seconds)
                result.update(round=roundIndex + 1, target=kind, kind=f"get-c{connections}")
                records.append(result)
                print(f"round {roundIndex + 1}  GET c={connections:<3} {kind:<9} "
                      f"{result['rps']:8.0f} req/s  p99 {result['p99_ms']:7.2f} ms  "
                      f"client CPU s/10k {result['cpu_per_10k']['client']:.2f}", flush=True)
            path, digest = uploadFile
            for what, result in (("download", download(target, TRANSFER_SIZE)),
                                 ("upload", upload(target, path, TRANSFER_SIZE, digest))):
                result.update(round=roundIndex + 1, target=kind, kind=what)
                records.append(result)
                print(f"round {roundIndex + 1}  {what:<8} {kind:<9} {result['seconds']:6.2f} s",
                      flush=True)
        finally:
            tunnel.stop()
    return records


def _value(record: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = record
    for key in path:
        value = value[key]
    return float(value)


def summarize(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], bool]:
    """The table's header and rows, and whether every target was met."""
    header = ["Measurement", "plain", "inspected", "inspected/plain", "target", "verdict"]
    rows = []
    met = True
    for label, kind, path, digits, rule in ROWS:
        values = {
            name: median([_value(r, path) for r in records
                          if r["target"] == name and r["kind"] == kind and r.get("ok", True)])
            for name in KINDS
        }
        plain, inspected = values["plain"], values["inspected"]
        ratio = inspected / plain if plain and inspected is not None else None
        verdict = ""
        if rule is not None and ratio is not None:
            sign, bound = rule
            ok = ratio >= bound if sign == ">=" else ratio <= bound
            met = met and ok
            verdict = "met" if ok else "missed"
        rows.append([
            label,
            "-" if plain is None else f"{plain:,.{digits}f}",
            "-" if inspected is None else f"{inspected:,.{digits}f}",
            "-" if ratio is None else f"{ratio:.2f}x",
            "" if rule is None else f"{rule[0]} {rule[1]:.2f}x",
            verdict,
        ])
    return header, rows, met


DOC_METHOD = """\
``bench/inspector_bench.py`` measures what the client's request inspector
costs: our tunnel in front of the Go origin, its client started without and
with ``--inspect`` (the default capture bounds: 500 exchanges, 256 KiB per
body, 64 MiB in all), on fresh processes each round, the two swapping
places each round. ``GET /`` is loaded with wrk at 1 and 32 connections,
{seconds} s per point after a warm-up; then a 100 MiB download and a 100
MiB upload with curl. No page is open on the inspector: what is measured is
the capture itself (the first bytes of each direction kept, a head and 256
KiB of body, the request and status lines read, the store and the metrics
kept up to date). The target: capture costs at most 10% of throughput.

"""


def docSection(report: dict[str, Any], header: list[str], rows: list[list[str]]) -> str:
    """The "Inspector cost" section of the benchmarks document."""
    info = report["machine"]
    title = f"{SECTION_TITLE}\n{'-' * len(SECTION_TITLE)}\n\n"
    measured = textwrap.fill(
        f"Measured on {info['date'][:10]}: {info['cpu']}, {info['cores']} cores, Linux "
        f"{info['kernel']}, CPython {info['python']}, Twisted {info['twisted']}, "
        f"{report['wrk']}; our code at {report['revision']}. Medians of "
        f"{report['rounds']} rounds; the run took {report['wall_seconds']:.0f} s.", width=76)
    return (title + DOC_METHOD.format(seconds=report["seconds"]) + measured + "\n\n"
            + rstTable(header, rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description="What the client's request inspector costs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    problems = missingTools()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="inspector-bench-") as workDir:
        launcher = Launcher(workDir, buildGoPeer("origin"), "")
        try:
            uploadFile = makeUploadFile(workDir, TRANSFER_SIZE)
            _, address = launcher.origin()
            download(Target("origin", int(address.rpartition(":")[2])), TRANSFER_SIZE)
            for roundIndex in range(options.rounds):
                records += runRound(launcher, address, roundIndex, options.seconds, uploadFile)
        finally:
            launcher.close()
    header, rows, met = summarize(records)
    report = {
        "machine": machine(),
        "wrk": wrkVersion(),
        "revision": sourceRevision(),
        "rounds": options.rounds,
        "seconds": options.seconds,
        "records": records,
        "wall_seconds": time.monotonic() - started,
    }
    path = saveResults(report, "inspector")
    print()
    print(textTable(header, rows))
    print(f"\nresults: {path}  ({report['wall_seconds']:.0f} s)")
    if not options.no_doc:
        writeDoc(docSection(report, header, rows), DOC, SECTION_TITLE)
        print(f"written to {os.path.relpath(DOC)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
