package p2p

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// recordingConn keeps each write it is given, or fails them all with err.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	err    error
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func TestBatchedConnSendsEachSecuredWriteInOneGo(t *testing.T) {
	rc := &recordingConn{}
	c := newBatchedConn(rc)
	record := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

	// Outside a secured write (the handshake, an alert): straight through.
	if _, err := c.Write(record('h', 100)); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 1 {
		t.Fatalf("a write outside a secured one made %d writes, want 1", len(rc.writes))
	}

	// One secured write's records: held until it ends, then one write.
	var want []byte
	c.gather()
	for i := range 4 {
		r := record(byte('a'+i), 16<<10)
		want = append(want, r...)
		if _, err := c.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if len(rc.writes) != 1 {
		t.Fatalf("records left before the secured write ended: %d writes", len(rc.writes)-1)
	}
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 2 || !bytes.Equal(rc.writes[1], want) {
		t.Fatalf("after the secured write: %d writes, want its four records in one, in order", len(rc.writes)-1)
	}

	// More than batchWriteMax: sent as it fills, never a larger write, and
	// every byte in order.
	rc.writes = nil
	want = nil
	c.gather()
	for i := range 40 {
		r := record(byte(i), 16<<10)
		want = append(want, r...)
		if _, err := c.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.release(); err != nil {
		t.Fatal(err)
	}
	if len(rc.writes) != 3 {
		t.Errorf("640 KiB of records left in %d writes, want 3 (at most %d bytes each)", len(rc.writes), batchWriteMax)
	}
	var got []byte
	for _, w := range rc.writes {
		if len(w) > batchWriteMax {
			t.Errorf("a write of %d bytes, more than %d", len(w), batchWriteMax)
		}
		got = append(got, w...)
	}
	if !bytes.Equal(got, want) {
		t.Error("the records arrived changed or out of order")
	}
}

func TestBatchedConnFailsEveryWriteAfterOneFailed(t *testing.T) {
	broken := errors.New("connection reset")
	rc := &recordingConn{}
	c := newBatchedConn(rc)
	c.gather()
	if _, err := c.Write([]byte("record")); err != nil {
		t.Fatalf("a kept record failed: %v", err)
	}
	rc.err = broken
	if err := c.release(); !errors.Is(err, broken) {
		t.Fatalf("release = %v, want the connection's error", err)
	}
	rc.err = nil // the connection would take bytes again: TLS's stream is broken all the same
	if _, err := c.Write([]byte("alert")); !errors.Is(err, broken) {
		t.Errorf("a write after a failed one = %v, want the first error", err)
	}
	if len(rc.writes) != 0 {
		t.Errorf("%d writes reached the connection after it failed", len(rc.writes))
	}
}

// TestBatchedTLSTalksToPlainLibp2p connects a host with the node's wire
// options and one with libp2p's own TLS and yamux, both ways, and echoes
// a few MiB over a stream: the batching and the larger frames are the
// same protocols on the wire.
func TestBatchedTLSTalksToPlainLibp2p(t *testing.T) {
	newHost := func(opts ...libp2p.Option) host.Host {
		h, err := libp2p.New(append(opts,
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.Transport(tcp.NewTCPTransport),
			libp2p.DisableRelay(), libp2p.DisableMetrics())...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}
	plain := newHost(libp2p.Security(libp2ptls.ID, libp2ptls.New))
	batched := newHost(wireOptions(Config{}, nil)...)

	const echo = "/shoal/test/echo"
	for _, h := range []host.Host{plain, batched} {
		h.SetStreamHandler(echo, func(s network.Stream) {
			defer s.Close()
			_, _ = io.Copy(s, s)
		})
	}
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	for _, tc := range []struct {
		name     string
		from, to host.Host
	}{{"batched dials plain", batched, plain}, {"plain dials batched", plain, batched}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			_ = tc.from.Network().ClosePeer(tc.to.ID())
			if err := tc.from.Connect(ctx, peer.AddrInfo{ID: tc.to.ID(), Addrs: tc.to.Addrs()}); err != nil {
				t.Fatal(err)
			}
			conns := tc.from.Network().ConnsToPeer(tc.to.ID())
			if len(conns) != 1 || conns[0].Stat().Direction != network.DirOutbound {
				t.Fatalf("want one connection, dialed by %s", tc.from.ID())
			}
			s, err := tc.from.NewStream(ctx, tc.to.ID(), echo)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_ = s.SetDeadline(time.Now().Add(20 * time.Second))
			sent := make(chan error, 1)
			go func() {
				_, err := s.Write(payload)
				sent <- errors.Join(err, s.CloseWrite())
			}()
			got, err := io.ReadAll(s)
			if err := errors.Join(err, <-sent); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(payload))
			}
		})
	}
}
