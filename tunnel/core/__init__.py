"""
The tunnel protocol without I/O: no Twisted import, no clock, no sockets.

Like L{tunnel.yamux}, everything here takes bytes and gives back parsed
values, events or bytes to send, so that it can be tested with plain calls
and driven by any framework:

  - L{tunnel.core.http}: the one HTTP/1.1 grammar of the project: heads
    (status lines, request lines, header fields, token lists, the Host
    grammar), the response and request parsers with their body framing,
    chunked encoding, and the short plain-text error responses;
  - L{tunnel.core.control}: the control protocol above yamux: the control
    request, the handshake on the control stream, and the JSON control
    messages;
  - L{tunnel.core.exchange}: one forwarded HTTP exchange as a transition
    table: which error answers a public request, when the response timer
    runs, when a stream is reset or a public connection cut;
  - L{tunnel.core.serversession}: the server side of a client's tunnel
    session as a transition table: the control stream and its handshake,
    which request an arriving stream belongs to, which requests are
    refused, closing and what ends the connection;
  - L{tunnel.core.clientsession}: the client's tunnel connection as a
    transition table: the answer to the control request, why the set-up
    failed, when the session starts, closing and the end.

The Twisted adapters live in L{tunnel.server} and L{tunnel.client}.
"""
