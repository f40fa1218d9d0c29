"""
Command-line options of C{twistd tunnel-server} and C{twistd tunnel-client}.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable

import attrs
from twisted.python import usage

from tunnel.client import LocalRoutes, PortRanges, TunnelSettings, parseServerAddress
from tunnel.client.endpoint import ServerAddress, everyAddress
from tunnel.client.inspector import DEFAULT_INSPECT
from tunnel.client.local import DEFAULT_MAX_LOCAL_CONNECTIONS
from tunnel.client.statefile import (
    StateFile,
    StateFileError,
    defaultStatePath,
    registrationKey,
)
from tunnel.cluster.handshake import isNodeName
from tunnel.cluster.keys import ClusterKey
from tunnel.cluster.link import hostAndPort
from tunnel.cluster.settings import (
    DEFAULT_CLUSTER_LISTEN,
    DEFAULT_LEASE,
    ClusterSettings,
    defaultNodeName,
    SentinelAddress,
    parseRedisURL,
    readCertificates,
)
from tunnel.cluster.tls import LinkTLS, readLinkTLS
from tunnel.config import withConfig
from tunnel.core.capture import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EXCHANGES,
    DEFAULT_MAX_TOTAL_BYTES,
    CaptureLimits,
)
from tunnel.core.access import AccessRule, parseCredentials, parseNetworks
from tunnel.hostsfile import HostsFileError, parseAssignment, readHostsFile
from tunnel.core.http import normaliseHost
from tunnel.server.accessfile import AccessFileError, readAccessFile
from tunnel.server.accounts import (
    Accounts,
    AccountsFileError,
    readAccountsFile,
    sha256Digest,
)
from tunnel.server.connections import WRITE_TIMEOUT
from tunnel.server.limits import MAX_CONNECTIONS, MAX_CONNECTIONS_PER_SOURCE
from tunnel.workers.sockets import sharingProblem
from tunnel.yamux import SessionConfig

#: The environment variable the client reads its identifier from.
IDENTIFIER_ENVIRONMENT = "TUNNEL_IDENTIFIER"

#: The environment variables the client reads its secrets from.
SECRET_ENVIRONMENT = {"identifier": IDENTIFIER_ENVIRONMENT, "token": "TUNNEL_TOKEN"}

#: The keep-alive options, the same on both sides; the defaults are those of
#: the Go yamux library.
_SESSION_DEFAULTS = SessionConfig()

#: The options of the tunnel session, the same on both sides.
SESSION_PARAMETERS = [
    ["keepalive-interval", None, 30.0,
     "Seconds between the keep-alive pings sent to the other side.", float],
    ["keepalive-timeout", None, 10.0,
     "Seconds a keep-alive ping may go unanswered before the connection is "
     "considered dead and dropped.", float],
    ["write-stall-timeout", None, _SESSION_DEFAULTS.writeStallTimeout,
     "Seconds the other side may read nothing of what is queued for it "
     "before the session is closed.", float],
]

#: The server's option bounding what a client's session holds for it.
SESSION_BUFFER_PARAMETER = [
    "max-session-buffer", None, _SESSION_DEFAULTS.maxSessionBuffer,
    "Bytes a client's session may hold for it while it reads nothing; "
    "beyond them its new requests get 503.", int,
]


# The server endpoint types whose first argument (or C{port=}) is a port.
_PORT_TYPES = frozenset({"tcp", "tcp6", "ssl"})


def serverEndpointDescription(text: str) -> str:
    """
    The server endpoint description of an option's value: a bare port
    (C{8080}) means C{tcp:8080}, anything else is a description already.
    """
    text = text.strip()
    return f"tcp:{text}" if text.isdigit() else text


def endpointPort(description: str) -> int | None:
    """
    The port a server endpoint description listens on: its first argument,
    or C{port=}, for the types that have one (C{tcp}, C{tcp6}, C{ssl});
    L{None} for the others.

    @raise ValueError: if the port is missing or not a number from 0 to
        65535.
    """
    kind, _, arguments = description.partition(":")
    if kind.strip().lower() not in _PORT_TYPES:
        return None
    fields = re.split(r"(?<!\\):", arguments)
    positional = [field for field in fields if "=" not in field]
    named = [field[len("port="):] for field in fields if field.startswith("port=")]
    for port in (positional[:1] or named[:1]):
        if port.isdigit() and int(port) <= 65535:
            return int(port)
    raise ValueError("the port must be a number from 0 to 65535")


def withPortOffset(description: str, offset: int) -> str:
    """
    The server endpoint description C{description} with its port (see
    L{endpointPort}) moved up by C{offset}: C{tcp:9100:interface=::1} by 2
    is C{tcp:9102:interface=::1}. Port 0 (any free port) stays 0, and a
    description without a port stays as it is.

    @raise ValueError: if the port is malformed, or goes past 65535.
    """
    port = endpointPort(description)
    if not port or not offset:
        return description
    if port + offset > 65535:
        raise ValueError(f"port {port} + {offset} is past 65535")
    kind, _, arguments = description.partition(":")
    fields = re.split(r"(?<!\\):", arguments)
    for index, field in enumerate(fields):
        if "=" not in field:
            fields[index] = str(port + offset)
            break
    else:
        for index, field in enumerate(fields):
            if field.startswith("port="):
                fields[index] = f"port={port + offset}"
                break
    return f"{kind}:{':'.join(fields)}"


def checkServerEndpoint(option: str, description: str) -> None:
    """
    Check that a server endpoint description can be used, without listening:
    its type and arguments, and the range of its port.

    @raise usage.UsageError: saying which option and why, on one line.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    try:
        serverFromString(reactor, description)
    except Exception as e:
        raise usage.UsageError(f"{option} {description!r}: {endpointProblem(e)}") from None
    try:
        endpointPort(description)
    except ValueError as e:
        raise usage.UsageError(f"{option} {description!r}: {e}") from None


def checkTunnelEndpoint(option: str, description: str) -> int:
    """
    Check the server endpoint of a TCP tunnel as L{checkServerEndpoint}
    does, and that it has a port: the client routes the tunnel's
    connections by it.

    @return: the port.
    @raise usage.UsageError: saying which option and why, on one line.
    """
    checkServerEndpoint(option, description)
    port = endpointPort(description)
    if port is None:
        raise usage.UsageError(
            f"{option} {description!r}: a TCP tunnel listens on a port (tcp:, tcp6: or "
            "ssl:): the client routes its connections by it, so it needs a port"
        )
    return port


#: The listen backlog of the public endpoints, unless their string gives
#: one: Twisted's default of 50 makes a burst of new public connections
#: wait seconds in the kernel.
LISTEN_BACKLOG = 1024

# The endpoint types that take a backlog argument.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})


def withListenBacklog(description: str) -> str:
    """
    The server endpoint string C{description}, with a C{backlog} of
    L{LISTEN_BACKLOG} if it is of a type that takes one and gives none.
    """
    kind = description.partition(":")[0].strip().lower()
    if kind in _BACKLOG_TYPES and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def sessionConfig(options: usage.Options) -> SessionConfig:
    """
    The yamux settings of the L{SESSION_PARAMETERS} (keep-alive, how long
    the peer may not read) and, if the options have it, of the
    L{SESSION_BUFFER_PARAMETER}.

    @raise usage.UsageError: if one is not positive.
    """
    names = {
        "keepalive-interval": "keepAliveInterval",
        "keepalive-timeout": "keepAliveTimeout",
        "write-stall-timeout": "writeStallTimeout",
        "max-session-buffer": "maxSessionBuffer",
    }
    settings = {}
    for option, setting in names.items():
        if option in options:
            if options[option] <= 0:
                raise usage.UsageError(f"--{option} must be positive")
            settings[setting] = options[option]
    return SessionConfig(**settings)


def endpointProblem(error: Exception) -> str:
    """
    What is wrong with a client endpoint description that Twisted refused
    with C{error}, in words that say what to change.
    """
    from twisted.python.filepath import UnlistableError

    if isinstance(error, UnlistableError):
        return ("trustRoots must name a directory of PEM certificates (for one CA "
                "file, put it alone in a directory)")
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return f"cannot read{where}: {error.strerror or error}"
    return str(error) or type(error).__name__


def readSecretFile(path: str, what: str) -> str:
    """
    Read a secret (an identifier or a token) from the first line of a file.

    @raise usage.UsageError: if the file cannot be read or is empty.
    """
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.readline().strip()
    except OSError as e:
        raise usage.UsageError(f"cannot read {what} file {path}: {e.strerror}") from None
    if not secret:
        raise usage.UsageError(f"{what} file {path} is empty")
    return secret


def _readText(path: str) -> str:
    """The text of a file; L{ValueError} saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None


def _allowing(networks: str) -> AccessRule:
    """The rule of C{--allow}: admit only these networks."""
    return AccessRule(allow=parseNetworks(networks))


def _denying(networks: str) -> AccessRule:
    """The rule of C{--deny}: refuse these networks."""
    return AccessRule(deny=parseNetworks(networks))


def _askingCredentials(path: str) -> AccessRule:
    """The rule of C{--basic-auth}: ask for one of the credentials in this file."""
    return AccessRule(credentials=parseCredentials(_readText(path), path))


class _ConfigurableOptions(usage.Options):
    """Options that can also come from a TOML file (L{tunnel.config})."""

    optParameters = [
        ["config", None, None,
         "Read options from this TOML file: each key an option's long name, a list "
         "for a repeatable option, true for a flag; the command line wins."],
    ]

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse the configuration file's options, then the command line's."""
        arguments = sys.argv[1:] if options is None else options
        super().parseOptions(withConfig(list(arguments), self))


class ServerOptions(_ConfigurableOptions):
    """
    Options of C{twistd tunnel-server}.

    After parsing: C{self["listen"]} lists endpoint strings, C{self["hosts"]}
    maps lower-cased hosts to identifiers (from C{--host} and the hosts
    file; with a hosts file, C{self["commandLineHosts"]} those of C{--host}
    alone), C{self["tcp"]} lists (endpoint string, identifier) pairs,
    C{self["access"]} maps hosts to their L{AccessRule}s, C{self["accounts"]}
    holds the L{Accounts} of C{--accounts-file} (or L{None}),
    C{self["adminToken"]} holds the admin token when C{--admin} is given,
    C{self["yamuxConfig"]} the clients' yamux settings, C{self["cluster"]}
    the L{ClusterSettings} of C{--redis}, or L{None}, and
    C{self["arguments"]} the arguments as they were given (the workers of
    C{--workers} are started with them).
    """

    synopsis = "[options]"
    longdesc = (
        "Run a tunnel server: public HTTP on the --listen endpoints, routed by "
        "virtual host to the tunnel clients whose identifiers the hosts are "
        "bound to. Clients connect to the same endpoints."
    )
    optParameters = [
        ["hosts-file", None, None,
         "A file of HOST=IDENTIFIER lines, so identifiers stay out of the process "
         "list. Hosts registered through the admin API are saved there."],
        ["admin", None, None,
         "Serve the admin API (JSON, bearer token) on this server endpoint, e.g. "
         "tcp:8081:interface=127.0.0.1. Off by default."],
        ["admin-token-file", None, None,
         "The file holding the admin API's bearer token (required with --admin)."],
        ["metrics", None, None,
         "Serve /metrics (Prometheus), /healthz and /readyz, and nothing else, "
         "without a token, on this server endpoint, e.g. "
         "tcp:9100:interface=127.0.0.1, for scrapers and probes on a private "
         "network. Off by default; --admin serves them too (/metrics with its "
         "token)."],
        ["domain", None, None,
         "Let clients with an account's token (see --accounts-file) register hosts "
         "for themselves under this base domain: NAME.DOMAIN for the --subdomain "
         "they ask for, or a random free one. Point a wildcard DNS record at the "
         "server. With --redis, give it to every node: the hosts registered and "
         "the accounts are the cluster's."],
        ["accounts-file", None, None,
         "The file of accounts for --domain: one NAME MAX_HOSTS TOKEN line each. "
         "Registered hosts are saved to --hosts-file, if given. With --redis, the "
         "accounts it adds to the cluster's (all of them, on SIGHUP); optional "
         "there."],
        ["access-file", None, None,
         "Save the access rules set through the admin API in this file, and read "
         "it at start (--allow, --deny and --basic-auth for a host replace its "
         "rule there)."],
        ["access-log", None, None,
         "Log every public request to this file: the combined log format, then "
         'host="HOST" and answer=local (the local service answered) or '
         "answer=tunnel:REASON (the tunnel did: tunnel:no-tunnel, "
         "tunnel:stream-timeout...). None by default."],
        ["stream-timeout", None, 10.0,
         "Seconds to wait for a client to open the stream of a request.", float],
        ["max-failed-connects", None, 10,
         "Tunnel requests with an unknown identifier a source address may make in "
         "a row; after that they get 429 until --failed-connect-window lets it try "
         "again (0: no limit, e.g. behind a reverse proxy).", int],
        ["failed-connect-window", None, 60.0,
         "Seconds in which --max-failed-connects failed attempts are allowed again.",
         float],
        ["response-timeout", None, 60.0,
         "Seconds a local service may keep a request waiting (for its response "
         "head once the request is sent, or reading none of its body) before the "
         "request gets 504 (0: no limit).", float],
        ["max-connections", None, MAX_CONNECTIONS,
         "Public connections open at once (tunnel sessions apart); beyond that a "
         "new one gets 503 at once. Lowered to fit the open-file limit (ulimit -n) "
         "if need be (0: no limit).", int],
        ["max-connections-per-source", None, MAX_CONNECTIONS_PER_SOURCE,
         "Connections one source address (an IPv6 /64) may have open at once, "
         "tunnel sessions included; beyond that a new one gets 503 at once (0: no "
         "limit, e.g. behind a reverse proxy).", int],
        ["write-timeout", None, WRITE_TIMEOUT,
         "Seconds a public connection may leave its send buffer full (its client "
         "reading nothing) before it is cut, and the request behind it with it "
         "(0: no limit; tunnel sessions have --write-stall-timeout instead).", float],
        ["redis", None, None,
         "Be one node of a cluster sharing this Redis: redis://HOST[:PORT][/DB], or "
         "rediss:// for TLS; or the primary Redis Sentinel names, and names again "
         "after a failover: redis+sentinel://HOST[:PORT][,HOST[:PORT]...]/SERVICE[/DB] "
         "(the sentinels, port 26379 by default; rediss+sentinel:// for TLS). A public "
         "request for a client connected to another node is forwarded there. Needs "
         "--cluster-secret-file. Off by default: one process, state in memory."],
        ["redis-password-file", None, None,
         "The file holding Redis's password (AUTH), kept out of the process list."],
        ["redis-sentinel-password-file", None, None,
         "With redis+sentinel://, the file holding the sentinels' own password, if "
         "they have one (their requirepass)."],
        ["redis-ca", None, None,
         "With rediss:// or rediss+sentinel://, check Redis's certificate (and the "
         "sentinels') against the CA certificates in this PEM file instead of the "
         "system's."],
        ["cluster-secret-file", None, None,
         "The file holding the secret every node of the cluster shares (16 bytes at "
         "least): it authenticates the links between nodes and keys what Redis "
         "stores of identifiers, which it never holds in clear."],
        ["cluster-listen", None, DEFAULT_CLUSTER_LISTEN,
         "The server endpoint this node takes the links of the other nodes on."],
        ["cluster-address", None, None,
         "HOST:PORT where the other nodes reach --cluster-listen (default: the "
         "address it listens on)."],
        ["cluster-tls", None, None,
         "Speak TLS on the links between nodes: this PEM file holds this node's "
         "private key and certificate (then any intermediate certificates), which it "
         "presents both to the nodes that dial it and to those it dials. Needs "
         "--cluster-ca. Off by default: plain links."],
        ["cluster-ca", None, None,
         "With --cluster-tls, the PEM file of the authorities that sign the nodes' "
         "certificates: a node dialled must present one valid for the host of its "
         "--cluster-address, and a node dialling one."],
        ["node-name", None, None,
         "This node's name, unique in the cluster (default: HOSTNAME-PID)."],
        ["lease", None, DEFAULT_LEASE,
         "Seconds this node's claims on its clients' sessions outlive its last "
         "renewal in Redis: how long other nodes may forward to it after it died.",
         float],
        ["workers", None, 1,
         "Run this many worker processes sharing the --listen and --tcp listeners, "
         "for as many cores; each is a node of the cluster of --redis, which it "
         "needs (NAME-w0, NAME-w1...; --cluster-listen, --cluster-address and "
         "--metrics ports go up by one per worker). This process supervises them: "
         "it restarts one that dies, passes SIGHUP on, and stops them all.", int],
        *SESSION_PARAMETERS,
        SESSION_BUFFER_PARAMETER,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["hosts"] = {}
        self["tcp"] = []
        self["access"] = {}

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse the options; C{self["arguments"]} keeps them as given, for
        the workers of C{--workers}.
        """
        self["arguments"] = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_listen(self, endpoint: str) -> None:
        """A port or server endpoint for public HTTP and tunnel clients, e.g. 8080, tcp:8080:interface=127.0.0.1 or ssl:443:privateKey=key.pem:certKey=cert.pem (repeatable; default 8080; a listen backlog of 1024 unless it gives one)."""
        self["listen"].append(serverEndpointDescription(endpoint))

    def opt_host(self, assignment: str) -> None:
        """HOST=IDENTIFIER: route the virtual host HOST (or HOST:PORT) to the client with IDENTIFIER (repeatable)."""
        try:
            host, identifier = parseAssignment(assignment, "HOST=IDENTIFIER")
            self["hosts"][normaliseHost(host)] = identifier
        except ValueError as e:
            raise usage.UsageError(f"--host: {e}") from None

    def opt_allow(self, assignment: str) -> None:
        """HOST=NETWORKS: admit to HOST only public requests from these comma-separated networks (CIDR, e.g. 10.0.0.0/8,2001:db8::/32) or addresses; others get 403 (repeatable; adds to HOST's list)."""
        self._addAccess("--allow", assignment, "HOST=NETWORKS", _allowing)

    def opt_deny(self, assignment: str) -> None:
        """HOST=NETWORKS: refuse (403) public requests to HOST from these comma-separated networks or addresses, whatever --allow says (repeatable)."""
        self._addAccess("--deny", assignment, "HOST=NETWORKS", _denying)

    def opt_basic_auth(self, assignment: str) -> None:
        """HOST=FILE: ask public requests to HOST for a user name and password (HTTP basic authentication), one of the USER:PASSWORD lines of FILE (readable by the server only); others get 401 (repeatable)."""
        self._addAccess("--basic-auth", assignment, "HOST=FILE", _askingCredentials)

    def _addAccess(
        self, option: str, assignment: str, form: str, read: Callable[[str], AccessRule]
    ) -> None:
        """
        Add to the rule of the host of C{assignment} (of C{form}) what
        C{read} makes of its value.

        @raise usage.UsageError: naming C{option}, if the host or the value
            is malformed.
        """
        try:
            host, value = parseAssignment(assignment, form)
            name = normaliseHost(host)
            added = read(value)
        except ValueError as e:
            raise usage.UsageError(f"{option}: {e}") from None
        self["access"][name] = self["access"].get(name, AccessRule()).merged(added)

    def opt_tcp(self, assignment: str) -> None:
        """ENDPOINT=IDENTIFIER: listen on ENDPOINT (a port or a server endpoint) and tunnel each connection to the client with IDENTIFIER (repeatable; split at the last '=')."""
        try:
            endpoint, identifier = parseAssignment(assignment, "ENDPOINT=IDENTIFIER", True)
        except ValueError as e:
            raise usage.UsageError(f"--tcp: {e}") from None
        self["tcp"].append((serverEndpointDescription(endpoint), identifier))

    def postOptions(self) -> None:
        """Apply defaults, read the hosts and token files, check consistency."""
        if not self["listen"]:
            self["listen"] = ["tcp:8080"]
        for description in self["listen"]:
            checkServerEndpoint("--listen", description)
        self["listen"] = [withListenBacklog(listen) for listen in self["listen"]]
        for description, _ in self["tcp"]:
            checkTunnelEndpoint("--tcp", description)
        if self["hosts-file"]:
            if not (self["admin"] or self["domain"] or os.path.exists(self["hosts-file"])):
                raise usage.UsageError(
                    f"hosts file {self['hosts-file']} does not exist (it may be missing "
                    "only with --admin or --domain, which create it)"
                )
            try:
                fromFile = readHostsFile(self["hosts-file"])
            except HostsFileError as e:
                raise usage.UsageError(str(e)) from None
            self["commandLineHosts"] = dict(self["hosts"])
            self["hosts"] = {**fromFile, **self["hosts"]}
        if self["stream-timeout"] <= 0:
            raise usage.UsageError("--stream-timeout must be positive")
        if self["max-failed-connects"] < 0:
            raise usage.UsageError("--max-failed-connects must not be negative")
        if self["failed-connect-window"] <= 0:
            raise usage.UsageError("--failed-connect-window must be positive")
        if self["response-timeout"] < 0:
            raise usage.UsageError("--response-timeout must not be negative")
        for name in ("max-connections", "max-connections-per-source", "write-timeout"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} must not be negative")
        self["yamuxConfig"] = sessionConfig(self)
        self["cluster"] = self._readCluster()
        self._readAccounts()
        self._readSavedAccess()
        self["adminToken"] = None
        if self["admin"]:
            if not self["admin-token-file"]:
                raise usage.UsageError("--admin needs --admin-token-file")
            self["admin"] = serverEndpointDescription(self["admin"])
            checkServerEndpoint("--admin", self["admin"])
            self["adminToken"] = readSecretFile(self["admin-token-file"], "admin token")
        elif self["admin-token-file"]:
            raise usage.UsageError("--admin-token-file is only used with --admin")
        if self["metrics"]:
            self["metrics"] = serverEndpointDescription(self["metrics"])
            checkServerEndpoint("--metrics", self["metrics"])
        self._checkWorkers()

    def _checkWorkers(self) -> None:
        """
        Check that C{--workers} can share this server's listeners and be
        nodes of its cluster.
        """
        workers = self["workers"]
        if workers < 1:
            raise usage.UsageError("--workers must be 1 at least")
        if workers == 1:
            return
        if self["cluster"] is None:
            raise usage.UsageError(
                "--workers needs --redis: the workers are nodes of a cluster, and find "
                "each other's clients through its Redis"
            )
        if self["admin"]:
            raise usage.UsageError(
                "--admin is not served with --workers: each worker would change its own "
                "hosts only; give them in --hosts-file and reload it with SIGHUP"
            )
        for option, descriptions in (
            ("--listen", self["listen"]),
            ("--tcp", [description for description, _ in self["tcp"]]),
        ):
            for description in descriptions:
                problem = sharingProblem(description)
                if problem is not None:
                    raise usage.UsageError(f"{option} {description!r}: {problem}")
        last = workers - 1
        cluster = self["cluster"]
        offsets = [("--cluster-listen", cluster.listen)]
        if self["metrics"]:
            offsets.append(("--metrics", self["metrics"]))
        for option, description in offsets:
            if endpointPort(description) is None:
                raise usage.UsageError(
                    f"{option} {description!r}: with --workers it needs a port (tcp:, tcp6: "
                    "or ssl:): worker i listens on the port + i"
                )
            try:
                withPortOffset(description, last)
            except ValueError as e:
                raise usage.UsageError(
                    f"{option} {description!r} for {workers} workers: {e}"
                ) from None
        if cluster.address is not None:
            _, port = hostAndPort(cluster.address)
            if port + last > 65535:
                raise usage.UsageError(
                    f"--cluster-address {cluster.address!r} for {workers} workers: port "
                    f"{port} + {last} is past 65535"
                )
        if not isNodeName(f"{cluster.name}-w{last}"):
            raise usage.UsageError(
                f"--node-name {cluster.name!r}: with -w{last} for the last worker, it is not "
                "1 to 64 letters, digits and ._:-"
            )

    def _readCluster(self) -> ClusterSettings | None:
        """The settings of the cluster this node joins, if C{--redis} says it joins one."""
        alone = ("redis-password-file", "redis-sentinel-password-file", "redis-ca",
                 "cluster-secret-file", "cluster-address", "cluster-tls", "cluster-ca",
                 "node-name")
        if not self["redis"]:
            for name in alone:
                if self[name]:
                    raise usage.UsageError(f"--{name} is only used with --redis")
            return None
        try:
            redis = parseRedisURL(self["redis"])
        except ValueError as e:
            raise usage.UsageError(f"--redis: {e}") from None
        if self["redis-password-file"]:
            password = readSecretFile(self["redis-password-file"], "Redis password")
            redis = attrs.evolve(redis, password=password)
        if self["redis-sentinel-password-file"]:
            if not isinstance(redis, SentinelAddress):
                raise usage.UsageError(
                    "--redis-sentinel-password-file is only used with a redis+sentinel:// "
                    "or rediss+sentinel:// URL"
                )
            password = readSecretFile(self["redis-sentinel-password-file"], "sentinel password")
            redis = attrs.evolve(redis, sentinelPassword=password)
        authorities = None
        if self["redis-ca"]:
            if not redis.tls:
                raise usage.UsageError(
                    "--redis-ca is only used with a rediss:// or rediss+sentinel:// URL"
                )
            try:
                authorities = tuple(readCertificates(self["redis-ca"]))
            except ValueError as e:
                raise usage.UsageError(f"--redis-ca: {e}") from None
        if not self["cluster-secret-file"]:
            raise usage.UsageError("--redis needs --cluster-secret-file")
        secret = readSecretFile(self["cluster-secret-file"], "cluster secret")
        try:
            key = ClusterKey(secret.encode("utf-8"))
        except ValueError as e:
            raise usage.UsageError(f"--cluster-secret-file: {e}") from None
        listen = serverEndpointDescription(self["cluster-listen"])
        checkServerEndpoint("--cluster-listen", listen)
        address = self["cluster-address"]
        if address is not None:
            try:
                hostAndPort(address)
            except ValueError as e:
                raise usage.UsageError(f"--cluster-address: {e}") from None
        name = self["node-name"] or defaultNodeName()
        if not isNodeName(name):
            raise usage.UsageError(
                f"--node-name: {name!r} is not 1 to 64 letters, digits and ._:-"
            )
        if self["lease"] < 1:
            raise usage.UsageError("--lease must be a second at least")
        return ClusterSettings(
            redis, key, name, listen, address, self["lease"], authorities, self._readLinkTLS()
        )

    def _readLinkTLS(self) -> LinkTLS | None:
        """What this node speaks TLS on its links with, if C{--cluster-tls} says it does."""
        if not (self["cluster-tls"] or self["cluster-ca"]):
            return None
        if not self["cluster-ca"]:
            raise usage.UsageError(
                "--cluster-tls needs --cluster-ca: the authorities the other nodes' "
                "certificates are checked against"
            )
        if not self["cluster-tls"]:
            raise usage.UsageError(
                "--cluster-ca is only used with --cluster-tls, this node's certificate and key"
            )
        try:
            authorities = readCertificates(self["cluster-ca"])
        except ValueError as e:
            raise usage.UsageError(f"--cluster-ca: {e}") from None
        try:
            return readLinkTLS(self["cluster-tls"], authorities)
        except ValueError as e:
            raise usage.UsageError(f"--cluster-tls: {e}") from None

    def _readSavedAccess(self) -> None:
        """
        Add the rules of C{--access-file} to C{self["access"]}, under those
        of the command line.
        """
        if not self["access-file"]:
            return
        try:
            saved = readAccessFile(self["access-file"])
        except AccessFileError as e:
            raise usage.UsageError(str(e)) from None
        self["access"] = {**saved, **self["access"]}

    def _readAccounts(self) -> None:
        """
        Check C{--domain} and read C{--accounts-file} into
        C{self["accounts"]}: in a cluster with the digest of its key, and
        empty without a file (the cluster's accounts come to it).
        """
        self["accounts"] = None
        cluster = self["cluster"]
        if self["accounts-file"] and not self["domain"]:
            raise usage.UsageError("--accounts-file is only used with --domain")
        if self["domain"] and not self["accounts-file"] and cluster is None:
            raise usage.UsageError(
                "--domain needs --accounts-file (or --redis, to take the accounts of "
                "its cluster)"
            )
        if not self["domain"]:
            return
        try:
            domain = normaliseHost(self["domain"])
        except ValueError as e:
            raise usage.UsageError(f"--domain: {e}") from None
        if ":" in domain:
            raise usage.UsageError(f"--domain {self['domain']!r}: a domain has no port")
        self["domain"] = domain
        digest = sha256Digest if cluster is None else cluster.key.tokenDigest
        if not self["accounts-file"]:
            self["accounts"] = Accounts(digest=digest)
            return
        try:
            self["accounts"] = readAccountsFile(self["accounts-file"], digest)
        except AccountsFileError as e:
            raise usage.UsageError(str(e)) from None


class ClientOptions(_ConfigurableOptions):
    """
    Options of C{twistd tunnel-client}.

    After parsing: C{self["serverAddresses"]} lists the L{ServerAddress}es
    (C{self["serverAddress"]} is the first) and
    C{self["settings"]} the L{TunnelSettings} (identifier, routes built from
    the C{--local} and C{--local-ports} options, stop timeout, keep-alive,
    the most local connections).
    """

    synopsis = "--server ENDPOINT (--identifier ID | --token TOKEN) [options]"
    longdesc = (
        "Run a tunnel client: connect to a tunnel server and forward the "
        "requests for your virtual host to a local service. The identifier can "
        "also come from --identifier-file or the environment variable "
        f"{IDENTIFIER_ENVIRONMENT}, which keep it out of the process list."
    )
    optFlags = [
        ["every-address", None,
         "Keep a tunnel to every address the name of each --server resolves to when "
         "the client starts (the nodes of a cluster behind one name), as if each were "
         "given with --server: losing one node loses no tunnel."],
    ]
    optParameters = [
        ["identifier", None, None, "The secret identifier the server knows this client by."],
        ["identifier-file", None, None, "Read the identifier from this file."],
        ["token", None, None,
         "Instead of an identifier: an account's token, with which a server that "
         "registers hosts (--domain) gives this client a host of its own, and its "
         "identifier, kept in --state-file for the next start."],
        ["token-file", None, None, "Read the token from this file."],
        ["subdomain", None, None,
         "With a token: the subdomain to ask for (myapp for myapp.DOMAIN); a "
         "random free one if not given."],
        ["state-file", None, None,
         "Where the identifiers registered for the token are kept (default: "
         "clients.json in $STATE_DIRECTORY, $XDG_STATE_HOME/tunnel or "
         "~/.local/state/tunnel)."],
        ["stop-timeout", None, 10.0,
         "On stop, seconds to let open requests finish before closing.", float],
        ["give-up-after", None, 0,
         "Stop after the server refused the identifier this many times in a "
         "row (0: keep trying; the console command's default is 3).", int],
        ["log-requests", None, "no",
         "Log a line per HTTP request (method, path, status, duration, bytes): "
         "yes or no (the console command's default is yes)."],
        ["max-local-connections", None, DEFAULT_MAX_LOCAL_CONNECTIONS,
         "The most local connections open at once; a request beyond it gets 503 "
         "(a TCP connection is closed) without a dial.", int],
        ["inspect", None, "none",
         "Serve the request inspector (a web page and JSON API showing each request "
         "through the tunnel, with replay, and /metrics) on this server endpoint, or "
         f"none (the console command's default is {DEFAULT_INSPECT}, or the next free "
         "port up to 4049). It shows bodies: keep it on loopback."],
        ["inspect-requests", None, DEFAULT_MAX_EXCHANGES,
         "The most requests the inspector keeps; the oldest go first.", int],
        ["inspect-body-bytes", None, DEFAULT_MAX_BODY_BYTES,
         "The most bytes of each request and response body the inspector keeps.", int],
        ["inspect-total-bytes", None, DEFAULT_MAX_TOTAL_BYTES,
         "The most bytes of heads and bodies the inspector keeps in all.", int],
        *SESSION_PARAMETERS,
    ]

    def __init__(self) -> None:
        super().__init__()
        self["server"] = []
        self["local"] = []
        self["local-ports"] = []
        self["access"] = None

    def opt_server(self, address: str) -> None:
        """ADDRESS: the tunnel server: HOST:PORT, its URL (https://tunnel.example.com), or a Twisted client endpoint such as tls:tunnel.example.com:443. Repeatable: the client then keeps a tunnel to each server at once, and any of them serves the public while the others are down."""
        self["server"].append(address.strip())

    def opt_local(self, address: str) -> None:
        """ADDR or PORT=ADDR: where to forward requests. ADDR alone (HOST:PORT, a port, or a client endpoint string) receives every HTTP and WebSocket request; PORT=ADDR forwards what comes for public port PORT, HTTP or TCP (repeatable). Without a fixed ADDR, HTTP requests whose Host names no port (or port 80) go to 127.0.0.1:80; any other port not given here or in --local-ports is refused (502)."""
        self["local"].append(address.strip())

    def opt_allow(self, networks: str) -> None:
        """NETWORKS: ask the server to admit to this client's hosts only public requests from these comma-separated networks (CIDR) or addresses, on top of its operator's rules; others get 403 (repeatable). The client does not serve a server that does not take them."""
        self._askAccess("--allow", networks, _allowing)

    def opt_deny(self, networks: str) -> None:
        """NETWORKS: ask the server to refuse (403) public requests from these networks or addresses (repeatable)."""
        self._askAccess("--deny", networks, _denying)

    def opt_basic_auth(self, path: str) -> None:
        """FILE: ask the server to admit only public requests with one of the USER:PASSWORD lines of FILE (HTTP basic authentication); others get 401. Only digests of them reach the server (repeatable)."""
        self._askAccess("--basic-auth", path, _askingCredentials)

    def _askAccess(self, option: str, value: str, read: Callable[[str], AccessRule]) -> None:
        """
        Add what C{read} makes of C{value} to the rule the client asks for.

        @raise usage.UsageError: naming C{option}, if the value is malformed.
        """
        try:
            added = read(value)
        except ValueError as e:
            raise usage.UsageError(f"{option}: {e}") from None
        self["access"] = (self["access"] or AccessRule()).merged(added)

    def opt_local_ports(self, ports: str) -> None:
        """PORTS: ports dialled on 127.0.0.1 at the port a request names, HTTP or TCP, e.g. 3000,8000-8100 (repeatable). None by default."""
        self["local-ports"].append(ports)

    def postOptions(self) -> None:
        """Parse the server and local addresses, find the identifier."""
        from twisted.internet import reactor

        if not self["server"]:
            raise usage.UsageError("--server is required")
        addresses = []
        for server in self["server"]:
            try:
                address = parseServerAddress(server)
                address.endpoint(reactor)
            except ValueError as e:
                raise usage.UsageError(f"--server {server!r}: {e}") from None
            except Exception as e:
                raise usage.UsageError(f"--server {server!r}: {endpointProblem(e)}") from None
            if address in addresses:
                raise usage.UsageError(f"--server {server!r} is given twice")
            addresses.append(address)
        if self["every-address"]:
            # One tunnel per place dialled, whatever names led there.
            places: dict[str, ServerAddress] = {}
            for address in addresses:
                for each in everyAddress(address):
                    places.setdefault(each.description, each)
            addresses = list(places.values())
        self["serverAddresses"] = addresses
        self["serverAddress"] = addresses[0]
        try:
            PortRanges.fromStrings(self["local-ports"])
        except ValueError as e:
            raise usage.UsageError(f"--local-ports: {e}") from None
        try:
            self["routes"] = LocalRoutes.fromStrings(self["local"], self["local-ports"])
        except ValueError as e:
            raise usage.UsageError(f"--local: {e}") from None
        if self["give-up-after"] < 0:
            raise usage.UsageError("--give-up-after must not be negative")
        if self["max-local-connections"] < 1:
            raise usage.UsageError("--max-local-connections must be positive")
        self._findSecret()
        if self["stop-timeout"] < 0:
            raise usage.UsageError("--stop-timeout must not be negative")
        if self["log-requests"] not in ("yes", "no"):
            raise usage.UsageError(
                f"--log-requests takes yes or no, not {self['log-requests']!r}"
            )
        self._checkInspector()
        config = sessionConfig(self)
        try:
            self["settings"] = TunnelSettings(
                self["identifier"],
                routes=self["routes"],
                host=self["serverAddress"].host,
                shutdownTimeout=self["stop-timeout"],
                sessionConfig=config,
                maxLocalConnections=self["max-local-connections"],
                logRequests=self["log-requests"] == "yes",
                token=self["token"],
                subdomain=self["subdomain"],
                access=self["access"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None

    def _checkInspector(self) -> None:
        """
        Check the inspector's endpoint and bounds; C{self["inspectLimits"]}
        holds its L{CaptureLimits}, or L{None} when it is off.
        """
        self["inspectLimits"] = None
        if self["inspect"].strip().lower() == "none":
            self["inspect"] = None
            return
        checkServerEndpoint("--inspect", self["inspect"])
        if self["inspect-requests"] < 1:
            raise usage.UsageError("--inspect-requests must be positive")
        if self["inspect-body-bytes"] < 0:
            raise usage.UsageError("--inspect-body-bytes must not be negative")
        try:
            self["inspectLimits"] = CaptureLimits(
                self["inspect-requests"], self["inspect-body-bytes"], self["inspect-total-bytes"]
            )
        except ValueError as e:
            raise usage.UsageError(f"--inspect-total-bytes: {e}") from None

    def _findSecret(self) -> None:
        """
        Find the identifier, or the token and the identifier kept for it in
        the state file (C{self["stateFile"]}, under C{self["registrationKey"]}).
        """
        for name in ("identifier", "token"):
            if self[name] and self[f"{name}-file"]:
                raise usage.UsageError(f"give --{name} or --{name}-file, not both")
            if self[f"{name}-file"]:
                self[name] = readSecretFile(self[f"{name}-file"], name)
            if not self[name]:
                self[name] = os.environ.get(SECRET_ENVIRONMENT[name], "").strip() or None
        self["stateFile"] = None
        if self["token"] is None:
            if self["subdomain"] or self["state-file"]:
                raise usage.UsageError("--subdomain and --state-file are used with a token only")
            if not self["identifier"]:
                raise usage.UsageError(
                    "an identifier is required: --identifier, --identifier-file or the "
                    f"environment variable {IDENTIFIER_ENVIRONMENT} (or an account's "
                    f"--token, if the server registers hosts)"
                )
            return
        if self["identifier"]:
            raise usage.UsageError(
                "give an identifier or a token, not both: with a token, the identifier "
                "the server registers is kept in the state file"
            )
        if len(self["serverAddresses"]) > 1:
            raise usage.UsageError(
                "a token takes one --server: the host it registers lives on that server"
            )
        if self["subdomain"] is not None:
            self["subdomain"] = self["subdomain"].strip().lower()
        self["stateFile"] = StateFile(self["state-file"] or defaultStatePath())
        self["registrationKey"] = registrationKey(
            self["serverAddress"].host or self["server"][0], self["subdomain"]
        )
        try:
            kept = self["stateFile"].registration(self["registrationKey"])
        except StateFileError as e:
            raise usage.UsageError(str(e)) from None
        self["identifier"] = "" if kept is None else kept.identifier
        if kept is not None and self["subdomain"] is None:
            # Should the server have forgotten it, ask for the same host again.
            self["subdomain"] = kept.host.partition(".")[0]
