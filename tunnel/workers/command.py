"""
How worker C{i} of C{--workers N} is started: the same Python running
L{tunnel.workers.worker} with the server's own arguments, as they were
given, and after them what is worker C{i}'s own:

  - C{--workers 1}: it is a worker, not a supervisor (the last
    C{--workers} wins, even over a configuration file's);
  - C{--node-name NAME-wI}, NAME being C{--node-name} or the supervisor's
    default name (its host's name and its process ID);
  - C{--cluster-listen}, C{--cluster-address} and C{--metrics} with their
    port moved up by C{i} (port 0, any free port, stays 0): the workers
    share one machine, and cannot listen on one port.

The listeners of C{--listen}, then those of C{--tcp}, in their order, are
the worker's file descriptors from L{FIRST_LISTENER} on.
"""

from __future__ import annotations

import os
import site
import sys
from typing import Any, Mapping

import tunnel
from tunnel.options import withPortOffset

#: The worker's first file descriptor of an inherited listener.
FIRST_LISTENER = 3

#: The module a worker runs.
WORKER_MODULE = "tunnel.workers.worker"


def sharedListeners(options: Mapping[str, Any]) -> list[str]:
    """
    The server endpoint descriptions the workers share the listeners of,
    in the order of their file descriptors: C{--listen}, then C{--tcp}.
    """
    return [*options["listen"], *(description for description, _ in options["tcp"])]


def workerArguments(options: Mapping[str, Any], index: int) -> list[str]:
    """The server's arguments for worker C{index} (see the module's description)."""
    cluster = options["cluster"]
    own = [
        "--workers", "1",
        "--node-name", f"{cluster.name}-w{index}",
        "--cluster-listen", withPortOffset(cluster.listen, index),
    ]
    if cluster.address is not None:
        host, _, port = cluster.address.rpartition(":")
        own += ["--cluster-address", f"{host}:{int(port) + index}"]
    if options["metrics"]:
        own += ["--metrics", withPortOffset(options["metrics"], index)]
    arguments = list(options["arguments"])
    # After "--" come positional arguments (the server takes none).
    end = arguments.index("--") if "--" in arguments else len(arguments)
    return [*arguments[:end], *own, *arguments[end:]]


def workerCommand(options: Mapping[str, Any], index: int) -> list[str]:
    """The command line of worker C{index}: this Python, L{WORKER_MODULE}, its arguments."""
    return [
        sys.executable,
        "-m",
        WORKER_MODULE,
        "--listeners",
        str(len(sharedListeners(options))),
        *workerArguments(options, index),
    ]


def workerEnvironment(environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    The environment of a worker: this process's (or C{environment}), with
    the directory this C{tunnel} package was imported from first on
    C{PYTHONPATH} unless it is a site directory, so that the worker runs
    the same code wherever it runs from.
    """
    env = dict(os.environ if environment is None else environment)
    root = os.path.dirname(os.path.dirname(os.path.abspath(tunnel.__file__)))
    sites = {
        os.path.abspath(path) for path in [*site.getsitepackages(), site.getusersitepackages()]
    }
    paths = [path for path in env.get("PYTHONPATH", "").split(os.pathsep) if path]
    if root not in sites and root not in (os.path.abspath(path) for path in paths):
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env
