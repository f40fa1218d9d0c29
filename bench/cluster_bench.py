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

And each round, on fresh processes:

    4. one server with --workers 1 and with --workers 2 behind one port,
       four clients (four hosts), and four wrk at 8 connections each, one
       per host, at once: the requests/s of them all.

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
    parseWrk,
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


def get(port: int, timeout: float = 2.0, host: str = HOST) -> int:
    """The status of one GET / for C{host} through C{port}, or 0 if none came."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/", headers={"Host": host})
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


WORKER_HOSTS = 4


def treeCpuSeconds(pid: int) -> float:
    """User + system CPU seconds of a process and of its children, so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(child) for child in f.read().split()]
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(treeCpuSeconds(child) for child in children)


def workersRound(launcher: Launcher, workDir: str, origin: str, workers: int,
                 seconds: int) -> dict[str, Any]:
    """Scenario 4: requests/s of one server with C{workers} workers."""
    cluster = Cluster(launcher, workDir)
    try:
        hosts = [(f"w{index}.localhost", f"{IDENTIFIER}-w{index}") for index in range(WORKER_HOSTS)]
        words = [w for host, identifier in hosts for w in ("--host", f"{host}={identifier}")]
        server = launcher.spawn(f"workers-{workers}", twistdCommand() + TWISTD + [
            "tunnel-server", "--workers", str(workers), "--listen", "tcp:0:interface=127.0.0.1",
            *words, "--max-connections-per-source", "0",
            "--redis", f"redis://127.0.0.1:{cluster.redisPort}/0",
            "--cluster-secret-file", cluster.secret, "--node-name", "bench",
            "--cluster-listen", "tcp:0:interface=127.0.0.1", "--lease", "3"])
        pattern = (r"TunnelSite starting on (\d+)" if workers == 1
                   else rf"Listening on 127\.0\.0\.1 port (\d+) for {workers} workers")
        port = int(server.waitFor(pattern).group(1))
        for index in range(workers if workers > 1 else 0):
            server.waitFor(rf"Worker {index} serves")
        clients = []
        for host, identifier in hosts:
            client = launcher.spawn("client", twistdCommand() + TWISTD + [
                "tunnel-client", "--server", f"127.0.0.1:{port}", "--identifier", identifier,
                "--local", origin])
            client.waitFor(r"tunnel to \S+ is up")
            clients.append(client)
        for host, _ in hosts:
            deadline = time.monotonic() + 30
            while get(port, host=host) != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{host} never answered")
                time.sleep(0.05)
        before = (treeCpuSeconds(server.pid), sum(c.cpuSeconds() for c in clients))
        loads = [
            subprocess.Popen(
                ["wrk", "-t", "1", "-c", "8", "-d", f"{seconds}s", "--latency",
                 "-H", f"Host: {host}", f"http://127.0.0.1:{port}/"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for host, _ in hosts
        ]
        results = [parseWrk(load.communicate()[0]) for load in loads]
        spent = (treeCpuSeconds(server.pid) - before[0],
                 sum(c.cpuSeconds() for c in clients) - before[1])
        done = sum(r["requests"] for r in results)
        return {"kind": f"workers-{workers}", "target": f"workers-{workers}",
                "rps": sum(r["rps"] for r in results),
                "errors": sum(r["errors"] for r in results),
                "server_cpu_share": spent[0] / seconds, "clients_cpu_share": spent[1] / seconds,
                "requests": done}
    finally:
        launcher.close()


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


def workersRows(records: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """The table of scenario 4."""
    rows = []
    for label, key, digits in (("GET requests/s, 4 hosts x 8 connections", "rps", 0),
                               ("server CPU, cores busy", "server_cpu_share", 2),
                               ("clients' CPU, cores busy", "clients_cpu_share", 2)):
        values = {n: median([r[key] for r in records if r["kind"] == f"workers-{n}"])
                  for n in (1, 2)}
        rows.append([label, f"{values[1]:.{digits}f}", f"{values[2]:.{digits}f}",
                     f"{values[2] / values[1]:.2f}"])
    return ["measure", "1 worker", "2 workers", "2 / 1"], rows


def workersVerdict(report: dict[str, Any]) -> str:
    """What the figures of scenario 4 say, in words."""
    records = report["records"]

    def share(n: int, key: str) -> float:
        return median([r[key] for r in records if r["kind"] == f"workers-{n}"])

    one, two = (median([r["rps"] for r in records if r["kind"] == f"workers-{n}"]) for n in (1, 2))
    server, clients = share(1, "server_cpu_share"), share(1, "clients_cpu_share")
    return textwrap.fill(
        f"A second worker gives {two / one:.2f} times the requests/s of one. On this "
        f"machine the server is not what limits: with one worker it keeps {server:.2f} "
        f"of the two cores busy, the four clients {clients:.2f}, and the Go origin and "
        "wrk the rest, so a second worker finds no idle core to run on. Workers pay "
        "where the server's process is what fills a core, and the machine has cores "
        "to spare for the others.",
        width=76,
    ) + "\n"


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
            target: median([r[key] for r in records
                            if r.get("target") == target and r["kind"] == kind])
            for target in KINDS
        }
        ratio = values["forwarded"] / values["local"]
        if kind == "get-c1" and key == "p50_ms":
            met = ratio <= 1.3
        rows.append([label, f"{values['local']:.{digits}f}", f"{values['forwarded']:.{digits}f}",
                     f"{ratio:.2f}"])
    return header, rows, met


def docSection(report: dict[str, Any], header: list[str], rows: list[list[str]]) -> str:
    """The "Cluster" section of the benchmarks document."""
    holder, node = report["killed_holder"], report["killed_node"]
    info = report["machine"]
    title = f"{SECTION_TITLE}\n{'-' * len(SECTION_TITLE)}\n\n"
    measured = textwrap.fill(
        f"Measured by ``bench/cluster_bench.py`` on {info['date'][:10]}: {info['cpu']}, "
        f"{info['cores']} cores, Linux {info['kernel']}, CPython {info['python']}, Twisted "
        f"{info['twisted']}, {report['wrk']}; our code at {report['revision']}. Medians of "
        f"{report['rounds']} rounds of {report['seconds']} s, fresh processes each round; "
        f"the run took {report['wall_seconds']:.0f} s.", width=76)
    return (title + measured + textwrap.dedent("""

        Two nodes share one ``redis-server``; the Go origin is behind a client
        connected to node 1. *Local* goes through node 1; *forwarded* through
        node 2, which hands each of wrk's connections over to node 1 (its first
        request has no body, see :doc:`cluster`). The target: a forwarded request
        takes at most 1.3 times the latency of a local one.

        """) + rstTable(header, rows) + textwrap.dedent("""

        One server with ``--workers 1`` and with ``--workers 2`` behind one
        port, four clients of four hosts, and four wrk at once, one per host,
        8 connections each (the clients, the origin and wrk share the two
        cores with the workers):

        """) + rstTable(*workersRows(report["records"])) + "\n\n" + workersVerdict(report)
        + "\n" + textwrap.fill(
            "A client with sessions on two nodes, GETs through a third one after the "
            "other while one of the two is killed with SIGKILL: "
            f"{holder['failed']} of {holder['requests']} failed; the longest time between "
            f"two answers was {holder['longest_gap_ms']:.0f} ms.", width=76)
        + "\n\n" + textwrap.fill(
            "A client that reaches the nodes through a TCP balancer, the node it was on "
            "killed with SIGKILL: its host answered again through the others "
            f"{node['recovery_s']:.2f} s later (the client sees its connection end, backs "
            "off 0.25 s at first, and connects through the balancer to a live node).",
            width=76) + "\n")


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
                for workers in ((1, 2) if roundIndex % 2 == 0 else (2, 1)):
                    _, origin = launcher.origin()
                    result = workersRound(launcher, workDir, origin, workers, options.seconds)
                    result["round"] = roundIndex + 1
                    records.append(result)
                    print(f"round {roundIndex + 1}  {workers} worker(s), 4 hosts x 8 connections "
                          f"{result['rps']:8.0f} req/s  errors {result['errors']}  server "
                          f"{result['server_cpu_share']:.2f} cores, clients "
                          f"{result['clients_cpu_share']:.2f}", flush=True)
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
    print()
    print(textTable(*workersRows(records)))
    print(f"\nresults: {path}  ({report['wall_seconds']:.0f} s)")
    if not options.no_doc:
        writeDoc(docSection(report, header, rows), DOC, SECTION_TITLE)
        print(f"written to {os.path.relpath(DOC)}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
