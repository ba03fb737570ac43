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
	var c net.Conn
	err := inNetns(netns, func() error {
		d := net.Dialer{Timeout: 30 * time.Second}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// listenIn listens on a TCP address inside the named network namespace
// ("" means this process's own). Accepted connections belong to that
// namespace whichever goroutine serves them.
func listenIn(ctx context.Context, netns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(netns, func() error {
		var lc net.ListenConfig
		var err error
		ln, err = lc.Listen(ctx, "tcp", addr)
		return err
	})
	return ln, err
}

// inNetns runs fn on an OS thread that has joined the namespace ("" runs
// it here). The thread returns to its own namespace before it is
// released; if it cannot, it stays locked and the runtime ends it with the
// goroutine (or, for the main thread, parks it). Threads must not end
// casually: a child started with a parent-death signal dies with the
// thread that forked it.
func inNetns(netns string, fn func() error) error {
	if netns == "" {
		return fn()
	}
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		defer orig.Close()
		f, err := os.Open(filepath.Join(netnsDir, netns))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("netns %s: %w", netns, err)
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("setns %s: %w", netns, err)
			return
		}
		ch <- fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-ch
}
