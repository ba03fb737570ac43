package resolver

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// linkJudge is a Router whose other peers answer a ping in time or not;
// only OwnLinkSlow may be called.
type linkJudge struct {
	Router
	othersSilent bool
}

func (l linkJudge) OwnLinkSlow(string, time.Duration) bool { return l.othersSilent }

// TestOwnLinkExcusesOnlyANodeThatSlowed: a peer's wait is laid to the
// node's own link only when the node as a whole receives under half its
// best second and none of its other peers answers in time: a node that
// receives at its best carries bytes fine, whatever the peers it could
// ask (frozen or throttled themselves) say.
func TestOwnLinkExcusesOnlyANodeThatSlowed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		othersSilent bool
		atItsBest    bool // the node receives at its best up to now
		wait         time.Duration
		want         bool
	}{
		{name: "node slowed, other peers silent", othersSilent: true, wait: time.Second, want: true},
		{name: "node at its best, other peers silent", othersSilent: true, atItsBest: true, wait: time.Second},
		{name: "node slowed, another peer answers", wait: time.Second},
		{name: "node slowed, other peers silent, the wait past the stall timeout", othersSilent: true, wait: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Three seconds ago the node began receiving 3.2 MB/s; it
			// still does, or stopped a second ago.
			now := time.Now()
			start := now.Add(-3 * time.Second)
			node := newNodePace(time.Second)
			node.p.at = start.Truncate(paceBucket)
			end := start.Add(2 * time.Second)
			if tc.atItsBest {
				end = now
			}
			for at := start; at.Before(end); at = at.Add(10 * time.Millisecond) {
				node.read(at, 32<<10)
			}
			r := &Resolver{router: linkJudge{othersSilent: tc.othersSilent}, cfg: Config{StallTimeout: 10 * time.Second}, pace: node, m: newMetrics(nil)}
			if got := r.ownLinkExcuses("p", tc.wait); got != tc.want {
				t.Errorf("excused = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestOwnLinkExcusesJudgesTheWait: the node's rate that excuses a wait is
// measured over the wait, not over the window that holds it. A node that
// received slowly, then a burst above its best just before its only peer
// fell silent, receives nothing while it waits; over the whole window its
// rate is above half its best, and the wait would never be laid to its
// own link.
func TestOwnLinkExcusesJudgesTheWait(t *testing.T) {
	t.Parallel()
	// The wait ends 10 ms into a bucket: the window then reaches 200 ms
	// before it, where the burst came.
	time.Sleep(time.Until(time.Now().Truncate(paceBucket).Add(paceBucket + 10*time.Millisecond)))
	aligned := time.Now().Truncate(paceBucket)
	const window, wait = 300 * time.Millisecond, 200 * time.Millisecond
	node := newNodePace(window)
	start := aligned.Add(-2 * time.Second)
	node.p.at = start
	for at := start; at.Before(aligned.Add(-wait)); at = at.Add(10 * time.Millisecond) {
		node.read(at, 20<<10) // 2 MB/s
	}
	node.read(aligned.Add(-wait+5*time.Millisecond), 1<<20)
	r := &Resolver{router: linkJudge{othersSilent: true}, cfg: Config{StallTimeout: 10 * time.Second}, pace: node, m: newMetrics(nil)}
	if !r.ownLinkExcuses("p", wait) {
		rate, best, _, _ := node.state(time.Now())
		t.Errorf("a wait of %v in which the node received nothing, its other peers silent: not excused (over the window %.0f KiB/s, best %.0f KiB/s)", wait, rate/1024, best/1024)
	}
}

// countingRouter counts its look-ups; only Providers may be called.
type countingRouter struct {
	Router
	lookups int
}

func (c *countingRouter) Providers(context.Context, digest.Digest) ([]string, error) {
	c.lookups++
	return []string{"holder"}, nil
}

// TestReplanKeepsAFreshLookup: a list of sources made again within a
// round (see swarm.Replan) takes the holders from the round's look-up
// while that is younger than swarm.StaleList, and looks them up again
// once it is older; a round's first list, and a look-up again before the
// registry (see swarm.Relist), always look.
func TestReplanKeepsAFreshLookup(t *testing.T) {
	t.Parallel()
	router := &countingRouter{}
	r := &Resolver{router: router, ctx: context.Background(), cfg: Config{PeerLookupTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)}}
	d := &dl{r: r, req: BlobRequest{Digest: digest.FromString("blob")}}
	for i, step := range []struct {
		name    string
		reuse   bool
		age     time.Duration // how much older the last look-up is made first
		lookups int
	}{
		{name: "the round's first list", lookups: 1},
		{name: "replanned at once", reuse: true, lookups: 1},
		{name: "replanned once the look-up is StaleList old", reuse: true, age: swarm.StaleList, lookups: 2},
		{name: "looked up again before the registry", lookups: 3},
	} {
		d.lookedUp = d.lookedUp.Add(-step.age)
		if got := d.holders(step.reuse); len(got) != 1 || router.lookups != step.lookups {
			t.Fatalf("step %d, %s: holders %v after %d look-ups, want [holder] after %d", i, step.name, got, router.lookups, step.lookups)
		}
	}
}
