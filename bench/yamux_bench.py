"""
Throughput of the yamux multiplexer over loopback TCP, against HashiCorp's
yamux as the reference.

Each measurement runs two processes: a sender that opens streams, writes a
payload on each, half-closes and reads a one-line reply, and a sink that reads
every stream to EOF and replies with the byte count. Either side is our
implementation (C{bench/yamux_peer.py}, built on L{tunnel.mux}) or the Go peer
in C{tunnel/test/go/yamuxpeer} (its C{send} and C{sink-source} scenarios).

For each pair of implementations and each scenario it reports:

    - MB/s: payload bytes / 1e6 per second, from the first stream opened to
      the last reply read, as the sender measures it;
    - CPU s/GiB: the user+system CPU time of both processes during the
      exchange, per GiB (2**30 bytes) of payload. Our peers measure it
      themselves, from the start of the exchange to the end of the session;
      for a Go peer it is the total that C{wait4} reports at exit minus the
      CPU time sampled from C{/proc} just before its first socket write
      (sender) or read (sink). Start-up, imports and the Go sender's
      generation of its payload are thus left out;
    - the peak RSS of each process (C{ru_maxrss} from C{wait4}).

The pairs are measured in the same run, alternating, and the medians over
the rounds are reported. Results go to C{bench/results/} as JSON.

Usage::

    python bench/yamux_bench.py [--quick] [--rounds N] [--window BYTES]
                                [--profile] [--pairs py-py,...]
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
PEER = os.path.join(HERE, "yamux_peer.py")

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 256 * 1024
"""The size of each write, for both implementations."""

RUN_TIMEOUT = 120.0
"""Seconds one measurement may take before its processes are killed."""

_log = Logger()


@dataclass(frozen=True)
class Scenario:
    """A payload shape: C{streams} parallel streams of C{bytesPerStream}."""

    name: str
    streams: int
    bytesPerStream: int

    @property
    def totalBytes(self) -> int:
        """The payload of all streams together."""
        return self.streams * self.bytesPerStream


@dataclass(frozen=True)
class Pair:
    """Which implementation sends (C{"py"} or C{"go"}) and which sinks."""

    sender: str
    sink: str

    @property
    def name(self) -> str:
        """For instance C{py-go}: our sender, the Go sink."""
        return f"{self.sender}-{self.sink}"


ALL_PAIRS = [Pair("py", "py"), Pair("go", "go"), Pair("py", "go"), Pair("go", "py")]


def scenarios(quick: bool) -> list[Scenario]:
    """The scenarios: one bulk stream, and 100 parallel streams."""
    total = 64 * MiB if quick else 256 * MiB
    return [
        Scenario(f"1 stream, {total // MiB} MiB", 1, total),
        Scenario(f"100 streams, {total // MiB} MiB total", 100, total // 100),
    ]


@dataclass
class ProcessResult:
    """What one process of a measurement reported and cost."""

    implementation: str
    role: str
    output: dict[str, Any] = field(default_factory=dict)
    cpuTotal: float = 0.0
    cpuBefore: float | None = None
    maxRssKiB: int = 0
    exitCode: int | None = None
    stderr: str = ""

    @property
    def cpuExchange(self) -> float:
        """
        CPU seconds of the exchange: as our peers report it (from its start
        to the end of the session), or for a Go peer from its first socket
        I/O until it exits.
        """
        if self.implementation == "py" and "cpu_seconds" in self.output:
            return float(self.output["cpu_seconds"])
        return self.cpuTotal - (self.cpuBefore or 0.0)

    def asDict(self) -> dict[str, Any]:
        """A JSON-friendly summary (without the long reply list)."""
        output = {k: v for k, v in self.output.items() if k != "replies"}
        return {
            "implementation": self.implementation,
            "role": self.role,
            "cpu_total_s": self.cpuTotal,
            "cpu_before_exchange_s": self.cpuBefore,
            "cpu_exchange_s": self.cpuExchange,
            "max_rss_kib": self.maxRssKiB,
            "exit_code": self.exitCode,
            "output": output,
        }


def threadCpuSeconds(pid: int) -> float | None:
    """
    The CPU time of all live threads of a process, from
    C{/proc/<pid>/task/*/schedstat} (nanosecond precision).
    """
    total = 0
    try:
        for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
            with open(path) as f:
                total += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def ioCounter(pid: int, name: str) -> int | None:
    """A counter (C{rchar}, C{wchar}) from C{/proc/<pid>/io}."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == name:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


class ExchangeStartWatcher:
    """
    Samples a process's CPU time until it first moves bytes through a
    read (C{rchar}) or write (C{wchar}) system call, and keeps the CPU time
    of the last sample before that: the cost of whatever the process did
    before the exchange. Used for the Go peers, which use read and write on
    their socket and print nothing in between.
    """

    INTERVAL = 0.002

    def __init__(self, pid: int, counter: str) -> None:
        self.pid = pid
        self.counter = counter
        self.cpuBefore: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        baseline = ioCounter(self.pid, self.counter)
        if baseline is None:
            return
        last = threadCpuSeconds(self.pid)
        while not self._stop.wait(self.INTERVAL):
            value = ioCounter(self.pid, self.counter)
            if value is None:
                return
            if value != baseline:
                self.cpuBefore = last
                return
            cpu = threadCpuSeconds(self.pid)
            if cpu is None:
                return
            last = cpu

    def stop(self) -> float | None:
        """Stop sampling; return the CPU seconds used before the exchange."""
        self._stop.set()
        self._thread.join()
        return self.cpuBefore


class Runner:
    """Runs single measurements: one sink process and one sender process."""

    def __init__(self, goBinary: str | None, window: int | None) -> None:
        self.goBinary = goBinary
        self.window = window

    def command(self, implementation: str, role: str, scenario: Scenario,
                address: str | None, profile: str | None) -> list[str]:
        """The command line of one peer; C{address} is where to connect."""
        if implementation == "py":
            args = [sys.executable, PEER, "--role", role]
            args += ["--connect", address] if address else ["--listen", "127.0.0.1:0"]
            if role == "send":
                args += ["--streams", str(scenario.streams),
                         "--bytes", str(scenario.bytesPerStream),
                         "--chunk", str(CHUNK)]
            if self.window is not None:
                args += ["--window", str(self.window)]
            if profile is not None:
                args += ["--profile", profile]
            return args
        assert self.goBinary is not None
        args = [self.goBinary, "-timeout", f"{int(RUN_TIMEOUT)}s"]
        if role == "send":
            args += ["-role", "client", "-scenario", "send",
                     "-streams", str(scenario.streams),
                     "-bytes", str(scenario.bytesPerStream),
                     "-chunk", str(CHUNK)]
        else:
            args += ["-role", "server", "-scenario", "sink-source"]
        args += ["-connect", address] if address else ["-listen", "127.0.0.1:0"]
        return args

    def measure(self, pair: Pair, scenario: Scenario,
                profiles: dict[str, str] | None = None) -> dict[str, Any]:
        """
        Run one exchange of C{scenario} between C{pair}.

        @param profiles: for our peers, the path of a profile to write, by
            role.
        @return: the measurement, as a JSON-friendly L{dict}.
        """
        profiles = profiles or {}
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        sink = ProcessResult(pair.sink, "sink")
        sender = ProcessResult(pair.sender, "send")
        with tempfile.TemporaryFile() as sinkErr, tempfile.TemporaryFile() as sendErr:
            sinkProcess = subprocess.Popen(
                self.command(pair.sink, "sink", scenario, None, profiles.get("sink")),
                stdout=subprocess.PIPE, stderr=sinkErr, env=env,
            )
            processes = [sinkProcess]
            killer = threading.Timer(RUN_TIMEOUT, self._kill, [processes])
            killer.start()
            try:
                assert sinkProcess.stdout is not None
                line = sinkProcess.stdout.readline().decode()
                if not line.startswith("LISTENING "):
                    raise RuntimeError(f"the {pair.sink} sink did not listen: {line!r}")
                address = line.split()[1]
                sinkWatch = (ExchangeStartWatcher(sinkProcess.pid, "rchar")
                             if pair.sink == "go" else None)
                sendProcess = subprocess.Popen(
                    self.command(pair.sender, "send", scenario, address,
                                 profiles.get("send")),
                    stdout=subprocess.PIPE, stderr=sendErr, env=env,
                )
                processes.append(sendProcess)
                sendWatch = (ExchangeStartWatcher(sendProcess.pid, "wchar")
                             if pair.sender == "go" else None)
                self._collect(sendProcess, sender, sendErr, sendWatch)
                self._collect(sinkProcess, sink, sinkErr, sinkWatch)
            finally:
                killer.cancel()
                self._kill(processes)
        ok = (sender.exitCode == 0 and sink.exitCode == 0
              and bool(sender.output.get("ok")) and bool(sink.output.get("ok")))
        replies = sender.output.get("replies") or []
        expected = f"{scenario.bytesPerStream}\n"
        if len(replies) != scenario.streams or any(r != expected for r in replies):
            ok = False
        if sink.output.get("bytes") != scenario.totalBytes:
            ok = False
        if not ok:
            _log.error(
                "{pair} on {scenario} failed:\nsender: {send}\n{sendErr}\n"
                "sink: {sink}\n{sinkErr}",
                pair=pair.name, scenario=scenario.name,
                send=sender.asDict(), sendErr=sender.stderr[-2000:],
                sink=sink.asDict(), sinkErr=sink.stderr[-2000:],
            )
        cpu = sender.cpuExchange + sink.cpuExchange
        return {
            "pair": pair.name,
            "scenario": scenario.name,
            "streams": scenario.streams,
            "bytes": scenario.totalBytes,
            "ok": ok,
            "seconds": sender.output.get("seconds"),
            "mbps": sender.output.get("mbps"),
            "cpu_s": cpu,
            "cpu_s_per_gib": cpu / (scenario.totalBytes / GiB),
            "sender": sender.asDict(),
            "sink": sink.asDict(),
        }

    @staticmethod
    def _collect(process: subprocess.Popen, result: ProcessResult, stderr: IO[bytes],
                 watcher: ExchangeStartWatcher | None) -> None:
        """Read a process's output to EOF, reap it, and fill C{result}."""
        assert process.stdout is not None
        output = process.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        result.exitCode = process.returncode
        result.cpuTotal = usage.ru_utime + usage.ru_stime
        result.maxRssKiB = usage.ru_maxrss
        stderr.seek(0)
        result.stderr = stderr.read().decode("utf-8", "replace")
        for line in reversed(output.splitlines()):
            if line.startswith("{"):
                try:
                    result.output = json.loads(line)
                except ValueError:
                    pass
                break
        if result.implementation == "py":
            result.cpuBefore = result.output.get("cpu_at_start")
        elif watcher is not None:
            result.cpuBefore = watcher.stop()
            if result.cpuBefore is None:
                _log.warn("no CPU sample before the exchange of a Go {role}",
                          role=result.role)

    @staticmethod
    def _kill(processes: list[subprocess.Popen]) -> None:
        for process in processes:
            if process.returncode is None:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def median(values: list[float]) -> float:
    """The median of some numbers (NaN if there are none)."""
    return statistics.median(values) if values else float("nan")


def summarize(runs: list[dict[str, Any]], pairs: list[Pair],
              scenarioList: list[Scenario]) -> list[dict[str, Any]]:
    """The medians over the rounds of each pair and scenario."""
    rows = []
    for scenario in scenarioList:
        for pair in pairs:
            mine = [r for r in runs
                    if r["pair"] == pair.name and r["scenario"] == scenario.name and r["ok"]]
            rows.append({
                "scenario": scenario.name,
                "pair": pair.name,
                "rounds": len(mine),
                "mbps": median([r["mbps"] for r in mine]),
                "mbps_all": [r["mbps"] for r in mine],
                "cpu_s_per_gib": median([r["cpu_s_per_gib"] for r in mine]),
                "sender_cpu_s_per_gib": median(
                    [r["sender"]["cpu_exchange_s"] / (r["bytes"] / GiB) for r in mine]),
                "sink_cpu_s_per_gib": median(
                    [r["sink"]["cpu_exchange_s"] / (r["bytes"] / GiB) for r in mine]),
                "sender_rss_mib": max([r["sender"]["max_rss_kib"] / 1024 for r in mine],
                                      default=float("nan")),
                "sink_rss_mib": max([r["sink"]["max_rss_kib"] / 1024 for r in mine],
                                    default=float("nan")),
            })
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario, py-py against go-go: MB/s and CPU s/GiB ratios."""
    out = []
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        byPair = {r["pair"]: r for r in rows if r["scenario"] == scenario}
        if "py-py" in byPair and "go-go" in byPair:
            py, go = byPair["py-py"], byPair["go-go"]
            out.append({
                "scenario": scenario,
                "mbps_ratio": py["mbps"] / go["mbps"],
                "cpu_ratio": py["cpu_s_per_gib"] / go["cpu_s_per_gib"],
            })
    return out


def formatTable(rows: list[dict[str, Any]], ratioRows: list[dict[str, Any]]) -> str:
    """The summary table as text."""
    header = (f"{'scenario':<26} {'sender-sink':<11} {'MB/s':>7} {'(range)':>11} "
              f"{'CPU s/GiB':>9} {'(send':>6} {'sink)':>6} {'RSS send':>8} {'RSS sink':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        spread = (f"{min(r['mbps_all']):.0f}-{max(r['mbps_all']):.0f}"
                  if r["mbps_all"] else "-")
        lines.append(
            f"{r['scenario']:<26} {r['pair']:<11} {r['mbps']:>7.0f} {spread:>11} "
            f"{r['cpu_s_per_gib']:>9.2f} {r['sender_cpu_s_per_gib']:>6.2f} "
            f"{r['sink_cpu_s_per_gib']:>6.2f} {r['sender_rss_mib']:>6.0f}MB "
            f"{r['sink_rss_mib']:>6.0f}MB"
        )
    lines.append("")
    for r in ratioRows:
        lines.append(
            f"py-py / go-go, {r['scenario']}: MB/s x{r['mbps_ratio']:.2f}, "
            f"CPU s/GiB x{r['cpu_ratio']:.2f}"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """A description of the machine and software the benchmark ran on."""
    import twisted

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        go = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "go": go,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def printProfiles(paths: dict[str, str], limit: int = 15) -> None:
    """Print the top entries of our peers' profiles, by total time."""
    for role, path in paths.items():
        if not os.path.exists(path):
            continue
        print(f"\n== profile of the {role} side: {path}")
        stats = pstats.Stats(path, stream=sys.stdout)
        stats.strip_dirs().sort_stats("tottime").print_stats(limit)


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description="yamux throughput benchmark")
    parser.add_argument("--quick", action="store_true",
                        help="64 MiB per scenario and one round")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per pair and scenario (default 3, quick 1)")
    parser.add_argument("--window", type=int, default=None,
                        help="maxStreamWindow of our peers, in bytes")
    parser.add_argument("--pairs", default=",".join(p.name for p in ALL_PAIRS),
                        help="comma-separated sender-sink pairs (py-py,go-go,py-go,go-py)")
    parser.add_argument("--profile", action="store_true",
                        help="also run py-py once per scenario under cProfile and "
                             "print the top functions")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    options = parseArguments(sys.argv[1:] if argv is None else argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)],
                                     redirectStandardIO=False)
    rounds = options.rounds or (1 if options.quick else 3)
    known = {p.name: p for p in ALL_PAIRS}
    pairs = [known[name] for name in options.pairs.split(",") if name]
    scenarioList = scenarios(options.quick)

    goBinary = None
    if any("go" in (p.sender, p.sink) for p in pairs):
        sys.path.insert(0, ROOT)
        from tunnel.test.gopeer import buildGoPeer, goAvailable

        reason = goAvailable()
        if reason is not None:
            _log.warn("skipping the Go peer: {reason}", reason=reason)
            pairs = [p for p in pairs if p.name == "py-py"]
        else:
            goBinary = buildGoPeer("yamuxpeer")

    runner = Runner(goBinary, options.window)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for roundIndex in range(rounds):
        for scenario in scenarioList:
            for pair in pairs:
                run = runner.measure(pair, scenario)
                run["round"] = roundIndex + 1
                runs.append(run)
                print(f"round {roundIndex + 1}/{rounds}  {scenario.name:<26} {pair.name:<6} "
                      f"{run['mbps'] or 0:7.0f} MB/s  {run['cpu_s_per_gib']:5.2f} CPU s/GiB"
                      f"{'' if run['ok'] else '  FAILED'}", flush=True)

    rows = summarize(runs, pairs, scenarioList)
    ratioRows = ratios(rows)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    report = {
        "machine": machine(),
        "options": {"quick": options.quick, "rounds": rounds, "window": options.window,
                    "chunk": CHUNK, "pairs": [p.name for p in pairs]},
        "summary": rows,
        "ratios": ratioRows,
        "runs": runs,
        "wall_seconds": time.monotonic() - started,
    }
    path = os.path.join(RESULTS_DIR, f"yamux-{stamp}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    print()
    print(formatTable(rows, ratioRows))
    print(f"\nresults: {path}  ({report['wall_seconds']:.0f} s)")

    if options.profile:
        for scenario in scenarioList:
            tag = "1" if scenario.streams == 1 else str(scenario.streams)
            paths = {role: os.path.join(RESULTS_DIR, f"profile-{tag}stream-{role}.pstats")
                     for role in ("send", "sink")}
            run = runner.measure(Pair("py", "py"), scenario, paths)
            print(f"\nprofiled py-py, {scenario.name}: {run['mbps'] or 0:.0f} MB/s "
                  "(slowed down by the profiler)")
            printProfiles(paths)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
