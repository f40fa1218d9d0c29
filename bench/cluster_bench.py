"""
What a cluster costs and how fast it heals: two or three of our server
nodes (twistd) sharing one real C{redis-server}, the Go origin behind a
client connected to node 1 only.

Each round, on fresh processes, alternating which goes first:

    1. GET / with wrk at 1 and 32 connections, through node 1, which holds
       the client's session (C{local}), and through node 2, which forwards
       every request to node 1 over their link (C{forwarded}): requests/s,
       p50 and p99 latency, and both nodes' CPU seconds per 10,000
       requests.

Then, once:

    2. a client with sessions on nodes 1 and 2, and GETs through node 3
       one after the other while node 1 is killed with SIGKILL: how many
       failed, and the longest time between two answers;
    3. a client that reaches the nodes through a TCP balancer (it lands on
       one, a dead one is skipped), the node it landed on killed with
       SIGKILL: the time until its host answers again through the others
       (the client notices the loss, backs off, reconnects).

Medians over the rounds are printed with the forwarded / local ratios and
written to C{doc/benchmarks.rst} (section "Cluster"), and with every
measurement to C{bench/results/} as JSON. The target: a forwarded request
takes at most 1.3 times the latency of a local one (p50, one connection).

Usage::

    python bench/cluster_bench.py [--rounds N] [--seconds S] [--no-doc]
"""

from __future__ import annotations

import argparse
import http.client
import os
import select
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Any

from tunnel_bench import (
    DOC,
    HOST,
    IDENTIFIER,
    Child,
    Launcher,
    Target,
    median,
    missingTools,
    rstTable,
    runWrk,
    saveResults,
    sourceRevision,
    textTable,
    wrkVersion,
    writeDoc,
)
from yamux_bench import machine

from tunnel.test.gopeer import buildGoPeer
from tunnel.test.twistdprocess import twistdCommand

SECTION_TITLE = "Cluster"
KINDS = ("local", "forwarded")
SECRET = "the cluster secret of the benchmark"
TWISTD = ["--nodaemon", "--logfile=-", "--pidfile="]


def freePort() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """A Redis and the nodes of one measurement, started by a L{Launcher}."""

    def __init__(self, launcher: Launcher, workDir: str) -> None:
        self.launcher = launcher
        self.secret = os.path.join(workDir, "secret")
        with open(self.secret, "w") as f:
            f.write(SECRET + "\n")
        self.redisPort = freePort()
        redis = launcher.spawn("redis", [
            "redis-server", "--port", str(self.redisPort), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", workDir])
        redis.waitFor(r"Ready to accept connections")
        self.nodes: dict[str, tuple[Child, int]] = {}

    def node(self, name: str) -> int:
        """Start node C{name}; return its public port."""
        child = self.launcher.spawn(f"node-{name}", twistdCommand() + TWISTD + [
            "tunnel-server", "--listen", "tcp:0:interface=127.0.0.1",
            "--host", f"{HOST}={IDENTIFIER}", "--max-connections-per-source", "0",
            "--redis", f"redis://127.0.0.1:{self.redisPort}/0",
            "--cluster-secret-file", self.secret, "--node-name", name,
            "--cluster-listen", "tcp:0:interface=127.0.0.1", "--lease", "3"])
        port = int(child.waitFor(r"TunnelSite starting on (\d+)").group(1))
        child.waitFor(r"Joined the shared configuration")
        self.nodes[name] = (child, port)
        return port

    def client(self, origin: str, *servers: str) -> Child:
        """A client of the origin with a session to each of C{servers} (HOST:PORT)."""
        words = [word for server in servers for word in ("--server", server)]
        child = self.launcher.spawn("client", twistdCommand() + TWISTD + [
            "tunnel-client", *words, "--identifier", IDENTIFIER, "--local", origin])
        for _ in servers:
            child.waitFor(r"tunnel to \S+ is up")
        return child


def get(port: int, timeout: float = 2.0) -> int:
    """The status of one GET / for the host through C{port}, or 0 if none came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/", headers={"Host": HOST})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def waitForAnswer(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while get(port) != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer through port {port} within {timeout} s")
        time.sleep(0.05)


class Balancer:
    """
    A TCP balancer in a thread: each connection goes to the first backend
    (in turn) that accepts it, as a load balancer in front of the nodes.
    """

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self._next = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            public, _ = self._listener.accept()
            threading.Thread(target=self._serve, args=(public,), daemon=True).start()

    def _serve(self, public: socket.socket) -> None:
        for attempt in range(len(self.backends)):
            port = self.backends[(self._next + attempt) % len(self.backends)]
            try:
                backend = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            self._next = (self._next + attempt + 1) % len(self.backends)
            break
        else:
            public.close()
            return
        sockets = [public, backend]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [])
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (backend if source is public else public).sendall(data)
        except OSError:
            return
        finally:
            public.close()
            backend.close()


def runRound(launcher: Launcher, workDir: str, origin: str, roundIndex: int,
             seconds: int) -> list[dict[str, Any]]:
    """Measure a local and a forwarded request path on fresh processes."""
    records = []
    cluster = Cluster(launcher, workDir)
    try:
        ports = {"local": cluster.node("n1"), "forwarded": cluster.node("n2")}
        cluster.client(origin, f"127.0.0.1:{ports['local']}")
        waitForAnswer(ports["forwarded"])
        processes = {"node1": cluster.nodes["n1"][0], "node2": cluster.nodes["n2"][0]}
        order = KINDS if roundIndex % 2 == 0 else tuple(reversed(KINDS))
        for kind in order:
            target = Target(kind, ports[kind], processes)
            runWrk(target, 32, 1)
            for connections in (1, 32):
                result = runWrk(target, connections, seconds)
                result.update(round=roundIndex + 1, target=kind, kind=f"get-c{connections}")
                records.append(result)
                print(f"round {roundIndex + 1}  GET c={connections:<3} {kind:<9} "
                      f"{result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.3f} ms  "
                      f"p99 {result['p99_ms']:6.2f} ms  errors {result['errors']}", flush=True)
    finally:
        launcher.close()
    return records


def killedHolder(launcher: Launcher, workDir: str, origin: str) -> dict[str, Any]:
    """Scenario 2: a client on two nodes, one of them killed; GETs through a third."""
    cluster = Cluster(launcher, workDir)
    try:
        one, two, three = (cluster.node(name) for name in ("n1", "n2", "n3"))
        cluster.client(origin, f"127.0.0.1:{one}", f"127.0.0.1:{two}")
        waitForAnswer(three)
        statuses: list[tuple[float, int]] = []
        started = time.monotonic()
        killedAt = None
        while time.monotonic() - started < 8:
            if killedAt is None and time.monotonic() - started > 2:
                cluster.nodes["n1"][0].process.kill()
                killedAt = time.monotonic()
            statuses.append((time.monotonic(), get(three)))
        answered = [at for at, status in statuses if status == 200]
        gaps = [b - a for a, b in zip(answered, answered[1:])]
        return {
            "kind": "killed-holder",
            "requests": len(statuses),
            "failed": sum(1 for _, status in statuses if status != 200),
            "longest_gap_ms": max(gaps) * 1000 if gaps else float("nan"),
        }
    finally:
        launcher.close()


def killedNode(launcher: Launcher, workDir: str, origin: str) -> dict[str, Any]:
    """Scenario 3: a client behind a balancer; the node it is on killed."""
    cluster = Cluster(launcher, workDir)
    try:
        ports = {name: cluster.node(name) for name in ("n1", "n2", "n3")}
        balancer = Balancer(list(ports.values()))
        cluster.client(origin, f"127.0.0.1:{balancer.port}")
        for port in ports.values():
            waitForAnswer(port)
        holder = next(name for name in ports if _holds(cluster, name))
        survivor = next(port for name, port in ports.items() if name != holder)
        cluster.nodes[holder][0].process.kill()
        killedAt = time.monotonic()
        while get(survivor, timeout=1.0) != 200:
            time.sleep(0.01)
        return {"kind": "killed-node", "recovery_s": time.monotonic() - killedAt,
                "killed": holder}
    finally:
        launcher.close()


def _holds(cluster: Cluster, name: str) -> bool:
    """Whether node C{name} logged the client's session."""
    return "is connected from" in cluster.nodes[name][0].output()


def summarize(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]], bool]:
    header = ["measure", "local", "forwarded", "forwarded / local"]
    rows, met = [], True
    for label, kind, key, digits in (
        ("GET p50 ms, 1 connection", "get-c1", "p50_ms", 3),
        ("GET p99 ms, 1 connection", "get-c1", "p99_ms", 3),
        ("GET requests/s, 1 connection", "get-c1", "rps", 0),
        ("GET requests/s, 32 connections", "get-c32", "rps", 0),
    ):
        values = {
            target: median([r[key] for r in records if r["target"] == target and r["kind"] == kind])
            for target in KINDS
        }
        ratio = values["forwarded"] / values["local"]
        if kind == "get-c1" and key == "p50_ms":
            met = ratio <= 1.3
        rows.append([label, f"{values['local']:.{digits}f}", f"{values['forwarded']:.{digits}f}",
                     f"{ratio:.2f}"])
    return header, rows, met


def docSection(report: dict[str, Any], header: list[str], rows: list[list[str]]) -> str:
    holder, node = report["killed_holder"], report["killed_node"]
    return textwrap.dedent(f"""\
        Measured by ``bench/cluster_bench.py`` on {report['machine']} with
        {report['wrk']}, revision {report['revision']}: medians of
        {report['rounds']} rounds of {report['seconds']} s, fresh processes each
        round, two nodes sharing one ``redis-server``, the Go origin behind a
        client connected to node 1. *Local* goes through node 1; *forwarded*
        through node 2, which forwards every request to node 1 over their link.
        The target: a forwarded request takes at most 1.3 times the latency of a
        local one.

        """) + rstTable(header, rows) + textwrap.dedent(f"""

        A client with sessions on two nodes, GETs through a third one after the
        other while one of the two is killed with SIGKILL: {holder['failed']} of
        {holder['requests']} failed; the longest time between two answers was
        {holder['longest_gap_ms']:.0f} ms.

        A client that reaches the nodes through a TCP balancer, the node it was
        on killed with SIGKILL: its host answered again through the others
        {node['recovery_s']:.2f} s later (the client sees its connection end,
        backs off 0.25 s at first, and connects through the balancer to a live
        node).
        """)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="What a cluster costs and how fast it heals")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    problems = missingTools()
    if subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0:
        problems.append("redis-server is missing (Debian's redis-server package)")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as workDir:
        launcher = Launcher(workDir, buildGoPeer("origin"), "")
        try:
            _, origin = launcher.origin()
            for roundIndex in range(options.rounds):
                records += runRound(launcher, workDir, origin, roundIndex, options.seconds)
                _, origin = launcher.origin()
            holder = killedHolder(launcher, workDir, origin)
            print(f"killed holder: {holder}", flush=True)
            _, origin = launcher.origin()
            node = killedNode(launcher, workDir, origin)
            print(f"killed node: {node}", flush=True)
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
        "killed_holder": holder,
        "killed_node": node,
        "wall_seconds": time.monotonic() - started,
    }
    path = saveResults(report, "cluster")
    print()
    print(textTable(header, rows))
    print(f"\nresults: {path}  ({report['wall_seconds']:.0f} s)")
    if not options.no_doc:
        writeDoc(docSection(report, header, rows), DOC, SECTION_TITLE)
        print(f"written to {os.path.relpath(DOC)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
