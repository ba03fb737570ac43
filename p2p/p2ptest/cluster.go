package p2ptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p"
)

// Config returns a node configuration for tests: loopback addresses with
// ports picked by the kernel, LocalTiming with a patient failure
// detector, and an identity in a temporary directory.
func Config(tb testing.TB, name string) p2p.Config {
	cfg := p2p.DefaultConfig()
	cfg.NodeName = name
	cfg.GossipAddr = "127.0.0.1:0"
	cfg.P2PAddr = "127.0.0.1:0"
	cfg.DataDir = tb.TempDir()
	cfg.Timing = p2p.LocalTiming()
	// The tests run beside others under -race on a few cores, where a
	// node can miss probes for seconds. A member is declared dead only
	// after ten probe rounds without an answer, so that a test measures
	// the protocol, not the host. No test here times failure detection.
	cfg.Timing.SuspicionMult = 10
	cfg.RescanInterval = 2 * time.Second
	return cfg
}

// Options shape a Cluster.
type Options struct {
	// Config adjusts node i's configuration, made by Config.
	Config func(i int, cfg *p2p.Config)
	// Content gives node i its content; nil means empty content.
	Content func(i int) *Content
	// Logger, if set, receives every node's logs. Otherwise they are kept
	// and printed with the test's output if it fails.
	Logger *slog.Logger
	// Open runs the nodes without a cluster key, as an open mesh. By
	// default they share a key made for the cluster, as a deployment does.
	Open bool
}

// Cluster is a set of running nodes. Node 0 starts first; the others join
// it.
type Cluster struct {
	Nodes    []*p2p.Node
	Contents []*Content

	opts    Options
	key     []byte
	mu      sync.Mutex
	cancels []context.CancelFunc
	dones   []chan error
}

// Start starts n nodes and stops them when the test ends. It does not wait
// for the nodes to see one another: use WaitMembers.
func Start(tb testing.TB, n int, opts Options) *Cluster {
	tb.Helper()
	c := &Cluster{opts: opts}
	if c.opts.Logger == nil {
		c.opts.Logger = failureLog(tb)
	}
	if !opts.Open {
		key, err := p2p.GenerateClusterKey()
		if err != nil {
			tb.Fatal(err)
		}
		c.key = key
	}
	tb.Cleanup(func() {
		if err := c.StopAll(); err != nil {
			tb.Errorf("stopping the cluster: %v", err)
		}
	})
	for i := range n {
		if _, err := c.Add(tb); err != nil {
			tb.Fatalf("node %d: %v", i, err)
		}
	}
	return c
}

// Logger is the logger the nodes log to (Options.Logger, or one whose
// records are printed at the end of the test if it failed), for the parts
// a test runs beside them.
func (c *Cluster) Logger() *slog.Logger { return c.opts.Logger }

// failureLog returns a logger whose records are printed at the end of tb
// if it failed: why a node did what it did, without noise from passing
// tests.
func failureLog(tb testing.TB) *slog.Logger {
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	tb.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if tb.Failed() {
			tb.Logf("the nodes' logs:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(writerFunc(func(b []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(b)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// Add starts one more node, joining node 0, and returns its index.
func (c *Cluster) Add(tb testing.TB) (int, error) {
	c.mu.Lock()
	i := len(c.Nodes)
	c.mu.Unlock()
	cfg := Config(tb, fmt.Sprintf("node-%02d", i))
	if c.opts.Logger != nil {
		cfg.Logger = c.opts.Logger.With("node", i)
	}
	if i > 0 {
		cfg.Join = []string{c.Nodes[0].Status().GossipAddr}
	}
	cfg.ClusterKey = c.key
	if c.opts.Config != nil {
		c.opts.Config(i, &cfg)
	}
	content := NewContent()
	if c.opts.Content != nil {
		if got := c.opts.Content(i); got != nil {
			content = got
		}
	}
	node, err := p2p.New(cfg, content)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- node.Run(ctx) }()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Nodes = append(c.Nodes, node)
	c.Contents = append(c.Contents, content)
	c.cancels = append(c.cancels, cancel)
	c.dones = append(c.dones, done)
	return i, nil
}

// Stop stops node i (it leaves the cluster gracefully) and waits for its
// Run to return. Stopping a stopped node returns nil.
func (c *Cluster) Stop(i int) error {
	c.mu.Lock()
	cancel, done := c.cancels[i], c.dones[i]
	c.dones[i] = nil
	c.mu.Unlock()
	if done == nil {
		return nil
	}
	cancel()
	return <-done
}

// Running reports whether node i has not been stopped.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dones[i] != nil
}

// StopAll stops every running node, concurrently.
func (c *Cluster) StopAll() error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i := range c.Nodes {
		wg.Go(func() { errs[i] = c.Stop(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WaitMembers waits until every running node sees want live members
// (itself included).
func (c *Cluster) WaitMembers(tb testing.TB, want int, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, func() error {
		for i, n := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			if got := n.Status().LiveMembers; got != want {
				return fmt.Errorf("node %d sees %d live members, want %d", i, got, want)
			}
		}
		return nil
	})
}

// Eventually calls cond until it returns nil, failing the test with its
// last error after timeout.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	delay := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(delay)
		delay = min(2*delay, 250*time.Millisecond)
	}
}
