"""
twistd plugins: C{twistd tunnel-server} and C{twistd tunnel-client}.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class _TunnelServiceMaker:
    """
    Builds a tunnel service; its modules are imported only when used.
    Mistakes are said as the console commands say them (L{tunnel.cli}):
    a usage error in two lines, a port that cannot be bound in one.
    """

    def __init__(self, tapname: str, description: str, role: str) -> None:
        self.tapname = tapname
        self.description = description
        self._role = role

    def _command(self):
        from tunnel import cli

        return cli.SERVER if self._role == "server" else cli.CLIENT

    @property
    def options(self):
        """The option class of this service."""
        from tunnel import cli

        return cli.oneLineUsageErrors(self._command(), f"twistd {self.tapname}")

    def makeService(self, options):
        """Build the service from parsed options."""
        from tunnel import cli

        service = self._command().makeService(options, None)
        return cli.OneLineStartupErrors(f"twistd {self.tapname}", service)


tunnelServer = _TunnelServiceMaker(
    "tunnel-server",
    "A reverse HTTP tunnel server: public virtual hosts routed to tunnel clients.",
    "server",
)
tunnelClient = _TunnelServiceMaker(
    "tunnel-client",
    "A reverse HTTP tunnel client: exposes a local service through a tunnel server.",
    "client",
)
