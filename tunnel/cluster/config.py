"""
What the nodes of a cluster share of their configuration, in Redis: which
virtual host leads to which client (by the client's key, never its
identifier), the operator's access rule of each host, and the accounts
that may register hosts for themselves (C{--domain}). The admin API of any
node changes it (L{SharedConfig.change}), as does a registration
(L{SharedConfig.register}); every node follows it (L{ConfigFollower}).

The schema, under the cluster's prefix (C{"tunnel:"} by default):

  - C{{prefix}config:hosts}: a hash, host -> key.
  - C{{prefix}config:access}: a hash, host -> access rule (see
    L{tunnel.cluster.accesstext}).
  - C{{prefix}config:accounts}: a hash, account name -> its host limit and
    token digest (see L{tunnel.cluster.accounttext}).
  - C{{prefix}config:owners}: a hash, host -> the account it was
    registered for, for the hosts registered by an account's client: what
    an account's limit is counted against, on every node at once.
  - C{{prefix}config:tcp}: a hash, server endpoint description -> key:
    the TCP listeners every node listens on for a client (see
    L{tunnel.cluster.listeners}).
  - C{{prefix}config:version}: a number every change increments, in the
    same script as the change: a node that read a version has read every
    change up to it.

A node polls the version (one small round trip) every L{POLL_INTERVAL}
seconds and reads the whole configuration when it moved: a change made on
one node is in force on every node within that time, and a node that was
cut off from Redis catches up by itself once it is back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping, Protocol as TypingProtocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from tunnel.cluster.accesstext import decodeAccess, encodeAccess
from tunnel.cluster.accounttext import decodeAccount, encodeAccount
from tunnel.cluster.refusals import AccountFull, HostTaken
from tunnel.cluster.scripts import Redis, Script, StoreUnavailable, unavailable
from tunnel.core.access import AccessRule, parseNetworks
from tunnel.hostsfile import readHostsFile
from tunnel.server.accounts import Account, Accounts
from tunnel.server.events import HostStatus

if TYPE_CHECKING:
    from tunnel.cluster.listeners import SharedListeners

_log = Logger()

#: Seconds between two looks at the version of the shared configuration.
POLL_INTERVAL = 0.5

#: Set (or, for an empty value, delete) hosts, access rules, accounts and
#: TCP listeners, and move the version on; a host deleted is no longer its
#: account's. KEYS: hosts, access, accounts, tcp, owners, version. ARGV: a
#: JSON object of four objects, "hosts", "access", "accounts" and "tcp",
#: name -> value, and one, "rotated", old key -> new key, for the TCP
#: listeners of a key rotated; then "replace", or "add" to set only what
#: is not set yet; then "all" to make the accounts given the only ones, or
#: "some".
_CHANGE = Script("""
local change = cjson.decode(ARGV[1])
local command = ARGV[2] == 'add' and 'HSETNX' or 'HSET'
if ARGV[3] == 'all' then
    redis.call('DEL', KEYS[3])
end
if next(change['rotated']) then
    local listeners = redis.call('HGETALL', KEYS[4])
    for i = 1, #listeners, 2 do
        local new = change['rotated'][listeners[i + 1]]
        if new then
            redis.call('HSET', KEYS[4], listeners[i], new)
        end
    end
end
for index, field in ipairs({'hosts', 'access', 'accounts', 'tcp'}) do
    for name, value in pairs(change[field]) do
        if value == '' then
            redis.call('HDEL', KEYS[index], name)
            if index == 1 then
                redis.call('HDEL', KEYS[5], name)
            end
        else
            redis.call(command, KEYS[index], name, value)
        end
    end
end
return redis.call('INCR', KEYS[6])
""")

#: Register a host for an account, if it is free and the account holds
#: fewer hosts than its limit: {0, the new version}, {1, 0} if the host is
#: taken, {2, hosts held} if the account holds as many as it may. KEYS:
#: hosts, owners, version. ARGV: host, key, account, limit.
_REGISTER = Script("""
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
    return {1, 0}
end
local owners = redis.call('HGETALL', KEYS[2])
local held = 0
for i = 1, #owners, 2 do
    if owners[i + 1] == ARGV[3] then
        if redis.call('HEXISTS', KEYS[1], owners[i]) == 1 then
            held = held + 1
        else
            redis.call('HDEL', KEYS[2], owners[i])
        end
    end
end
if held >= tonumber(ARGV[4]) then
    return {2, held}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return {0, redis.call('INCR', KEYS[3])}
""")

#: The whole configuration, as JSON: [version, hosts, access, accounts,
#: tcp]. KEYS: hosts, access, accounts, tcp, version.
_READ = Script("""
local found = {tonumber(redis.call('GET', KEYS[5]) or '0')}
for i = 1, 4 do
    local flat, object = redis.call('HGETALL', KEYS[i]), {}
    for j = 1, #flat, 2 do
        object[flat[j]] = flat[j + 1]
    end
    table.insert(found, object)
end
return cjson.encode(found)
""")


@attrs.frozen
class Snapshot:
    """
    The shared configuration as it was at one version.

    @ivar hosts: host -> key of its client.
    @ivar access: host -> its access rule, as stored.
    @ivar accounts: account name -> the account, as stored.
    @ivar tcp: endpoint description -> key of its client.
    """

    version: int
    hosts: Mapping[str, str]
    access: Mapping[str, str]
    accounts: Mapping[str, str] = attrs.field(factory=dict)
    tcp: Mapping[str, str] = attrs.field(factory=dict)


def _mapping(value: object, what: str) -> dict[str, str]:
    # Lua's cjson writes an empty table as an object or a list.
    if value == [] or value == {}:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"the shared {what} are not an object of strings")
    return value


class ConfiguredServer(TypingProtocol):
    """What a L{ConfigFollower} changes of a tunnel server."""

    def hosts(self) -> list[HostStatus]:
        """The hosts routed."""

    def identifierOf(self, host: str) -> bytes:
        """The key C{host} is routed to."""

    def addHostByName(self, host: str, name: bytes) -> None:
        """Route C{host} to the client of key C{name}."""

    def deleteHost(self, host: str) -> None:
        """Stop routing C{host}."""

    def accessOf(self, host: str) -> AccessRule | None:
        """The operator's rule of C{host}."""

    def guardedHosts(self) -> list[str]:
        """The hosts with an operator's rule."""

    def setAccess(self, host: str, rule: AccessRule | None) -> None:
        """Make C{rule} the operator's rule of C{host}."""

    def moveTCP(self, old: bytes, new: bytes) -> list[int]:
        """Bind the TCP listeners of the key C{old} to the key C{new}."""

    def accounts(self) -> Accounts | None:
        """The accounts that may register hosts, or L{None} if none may."""

    def setAccounts(self, accounts: Accounts) -> None:
        """Let C{accounts} register hosts, and no others."""


class SharedConfig:
    """The shared configuration in one Redis."""

    def __init__(
        self, redis: Redis, clock: IReactorTime, prefix: str = "tunnel:", timeout: float = 5.0
    ) -> None:
        self._redis = redis
        self._clock = clock
        hosts, access, accounts, tcp, owners, version = (
            f"{prefix}config:{name}"
            for name in ("hosts", "access", "accounts", "tcp", "owners", "version")
        )
        self._keys = {
            _CHANGE: [hosts, access, accounts, tcp, owners, version],
            _REGISTER: [hosts, owners, version],
            _READ: [hosts, access, accounts, tcp, version],
        }
        self._version = version
        self._timeout = timeout

    def change(
        self,
        hosts: Mapping[str, str] = {},
        access: Mapping[str, str] = {},
        onlyNew: bool = False,
        accounts: Accounts | None = None,
        allAccounts: bool = False,
        tcp: Mapping[str, str] = {},
        rotated: Mapping[str, str] = {},
    ) -> Deferred[int]:
        """
        Set hosts to keys, access rules of hosts, accounts and TCP
        listeners, at once; an empty value deletes.

        @param onlyNew: set only the hosts, rules and accounts not set yet,
            as a node does with those of its command line and files when it
            starts: what the admin API changed since stays.
        @param accounts: accounts to set, by name.
        @param allAccounts: make C{accounts} the only ones, as a node does
            when its accounts file is reloaded.
        @param tcp: endpoint descriptions of TCP listeners -> key.
        @param rotated: old key -> new key: the TCP listeners of each old
            key are the new one's from now on, as when its identifier is
            rotated.
        @return: a L{Deferred} firing with the new version, or failing with
            L{StoreUnavailable}.
        """
        stored = {account.name: encodeAccount(account) for account in accounts or ()}
        change = json.dumps({
            "hosts": dict(hosts),
            "access": dict(access),
            "accounts": stored,
            "tcp": dict(tcp),
            "rotated": dict(rotated),
        })
        modes = ["add" if onlyNew else "replace", "all" if allAccounts else "some"]
        return self._run(_CHANGE, [change, *modes]).addCallback(int)

    def register(self, host: str, key: str, account: Account) -> Deferred[int]:
        """
        Route C{host} to the client of C{key} for C{account}, if no node
        has C{host} and the account holds fewer hosts than its limit on
        every node together.

        @return: a L{Deferred} firing with the new version, or failing with
            L{HostTaken}, L{AccountFull} or L{StoreUnavailable}.
        """
        registering = self._run(_REGISTER, [host, key, account.name, account.maxHosts])

        def answered(reply: list[int]) -> int:
            outcome, number = (int(part) for part in reply)
            if outcome == 1:
                raise HostTaken(host)
            if outcome == 2:
                raise AccountFull(number)
            return number

        return registering.addCallback(answered)

    def version(self) -> Deferred[int | None]:
        """
        The version of the configuration, or L{None} if Redis holds none
        (it never did, or it lost it); fails with L{StoreUnavailable}.
        """
        reading = self._redis.get(self._version)
        return self._timed(reading).addCallback(lambda v: None if v is None else int(v))

    def seed(self, server: ConfiguredServer) -> Deferred[int]:
        """
        Add the hosts, access rules and accounts of C{server} for which
        the configuration has none (see L{change}).
        """
        hosts = {status.host: server.identifierOf(status.host).decode() for status in server.hosts()}
        access = {host: encodeAccess(server.accessOf(host)) for host in server.guardedHosts()}
        return self.change(hosts, access, onlyNew=True, accounts=server.accounts())

    def read(self) -> Deferred[Snapshot]:
        """The whole configuration; fails with L{StoreUnavailable}."""

        def parsed(reply: str | bytes) -> Snapshot:
            version, hosts, access, accounts, tcp = json.loads(reply)
            return Snapshot(
                int(version),
                _mapping(hosts, "hosts"),
                _mapping(access, "access"),
                _mapping(accounts, "accounts"),
                _mapping(tcp, "TCP listeners"),
            )

        return self._run(_READ, []).addCallback(parsed)

    def _run(self, script: Script, args: list[object]) -> Deferred[object]:
        return self._timed(script.run(self._redis, self._keys[script], args))

    def _timed(self, running: Deferred[object]) -> Deferred[object]:
        running.addTimeout(self._timeout, self._clock)

        def failed(failure: Failure) -> Failure:
            error = unavailable(failure, self._timeout)
            return failure if error is None else Failure(error)

        return running.addErrback(failed)


#: What a host whose stored access rule cannot be read admits: nobody.
NOBODY = AccessRule(deny=parseNetworks("0.0.0.0/0, ::/0"))


class ConfigFollower:
    """
    Keeps a node's hosts and access rules those of the shared
    configuration: polls its version, and applies a new one as a whole.

    @ivar applied: the version applied last, or L{None} before the first.
    """

    _log = Logger()

    def __init__(
        self,
        config: SharedConfig,
        server: ConfiguredServer,
        clock: IReactorTime,
        interval: float = POLL_INTERVAL,
        listeners: SharedListeners | None = None,
    ) -> None:
        """
        @param listeners: the node's TCP listeners of the configuration,
            to keep those it says too.
        """
        self.applied: int | None = None
        self._listeners = listeners
        self._config = config
        self._server = server
        self._clock = clock
        self._interval = interval
        self._loop: LoopingCall | None = None
        self._failing = False

    def start(self) -> None:
        """Poll from now on."""
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """Poll no more."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def poll(self) -> Deferred[None]:
        """Apply the shared configuration if its version moved; never fails."""
        looking = self._config.version()

        def moved(version: int | None) -> Deferred[object] | None:
            if version is None and self.applied is not None:
                self._log.warn(
                    "Redis lost the shared configuration (restarted without its data?); "
                    "giving it this node's again"
                )
                self.applied = None
                return self._config.seed(self._server)
            if version == self.applied:
                return None
            return self._config.read().addCallback(self.apply)

        return looking.addCallback(moved).addCallbacks(self._answered, self._failed)

    def _answered(self, _: object) -> None:
        if self._failing:
            self._failing = False
            self._log.info("The shared configuration is read again, at version {version}",
                           version=self.applied)

    def _failed(self, failure: Failure) -> None:
        if not failure.check(StoreUnavailable):
            self._log.failure("Following the shared configuration failed", failure)
        elif not self._failing:
            self._failing = True
            self._log.warn(
                "Cannot read the shared configuration ({why}); the {count} hosts in use "
                "stay as they are until it can be read again",
                why=failure.getErrorMessage(),
                count=len(self._server.hosts()),
            )

    def apply(self, snapshot: Snapshot) -> None:
        """Make the server's hosts and access rules those of C{snapshot}."""
        server = self._server
        current = {status.host: server.identifierOf(status.host) for status in server.hosts()}
        for host in current.keys() - snapshot.hosts.keys():
            server.deleteHost(host)
        rotated = {}
        for host, key in snapshot.hosts.items():
            old, new = current.get(host), key.encode("ascii")
            if old != new:
                server.addHostByName(host, new)
                if old is not None:
                    rotated[old] = new
        # A key left with no host was rotated: this node's TCP listeners of
        # it follow its hosts, and its client is refused from now on.
        kept = {key.encode("ascii") for key in snapshot.hosts.values()}
        for old, new in rotated.items():
            if old not in kept:
                server.moveTCP(old, new)
        if self._listeners is not None:
            self._listeners.apply(snapshot.tcp, rotated)
        for host in set(server.guardedHosts()) | snapshot.access.keys():
            rule = self._rule(host, snapshot.access.get(host, ""))
            if server.accessOf(host) != rule:
                server.setAccess(host, rule)
        accounts = server.accounts()
        if accounts is not None:
            shared = self._accounts(snapshot.accounts, accounts)
            if shared != accounts:
                server.setAccounts(shared)
        if self.applied is not None:
            self._log.info(
                "Applied version {version} of the shared configuration: {count} hosts",
                version=snapshot.version,
                count=len(snapshot.hosts),
            )
        self.applied = snapshot.version

    def _accounts(self, stored: Mapping[str, str], current: Accounts) -> Accounts:
        accounts = Accounts(digest=current.digest)
        for name, text in sorted(stored.items()):
            try:
                accounts.add(decodeAccount(name, text))
            except ValueError as e:
                self._log.error("The shared account {name!r} is left out: {why}", name=name, why=e)
        return accounts

    def _rule(self, host: str, text: str) -> AccessRule | None:
        try:
            return decodeAccess(text)
        except ValueError as e:
            self._log.error(
                "The shared access rule of {host} cannot be read ({why}); it admits nobody",
                host=host,
                why=e,
            )
            return NOBODY


class SharedHostsReloader:
    """
    What a C{SIGHUP} does to a node of a cluster with a hosts file: the
    hosts of the file (and of the command line) that the shared
    configuration has none of are added to it, for every node; the others
    stay as the shared configuration says.

    @ivar path: the hosts file.
    """

    _log = Logger()

    def __init__(
        self, config: SharedConfig, server: Any, path: str, fixed: Mapping[str, str]
    ) -> None:
        self.path = path
        self._config = config
        self._server = server
        self._fixed = dict(fixed)

    def reload(self) -> bool:
        """Read the file and add its new hosts; whether it could be read."""
        try:
            wanted = {**readHostsFile(self.path), **self._fixed}
        except (OSError, ValueError) as e:
            self._log.error("Cannot reload the hosts file {path}: {error}", path=self.path, error=e)
            return False
        names = {host: self._server.nameOf(identifier).decode("ascii")
                 for host, identifier in wanted.items()}
        adding = self._config.change(names, onlyNew=True)
        adding.addCallbacks(
            lambda version: self._log.info(
                "Added the new hosts of {path} to the shared configuration (version "
                "{version}); the others stay as it says", path=self.path, version=version
            ),
            lambda failure: self._log.error(
                "Cannot add the hosts of {path} to the shared configuration: {why}",
                path=self.path, why=failure.getErrorMessage(),
            ),
        )
        return True


def shareAccounts(config: SharedConfig, accounts: Accounts) -> Deferred[None]:
    """
    Make C{accounts} the cluster's, on every node, as a node's accounts
    file reloaded does: those it does not have are refused from then on
    (the hosts they registered stay). Never fails: what went wrong is
    logged.
    """
    sharing = config.change(accounts=accounts, allAccounts=True)
    return sharing.addCallbacks(
        lambda version: _log.info(
            "The {count} accounts are the cluster's from version {version}",
            count=len(accounts), version=version,
        ),
        lambda failure: _log.error(
            "Cannot share the accounts: {why}; the cluster's stay as they are",
            why=failure.getErrorMessage(),
        ),
    )
