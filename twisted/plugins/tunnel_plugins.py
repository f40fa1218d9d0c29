"""
twistd plugins: C{twistd tunnel-server} and C{twistd tunnel-client}.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class _TunnelServiceMaker:
    """Builds a tunnel service; its modules are imported only when used."""

    def __init__(self, tapname: str, description: str, role: str) -> None:
        self.tapname = tapname
        self.description = description
        self._role = role

    @property
    def options(self):
        """The option class of this service."""
        from tunnel import options

        return options.ServerOptions if self._role == "server" else options.ClientOptions

    def makeService(self, options):
        """Build the service from parsed options."""
        from tunnel import tap

        if self._role == "server":
            return tap.makeServerService(options)
        return tap.makeClientService(options)


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
