package p2p_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/resolver"
	"github.com/shoal-dev/shoal/store"
)

// heardLog records the back-offs a node heard from the gossip.
type heardLog struct {
	mu    sync.Mutex
	heard []string // "registry origin"
	left  []time.Duration
}

func (h *heardLog) record(registry string, left time.Duration, origin string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.heard = append(h.heard, registry+" "+origin)
	h.left = append(h.left, left)
}

func (h *heardLog) snapshot() ([]string, []time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.heard), slices.Clone(h.left)
}

// TestBackoffSpreadsOverTheGossip: a back-off one member shares reaches
// every other member, with about the time it has left.
func TestBackoffSpreadsOverTheGossip(t *testing.T) {
	t.Parallel()
	const nodes = 4
	c, logs := hearingMesh(t, nodes, nil)
	origin := c.Nodes[0]
	origin.ShareBackoff("registry.example:5000", 40*time.Second)

	waitHeard(t, logs[1:], 10*time.Second)
	for i := 1; i < nodes; i++ {
		heard, left := logs[i].snapshot()
		want := "registry.example:5000 " + origin.Status().NodeName
		if heard[0] != want || left[0] < 30*time.Second || left[0] > 40*time.Second {
			t.Errorf("node %d heard %q with %s left, want %q with about 40s", i, heard[0], left[0], want)
		}
	}
	if heard, _ := logs[0].snapshot(); len(heard) != 0 {
		t.Errorf("the node that shared it heard %v back", heard)
	}
}

// TestBackoffReachesAMemberWithoutTheGossip: a back-off the node heard
// from the registry itself reaches the other members directly, not only
// on the gossip's UDP messages, which a loaded host can lose: here the
// gossip and the probes that carry it run once an hour.
func TestBackoffReachesAMemberWithoutTheGossip(t *testing.T) {
	t.Parallel()
	c, logs := hearingMesh(t, 3, func(cfg *p2p.Config) {
		cfg.Timing.GossipInterval, cfg.Timing.ProbeInterval = time.Hour, time.Hour
	})
	c.Nodes[0].ShareBackoff("registry.example:5000", 40*time.Second)
	waitHeard(t, logs[1:], 5*time.Second)
}

// hearingMesh starts a mesh of n members, each configured by edit (nil:
// as is) and recording the back-offs it hears, and waits until they all
// know one another.
func hearingMesh(t *testing.T, n int, edit func(*p2p.Config)) (*p2ptest.Cluster, []*heardLog) {
	t.Helper()
	logs := make([]*heardLog, n)
	c := p2ptest.Start(t, n, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		logs[i] = &heardLog{}
		cfg.OnRegistryBackoff = logs[i].record
		if edit != nil {
			edit(cfg)
		}
	}})
	c.WaitMembers(t, n, 10*time.Second)
	return c, logs
}

// waitHeard fails the test unless each of logs heard a back-off within d.
func waitHeard(t *testing.T, logs []*heardLog, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for i, l := range logs {
		for {
			if heard, _ := l.snapshot(); len(heard) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("member %d of %d heard no back-off within %v", i+1, len(logs), d)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// limitedPuller is a node whose registry asked it to slow down.
type limitedPuller struct{ left time.Duration }

func (p limitedPuller) PullFor(_ context.Context, d digest.Digest, registry, _ string, _ swarm.Asker, _ func() bool) (store.Blob, error) {
	return nil, fmt.Errorf("blob %s: %w", d, &resolver.RateLimitedError{Registry: registry, RetryAfter: p.left})
}

// TestPullForSaysRateLimited: a node asked to fetch a blob from a registry
// that asked it to slow down says so, with the time left, so the asker
// does not ask the registry or another node in its place.
func TestPullForSaysRateLimited(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 2, p2ptest.Options{Config: func(i int, cfg *p2p.Config) {
		if i == 1 {
			cfg.Puller = limitedPuller{left: 25 * time.Second}
		}
	}})
	c.WaitMembers(t, 2, 10*time.Second)
	d := digest.FromString("a layer")
	for _, ranged := range []bool{false, true} {
		var err error
		if ranged {
			_, _, _, err = c.Nodes[0].FetchRange(t.Context(), c.Nodes[1].ID(), d, p2p.Range{Wait: true, Registry: "registry.example:5000", Repo: "team/app"})
		} else {
			_, _, err = c.Nodes[0].FetchThrough(t.Context(), c.Nodes[1].ID(), d, 0, "registry.example:5000", "team/app")
		}
		var rl *resolver.RateLimitedError
		if !errors.As(err, &rl) {
			t.Fatalf("ranged %v: got %v, want a rate limit", ranged, err)
		}
		if rl.Registry != "registry.example:5000" || rl.RetryAfter != 25*time.Second || rl.Via != c.Nodes[1].ID().String() {
			t.Fatalf("ranged %v: got %+v", ranged, rl)
		}
	}
}
