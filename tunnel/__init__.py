"""
tunnel: a reverse HTTP tunnel for Twisted, wire-compatible with the Go tunnel
package and HashiCorp's yamux.

The package is split into sans-IO cores (L{tunnel.yamux} for the
multiplexer, L{tunnel.core} for HTTP and the control protocol above it), the
Twisted adapter of the multiplexer (L{tunnel.mux}), and the tunnel server and
client built on them (L{tunnel.server}, L{tunnel.client}).
"""

__version__ = "0.1.0"
