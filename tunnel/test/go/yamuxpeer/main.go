// Command yamuxpeer is a test peer built on HashiCorp's yamux library, the
// reference implementation that the Python yamux code must interoperate with.
//
// It runs one yamux session over one TCP connection, either listening
// (-listen, prints "LISTENING host:port" once ready and accepts a single
// connection) or dialling (-connect). It then plays one scenario (-scenario)
// and ends by printing a single line of JSON to stdout:
//
//	{"ok": true|false, "scenario": "...", "error": "...", ...}
//
// The exit status is 0 when ok is true and 1 otherwise. Diagnostics, including
// the yamux library's own log, go to stderr.
//
// Scenarios (-streams N, -bytes M; the JSON fields each one adds are listed
// at its function):
//
//	echo           accept streams until the session ends; echo each stream's
//	               bytes back and half-close it at EOF.
//	sink-source    accept streams until the session ends; read each stream to
//	               EOF, answer with the decimal byte count and "\n", half-close.
//	bulk           open N streams; on stream k write pattern(k, M) in -chunk
//	               sized writes and half-close, while reading the echo to EOF;
//	               compare it with what was sent; then close the session.
//	send           like bulk, but the reply is not checked (benchmark client).
//	ping           send -pings pings and report their round-trip times.
//	expect-rst     open a stream, write 1 KiB, expect the peer to reset it.
//	expect-goaway  open streams (one at a time, each echoing "hello") until
//	               the peer's Go Away makes opening fail; give up after 10 s.
//	send-goaway    send Go Away at once, then serve like echo until the
//	               connection closes (the library resets streams opened later).
//	backlog        never accept; wait for the connection to close.
//	pattern        no connection: print the SHA-256 of pattern(-seed, M).
//
// The whole run gives up with ok=false after -timeout (default 120s).
//
// Half-close: in this yamux version Stream.Close sends FIN but also ends the
// read side: Read returns io.EOF whenever the receive buffer is momentarily
// empty after a local Close, even though the peer may still send data. The
// peer works around it with streamReader, which tells that false EOF from the
// real one (the peer's FIN, a reset, or the session ending) by looking at the
// stream's state, so every scenario keeps true half-close semantics on the
// wire: FIN right after the last byte written, reading on until the peer's FIN.
//
// Stream payloads are deterministic. pattern(seed, size) is the concatenation
// of the blocks SHA-256(fmt.Sprintf("%d:%d", seed, i)) for i = 0, 1, 2, ...
// truncated to size bytes. In bulk and send, stream k (k = 0 .. N-1) is the
// k-th stream opened, so its ID is 2k+1 for a client and 2k+2 for a server,
// and it carries pattern(k, -bytes).
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// result is the JSON object printed when a scenario ends.
type result map[string]interface{}

var (
	outLock    sync.Mutex
	finishOnce sync.Once
)

// printLine writes one line to stdout; stdout is unbuffered in Go.
func printLine(line string) {
	outLock.Lock()
	defer outLock.Unlock()
	os.Stdout.WriteString(line + "\n")
}

// finish prints the result line and exits; only the first call has effect,
// later callers block until the process exits.
func finish(scenario string, ok bool, errText string, fields result) {
	finishOnce.Do(func() {
		r := result{}
		for k, v := range fields {
			r[k] = v
		}
		r["ok"] = ok
		r["scenario"] = scenario
		r["error"] = errText
		data, err := json.Marshal(r)
		if err != nil {
			data = []byte(`{"ok": false, "error": "cannot encode result"}`)
			ok = false
		}
		printLine(string(data))
		if ok {
			os.Exit(0)
		}
		os.Exit(1)
	})
	select {}
}

func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "yamuxpeer: "+format+"\n", args...)
}

// patternReader produces pattern(seed, size); see the package comment.
type patternReader struct {
	seed    int
	block   int
	pending []byte
	left    int64
	label   []byte
}

func newPattern(seed int, size int64) *patternReader {
	return &patternReader{seed: seed, left: size}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n := 0
	for n < len(b) {
		if len(p.pending) == 0 {
			p.label = strconv.AppendInt(p.label[:0], int64(p.seed), 10)
			p.label = append(p.label, ':')
			p.label = strconv.AppendInt(p.label, int64(p.block), 10)
			sum := sha256.Sum256(p.label)
			p.block++
			p.pending = sum[:]
		}
		c := copy(b[n:], p.pending)
		p.pending = p.pending[c:]
		n += c
	}
	p.left -= int64(n)
	return n, nil
}

// patternDigest returns SHA-256(pattern(seed, size)).
func patternDigest(seed int, size int64) []byte {
	h := sha256.New()
	io.Copy(h, newPattern(seed, size))
	return h.Sum(nil)
}

// streamLocalClose is yamux's unexported state of a stream after a local
// Close and before the peer's FIN.
const streamLocalClose = 4

// streamReader reads a yamux stream until the peer's FIN, reset or the end of
// the session; see the half-close note in the package comment. A non-zero
// deadline makes it fail with yamux.ErrTimeout once passed.
type streamReader struct {
	stream   *yamux.Stream
	deadline time.Time
}

func (r streamReader) Read(b []byte) (int, error) {
	confirmed := false
	for {
		n, err := r.stream.Read(b)
		if err != io.EOF {
			return n, err
		}
		if localClosed(r.stream) {
			if !r.deadline.IsZero() && time.Now().After(r.deadline) {
				return 0, yamux.ErrTimeout
			}
			// A false EOF: wait for more data or the peer's FIN.
			time.Sleep(time.Millisecond)
			continue
		}
		// The library applies a frame's FIN before it buffers that frame's
		// data, so a reader can see EOF just ahead of the last bytes; look
		// once more after a moment.
		if confirmed {
			return 0, io.EOF
		}
		confirmed = true
		time.Sleep(time.Millisecond)
	}
}

// localClosed reports whether the stream is half-closed by us only.
func localClosed(stream *yamux.Stream) bool {
	state := reflect.ValueOf(stream).Elem().FieldByName("state")
	return state.IsValid() && state.Int() == streamLocalClose
}

// counter is a mutex protected set of named counters and error messages.
type counter struct {
	sync.Mutex
	counts map[string]int
	errors []string
}

func newCounter() *counter { return &counter{counts: map[string]int{}} }

func (c *counter) add(name string, n int) {
	c.Lock()
	c.counts[name] += n
	c.Unlock()
}

func (c *counter) get(name string) int {
	c.Lock()
	defer c.Unlock()
	return c.counts[name]
}

// fail records an error message (at most 20 are kept) and counts it.
func (c *counter) fail(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	logf("%s", msg)
	c.Lock()
	c.counts["errors"]++
	if len(c.errors) < 20 {
		c.errors = append(c.errors, msg)
	}
	c.Unlock()
}

func (c *counter) errorList() []string {
	c.Lock()
	defer c.Unlock()
	return append([]string{}, c.errors...)
}

type options struct {
	role, listen, connect, scenario string
	streams, chunk, backlog, pings  int
	seed                            int
	bytes                           int64
	window                          uint
	keepAlive                       bool
	keepAliveInterval, timeout      time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.role, "role", "", "yamux side: server or client")
	flag.StringVar(&o.listen, "listen", "", "listen on this address and accept one connection")
	flag.StringVar(&o.connect, "connect", "", "dial this address")
	flag.StringVar(&o.scenario, "scenario", "", "scenario to run")
	flag.IntVar(&o.streams, "streams", 1, "number of streams (bulk, send)")
	flag.Int64Var(&o.bytes, "bytes", 1048576, "payload bytes per stream (bulk, send, pattern)")
	flag.IntVar(&o.chunk, "chunk", 32768, "size of each write (bulk, send)")
	flag.IntVar(&o.backlog, "backlog", 256, "yamux AcceptBacklog")
	flag.UintVar(&o.window, "window", 262144, "yamux MaxStreamWindowSize")
	flag.BoolVar(&o.keepAlive, "keepalive", false, "enable yamux keep-alive pings")
	flag.DurationVar(&o.keepAliveInterval, "keepalive-interval", 30*time.Second, "yamux KeepAliveInterval")
	flag.IntVar(&o.pings, "pings", 3, "number of pings (ping)")
	flag.IntVar(&o.seed, "seed", -1, "pattern seed (pattern); defaults to the value of -streams")
	flag.DurationVar(&o.timeout, "timeout", 120*time.Second, "give up (ok=false) after this long; 0 disables")
	flag.Parse()

	sc := o.scenario
	if flag.NArg() != 0 {
		finish(sc, false, "unexpected arguments", nil)
	}
	if o.timeout > 0 {
		time.AfterFunc(o.timeout, func() {
			finish(sc, false, fmt.Sprintf("timed out after %s", o.timeout), nil)
		})
	}

	if sc == "pattern" {
		seed := o.seed
		if seed < 0 {
			seed = o.streams
		}
		finish(sc, true, "", result{
			"seed": seed, "bytes": o.bytes,
			"sha256": hex.EncodeToString(patternDigest(seed, o.bytes)),
		})
	}

	run, found := scenarios[sc]
	if !found {
		finish(sc, false, fmt.Sprintf("unknown scenario %q", sc), nil)
	}
	if o.role != "server" && o.role != "client" {
		finish(sc, false, "-role must be server or client", nil)
	}
	if (o.listen == "") == (o.connect == "") {
		finish(sc, false, "give exactly one of -listen and -connect", nil)
	}
	if o.streams < 1 || o.chunk < 1 || o.bytes < 0 {
		finish(sc, false, "-streams and -chunk must be positive, -bytes not negative", nil)
	}

	conn, err := makeConn(&o)
	if err != nil {
		finish(sc, false, err.Error(), nil)
	}

	cfg := yamux.DefaultConfig()
	cfg.AcceptBacklog = o.backlog
	cfg.MaxStreamWindowSize = uint32(o.window)
	cfg.EnableKeepAlive = o.keepAlive
	cfg.KeepAliveInterval = o.keepAliveInterval
	cfg.LogOutput = os.Stderr
	var session *yamux.Session
	if o.role == "server" {
		session, err = yamux.Server(conn, cfg)
	} else {
		session, err = yamux.Client(conn, cfg)
	}
	if err != nil {
		conn.Close()
		finish(sc, false, err.Error(), nil)
	}

	fields, err := run(session, &o)
	session.Close()
	if err != nil {
		finish(sc, false, err.Error(), fields)
	}
	finish(sc, true, "", fields)
}

// makeConn listens for or dials the single TCP connection.
func makeConn(o *options) (net.Conn, error) {
	if o.connect != "" {
		return net.Dial("tcp", o.connect)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	printLine("LISTENING " + ln.Addr().String())
	return ln.Accept()
}

// A scenario runs on an open session and returns its result fields and
// whether it failed; the session is closed afterwards.
type scenario func(s *yamux.Session, o *options) (result, error)

var scenarios = map[string]scenario{
	"echo":          echoScenario,
	"sink-source":   sinkSourceScenario,
	"bulk":          bulkScenario,
	"send":          sendScenario,
	"ping":          pingScenario,
	"expect-rst":    expectRstScenario,
	"expect-goaway": expectGoAwayScenario,
	"send-goaway":   sendGoAwayScenario,
	"backlog":       backlogScenario,
}

// serve accepts streams until the session ends and runs handle on each one.
// It reports "streams" (accepted), "resets" (streams the peer reset),
// "stream_errors" and "errors" (any other stream failures), and
// "session_error" (why the session ended).
func serve(s *yamux.Session, c *counter, handle func(*yamux.Stream) error) result {
	var wg sync.WaitGroup
	streams := 0
	var acceptErr error
	for {
		stream, err := s.AcceptStream()
		if err != nil {
			acceptErr = err
			break
		}
		streams++
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := handle(stream); err != nil {
				if err == yamux.ErrConnectionReset {
					c.add("resets", 1)
				} else {
					c.fail("stream %d: %v", stream.StreamID(), err)
				}
			}
		}()
	}
	wg.Wait()
	r := result{
		"streams":       streams,
		"resets":        c.get("resets"),
		"stream_errors": c.get("errors"),
		"errors":        c.errorList(),
		"session_error": "",
	}
	if acceptErr != nil {
		r["session_error"] = acceptErr.Error()
	}
	return r
}

func echoStream(stream *yamux.Stream) error {
	_, err := io.Copy(stream, streamReader{stream: stream})
	if err != nil {
		return err
	}
	return stream.Close()
}

func echoScenario(s *yamux.Session, o *options) (result, error) {
	return serve(s, newCounter(), echoStream), nil
}

// sinkSourceScenario also reports "bytes", the total bytes read.
func sinkSourceScenario(s *yamux.Session, o *options) (result, error) {
	c := newCounter()
	r := serve(s, c, func(stream *yamux.Stream) error {
		n, err := io.Copy(io.Discard, streamReader{stream: stream})
		c.add("bytes", int(n))
		if err != nil {
			return err
		}
		if _, err := stream.Write([]byte(strconv.FormatInt(n, 10) + "\n")); err != nil {
			return err
		}
		return stream.Close()
	})
	r["bytes"] = c.get("bytes")
	return r, nil
}

// pregenerateLimit is the largest total payload that exchange builds in
// memory before it starts the clock; larger payloads are generated while
// sending, which then counts towards the measured time.
const pregenerateLimit = 256 << 20

// payloads returns a reader of pattern(k, -bytes) for each stream k.
func payloads(o *options) []io.Reader {
	readers := make([]io.Reader, o.streams)
	if o.bytes*int64(o.streams) > pregenerateLimit {
		for k := range readers {
			readers[k] = newPattern(k, o.bytes)
		}
		return readers
	}
	var wg sync.WaitGroup
	for k := range readers {
		wg.Add(1)
		go func(k int) {
			defer wg.Done()
			data := make([]byte, o.bytes)
			io.ReadFull(newPattern(k, o.bytes), data)
			readers[k] = bytes.NewReader(data)
		}(k)
	}
	wg.Wait()
	return readers
}

// writeChunks copies src to w in writes of at most chunk bytes.
func writeChunks(w io.Writer, src io.Reader, chunk int) error {
	buf := make([]byte, chunk)
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// exchange opens -streams streams at once; on stream k it writes
// pattern(k, -bytes) in -chunk sized writes, half-closes, and hands the
// stream's read side to consume. It returns the time from the first open
// until every stream is done.
func exchange(s *yamux.Session, o *options, c *counter, consume func(k int, r io.Reader) error) time.Duration {
	sources := payloads(o)
	start := time.Now()
	var wg sync.WaitGroup
	for k := 0; k < o.streams; k++ {
		// Open in order, so that stream k gets the k-th stream ID.
		stream, err := s.OpenStream()
		if err != nil {
			c.fail("stream %d: open: %v", k, err)
			break
		}
		wg.Add(1)
		go func(k int, stream *yamux.Stream) {
			defer wg.Done()
			defer stream.Close()
			werr := make(chan error, 1)
			go func() {
				err := writeChunks(stream, sources[k], o.chunk)
				if err == nil {
					err = stream.Close()
				}
				werr <- err
			}()
			if err := consume(k, streamReader{stream: stream}); err != nil {
				c.fail("stream %d: read: %v", k, err)
			}
			if err := <-werr; err != nil {
				c.fail("stream %d: write: %v", k, err)
			}
		}(k, stream)
	}
	wg.Wait()
	return time.Since(start)
}

// bulkScenario reports "streams", "bytes" (total bytes read back),
// "bytes_per_stream", "mismatches", "errors" and "seconds".
func bulkScenario(s *yamux.Session, o *options) (result, error) {
	c := newCounter()
	want := make([][]byte, o.streams)
	for k := range want {
		want[k] = patternDigest(k, o.bytes)
	}
	elapsed := exchange(s, o, c, func(k int, r io.Reader) error {
		h := sha256.New()
		n, err := io.Copy(h, r)
		c.add("bytes", int(n))
		if err != nil {
			return err
		}
		if !bytes.Equal(h.Sum(nil), want[k]) {
			c.add("mismatches", 1)
			logf("stream %d: echo differs from pattern (%d bytes read)", k, n)
		}
		return nil
	})
	r := result{
		"streams":          o.streams,
		"bytes":            c.get("bytes"),
		"bytes_per_stream": o.bytes,
		"mismatches":       c.get("mismatches"),
		"errors":           c.errorList(),
		"seconds":          elapsed.Seconds(),
	}
	if n := c.get("errors"); n > 0 {
		return r, fmt.Errorf("%d stream errors", n)
	}
	if n := c.get("mismatches"); n > 0 {
		return r, fmt.Errorf("%d streams echoed the wrong bytes", n)
	}
	return r, nil
}

// sendScenario reports "streams", "bytes" (total bytes sent), "seconds",
// "mbps" (bytes / seconds / 1e6), "errors" and "replies" (each stream's reply
// as text, in stream order).
func sendScenario(s *yamux.Session, o *options) (result, error) {
	c := newCounter()
	replies := make([]string, o.streams)
	elapsed := exchange(s, o, c, func(k int, r io.Reader) error {
		data, err := io.ReadAll(r)
		replies[k] = string(data)
		return err
	})
	total := float64(o.bytes) * float64(o.streams)
	r := result{
		"streams": o.streams,
		"bytes":   int64(total),
		"seconds": elapsed.Seconds(),
		"mbps":    total / elapsed.Seconds() / 1e6,
		"errors":  c.errorList(),
		"replies": replies,
	}
	if n := c.get("errors"); n > 0 {
		return r, fmt.Errorf("%d stream errors", n)
	}
	return r, nil
}

// pingScenario reports "rtts_ms", one float per ping.
func pingScenario(s *yamux.Session, o *options) (result, error) {
	rtts := []float64{}
	for i := 0; i < o.pings; i++ {
		d, err := s.Ping()
		if err != nil {
			return result{"rtts_ms": rtts}, fmt.Errorf("ping %d: %v", i, err)
		}
		rtts = append(rtts, float64(d)/float64(time.Millisecond))
	}
	return result{"rtts_ms": rtts}, nil
}

// expectRstScenario reports "phase" (write or read: where the reset showed)
// and "bytes_read" (bytes that arrived before it).
func expectRstScenario(s *yamux.Session, o *options) (result, error) {
	r := result{"phase": "open", "bytes_read": 0}
	stream, err := s.OpenStream()
	if err != nil {
		return r, fmt.Errorf("open: %v", err)
	}
	r["phase"] = "write"
	if _, err := stream.Write(make([]byte, 1024)); err != nil {
		if err == yamux.ErrConnectionReset {
			return r, nil
		}
		return r, fmt.Errorf("write: %v", err)
	}
	r["phase"] = "read"
	buf := make([]byte, 32768)
	total := 0
	for {
		n, err := stream.Read(buf)
		total += n
		r["bytes_read"] = total
		if err == yamux.ErrConnectionReset {
			return r, nil
		}
		if err != nil {
			return r, fmt.Errorf("read ended with %v, not a reset", err)
		}
	}
}

// expectGoAwayScenario reports "attempts" (streams opened before Go Away was
// seen) and "resets" (of those, how many the peer reset).
func expectGoAwayScenario(s *yamux.Session, o *options) (result, error) {
	deadline := time.Now().Add(10 * time.Second)
	attempts, resets := 0, 0
	fields := func() result { return result{"attempts": attempts, "resets": resets} }
	for time.Now().Before(deadline) {
		stream, err := s.OpenStream()
		if err == yamux.ErrRemoteGoAway {
			return fields(), nil
		}
		if err != nil {
			return fields(), fmt.Errorf("open: %v", err)
		}
		attempts++
		stream.SetReadDeadline(deadline)
		_, err = stream.Write([]byte("hello"))
		if err == nil {
			err = stream.Close()
		}
		if err == nil {
			_, err = io.Copy(io.Discard, streamReader{stream, deadline})
		}
		stream.Close()
		if err == yamux.ErrConnectionReset {
			resets++
		} else if err != nil && err != yamux.ErrTimeout {
			return fields(), fmt.Errorf("stream %d: %v", stream.StreamID(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fields(), errors.New("no Go Away within 10 seconds")
}

// sendGoAwayScenario reports what serve reports; "streams" should stay 0, as
// the library itself resets streams opened after our Go Away.
func sendGoAwayScenario(s *yamux.Session, o *options) (result, error) {
	if err := s.GoAway(); err != nil {
		return nil, fmt.Errorf("go away: %v", err)
	}
	return serve(s, newCounter(), echoStream), nil
}

// backlogScenario reports "pending": streams waiting to be accepted when the
// connection closed.
func backlogScenario(s *yamux.Session, o *options) (result, error) {
	<-s.CloseChan()
	return result{"pending": s.NumStreams()}, nil
}
