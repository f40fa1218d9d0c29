"""
C{--workers N}: a tunnel server of N worker processes on one machine,
sharing its public listeners, each a node of the cluster of C{--redis}.

The process started (twistd's, or the console command's) becomes the
supervisor (L{tunnel.workers.service.WorkersService}): it binds the
public listeners once (L{tunnel.workers.sockets}), starts the workers
with them as inherited file descriptors (L{tunnel.workers.command},
L{tunnel.workers.worker}), relays their logs (L{tunnel.workers.logs}) and
restarts, signals and stops them as L{tunnel.workers.supervisor} decides.
"""
