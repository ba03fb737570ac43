package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// simNet is the simulated mode's network: every connection between its
// hosts is shaped by both ends' links. A host has an upload and a download
// limiter; a byte a connection carries from a to b passes a's upload and
// b's download, whichever component sent it (a registry answer, a peer's
// stream, a piece, a manifest, a DHT message). Connections are shaped
// where they are dialled, which knows both ends, so the listening side
// needs nothing; a dial to an address that no host listens on is refused,
// so a component cannot reach another one around the links.
type simNet struct {
	mu      sync.Mutex
	hosts   map[string]*simHost // by listen address
	dialers map[string]*simHost // by the local address of a connection dialled
}

func newSimNet() *simNet {
	return &simNet{hosts: make(map[string]*simHost), dialers: make(map[string]*simHost)}
}

// simHost is one end of the simulated links.
type simHost struct {
	name     string
	up, down *rate.Limiter // nil: not shaped
	sent     atomic.Int64
	received atomic.Int64
}

func newSimHost(name string, upBytesPerSec, downBytesPerSec float64) *simHost {
	return &simHost{name: name, up: newLimiter(upBytesPerSec), down: newLimiter(downBytesPerSec)}
}

// listen binds a loopback port for h and makes it reachable through the
// network.
func (n *simNet) listen(h *simHost) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	n.register(ln.Addr().String(), h)
	return smallBuffers{ln}, nil
}

// socketBuffer is the kernel buffer of each end of a shaped connection
// that bytes wait in before they cross a link. Loopback buffers grow to
// megabytes: a registry would write a whole layer into them at once, and
// a transfer cut short would look further along than its link took it.
const socketBuffer = 64 << 10

// smallBuffers gives the connections a listener accepts small socket
// buffers.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(socketBuffer)
		_ = tc.SetReadBuffer(socketBuffer)
	}
	return c, err
}

// register makes addr, where h listens, reachable through the network.
func (n *simNet) register(addr string, h *simHost) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[addr] = h
}

func (n *simNet) host(addr string) (*simHost, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.hosts[addr]
	return h, ok
}

// dialerOf is the host that dialled the connection whose far end, as the
// listener sees it, is addr.
func (n *simNet) dialerOf(addr string) (*simHost, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	h, ok := n.dialers[addr]
	return h, ok
}

// dialer returns a DialContext for components running on from. Addresses
// in local are services on from itself (the node's own mirror, which its
// containerd reaches over loopback) and are not shaped.
func (n *simNet) dialer(from *simHost, local ...string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		for _, l := range local {
			if addr == l {
				return d.DialContext(ctx, network, addr)
			}
		}
		to, ok := n.host(addr)
		if !ok {
			return nil, fmt.Errorf("simulated network: %s dials %s, where no simulated host listens", from.name, addr)
		}
		remote, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := remote.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(socketBuffer)
			_ = tc.SetWriteBuffer(socketBuffer)
		}
		n.mu.Lock()
		n.dialers[remote.LocalAddr().String()] = from
		n.mu.Unlock()
		conn, err := shape(remote, from, to)
		if err != nil {
			remote.Close()
			return nil, err
		}
		return conn, nil
	}
}

// shape relays remote, a connection local dialled to the host at its other
// end, through a fresh loopback TCP connection whose one end it returns:
// what flows from remote passes the remote host's upload and local's
// download, what flows to it local's upload and the remote's download. The
// caller gets a plain *net.TCPConn, as from a dial, whose socket options
// (libp2p sets keep-alives and linger) work.
func shape(remote net.Conn, local, to *simHost) (net.Conn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	app, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	relay, err := ln.Accept()
	if err != nil {
		app.Close()
		return nil, err
	}
	done := make(chan struct{})
	var once sync.Once
	stop := func() {
		once.Do(func() {
			close(done)
			relay.Close()
			remote.Close()
		})
	}
	var ends sync.WaitGroup
	ends.Add(2)
	go func() {
		defer ends.Done()
		pump(relay, remote, to, local, done, stop)
	}()
	go func() {
		defer ends.Done()
		pump(remote, relay, local, to, done, stop)
	}()
	go func() {
		ends.Wait()
		stop()
	}()
	return app, nil
}

// pump copies src to dst, each chunk once the sender's upload and the
// receiver's download let it through; then it half-closes dst, as the
// sender did. An error ends both directions.
func pump(dst, src net.Conn, sender, receiver *simHost, done <-chan struct{}, stop func()) {
	buf := make([]byte, limitBurst)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !pass(n, sender.up, receiver.down, done) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				stop()
				return
			}
			sender.sent.Add(int64(n))
			receiver.received.Add(int64(n))
		}
		if err == io.EOF {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				return
			}
			stop()
			return
		}
		if err != nil {
			stop()
			return
		}
	}
}

// pass waits until both links let n bytes through, false if done first.
// Both are reserved at once and the wait is the longer of the two, as on a
// path whose slower link sets the pace.
func pass(n int, a, b *rate.Limiter, done <-chan struct{}) bool {
	now := time.Now()
	var delay time.Duration
	for _, l := range []*rate.Limiter{a, b} {
		if l != nil {
			delay = max(delay, l.ReserveN(now, n).DelayFrom(now))
		}
	}
	if delay <= 0 {
		return true
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
