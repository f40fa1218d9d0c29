package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// Exit codes of the client subcommand.
const (
	exitOK       = 0 // session ended normally
	exitError    = 1 // network or protocol error
	exitRejected = 2 // the server did not answer 200 (or bad flags)
	exitTrap     = 3 // the server broke an assumption of the deployed Go client
)

type tunnelClientCfg struct {
	local string
	ports map[int]string
}

func (c *tunnelClientCfg) localAddr(port int) string {
	if a, ok := c.ports[port]; ok {
		return a
	}
	if c.local != "" {
		return c.local
	}
	if port == 0 {
		port = 80
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func runClient(args []string) int {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	server := fs.String("server", "", "server address host:port (plain TCP)")
	identifier := fs.String("identifier", "", "tunnel identifier")
	local := fs.String("local", "", "fixed local address for every tunnelled connection (default 127.0.0.1:<localPort>, port 80 when 0)")
	verbose := fs.Bool("v", false, "log every control message on stderr")
	var maps multiFlag
	fs.Var(&maps, "map", "PORT=ADDR (repeatable): local address for messages with this localPort; overrides -local")
	fs.Parse(args)
	if *server == "" || *identifier == "" {
		warn("client needs -server and -identifier")
		return exitRejected
	}
	cfg := &tunnelClientCfg{local: *local, ports: map[int]string{}}
	for _, m := range maps {
		i := strings.Index(m, "=")
		if i <= 0 {
			warn("bad -map %q (want PORT=ADDR)", m)
			return exitRejected
		}
		p, err := strconv.Atoi(m[:i])
		if err != nil {
			warn("bad -map %q (want PORT=ADDR)", m)
			return exitRejected
		}
		cfg.ports[p] = m[i+1:]
	}

	conn, err := net.DialTimeout("tcp", *server, 10*time.Second)
	if err != nil {
		warn("dial %s: %v", *server, err)
		return exitError
	}
	defer conn.Close()
	req := "CONNECT " + controlPath + " HTTP/1.1\r\nHost: " + *server + "\r\n" +
		identifierHeader + ": " + *identifier + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		warn("write CONNECT: %v", err)
		return exitError
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		warn("reading CONNECT response: %v", err)
		return exitError
	}
	if resp.StatusCode != http.StatusOK {
		warn("server refused the tunnel: %s", resp.Status)
		return exitRejected
	}
	// The deployed Go client hands the bare connection to yamux here and
	// loses anything already buffered. Anything buffered means the server
	// sent yamux bytes before we spoke: report it as a failure.
	if n := br.Buffered(); n > 0 {
		peek, _ := br.Peek(n)
		if len(peek) > 24 {
			peek = peek[:24]
		}
		warn("EAGER SERVER: %d bytes followed the 200 response before the client sent anything (first bytes % x); the deployed Go client would lose them", n, peek)
		return exitTrap
	}
	conn.SetReadDeadline(time.Time{})

	sess, err := yamux.Client(conn, nil)
	if err != nil {
		warn("yamux client: %v", err)
		return exitError
	}
	defer sess.Close()
	control, err := sess.OpenStream()
	if err != nil {
		warn("opening control stream: %v", err)
		return exitError
	}
	if _, err := control.Write([]byte(handshakeRequest)); err != nil {
		warn("writing handshake: %v", err)
		return exitError
	}
	control.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, len(handshakeResponse))
	n, err := control.Read(buf)
	if err != nil {
		warn("reading handshake response: %v", err)
		return exitError
	}
	if n < len(buf) {
		// The deployed Go client reads it with one Read call too.
		warn("SHORT HANDSHAKE: first read returned %q (%d of %d bytes); the server split %q across frames", buf[:n], n, len(buf), handshakeResponse)
		return exitTrap
	}
	if string(buf) != handshakeResponse {
		warn("bad handshake response %q", buf)
		return exitError
	}
	control.SetReadDeadline(time.Time{})
	say("CONNECTED")

	// SIGINT/SIGTERM end the session cleanly (DISCONNECTED, exit 0).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		sess.Close()
	}()

	dec := json.NewDecoder(control)
	for {
		var msg controlMsg
		if err := dec.Decode(&msg); err != nil {
			if err != io.EOF && !sess.IsClosed() {
				warn("control stream: %v", err)
			}
			break
		}
		if msg.Action != actionRequestClientSession {
			warn("ignoring control message with action %d", msg.Action)
			continue
		}
		addr := cfg.localAddr(msg.LocalPort)
		if *verbose {
			warn("MSG action=%d transportProtocol=%d localPort=%d -> %s", msg.Action, msg.Protocol, msg.LocalPort, addr)
		}
		// Open the stream here, in message order; dial in the background.
		st, err := sess.OpenStream()
		if err != nil {
			warn("opening stream: %v", err)
			break
		}
		go cfg.serveStream(st, addr)
	}
	sess.Close()
	say("DISCONNECTED")
	return exitOK
}

func (c *tunnelClientCfg) serveStream(st *yamux.Stream, addr string) {
	defer st.Close()
	local, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		body := fmt.Sprintf("no local server at %s\n", addr)
		fmt.Fprintf(st, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return
	}
	defer local.Close()
	pipe(st, local)
}
