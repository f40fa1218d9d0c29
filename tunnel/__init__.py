"""
tunnel: a reverse HTTP tunnel for Twisted, wire-compatible with the Go tunnel
package and HashiCorp's yamux.

The package is split into a sans-IO yamux core (L{tunnel.yamux}), its Twisted
adapter (L{tunnel.mux}), and the tunnel server and client built on them.
"""

__version__ = "0.1.0"
