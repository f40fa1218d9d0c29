// Command origin is a small, fast HTTP origin server for tunnel tests and
// benchmarks. It is built only on the Go standard library and
// github.com/gorilla/websocket.
//
// Usage:
//
//	origin -listen 127.0.0.1:0 [-tcp-echo 127.0.0.1:0]
//
// Output lines on stdout:
//
//	LISTENING host:port
//	TCPECHO host:port          (only with -tcp-echo)
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ---------------------------------------------------------------------------
// Deterministic byte pattern: block i is sha256(ASCII decimal of i), 32 bytes.
// The prefix of the pattern is cached (grown lazily up to a cap); anything
// beyond the cap is computed on the fly.

const blockSize = 32

type patternCache struct {
	mu   sync.Mutex
	data []byte // immutable once written; only ever appended to
	max  int
}

func newPatternCache(initial, max int) *patternCache {
	max -= max % blockSize
	pc := &patternCache{data: make([]byte, 0, max), max: max}
	pc.get(0, initial)
	return pc
}

// fillBlocks writes blocks [first, first+len(dst)/32) into dst.
func fillBlocks(dst []byte, first int) {
	var num [20]byte
	for off := 0; off+blockSize <= len(dst); off += blockSize {
		sum := sha256.Sum256(strconv.AppendInt(num[:0], int64(first+off/blockSize), 10))
		copy(dst[off:], sum[:])
	}
}

// get returns pattern bytes [off, off+n) for a range that lies inside the cap.
func (pc *patternCache) get(off, n int) []byte {
	end := off + n
	pc.mu.Lock()
	if len(pc.data) < end {
		target := end + (1 << 20) // grow at least 1 MiB ahead
		target -= target % blockSize
		if target < end {
			target += blockSize
		}
		if target > pc.max {
			target = pc.max
		}
		old := len(pc.data)
		pc.data = pc.data[:target]
		fillBlocks(pc.data[old:target], old/blockSize)
	}
	d := pc.data
	pc.mu.Unlock()
	return d[off:end]
}

var pattern *patternCache

// writePattern writes pattern bytes [0, n) to w.
func writePattern(w io.Writer, n int64) error {
	const piece = 256 << 10
	var scratch []byte
	var off int64
	for off < n {
		size := int64(piece)
		if n-off < size {
			size = n - off
		}
		var buf []byte
		if off+size <= int64(pattern.max) {
			buf = pattern.get(int(off), int(size))
		} else {
			// Beyond the cache: compute the covering blocks.
			if scratch == nil {
				scratch = make([]byte, piece+2*blockSize)
			}
			first := off / blockSize
			skip := off % blockSize
			nblocks := (skip + size + blockSize - 1) / blockSize
			s := scratch[:nblocks*blockSize]
			fillBlocks(s, int(first))
			buf = s[skip : skip+size]
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		off += size
	}
	return nil
}

// ---------------------------------------------------------------------------
// Handlers

func handleRoot(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Seen-Host", r.Host)
	h.Set("X-Seen-Forwarded-For", r.Header.Get("X-Forwarded-For"))
	h.Set("X-Seen-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"))
	h.Set("X-Seen-Forwarded-Host", r.Header.Get("X-Forwarded-Host"))
	body := "hello from origin\n"
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	io.WriteString(w, body)
}

func handleBytes(w http.ResponseWriter, r *http.Request) {
	n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	if err != nil || n < 0 {
		http.Error(w, "bad n\n", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	if r.Method == http.MethodHead {
		return
	}
	writePattern(w, n)
}

func handleSha256(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		http.Error(w, "use POST or PUT\n", http.StatusMethodNotAllowed)
		return
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, r.Body, make([]byte, 256<<10))
	if err != nil {
		http.Error(w, "read error: "+err.Error()+"\n", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%s %d\n", hex.EncodeToString(h.Sum(nil)), n)
}

// handleEcho streams the request body back while it is still arriving. Go's
// HTTP/1 server discards unread request bodies once a response is under way,
// so the connection is hijacked and both directions are handled by hand.
// The response has Content-Length when the request had one, otherwise it is
// chunked; the connection is closed afterwards.
func handleEcho(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		http.Error(w, "use POST or PUT\n", http.StatusMethodNotAllowed)
		return
	}
	chunked := len(r.TransferEncoding) > 0 && r.TransferEncoding[0] == "chunked"
	length := r.ContentLength
	expect := strings.EqualFold(r.Header.Get("Expect"), "100-continue")
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot hijack\n", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()

	var body io.Reader
	switch {
	case chunked:
		body = httputil.NewChunkedReader(brw.Reader)
	case length > 0:
		body = io.LimitReader(brw.Reader, length)
	default:
		body = strings.NewReader("")
		length = 0
	}
	bw := bufio.NewWriterSize(conn, 64<<10)
	if expect {
		bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	}
	bw.WriteString("HTTP/1.1 200 OK\r\n")
	bw.WriteString("Content-Type: application/octet-stream\r\n")
	bw.WriteString("Connection: close\r\n")
	var out io.Writer = bw
	var cw io.WriteCloser
	if chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		cw = httputil.NewChunkedWriter(bw)
		out = cw
	} else {
		fmt.Fprintf(bw, "Content-Length: %d\r\n\r\n", length)
	}
	if err := bw.Flush(); err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := out.Write(buf[:n]); err != nil {
				return
			}
			if err := bw.Flush(); err != nil {
				return
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return
		}
	}
	if cw != nil {
		cw.Close()             // writes the last chunk "0\r\n"
		bw.WriteString("\r\n") // empty trailer
	}
	bw.Flush()
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	// Give the peer a moment to read everything before the full close.
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, conn)
}

func handleStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n < 0 {
		n = 10
	}
	interval, err := strconv.Atoi(q.Get("interval_ms"))
	if err != nil || interval < 0 {
		interval = 100
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	fl, _ := w.(http.Flusher)
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	for i := 0; i < n; i++ {
		if i > 0 && interval > 0 {
			select {
			case <-time.After(time.Duration(interval) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		if _, err := fmt.Fprintf(w, "chunk %d\n", i); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
}

func handleStatus(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
	if err != nil || code < 200 || code > 599 {
		http.Error(w, "bad status code\n", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d\n", code)
}

// handleHeaders returns what the origin saw of the request, as JSON.
func handleHeaders(w http.ResponseWriter, r *http.Request) {
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := map[string]interface{}{
		"method":     r.Method,
		"uri":        r.RequestURI,
		"proto":      r.Proto,
		"host":       r.Host,
		"remoteAddr": r.RemoteAddr,
		"headers":    r.Header,
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  32 << 10,
	WriteBufferSize: 32 << 10,
	CheckOrigin:     func(*http.Request) bool { return true },
}

func handleWS(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade already wrote an error response
	}
	defer c.Close()
	c.SetReadLimit(64 << 20)
	for {
		mt, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(mt, msg); err != nil {
			return
		}
	}
}

func router(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/":
		handleRoot(w, r)
	case p == "/bytes":
		handleBytes(w, r)
	case p == "/echo":
		handleEcho(w, r)
	case p == "/sha256":
		handleSha256(w, r)
	case p == "/stream":
		handleStream(w, r)
	case strings.HasPrefix(p, "/status/"):
		handleStatus(w, r)
	case p == "/headers":
		handleHeaders(w, r)
	case p == "/ws":
		handleWS(w, r)
	default:
		http.NotFound(w, r)
	}
}

// ---------------------------------------------------------------------------
// Raw TCP echo with half-close.

func serveTCPEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func(c net.Conn) {
			defer c.Close()
			io.Copy(c, c)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			// Wait for the peer to close before releasing the socket.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c)
		}(c)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTP listen address")
	tcpEcho := flag.String("tcp-echo", "", "optional raw TCP echo listen address")
	cacheMiB := flag.Int("cache-mib", 256, "maximum size of the cached /bytes pattern, MiB")
	flag.Parse()

	initial := 4 << 20
	if *cacheMiB<<20 < initial {
		initial = *cacheMiB << 20
	}
	pattern = newPatternCache(initial, *cacheMiB<<20)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "origin:", err)
		os.Exit(1)
	}
	fmt.Printf("LISTENING %s\n", ln.Addr())
	if *tcpEcho != "" {
		el, err := net.Listen("tcp", *tcpEcho)
		if err != nil {
			fmt.Fprintln(os.Stderr, "origin:", err)
			os.Exit(1)
		}
		fmt.Printf("TCPECHO %s\n", el.Addr())
		go serveTCPEcho(el)
	}
	os.Stdout.Sync()
	srv := &http.Server{Handler: http.HandlerFunc(router)}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "origin:", err)
		os.Exit(1)
	}
}
