"""
The client's state file: the identifiers servers registered for its token,
so that the next start connects as the same client and gets the same host.

A JSON object, readable and writable by its owner only, rewritten
atomically::

    {"registrations": {"tunnel.example.com:443 myapp":
        {"host": "myapp.tunnel.example.com", "identifier": "alice~..."}}}

Each registration is keyed by the server and the subdomain asked for
(C{*} for a random one). The default file is C{clients.json} in
C{$STATE_DIRECTORY} (set by systemd's C{StateDirectory=}), else in
C{$XDG_STATE_HOME/tunnel}, else in C{~/.local/state/tunnel}.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from tunnel.atomicfile import writeAtomically

from tunnel.core.control import Registered

#: The name of the state file in its directory.
STATE_FILE_NAME = "clients.json"


class StateFileError(ValueError):
    """The state file could not be read or written."""


def defaultStatePath(environment: Mapping[str, str] = os.environ) -> str:
    """Where the state file is unless C{--state-file} says."""
    if environment.get("STATE_DIRECTORY"):
        directory = environment["STATE_DIRECTORY"].split(":")[0]
    elif environment.get("XDG_STATE_HOME"):
        directory = os.path.join(environment["XDG_STATE_HOME"], "tunnel")
    else:
        directory = os.path.join(os.path.expanduser("~"), ".local", "state", "tunnel")
    return os.path.join(directory, STATE_FILE_NAME)


def registrationKey(server: str, subdomain: str | None) -> str:
    """The key of a registration: the server, and the subdomain asked for."""
    return f"{server} {subdomain or '*'}"


class StateFile:
    """
    The registrations kept in one state file.

    @ivar path: the file.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                content = json.load(f)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise StateFileError(f"cannot read state file {self.path}: {e.strerror}") from None
        except ValueError as e:
            raise StateFileError(f"state file {self.path} is not JSON: {e}") from None
        registrations = content.get("registrations") if isinstance(content, dict) else None
        if not isinstance(registrations, dict):
            raise StateFileError(f"state file {self.path} has no registrations object")
        return registrations

    def registration(self, key: str) -> Registered | None:
        """
        The registration kept under C{key}, if any.

        @raise StateFileError: if the file cannot be read or is malformed.
        """
        entry = self._read().get(key)
        if entry is None:
            return None
        try:
            return Registered(str(entry["host"]), str(entry["identifier"]))
        except (KeyError, TypeError):
            raise StateFileError(
                f"state file {self.path}: the registration {key!r} is malformed"
            ) from None

    def keep(self, key: str, registered: Registered) -> None:
        """
        Keep C{registered} under C{key}, replacing what was there.

        @raise StateFileError: if the file cannot be read or written.
        """
        registrations = self._read()
        registrations[key] = {"host": registered.host, "identifier": registered.identifier}
        text = json.dumps({"registrations": registrations}, indent=2, sort_keys=True) + "\n"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), mode=0o700, exist_ok=True)
            writeAtomically(self.path, text)
        except OSError as e:
            raise StateFileError(f"cannot write state file {self.path}: {e.strerror}") from None
