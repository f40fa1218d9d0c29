"""
End-to-end benchmark of the tunnel: our server and client (the twistd
plugins) against the Go implementation (C{tunnel/test/go/tunnelpeer}), both
in front of the Go origin (C{tunnel/test/go/origin}), all on 127.0.0.1 as
separate processes.

For each implementation, in the same run, alternating, over several rounds:

    1. GET / (a small response) with wrk at 1, 32 and 256 connections:
       requests/s and the p50 and p99 latencies;
    2. the time of a 100 MiB download (C{/bytes}) and of a 100 MiB upload
       (C{PUT /sha256}, checked against the file's digest), with curl;
    3. the RSS of the server and the client before and after opening N idle
       WebSocket connections through them (C{/ws}), and the growth per
       connection;
    4. the CPU seconds of the server and of the client per 10,000 requests,
       from their C{/proc/PID/stat} around each wrk run (start-up excluded);
    5. the same wrk runs and transfers straight at the origin, as the
       ceiling.

Medians over the rounds are printed as a table with the ours / Go ratios,
written to C{doc/benchmarks.rst} (section "Tunnel benchmark") and, with
every measurement, to C{bench/results/} as JSON.

Usage::

    python bench/tunnel_bench.py [--quick] [--rounds N] [--connections N]
                                 [--seconds S] [--no-doc]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from xml.sax.saxutils import escape
from dataclasses import dataclass, field
from typing import Any, Callable

from yamux_bench import machine

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
DOC = os.path.join(ROOT, "doc", "benchmarks.rst")
CHART = os.path.join(ROOT, "doc", "benchmarks-tunnel.svg")
"""The requests/s chart, next to the document that includes it."""
sys.path.insert(0, ROOT)

from tunnel.test.gopeer import buildGoPeer, goAvailable  # noqa: E402
from tunnel.test.twistdprocess import twistdCommand  # noqa: E402

MiB = 1 << 20
HOST = "demo.localhost"
IDENTIFIER = "tunnel-bench-identifier-0123456789"
TRANSFER_SIZE = 100 * MiB
CONNECTION_COUNTS = (1, 32, 256)
WRK_THREADS = 1
"""wrk threads: one leaves the most CPU to the processes measured."""
OPEN_CONCURRENCY = 32
"""WebSocket handshakes in flight at once (our listener's backlog is 50)."""
SETTLE_SECONDS = 2.0
"""Pause before reading RSS, so that buffers and collectors settle."""
START_TIMEOUT = 30.0
SECTION_TITLE = "Tunnel benchmark"
TARGETS = ("origin", "ours", "go")
"""What is measured: straight at the origin, our tunnel, the Go tunnel."""
TUNNELS = ("ours", "go")
ROLES = ("server", "client")

UPGRADE_REQUEST = (
    b"GET /ws HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_MASK = b"\x11\x22\x33\x44"
_PING = b"ping"
ECHO_FRAME = b"\x81" + bytes([0x80 | len(_PING)]) + _MASK + bytes(
    b ^ _MASK[i % 4] for i, b in enumerate(_PING)
)
"""A masked text frame, as a WebSocket client sends it."""
ECHO_REPLY = b"\x81" + bytes([len(_PING)]) + _PING
"""The unmasked frame the origin echoes back."""


class BenchError(RuntimeError):
    """A process did not start, or a measurement went wrong."""


# -- processes ---------------------------------------------------------------


@dataclass
class Child:
    """
    A process under test, its standard output and error going to a file.

    @ivar name: a short name for messages.
    """

    name: str
    process: subprocess.Popen
    outputPath: str

    @property
    def pid(self) -> int:
        """The process ID."""
        return self.process.pid

    def output(self) -> str:
        """Everything the process wrote so far."""
        with open(self.outputPath, encoding="utf-8", errors="replace") as f:
            return f.read()

    def waitFor(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """
        The first match of C{pattern} in the output, waiting for it.

        @raise BenchError: if the process ends first or C{timeout} passes.
        """
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.output())
            if match is not None:
                return match
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.process.returncode}) "
                                 f"before printing {pattern!r}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not print {pattern!r} within "
                                 f"{timeout} s:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def cpuSeconds(self) -> float:
        """User + system CPU time of all the process's threads so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rssKiB(self) -> int:
        """The resident set size (C{VmRSS}), in KiB."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise BenchError(f"no VmRSS for {self.name}")

    def stop(self) -> None:
        """End the process: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Launcher:
    """
    Starts the processes under test in a scratch directory and stops
    whatever is still running when it is closed.
    """

    def __init__(self, workDir: str, originBinary: str, peerBinary: str) -> None:
        self.workDir = workDir
        self.originBinary = originBinary
        self.peerBinary = peerBinary
        self._children: list[Child] = []
        self._count = 0
        self._env = dict(os.environ)
        self._env["PYTHONPATH"] = os.pathsep.join(
            p for p in (ROOT, os.environ.get("PYTHONPATH")) if p
        )

    def spawn(self, name: str, argv: list[str]) -> Child:
        """Start C{argv} with its output going to a file of the scratch directory."""
        self._count += 1
        path = os.path.join(self.workDir, f"{self._count:03d}-{name}.log")
        with open(path, "wb") as output:
            process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=self._env, cwd=ROOT)
        child = Child(name, process, path)
        self._children.append(child)
        return child

    def origin(self) -> tuple[Child, str]:
        """Start the Go origin; return it and its C{host:port}."""
        child = self.spawn("origin", [self.originBinary, "-listen", "127.0.0.1:0"])
        address = child.waitFor(r"LISTENING (\S+)").group(1)
        return child, address

    def tunnel(self, kind: str, origin: str) -> Tunnel:
        """Start a tunnel server and its client (C{kind} C{ours} or C{go})."""
        return self.ours(origin) if kind == "ours" else self.go(origin)

    def ours(self, origin: str,
             twistd: Callable[[str], list[str]] = lambda role: twistdCommand(),
             clientArguments: tuple[str, ...] = ()) -> Tunnel:
        """
        Start our server and client with twistd, the client forwarding to
        C{origin}.

        @param twistd: the command that runs twistd, by role (C{server} or
            C{client}).
        @param clientArguments: more options of the client.
        """
        options = ["--nodaemon", "--logfile=-", "--pidfile="]
        server = self.spawn("ours-server", twistd("server") + options + [
            "tunnel-server", "--listen", "tcp:0:interface=127.0.0.1",
            "--host", f"{HOST}={IDENTIFIER}",
            # All the load comes from 127.0.0.1, standing for many users.
            "--max-connections-per-source", "0"])
        port = int(server.waitFor(r"TunnelSite starting on (\d+)").group(1))
        client = self.spawn("ours-client", twistd("client") + options + [
            "tunnel-client", "--server", f"127.0.0.1:{port}",
            "--identifier", IDENTIFIER, "--local", origin,
            # The idle WebSockets are that many local connections at once.
            "--max-local-connections", "100000", *clientArguments])
        client.waitFor(r"tunnel to \S+ is up")
        return Tunnel("ours", server, client, port)

    def go(self, origin: str) -> Tunnel:
        """Start the Go server and client, the client forwarding to C{origin}."""
        server = self.spawn("go-server", [self.peerBinary, "server", "-listen",
                                          "127.0.0.1:0", "-host", f"{HOST}={IDENTIFIER}"])
        port = int(server.waitFor(r"LISTENING 127\.0\.0\.1:(\d+)").group(1))
        client = self.spawn("go-client", [self.peerBinary, "client", "-server",
                                          f"127.0.0.1:{port}", "-identifier", IDENTIFIER,
                                          "-local", origin])
        client.waitFor(r"(?m)^CONNECTED")
        server.waitFor(r"CLIENT CONNECTED")
        return Tunnel("go", server, client, port)

    def close(self) -> None:
        """Stop every process still running."""
        for child in reversed(self._children):
            child.stop()
        self._children = []


@dataclass
class Tunnel:
    """A running tunnel: its server, its client, and the server's port."""

    kind: str
    server: Child
    client: Child
    port: int

    @property
    def processes(self) -> dict[str, Child]:
        """The processes by role."""
        return {"server": self.server, "client": self.client}

    def stop(self) -> None:
        """Stop the client, then the server."""
        self.client.stop()
        self.server.stop()


@dataclass
class Target:
    """
    Where the load goes: a tunnel's public port, or the origin itself.

    @ivar processes: the processes whose CPU time is measured, by role.
    """

    name: str
    port: int
    processes: dict[str, Child] = field(default_factory=dict)

    def url(self, path: str) -> str:
        """The URL of C{path} at this target."""
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu(self) -> dict[str, float]:
        """The CPU seconds of each process so far."""
        return {role: child.cpuSeconds() for role, child in self.processes.items()}


def cpuDelta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds used between two L{Target.cpu} samples, by role."""
    return {role: after[role] - before[role] for role in before}


# -- measurements ----------------------------------------------------------------


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parseWrk(output: str) -> dict[str, Any]:
    """
    Read wrk's C{--latency} report: requests, requests/s, the p50 and p99
    latencies (ms), and the errors (socket errors and non-2xx/3xx answers).

    @raise BenchError: if the report is not recognised.
    """
    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    percentiles = {
        int(p): float(value) * _UNITS[unit]
        for p, value, unit in re.findall(r"(?m)^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output)
    }
    if requests is None or rate is None or 50 not in percentiles or 99 not in percentiles:
        raise BenchError(f"unexpected wrk output:\n{output}")
    errors = 0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    if socket is not None:
        errors += sum(int(n) for n in socket.groups())
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if status is not None:
        errors += int(status.group(1))
    return {
        "requests": int(requests.group(1)),
        "rps": float(rate.group(1)),
        "p50_ms": percentiles[50],
        "p99_ms": percentiles[99],
        "errors": errors,
    }


def runWrk(target: Target, connections: int, seconds: int) -> dict[str, Any]:
    """
    Load C{GET /} at C{target} with wrk; add the CPU seconds of the
    target's processes per 10,000 requests done (C{cpu_per_10k}).
    """
    argv = ["wrk", "-t", str(min(WRK_THREADS, connections)), "-c", str(connections),
            "-d", f"{seconds}s", "--latency", "--timeout", "10s",
            "-H", f"Host: {HOST}", target.url("/")]
    before = target.cpu()
    completed = subprocess.run(argv, capture_output=True, text=True)
    used = cpuDelta(before, target.cpu())
    if completed.returncode != 0:
        raise BenchError(f"wrk failed ({completed.returncode}):\n{completed.stderr}")
    result = parseWrk(completed.stdout)
    result["connections"] = connections
    result["cpu_s"] = used
    result["cpu_per_10k"] = {
        role: spent * 10_000 / result["requests"] if result["requests"] else float("nan")
        for role, spent in used.items()
    }
    return result


def download(target: Target, size: int) -> dict[str, Any]:
    """Time the download of C{size} bytes from C{/bytes}, with curl."""
    before = target.cpu()
    completed = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-H", f"Host: {HOST}",
         "-w", "%{http_code} %{size_download} %{time_total}",
         target.url(f"/bytes?n={size}")],
        capture_output=True, text=True)
    used = cpuDelta(before, target.cpu())
    code, received, seconds = (completed.stdout.split() + ["", "", ""])[:3]
    ok = completed.returncode == 0 and code == "200" and received == str(size)
    if not ok:
        print(f"  download from {target.name} failed: {completed.stdout!r} "
              f"{completed.stderr.strip()}", file=sys.stderr)
    return {"seconds": float(seconds) if ok else float("nan"), "ok": ok, "cpu_s": used}


def upload(target: Target, path: str, size: int, digest: str) -> dict[str, Any]:
    """
    Time the upload of the file at C{path} to C{/sha256} (streamed by curl,
    without C{Expect: 100-continue}); the answer must carry its digest.
    """
    before = target.cpu()
    completed = subprocess.run(
        ["curl", "-sS", "-T", path, "-H", "Expect:", "-H", f"Host: {HOST}",
         "-w", "\n%{http_code} %{time_total}", target.url("/sha256")],
        capture_output=True, text=True)
    used = cpuDelta(before, target.cpu())
    lines = [line for line in completed.stdout.splitlines() if line]
    answer = lines[0] if len(lines) == 2 else ""
    code, seconds = (lines[-1].split() + ["", ""])[:2] if lines else ("", "")
    ok = completed.returncode == 0 and code == "200" and answer == f"{digest} {size}"
    if not ok:
        print(f"  upload to {target.name} failed: {completed.stdout!r} "
              f"{completed.stderr.strip()}", file=sys.stderr)
    return {"seconds": float(seconds) if ok else float("nan"), "ok": ok, "cpu_s": used}


async def openWebSocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket to C{/ws} through the tunnel at C{port}; keep it open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(UPGRADE_REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise BenchError(f"WebSocket refused: {head[:200]!r}")
    return reader, writer


async def echoOnce(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Send one small frame on an open WebSocket; whether it came back."""
    writer.write(ECHO_FRAME)
    return await reader.readexactly(len(ECHO_REPLY)) == ECHO_REPLY


async def holdWebSockets(port: int, count: int, processes: dict[str, Child]) -> dict[str, Any]:
    """
    Open C{count} WebSockets, wait for things to settle, read the RSS of
    C{processes}, check that every connection still echoes, and close them.
    """
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def limited(work: Callable[[], Any]) -> Any:
        async with gate:
            return await work()

    started = time.monotonic()
    opened = await asyncio.gather(
        *(limited(lambda: openWebSocket(port)) for _ in range(count)), return_exceptions=True)
    openSeconds = time.monotonic() - started
    connections = [c for c in opened if not isinstance(c, BaseException)]
    failures = [repr(c) for c in opened if isinstance(c, BaseException)]
    await asyncio.sleep(SETTLE_SECONDS)
    rss = {role: child.rssKiB() for role, child in processes.items()}
    echoed = await asyncio.gather(
        *(limited(lambda c=c: echoOnce(*c)) for c in connections), return_exceptions=True)
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in connections), return_exceptions=True)
    return {
        "opened": len(connections),
        "open_seconds": openSeconds,
        "failures": failures[:5],
        "echoed": sum(1 for e in echoed if e is True),
        "rss_after_kib": rss,
    }


def idleConnections(launcher: Launcher, kind: str, origin: str, count: int) -> dict[str, Any]:
    """
    RSS of a fresh tunnel's server and client before and after C{count}
    idle WebSockets are opened through it, and the growth per connection.
    """
    tunnel = launcher.tunnel(kind, origin)
    try:
        # A few connections first, so that what is loaded or allocated once
        # is not charged to the idle connections.
        asyncio.run(holdWebSockets(tunnel.port, 20, tunnel.processes))
        time.sleep(SETTLE_SECONDS)
        before = {role: child.rssKiB() for role, child in tunnel.processes.items()}
        result = asyncio.run(holdWebSockets(tunnel.port, count, tunnel.processes))
    finally:
        tunnel.stop()
    result["rss_before_kib"] = before
    result["per_connection_kib"] = {
        role: (result["rss_after_kib"][role] - before[role]) / max(result["opened"], 1)
        for role in before
    }
    result["ok"] = result["opened"] == count and result["echoed"] == count
    return result


# -- the run --------------------------------------------------------------------------


def raiseFileLimit(count: int) -> int:
    """
    Raise this process's open file limit (inherited by the processes it
    starts) so that C{count} connections fit; return how many do.
    """
    wanted = count + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(count, soft - 4096)


def makeUploadFile(directory: str, size: int) -> tuple[str, str]:
    """Write C{size} random bytes to a file; return its path and SHA-256."""
    path = os.path.join(directory, "upload.bin")
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


@dataclass
class Settings:
    """What one run measures and for how long."""

    rounds: int
    seconds: int
    warmup: int
    idleConnections: int
    transferSize: int = TRANSFER_SIZE


def orderFor(roundIndex: int) -> list[str]:
    """The order the targets are measured in: the tunnels swap places each round."""
    tunnels = list(TUNNELS) if roundIndex % 2 == 0 else list(reversed(TUNNELS))
    return ["origin", *tunnels]


def runRound(launcher: Launcher, origin: Target, settings: Settings, roundIndex: int,
             uploadFile: tuple[str, str]) -> list[dict[str, Any]]:
    """
    One round: load and transfers on every target, alternating, then the
    idle connections of each tunnel on fresh processes.

    @return: one record per target and measurement.
    """
    order = orderFor(roundIndex)
    records: list[dict[str, Any]] = []

    def record(target: str, kind: str, result: dict[str, Any]) -> None:
        result.update(round=roundIndex + 1, target=target, kind=kind)
        records.append(result)

    tunnels = {kind: launcher.tunnel(kind, f"127.0.0.1:{origin.port}") for kind in TUNNELS}
    try:
        targets = {"origin": origin}
        for kind, tunnel in tunnels.items():
            targets[kind] = Target(kind, tunnel.port, tunnel.processes)
        for name in order:
            runWrk(targets[name], 32, settings.warmup)
        for connections in CONNECTION_COUNTS:
            for name in order:
                result = runWrk(targets[name], connections, settings.seconds)
                record(name, f"get-c{connections}", result)
                cpu = " ".join(f"{role} {value:.2f}" for role, value in
                               result["cpu_per_10k"].items())
                print(f"round {roundIndex + 1}  GET c={connections:<3} {name:<6} "
                      f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:7.2f} ms  "
                      f"p99 {result['p99_ms']:7.2f} ms  CPU s/10k: {cpu}"
                      f"{'  errors ' + str(result['errors']) if result['errors'] else ''}",
                      flush=True)
        path, digest = uploadFile
        for what in ("download", "upload"):
            for name in order:
                if what == "download":
                    result = download(targets[name], settings.transferSize)
                else:
                    result = upload(targets[name], path, settings.transferSize, digest)
                record(name, what, result)
                print(f"round {roundIndex + 1}  {what:<8} {name:<6} "
                      f"{result['seconds']:6.2f} s", flush=True)
    finally:
        for tunnel in tunnels.values():
            tunnel.stop()
    for name in order[1:]:
        result = idleConnections(launcher, name, f"127.0.0.1:{origin.port}",
                                 settings.idleConnections)
        record(name, "idle", result)
        growth = " ".join(f"{role} {value:.1f}" for role, value in
                          result["per_connection_kib"].items())
        print(f"round {roundIndex + 1}  idle WS {name:<6} {result['opened']} open "
              f"({result['opened'] / result['open_seconds']:.0f}/s), KiB per "
              f"connection: {growth}{'' if result['ok'] else '  FAILED'}", flush=True)
    return records


# -- the summary -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """
    One line of the summary table.

    @ivar extract: the value of one record, or L{None} if it has none.
    @ivar rule: how the ours / Go ratio is judged: C{(">=", 1.0, 0.5)}
        means at least 1.0x, and below 0.5x is a defect.
    """

    label: str
    kind: str
    extract: Callable[[dict[str, Any]], float | None]
    digits: int = 0
    rule: tuple[str, float, float | None] | None = None


def _key(*path: str) -> Callable[[dict[str, Any]], float | None]:
    def extract(record: dict[str, Any]) -> float | None:
        value: Any = record
        for name in path:
            if not isinstance(value, dict) or name not in value:
                return None
            value = value[name]
        return float(value)
    return extract


def _sum(*paths: tuple[str, ...]) -> Callable[[dict[str, Any]], float | None]:
    def extract(record: dict[str, Any]) -> float | None:
        values = [_key(*path)(record) for path in paths]
        return None if None in values else sum(values)  # type: ignore[arg-type]
    return extract


def _openRate(record: dict[str, Any]) -> float | None:
    return record["opened"] / record["open_seconds"] if record.get("open_seconds") else None


def tableRows() -> list[Row]:
    """The rows of the summary table, with the targets the project set."""
    rows: list[Row] = []
    for c in CONNECTION_COUNTS:
        kind = f"get-c{c}"
        rows += [
            Row(f"GET / {c} conn: req/s", kind, _key("rps"), 0,
                (">=", 1.5, 0.5) if c in (32, 256) else None),
            Row(f"GET / {c} conn: p50 ms", kind, _key("p50_ms"), 2,
                ("<=", 1.0, None) if c == 1 else None),
            Row(f"GET / {c} conn: p99 ms", kind, _key("p99_ms"), 2),
            Row(f"GET / {c} conn: CPU s/10k req, server", kind,
                _key("cpu_per_10k", "server"), 2),
            Row(f"GET / {c} conn: CPU s/10k req, client", kind,
                _key("cpu_per_10k", "client"), 2),
            Row(f"GET / {c} conn: CPU s/10k req, both", kind,
                _sum(("cpu_per_10k", "server"), ("cpu_per_10k", "client")), 2,
                ("<=", 1.0, None) if c == 32 else None),
        ]
    for what in ("download", "upload"):
        rows += [
            Row(f"100 MiB {what}: s", what, _key("seconds"), 2,
                ("<=", 1.0 if what == "download" else 1.5, None)),
            Row(f"100 MiB {what}: CPU s, server", what, _key("cpu_s", "server"), 2),
            Row(f"100 MiB {what}: CPU s, client", what, _key("cpu_s", "client"), 2),
        ]
    rows += [
        Row("idle WS: opened per s", "idle", _openRate, 0),
        Row("idle WS: server RSS before, MiB", "idle",
            lambda r: r["rss_before_kib"]["server"] / 1024, 1),
        Row("idle WS: server RSS after, MiB", "idle",
            lambda r: r["rss_after_kib"]["server"] / 1024, 1),
        Row("idle WS: client RSS before, MiB", "idle",
            lambda r: r["rss_before_kib"]["client"] / 1024, 1),
        Row("idle WS: client RSS after, MiB", "idle",
            lambda r: r["rss_after_kib"]["client"] / 1024, 1),
        Row("idle WS: KiB per conn, server", "idle",
            _key("per_connection_kib", "server"), 1, ("<=", 1.0, None)),
        Row("idle WS: KiB per conn, client", "idle",
            _key("per_connection_kib", "client"), 1, ("<=", 1.0, None)),
        Row("idle WS: KiB per conn, both", "idle",
            _sum(("per_connection_kib", "server"), ("per_connection_kib", "client")), 1,
            ("<=", 0.1, None)),
    ]
    return rows


def median(values: list[float]) -> float | None:
    """The median, or L{None} when there are no values."""
    values = [v for v in values if v == v]
    return statistics.median(values) if values else None


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    The medians over the rounds, per row and target, with the ours / Go
    ratio and its verdict against the row's target.
    """
    summary = []
    for row in tableRows():
        values: dict[str, float | None] = {}
        for target in TARGETS:
            mine = [row.extract(r) for r in records
                    if r["target"] == target and r["kind"] == row.kind and r.get("ok", True)]
            values[target] = median([v for v in mine if v is not None])
        ours, go = values["ours"], values["go"]
        ratio = ours / go if ours is not None and go else None
        summary.append({"label": row.label, "values": values, "ratio": ratio,
                        "digits": row.digits, "target": describeRule(row.rule),
                        "verdict": verdict(row.rule, ratio)})
    return summary


def describeRule(rule: tuple[str, float, float | None] | None) -> str:
    """The target of a row, as text (C{">= 1.0x (< 0.5x defect)"})."""
    if rule is None:
        return ""
    text = f"{rule[0]} {rule[1]:.1f}x"
    return text if rule[2] is None else f"{text} (< {rule[2]:.1f}x defect)"


def verdict(rule: tuple[str, float, float | None] | None, ratio: float | None) -> str:
    """C{met}, C{missed} or C{DEFECT}; empty without a rule or a ratio."""
    if rule is None or ratio is None:
        return ""
    operator, bound, defect = rule
    if defect is not None and ratio < defect:
        return "DEFECT"
    met = ratio >= bound if operator == ">=" else ratio <= bound
    return "met" if met else "missed"


def formatValue(value: float | None, digits: int) -> str:
    """A table cell."""
    return "-" if value is None else f"{value:,.{digits}f}"


def tableCells(summary: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the summary table, as text cells."""
    header = ["Measurement", "ours", "Go", "ours/Go", "origin", "target", "verdict"]
    rows = []
    for line in summary:
        values = line["values"]
        rows.append([
            line["label"],
            formatValue(values["ours"], line["digits"]),
            formatValue(values["go"], line["digits"]),
            "-" if line["ratio"] is None else f"{line['ratio']:.2f}x",
            formatValue(values["origin"], line["digits"]),
            line["target"],
            line["verdict"],
        ])
    return header, rows


def textTable(header: list[str], rows: list[list[str]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), "-" * len(line(header)), *map(line, rows)])


def rstTable(header: list[str], rows: list[list[str]]) -> str:
    """A reStructuredText simple table."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


# -- the chart ----------------------------------------------------------------------


CHART_SERIES = (("ours", "ours", "#3465a4"), ("go", "Go", "#f57900"))
"""The bars of each group: target, legend text, colour."""


def _niceStep(top: float, ticks: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) for an axis up to C{top}."""
    rough = top / ticks
    magnitude = 10 ** len(str(int(rough))) / 10 if rough >= 1 else 1.0
    for factor in (1, 2, 5, 10):
        if magnitude * factor >= rough:
            return magnitude * factor
    return magnitude * 10


def chartSvg(summary: list[dict[str, Any]], subtitle: str = "") -> str:
    """
    A grouped bar chart, as a standalone SVG document, of the GET /
    requests/s in C{summary} (as L{summarize} returns it): one group per
    connection count, one bar per tunnel, each bar labelled with its value.
    """
    wanted = {f"GET / {c} conn: req/s": c for c in CONNECTION_COUNTS}
    values = {wanted[line["label"]]: line["values"] for line in summary
              if line["label"] in wanted}
    width, height = 560, 340
    left, right, top, bottom = 72, 16, 52, 58
    plotWidth, plotHeight = width - left - right, height - top - bottom
    bars = [line.get(target) for line in values.values() for target, _, _ in CHART_SERIES]
    highest = max([v for v in bars if v is not None] or [1.0])
    step = _niceStep(highest * 1.1)
    axisTop = step * max(1, -(-highest * 1.1 // step))

    def y(value: float) -> float:
        return top + plotHeight * (1 - value / axisTop)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{width / 2:g}" y="20" text-anchor="middle" font-size="15" '
           f'font-weight="bold">GET / through the tunnel: requests/s</text>']
    if subtitle:
        out.append(f'<text x="{width / 2:g}" y="38" text-anchor="middle" fill="#555555">'
                   f'{escape(subtitle)}</text>')
    tick = 0.0
    while tick <= axisTop + step / 1000:
        ty = y(tick)
        out.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{left + plotWidth}" y2="{ty:.1f}" '
                   f'stroke="#dddddd"/>')
        out.append(f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">{tick:,.0f}</text>')
        tick += step
    groupWidth = plotWidth / len(CONNECTION_COUNTS)
    barWidth = groupWidth * 0.32
    for index, count in enumerate(CONNECTION_COUNTS):
        groupLeft = left + index * groupWidth
        firstBar = groupLeft + (groupWidth - barWidth * len(CHART_SERIES)) / 2
        for position, (target, _, colour) in enumerate(CHART_SERIES):
            value = values.get(count, {}).get(target)
            x = firstBar + position * barWidth
            if value is None:
                out.append(f'<text x="{x + barWidth / 2:.1f}" y="{y(0) - 4:.1f}" '
                           f'text-anchor="middle">-</text>')
                continue
            out.append(f'<rect x="{x + 1:.1f}" y="{y(value):.1f}" width="{barWidth - 2:.1f}" '
                       f'height="{y(0) - y(value):.1f}" fill="{colour}"/>')
            out.append(f'<text x="{x + barWidth / 2:.1f}" y="{y(value) - 4:.1f}" '
                       f'text-anchor="middle">{value:,.0f}</text>')
        out.append(f'<text x="{groupLeft + groupWidth / 2:.1f}" y="{top + plotHeight + 18}" '
                   f'text-anchor="middle">{count}</text>')
    out.append(f'<line x1="{left}" y1="{top + plotHeight}" x2="{left + plotWidth}" '
               f'y2="{top + plotHeight}" stroke="#000000"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plotHeight}" '
               f'stroke="#000000"/>')
    out.append(f'<text x="{left + plotWidth / 2:g}" y="{height - 14}" text-anchor="middle">'
               f'keep-alive connections (wrk)</text>')
    out.append(f'<text x="16" y="{top + plotHeight / 2:g}" text-anchor="middle" '
               f'transform="rotate(-90 16 {top + plotHeight / 2:g})">requests/s</text>')
    legendX = left + plotWidth - 150
    for position, (_, name, colour) in enumerate(CHART_SERIES):
        lx = legendX + position * 75
        out.append(f'<rect x="{lx}" y="{top - 6}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 17}" y="{top + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def chartSubtitle(report: dict[str, Any]) -> str:
    """The chart's second line: the medians' rounds and the measurement date."""
    rounds = report["settings"]["rounds"]
    return (f"median of {rounds} round{'s' if rounds > 1 else ''}, "
            f"{report['machine']['date'][:10]}, {report['machine']['cores']} cores")


def writeChart(summary: list[dict[str, Any]], subtitle: str = "", path: str = CHART) -> None:
    """Write the requests/s chart of C{summary} to C{path}."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(chartSvg(summary, subtitle))


# -- the documentation --------------------------------------------------------------


DOC_METHOD = """\
``bench/tunnel_bench.py`` runs our tunnel (``twistd tunnel-server`` and
``twistd tunnel-client``) and the Go implementation (``tunnelpeer server``
and ``tunnelpeer client`` from ``tunnel/test/go/tunnelpeer``) in front of
the Go origin (``tunnel/test/go/origin``), each as its own process on
127.0.0.1, and measures them in the same run, alternating: every point is
measured on each target in turn, the two tunnels swapping places each
round. ``origin`` is the same load straight at the origin, the ceiling.

GET /
  wrk (one thread, ``--latency``) on ``GET /``, whose answer is 18 bytes,
  with 1, 32 and 256 keep-alive connections, {seconds:g} s per point after
  a warm-up: requests/s, p50 and p99 latency.
CPU s/10k req
  The user + system time of the server and of the client process
  (``/proc/PID/stat``) during each wrk run, per 10,000 requests done.
  Start-up and warm-up are left out.
100 MiB transfers
  ``curl`` downloading ``/bytes?n=104857600``, and uploading a 100 MiB file
  with ``-T`` (a streamed ``PUT /sha256``, without ``Expect``) whose digest
  the origin's answer must match; curl's total time, and the CPU time of the
  server and client during the transfer.
Idle WebSockets
  On a fresh server and client: {connections:,} WebSocket connections to
  ``/ws`` opened through the tunnel ({concurrency} handshakes in flight) and held
  idle; the ``VmRSS`` of both processes {settle:g} s after a warm-up of 20
  connections and {settle:g} s after the last handshake, and the growth per
  connection. Every connection must still echo a frame afterwards.

The Go reference is not handicapped. ``tunnelpeer server`` pairs streams
with requests first in, first out, as koding/tunnel's server does, with no
lock around the round trip of a control message: any number of requests of
one client wait for their streams at once (``test_client_interop``'s
``test_concurrentRequestsGetTheirOwnAnswers`` sends 50 at a time through
it). It was measured against a build of koding/tunnel's own ``Server`` and
``Client`` (from its source, on the same Debian Go and hashicorp/yamux,
kept outside this repository) in one quick round on the same 2-core
machine: requests/s at 32 connections 6,273 for ``tunnelpeer`` against
4,406 for koding/tunnel, at 256 connections 6,278 against 4,638; median
latency at 1 connection 0.51 ms against 0.54 ms; server CPU per 10k
requests at 32 connections 0.96 s against 1.35 s. koding/tunnel was ahead
on the 100 MiB download (0.19 s against 0.22 s) and opened WebSockets
faster (2,041 against 1,486 a second); on every requests/s, latency and
CPU row the reference is at least as fast as the implementation it stands
for.

Figures are medians of {rounds}. The targets are the project's:
ours / Go at least 1.5x for requests/s at 32 and 256 connections (below
0.5x is a defect), at most 1.0x for the median latency at 1 connection and
for the CPU time per request of server and client together at 32
connections, at most 1.0x for the 100 MiB download (1.5x for the upload),
and at most 0.1x for the memory per idle connection of both processes.

Running the tunnel benchmark
~~~~~~~~~~~~~~~~~~~~~~~~~~~~

::

    python bench/tunnel_bench.py            # 3 rounds, 5 s per point, 10,000 WebSockets
    python bench/tunnel_bench.py --quick    # 1 round, 2 s per point, 1,000 WebSockets
    python bench/profile_tunnel.py          # our server and client under cProfile
    python bench/profile_tunnel.py --tool py-spy   # sampled instead (pip install py-spy)

It needs ``wrk``, ``curl`` and the Go toolchain with the Debian packages the
Go peers use (see ``tunnel/test/go/README.rst``). Results are written as JSON
to ``bench/results/``, and this section is rewritten (``--no-doc`` leaves it
alone).
"""


def docSection(report: dict[str, Any], header: list[str], rows: list[list[str]]) -> str:
    """The "Tunnel benchmark" section of the benchmarks document."""
    settings = report["settings"]
    info = report["machine"]
    title = f"{SECTION_TITLE}\n{'-' * len(SECTION_TITLE)}\n\n"
    rounds = f"{settings['rounds']} round{'s' if settings['rounds'] > 1 else ''}"
    method = DOC_METHOD.format(seconds=settings["seconds"],
                               connections=settings["idle_connections"],
                               concurrency=OPEN_CONCURRENCY, settle=SETTLE_SECONDS,
                               rounds=rounds)
    go = re.search(r"go(\d[\d.]*)", info["go"] or "")
    measured = textwrap.fill(
        f"Measured on {info['date'][:10]}: {info['cpu']}, {info['cores']} cores, Linux "
        f"{info['kernel']}, CPython {info['python']}, Twisted {info['twisted']}, "
        f"Go {go.group(1) if go else 'unknown'}, {report['wrk']}; our code at "
        f"{report['revision']}. {rounds}, {settings['seconds']:g} s per wrk point, "
        f"{settings['idle_connections']:,} idle WebSockets"
        f"{' (--quick)' if settings['quick'] else ''}; the whole run took "
        f"{report['wall_seconds']:.0f} s.", width=76)
    heading = "Tunnel benchmark results"
    results = f"{heading}\n{'~' * len(heading)}\n\n{measured}\n\n"
    counts = ", ".join(map(str, CONNECTION_COUNTS))
    image = (f".. image:: {os.path.basename(CHART)}\n"
             f"   :alt: GET / requests/s, ours and Go, at {counts} connections\n")
    return title + method + "\n" + results + rstTable(header, rows) + "\n\n" + image


def writeDoc(section: str, path: str = DOC, title: str = SECTION_TITLE) -> None:
    """
    Put C{section} in the benchmarks document in place of an earlier
    section called C{title}, or at its end; other sections stay as they are.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    heading = re.compile(rf"(?m)^{re.escape(title)}\n-+\n")
    found = heading.search(text)
    if found is None:
        text = text.rstrip("\n") + "\n\n\n" + section
    else:
        following = re.compile(r"(?m)^[^\n]+\n-{3,}\n").search(text, found.end())
        end = len(text) if following is None else following.start()
        rest = text[end:]
        text = text[:found.start()] + section + ("\n\n" + rest if rest else "")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


# -- main ---------------------------------------------------------------------------


def saveResults(report: dict[str, Any], name: str) -> str:
    """Write C{report} as JSON to C{bench/results/NAME-TIMESTAMP.json}; return the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS_DIR, f"{name}-{stamp}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return path


def sourceRevision() -> str:
    """The commit the code under test is at, and whether C{tunnel/} has changes on top."""
    def git(*arguments: str) -> str:
        completed = subprocess.run(["git", *arguments], capture_output=True, text=True, cwd=ROOT)
        return completed.stdout.strip() if completed.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown revision"
    changed = git("status", "--porcelain", "--", "tunnel", "twisted")
    return f"commit {commit}{' with uncommitted changes' if changed else ''}"


def wrkVersion() -> str:
    """wrk's version, as it prints it."""
    completed = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", completed.stdout + completed.stderr)
    return f"wrk {match.group(1)}" if match else "wrk"


def missingTools() -> list[str]:
    """What the benchmark needs and cannot find, as advice for people."""
    problems = []
    if shutil.which("wrk") is None:
        problems.append("wrk is not installed: apt-get install wrk")
    if shutil.which("curl") is None:
        problems.append("curl is not installed: apt-get install curl")
    reason = goAvailable()
    if reason is not None:
        problems.append(f"the Go peers cannot be built: {reason}")
    return problems


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="End-to-end tunnel benchmark: ours against the Go implementation")
    parser.add_argument("--quick", action="store_true",
                        help="one round, 2 s per wrk point, 1,000 idle WebSockets")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk point (default 5, quick 2)")
    parser.add_argument("--connections", type=int,
                        help="idle WebSockets (default 10000, quick 1000)")
    parser.add_argument("--no-doc", action="store_true",
                        help=f"do not rewrite the section of {os.path.relpath(DOC, ROOT)}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    options = parseArguments(sys.argv[1:] if argv is None else argv)
    problems = missingTools()
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 2
    settings = Settings(
        rounds=options.rounds or (1 if options.quick else 3),
        seconds=options.seconds or (2 if options.quick else 5),
        warmup=1,
        idleConnections=options.connections or (1000 if options.quick else 10_000),
    )
    fitting = raiseFileLimit(settings.idleConnections)
    if fitting < settings.idleConnections:
        print(f"the open file limit allows {fitting} idle WebSockets only", file=sys.stderr)
        settings.idleConnections = fitting

    started = time.monotonic()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tunnel-bench-") as workDir:
        launcher = Launcher(workDir, buildGoPeer("origin"), buildGoPeer("tunnelpeer"))
        try:
            uploadFile = makeUploadFile(workDir, settings.transferSize)
            _, address = launcher.origin()
            origin = Target("origin", int(address.rpartition(":")[2]))
            # The origin computes its byte pattern on first use: not on our clock.
            download(origin, settings.transferSize)
            for roundIndex in range(settings.rounds):
                records += runRound(launcher, origin, settings, roundIndex, uploadFile)
        finally:
            launcher.close()

    summary = summarize(records)
    header, rows = tableCells(summary)
    report = {
        "machine": machine(),
        "wrk": wrkVersion(),
        "revision": sourceRevision(),
        "settings": {"quick": options.quick, "rounds": settings.rounds,
                     "seconds": settings.seconds, "warmup": settings.warmup,
                     "idle_connections": settings.idleConnections,
                     "transfer_bytes": settings.transferSize,
                     "connection_counts": list(CONNECTION_COUNTS)},
        "summary": summary,
        "records": records,
        "wall_seconds": time.monotonic() - started,
    }
    path = saveResults(report, "tunnel")
    print()
    print(textTable(header, rows))
    print(f"\nresults: {path}  ({report['wall_seconds']:.0f} s)")
    if not options.no_doc:
        writeDoc(docSection(report, header, rows))
        writeChart(summary, chartSubtitle(report))
        print(f"written to {os.path.relpath(DOC, ROOT)} and {os.path.relpath(CHART, ROOT)}")
    failed = [r for r in records if not r.get("ok", True) or r.get("errors")]
    for record in failed:
        print(f"problem: round {record['round']} {record['target']} {record['kind']}",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
