package p2p_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// fakePreheater reports progress in steps and refuses one registry, as
// the resolver refuses registries the node does not mirror.
type fakePreheater struct {
	refuse string
	steps  int
	hold   chan struct{} // when set, each preheat waits for it to close
	mu     sync.Mutex
	asked  []p2p.PreheatRequest
}

func (f *fakePreheater) Preheat(ctx context.Context, req p2p.PreheatRequest, progress func(p2p.PreheatProgress)) error {
	f.mu.Lock()
	f.asked = append(f.asked, req)
	f.mu.Unlock()
	if req.Registry == f.refuse {
		return fmt.Errorf("registry %s: %w", req.Registry, errdefs.ErrPermissionDenied)
	}
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := 0; i <= f.steps; i++ {
		progress(p2p.PreheatProgress{Blobs: f.steps, HeldBlobs: i, Bytes: int64(f.steps) << 20, HeldBytes: int64(i) << 20})
		time.Sleep(300 * time.Millisecond)
	}
	return nil
}

func TestPreheatAsksAMember(t *testing.T) {
	t.Parallel()
	ph := &fakePreheater{refuse: "elsewhere.example", steps: 3}
	c := p2ptest.Start(t, 2, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Preheater = ph
			cfg.Labels = map[string]string{"pool": "gpu"}
		}
	}})
	c.WaitMembers(t, 2, 10*time.Second)
	asker, member := c.Nodes[0], c.Nodes[1]
	img := p2p.PreheatRequest{Registry: "registry.example:5000", Repo: "team/app", Digest: digest.FromString("index")}

	var reports []p2p.PreheatProgress
	err := asker.Preheat(t.Context(), member.ID(), img, func(p p2p.PreheatProgress) { reports = append(reports, p) })
	if err != nil {
		t.Fatal(err)
	}
	last := reports[len(reports)-1]
	if !last.Done || last.HeldBlobs != 3 || last.HeldBytes != 3<<20 {
		t.Errorf("last report %+v, want done with 3 blobs held", last)
	}
	if len(reports) < 2 {
		t.Errorf("%d reports, want progress before the end", len(reports))
	}

	// A registry the member does not mirror is refused, in its words.
	img.Registry = "elsewhere.example"
	err = asker.Preheat(t.Context(), member.ID(), img, nil)
	if err == nil || !strings.Contains(err.Error(), "elsewhere.example") {
		t.Errorf("refused registry: %v", err)
	}
	// A malformed source never leaves the asker.
	img.Registry = "bad host"
	if err := asker.Preheat(t.Context(), member.ID(), img, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("bad source: %v, want InvalidArgument", err)
	}
	// A node without a Preheater says so.
	img.Registry = "registry.example:5000"
	if err := member.Preheat(t.Context(), asker.ID(), img, nil); err == nil || !strings.Contains(err.Error(), "does not preheat") {
		t.Errorf("node without a preheater: %v", err)
	}
	// The member's labels reach the asker through the gossip.
	for _, m := range asker.Status().Members {
		if m.ID == member.ID() && m.Labels["pool"] != "gpu" {
			t.Errorf("member labels %v, want pool=gpu", m.Labels)
		}
	}
}

func TestPreheatBoundedAndCancelled(t *testing.T) {
	t.Parallel()
	ph := &fakePreheater{hold: make(chan struct{})}
	c := p2ptest.Start(t, 2, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Preheater = ph
		}
	}})
	c.WaitMembers(t, 2, 10*time.Second)
	asker, member := c.Nodes[0], c.Nodes[1]
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for i := range p2p.MaxPreheatsServed {
		wg.Go(func() {
			img := p2p.PreheatRequest{Registry: "registry.example:5000", Repo: "team/app", Digest: digest.FromString(fmt.Sprint(i))}
			_ = asker.Preheat(ctx, member.ID(), img, nil)
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ph.mu.Lock()
		n := len(ph.asked)
		ph.mu.Unlock()
		if n == p2p.MaxPreheatsServed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d preheats started, want %d", n, p2p.MaxPreheatsServed)
		}
		time.Sleep(20 * time.Millisecond)
	}
	img := p2p.PreheatRequest{Registry: "registry.example:5000", Repo: "team/app", Digest: digest.FromString("one more")}
	if err := asker.Preheat(t.Context(), member.ID(), img, nil); err == nil || !strings.Contains(err.Error(), "busy") {
		t.Errorf("a preheat past the bound: %v, want busy", err)
	}
	// The askers give up: the member's preheats end, and free their slots.
	cancel()
	wg.Wait()
	close(ph.hold)
	waitUntil := time.Now().Add(10 * time.Second)
	for {
		err := asker.Preheat(t.Context(), member.ID(), img, nil)
		if err == nil {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("preheat after the others were cancelled: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
