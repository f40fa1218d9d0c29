"""
C{python -m tunnel}: how to run the tunnel's server and client, and
C{python -m tunnel server|client OPTIONS} to run them.
"""

from __future__ import annotations

import sys

from tunnel import cli

USAGE = """\
Run a tunnel server or client:

  tunnel-server [--listen 8080] [--host HOST=IDENTIFIER | --hosts-file FILE] ...
  tunnel-client --server HOST:PORT --identifier ID --local 3000 ...

or, with this Python: python -m tunnel server ... / python -m tunnel client ...
The same options work as twistd plugins: twistd -n tunnel-server ...
'tunnel-server --help' and 'tunnel-client --help' list every option.
"""

COMMANDS = {"server": cli.SERVER, "client": cli.CLIENT}


def main(argv: list[str]) -> int:
    """Run the command named in C{argv}, or say how to; the exit status."""
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return cli.EXIT_STOPPED
    command = COMMANDS.get(argv[0])
    if command is None:
        sys.stderr.write(f"python -m tunnel: unknown command {argv[0]!r}: give server or client\n")
        return cli.EXIT_USAGE
    return cli.run(command, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
