"""
Many tunnel server nodes sharing one Redis: a node that holds a tunnel
client's session says so in Redis under a lease it keeps renewing, and a
node that receives a public request for an identifier it holds no session
of looks up there which nodes do, to forward the request to one of them
(L{tunnel.cluster.directory}). Redis keeps no identifier in clear: callers
name an identifier by a key derived from it.
"""
