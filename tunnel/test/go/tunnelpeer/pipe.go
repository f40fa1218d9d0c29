package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"reflect"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// closeWriter is implemented by *net.TCPConn (and our prefixConn wrapper).
type closeWriter interface {
	CloseWrite() error
}

// prefixConn is a net.Conn whose first reads come from bytes an HTTP
// library had already buffered.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return nil
}

// withBuffered returns conn, or a wrapper that first yields the bytes held
// in br (which must be a reader over conn).
func withBuffered(conn net.Conn, br *bufio.Reader) net.Conn {
	if br == nil || br.Buffered() == 0 {
		return conn
	}
	n := br.Buffered()
	pre, _ := br.Peek(n)
	buf := make([]byte, n)
	copy(buf, pre)
	return &prefixConn{Conn: conn, r: io.MultiReader(bytes.NewReader(buf), conn)}
}

// shutWrite signals end of data on c: CloseWrite for TCP, Close (FIN) for a
// yamux stream.
func shutWrite(c interface{}) {
	switch v := c.(type) {
	case closeWriter:
		v.CloseWrite()
	case io.Closer:
		v.Close()
	}
}

// yamuxReader works around a limitation of the 2019 yamux: once a stream has
// been closed locally (our FIN sent), Stream.Read returns io.EOF whenever its
// receive buffer happens to be empty, even though the peer has not sent FIN
// and more data is on its way. (The deployed Go peers share this limitation;
// they never read from a stream after closing it.) To support real
// half-close, an EOF in state "local close" is retried until the peer's FIN
// (state "closed") or a reset arrives. The state field is unexported, so it
// is read through reflection.
type yamuxReader struct {
	st *yamux.Stream
}

const (
	yamuxStateLocalClose = 4 // streamLocalClose in yamux's stream.go
)

func yamuxState(st *yamux.Stream) int64 {
	return reflect.ValueOf(st).Elem().FieldByName("state").Int()
}

func (r yamuxReader) Read(p []byte) (int, error) {
	delay := 200 * time.Microsecond
	for {
		n, err := r.st.Read(p)
		if n > 0 || err != io.EOF || yamuxState(r.st) != yamuxStateLocalClose {
			return n, err
		}
		if r.st.Session().IsClosed() {
			return 0, io.EOF
		}
		time.Sleep(delay)
		if delay < 5*time.Millisecond {
			delay *= 2
		}
	}
}

func readerOf(c io.Reader) io.Reader {
	if st, ok := c.(*yamux.Stream); ok {
		return yamuxReader{st}
	}
	return onlyReader{c}
}

// pipe copies a->b and b->a; when one direction ends, the write side of its
// destination is shut. Returns when both directions are done.
func pipe(a, b io.ReadWriter) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src io.ReadWriter) {
		defer wg.Done()
		bp := copyBufs.Get().(*[]byte)
		io.CopyBuffer(onlyWriter{dst}, readerOf(src), *bp)
		copyBufs.Put(bp)
		shutWrite(dst)
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// copyBufs holds copy buffers (32 KiB, the size io.Copy uses), so a
// short-lived stream does not allocate fresh ones.
var copyBufs = sync.Pool{New: func() interface{} {
	b := make([]byte, 32<<10)
	return &b
}}

// onlyWriter / onlyReader hide ReaderFrom / WriterTo so io.CopyBuffer uses
// our buffer and writes each chunk as soon as it is read.
type onlyWriter struct{ w io.Writer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }
