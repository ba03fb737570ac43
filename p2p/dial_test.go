package p2p_test

import (
	"crypto/rand"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// TestDialTimeoutCoversPrivateAddresses: a connection gets the node's
// whole dial timeout to open, to a loopback or private address too, for
// which libp2p has a bound of its own (5 s): a peer that accepts the TCP
// connection and then says nothing is given up after the node's time.
func TestDialTimeoutCoversPrivateAddresses(t *testing.T) {
	t.Parallel()
	const dialTimeout = 7 * time.Second
	c := p2ptest.Start(t, 1, p2ptest.Options{Open: true, Config: func(_ int, cfg *p2p.Config) {
		cfg.Timing.DialTimeout = dialTimeout
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, cn := range conns {
			cn.Close()
		}
	})
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, cn) // held open, never written to
			mu.Unlock()
		}
	}()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	addr := ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", ln.Addr().(*net.TCPAddr).Port))
	start := time.Now()
	err = p2p.Host(c.Nodes[0]).Connect(t.Context(), peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}})
	took := time.Since(start)
	if err == nil {
		t.Fatal("connected to a peer that says nothing")
	}
	if took < dialTimeout-time.Second {
		t.Errorf("gave the dial up after %v (%v), want %v", took.Round(time.Millisecond), err, dialTimeout)
	}
}
