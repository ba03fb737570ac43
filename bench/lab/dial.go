package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps the handles of named namespaces.
const netnsDir = "/run/netns"

// DialerIn returns a dial function whose connections start inside the named
// network namespace ("" means this process's own). The test process can so
// reach a registry that listens on a host namespace's address.
func DialerIn(netns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if netns == "" {
		var d net.Dialer
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialIn(ctx, netns, network, addr)
	}
}

// TransportIn is an HTTP transport whose connections start inside netns.
func TransportIn(netns string) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = DialerIn(netns)
	t.Proxy = nil
	return t
}

// dialIn creates the socket on an OS thread that has joined the namespace. A
// socket stays in the namespace it was created in, so the connection is
// usable from any goroutine afterwards.
func dialIn(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread is never unlocked: it now lives in another namespace,
		// and the runtime ends a locked thread when its goroutine returns.
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join(netnsDir, netns))
		if err != nil {
			ch <- result{err: fmt.Errorf("netns %s: %w", netns, err)}
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", netns, err)}
			return
		}
		d := net.Dialer{Timeout: 30 * time.Second}
		c, err := d.DialContext(ctx, network, addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
