package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

const streamAcceptTimeout = 10 * time.Second

var errNoStream = errors.New("timed out waiting for the client to open a stream")

// tunnelClient is one connected client session.
//
// Pairing is pipelined and FIFO, like the deployed Go server (which sends
// the control message and then takes whichever stream yamux accepts next;
// nothing is held while waiting). openTunnel appends a waiter to the queue
// and writes the control message under sendMu, so the queue order is the
// message order, then waits without holding any lock. The accept loop hands
// each accepted stream to the oldest waiter. A waiter that gave up
// (timeout, session end) stays in the queue marked abandoned, so the stream
// the client opens for it later is closed on arrival instead of being
// handed to the next request. The accept loop only ever takes queueMu,
// which is never held across I/O, so a control write blocked on a full
// window cannot stall stream acceptance.
type tunnelClient struct {
	identifier string
	session    *yamux.Session
	control    *yamux.Stream

	sendMu  sync.Mutex      // serialises "enqueue waiter + write control message"
	queueMu sync.Mutex      // guards queue and streamWaiter.abandoned
	queue   []*streamWaiter // oldest first
}

// streamWaiter is one request waiting for its stream.
type streamWaiter struct {
	ch        chan *yamux.Stream // buffered (1); receives at most one stream
	abandoned bool               // guarded by tunnelClient.queueMu
}

// acceptLoop is the only caller of AcceptStream after the handshake.
func (c *tunnelClient) acceptLoop() {
	for {
		st, err := c.session.AcceptStream()
		if err != nil {
			return
		}
		c.queueMu.Lock()
		if len(c.queue) == 0 {
			c.queueMu.Unlock()
			// Nobody asked for it: refuse.
			st.Close()
			continue
		}
		w := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		abandoned := w.abandoned
		if !abandoned {
			w.ch <- st // never blocks: buffered, and one send per waiter
		}
		c.queueMu.Unlock()
		if abandoned {
			// Owed to a request that already gave up.
			st.Close()
		}
	}
}

// abandon marks w as given up. If its stream was delivered in the meantime
// it is returned (deliveries happen under queueMu, so after this either the
// caller holds the stream or the accept loop will close it on arrival).
func (c *tunnelClient) abandon(w *streamWaiter) *yamux.Stream {
	c.queueMu.Lock()
	defer c.queueMu.Unlock()
	select {
	case st := <-w.ch:
		return st
	default:
		w.abandoned = true
		return nil
	}
}

// openTunnel sends one control message and waits for the matching stream.
func (c *tunnelClient) openTunnel(protocol, localPort int) (*yamux.Stream, error) {
	msg, _ := json.Marshal(controlMsg{Action: actionRequestClientSession, Protocol: protocol, LocalPort: localPort})
	msg = append(msg, '\n')
	w := &streamWaiter{ch: make(chan *yamux.Stream, 1)}

	c.sendMu.Lock()
	c.queueMu.Lock()
	c.queue = append(c.queue, w)
	c.queueMu.Unlock()
	_, err := c.control.Write(msg)
	c.sendMu.Unlock()
	if err != nil {
		// The control stream is unusable (possibly half a message went
		// out), so the pairing cannot be trusted any more: end the session.
		if st := c.abandon(w); st != nil {
			st.Close()
		}
		c.session.Close()
		return nil, err
	}

	timer := time.NewTimer(streamAcceptTimeout)
	defer timer.Stop()
	select {
	case st := <-w.ch:
		return st, nil
	case <-c.session.CloseChan():
		if st := c.abandon(w); st != nil {
			st.Close()
		}
		return nil, yamux.ErrSessionShutdown
	case <-timer.C:
		if st := c.abandon(w); st != nil {
			return st, nil // arrived just now
		}
		return nil, errNoStream
	}
}

type tunnelServer struct {
	strict bool
	hosts  map[string]string // lower-cased host or host:port -> identifier

	mu      sync.Mutex
	known   map[string]bool
	clients map[string]*tunnelClient
}

func (s *tunnelServer) getClient(id string) *tunnelClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clients[id]
}

func (s *tunnelServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == controlPath && r.URL.RawQuery == "" {
		s.handleControl(w, r)
		return
	}
	s.handlePublic(w, r)
}

// ---------------------------------------------------------------------------
// Control path

func (s *tunnelServer) handleControl(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	id := r.Header.Get(identifierHeader)
	s.mu.Lock()
	ok := id != "" && s.known[id]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "unknown identifier", http.StatusForbidden)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		warn("hijack: %v", err)
		return
	}
	if n := brw.Reader.Buffered(); n > 0 {
		warn("EAGER CLIENT: %d bytes arrived with the CONNECT request, before the 200 was sent (the deployed Go server would lose them)", n)
		if s.strict {
			conn.Close()
			return
		}
	}
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connected to Tunnel\n\n"); err != nil {
		conn.Close()
		return
	}
	go s.runSession(id, withBuffered(conn, brw.Reader))
}

func (s *tunnelServer) runSession(id string, conn net.Conn) {
	sess, err := yamux.Server(conn, nil)
	if err != nil {
		warn("yamux server: %v", err)
		conn.Close()
		return
	}
	type acc struct {
		st  *yamux.Stream
		err error
	}
	ch := make(chan acc, 1)
	go func() {
		st, err := sess.AcceptStream()
		ch <- acc{st, err}
	}()
	var control *yamux.Stream
	select {
	case a := <-ch:
		if a.err != nil {
			warn("accepting control stream: %v", a.err)
			sess.Close()
			return
		}
		control = a.st
	case <-time.After(30 * time.Second):
		warn("no control stream within 30s")
		sess.Close()
		return
	}

	// Handshake: 16 bytes "controlHandshake". The deployed Go peers read it
	// with a single Read call, so a short first read is reported.
	control.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, len(handshakeRequest))
	n, err := control.Read(buf)
	if err == nil && n < len(buf) {
		warn("SHORT HANDSHAKE: first read returned %d of %d bytes (the handshake was split across frames)", n, len(buf))
		if s.strict {
			sess.Close()
			return
		}
		_, err = io.ReadFull(control, buf[n:])
	}
	control.SetReadDeadline(time.Time{})
	if err != nil {
		warn("reading handshake: %v", err)
		sess.Close()
		return
	}
	if string(buf) != handshakeRequest {
		warn("bad handshake %q", buf)
		sess.Close()
		return
	}
	if _, err := control.Write([]byte(handshakeResponse)); err != nil {
		sess.Close()
		return
	}

	c := &tunnelClient{
		identifier: id,
		session:    sess,
		control:    control,
	}
	s.mu.Lock()
	old := s.clients[id]
	s.clients[id] = c
	s.mu.Unlock()
	if old != nil {
		warn("identifier %.4s reconnected; closing the previous session", id)
		old.session.Close()
	}
	prefix := id
	if len(prefix) > 4 {
		prefix = prefix[:4]
	}
	say("CLIENT CONNECTED %s", prefix)

	go c.acceptLoop()
	// Read and ignore anything the client sends on the control stream; its
	// end means the client is going away.
	go func() {
		io.Copy(io.Discard, control)
		sess.Close()
	}()
	<-sess.CloseChan()

	s.mu.Lock()
	if s.clients[id] == c {
		delete(s.clients, id)
	}
	s.mu.Unlock()
	say("CLIENT DISCONNECTED")
}

// ---------------------------------------------------------------------------
// Public HTTP

func (s *tunnelServer) lookupHost(hostport string) (string, bool) {
	h := strings.ToLower(hostport)
	if id, ok := s.hosts[h]; ok {
		return id, true
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		if id, ok := s.hosts[host]; ok {
			return id, true
		}
	}
	return "", false
}

func portOf(hostport string) int {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return 0
	}
	return n
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

var hopHeaders = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade", "Trailer", "Te",
}

func (s *tunnelServer) handlePublic(w http.ResponseWriter, r *http.Request) {
	id, ok := s.lookupHost(r.Host)
	if !ok {
		http.Error(w, "no tunnel for host "+r.Host, http.StatusNotFound)
		return
	}
	c := s.getClient(id)
	if c == nil {
		http.Error(w, "tunnel client is not connected", http.StatusBadGateway)
		return
	}
	upgrade := r.Header.Get("Upgrade") != "" && headerHasToken(r.Header, "Connection", "upgrade")
	protocol := protoHTTP
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		protocol = protoWebSocket
	}
	st, err := c.openTunnel(protocol, portOf(r.Host))
	if err == errNoStream {
		http.Error(w, "tunnel client did not open a stream", http.StatusGatewayTimeout)
		return
	}
	if err != nil {
		http.Error(w, "tunnel error: "+err.Error(), http.StatusBadGateway)
		return
	}
	if upgrade {
		s.proxyUpgrade(w, r, st)
		return
	}
	s.proxyHTTP(w, r, st)
}

func (s *tunnelServer) proxyHTTP(w http.ResponseWriter, r *http.Request, st *yamux.Stream) {
	defer st.Close()
	finishWrite := func() {}
	if r.ContentLength == 0 && (r.Body == nil || r.Body == http.NoBody) {
		// No body: write the request inline, as the deployed Go server does.
		if err := r.Write(st); err != nil {
			http.Error(w, "tunnel error: "+err.Error(), http.StatusBadGateway)
			return
		}
	} else {
		// Write the request concurrently with reading the response, so an
		// origin that answers while the body is still arriving does not
		// deadlock.
		writeDone := make(chan error, 1)
		go func() {
			writeDone <- r.Write(st)
		}()
		finishWrite = func() {
			select {
			case <-writeDone:
			default:
				st.SetWriteDeadline(time.Now()) // unblock a writer stuck on the window
				<-writeDone
			}
		}
	}
	br := bufio.NewReader(st)
	var resp *http.Response
	var err error
	for {
		resp, err = http.ReadResponse(br, r)
		if err != nil {
			break
		}
		// Skip informational responses (e.g. "100 Continue").
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			resp.Body.Close()
			continue
		}
		break
	}
	if err != nil {
		finishWrite()
		http.Error(w, "bad response from tunnel: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	w.WriteHeader(resp.StatusCode)
	fl, _ := w.(http.Flusher)
	if resp.ContentLength >= 0 || fl == nil {
		// Known length: a plain copy, as the deployed Go server does
		// (net/http sends the head with the first bytes of the body).
		io.Copy(w, resp.Body)
	} else {
		// Streamed (chunked or close-delimited): push out what we have
		// whenever the next read would wait for the tunnel, so the response
		// arrives as it is produced, without a flush per read when more
		// data is already buffered.
		bp := copyBufs.Get().(*[]byte)
		buf := *bp
		for {
			if br.Buffered() == 0 {
				fl.Flush()
			}
			n, rerr := resp.Body.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					break
				}
			}
			if rerr != nil {
				break
			}
		}
		copyBufs.Put(bp)
	}
	finishWrite()
}

func (s *tunnelServer) proxyUpgrade(w http.ResponseWriter, r *http.Request, st *yamux.Stream) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		st.Close()
		http.Error(w, "cannot hijack", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		st.Close()
		return
	}
	defer conn.Close()
	defer st.Close()
	if err := r.Write(st); err != nil {
		return
	}
	pipe(withBuffered(conn, brw.Reader), st)
}

// ---------------------------------------------------------------------------
// TCP listeners

func (s *tunnelServer) serveTCP(ln net.Listener, id string) {
	port := ln.Addr().(*net.TCPAddr).Port
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func(conn net.Conn) {
			defer conn.Close()
			c := s.getClient(id)
			if c == nil {
				return
			}
			st, err := c.openTunnel(protoTCP, port)
			if err != nil {
				return
			}
			defer st.Close()
			pipe(conn, st)
		}(conn)
	}
}

// ---------------------------------------------------------------------------

func runServer(args []string) int {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "public HTTP listen address")
	strict := fs.Bool("strict", false, "drop sessions that break the deployed Go server's assumptions (eager yamux bytes, split handshake) instead of only warning")
	var hostFlags, tcpFlags multiFlag
	fs.Var(&hostFlags, "host", "HOST=IDENTIFIER (repeatable); HOST may be host or host:port")
	fs.Var(&tcpFlags, "tcp", "ADDR=IDENTIFIER (repeatable): raw TCP listener tunnelled to IDENTIFIER")
	fs.Parse(args)

	s := &tunnelServer{
		strict:  *strict,
		hosts:   map[string]string{},
		known:   map[string]bool{},
		clients: map[string]*tunnelClient{},
	}
	for _, h := range hostFlags {
		i := strings.LastIndex(h, "=")
		if i <= 0 || i == len(h)-1 {
			warn("bad -host %q (want HOST=IDENTIFIER)", h)
			return 2
		}
		s.hosts[strings.ToLower(h[:i])] = h[i+1:]
		s.known[h[i+1:]] = true
	}
	type tcpL struct {
		ln net.Listener
		id string
	}
	var tcps []tcpL
	for _, t := range tcpFlags {
		i := strings.LastIndex(t, "=")
		if i <= 0 || i == len(t)-1 {
			warn("bad -tcp %q (want ADDR=IDENTIFIER)", t)
			return 2
		}
		ln, err := net.Listen("tcp", t[:i])
		if err != nil {
			warn("listen %s: %v", t[:i], err)
			return 1
		}
		tcps = append(tcps, tcpL{ln, t[i+1:]})
		s.known[t[i+1:]] = true
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		warn("listen %s: %v", *listen, err)
		return 1
	}
	say("LISTENING %s", ln.Addr())
	for i, t := range tcps {
		say("TCP %d %s", i, t.ln.Addr())
		go s.serveTCP(t.ln, t.id)
	}
	srv := &http.Server{Handler: s}
	if err := srv.Serve(ln); err != nil {
		warn("serve: %v", err)
		return 1
	}
	return 0
}
