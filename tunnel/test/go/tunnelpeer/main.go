// Command tunnelpeer is an independent implementation of the tunnel protocol
// (reverse HTTP tunnel over yamux), used to check interoperability. It has
// two subcommands:
//
//	tunnelpeer server -listen ADDR -host HOST=IDENTIFIER [-host ...] [-tcp ADDR=IDENTIFIER ...] [-strict]
//	tunnelpeer client -server ADDR -identifier ID [-local ADDR] [-map PORT=ADDR ...]
//
// See ../README.rst for the output lines.
package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// controlMsg is the JSON message sent on the control stream.
type controlMsg struct {
	Action    int `json:"action"`
	Protocol  int `json:"transportProtocol"`
	LocalPort int `json:"localPort"`
}

const (
	controlPath       = "/_controlPath/"
	identifierHeader  = "X-KTunnel-Identifier"
	handshakeRequest  = "controlHandshake"
	handshakeResponse = "controlOk"

	actionRequestClientSession = 1

	protoHTTP      = 1
	protoTCP       = 2
	protoWebSocket = 3
)

var outMu sync.Mutex

// say prints one line on stdout (unbuffered in Go, so nothing to flush).
func say(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
	os.Stdout.Sync()
}

func warn(format string, args ...interface{}) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintf(os.Stderr, "tunnelpeer: "+format+"\n", args...)
}

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tunnelpeer server|client [flags]  (-h for flags)")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "server":
		os.Exit(runServer(os.Args[2:]))
	case "client":
		os.Exit(runClient(os.Args[2:]))
	default:
		usage()
	}
}
