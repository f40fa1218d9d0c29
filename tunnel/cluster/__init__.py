"""
Many tunnel server nodes sharing one Redis: a node that holds a tunnel
client's session says so in Redis under a lease it keeps renewing, and a
node that receives a public request for an identifier it holds no session
of looks up there which nodes do (L{tunnel.cluster.directory}), and
forwards the request to one of them over an authenticated link between the
two (L{tunnel.cluster.link}, L{tunnel.cluster.remote},
L{tunnel.cluster.relay}). Redis keeps no identifier in clear: it knows an
identifier by a key derived from it and the cluster's secret
(L{tunnel.cluster.keys}).
"""
