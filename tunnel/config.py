"""
Configuration files in TOML for both commands: each key is an option's
long name, each value what the command line would give it.

A string, integer or float is the option's value; a list gives a
repeatable option (C{listen}, C{host}, C{local}...) once per item; C{true}
turns a flag on. The file's options come first and the command line's
after, so the command line wins for an option given once and adds to a
repeatable one. C{--config} itself may not appear in the file.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The option that names the file.
CONFIG_OPTION = "config"


def _words(key: str, value: Any, takesValue: bool, repeatable: bool) -> list[str]:
    """The command-line words of one key of the file."""
    if isinstance(value, list):
        if not repeatable:
            raise usage.UsageError(f"{key} takes one value, not a list")
        return [word for item in value for word in _words(key, item, takesValue, False)]
    if not takesValue:
        if value is True:
            return [f"--{key}"]
        if value is False:
            return []
        raise usage.UsageError(f"{key} is a flag: give true or false, not {value!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise usage.UsageError(f"{key} takes a string or a number, not {value!r}")
    return [f"--{key}", str(value)]


def readConfig(path: str, options: usage.Options) -> list[str]:
    """
    The command-line words that the TOML file at C{path} stands for, for
    the options of C{options}.

    @raise usage.UsageError: if the file cannot be read, is not TOML (with
        the line and column), or has a key that is not an option (said as
        the command line's unknown options are, so that the console
        commands name the option meant) or a value of the wrong kind.
    """
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise usage.UsageError(f"cannot read the configuration file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"{path} is not valid TOML: {e}") from None
    takesValue = {name.rstrip("="): name.endswith("=") for name in options.longOpt}
    words: list[str] = []
    for key, value in table.items():
        if key == CONFIG_OPTION or key not in takesValue or key in ("help", "version"):
            raise usage.UsageError(f"{path}: option --{key} not recognized")
        # Parameters take one value; options with a method of their own
        # (--listen, --host, --local...) may be repeated.
        repeatable = takesValue[key] and key not in options.defaults
        try:
            words += _words(key, value, takesValue[key], repeatable)
        except usage.UsageError as e:
            raise usage.UsageError(f"{path}: {e}") from None
    return words


def withConfig(arguments: list[str], options: usage.Options) -> list[str]:
    """
    C{arguments} with the words of the configuration file they name with
    C{--config PATH} (or C{--config=PATH}) put first, and C{--config}
    taken out; C{arguments} as they are if they name none.

    @raise usage.UsageError: for a second C{--config}, or a bad file (see
        L{readConfig}).
    """
    rest: list[str] = []
    paths: list[str] = []
    words = iter(arguments)
    for word in words:
        if word == "--":
            rest += [word, *words]
        elif word == f"--{CONFIG_OPTION}":
            path = next(words, None)
            if path is None:
                raise usage.UsageError(f"option --{CONFIG_OPTION} requires an argument")
            paths.append(path)
        elif word.startswith(f"--{CONFIG_OPTION}="):
            paths.append(word.partition("=")[2])
        else:
            rest.append(word)
    if len(paths) > 1:
        raise usage.UsageError(f"give --{CONFIG_OPTION} once, not {len(paths)} times")
    return (readConfig(paths[0], options) if paths else []) + rest
