"""
C{--workers N}: a tunnel server of N worker processes on one machine,
sharing its public listeners.
"""
