package p2p

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// How the DHT's walks for a blob's providers are shared: a look-up within
// walkFresh of the blob's last walk starting starts none, and what a walk
// found is merged into the blob's look-ups for walkKeep after it ended.
const (
	walkFresh = time.Second
	walkKeep  = time.Minute
	// maxWalkFound caps what one walk keeps.
	maxWalkFound = 64
)

// walk is one walk of the DHT for a blob's provider records.
type walk struct {
	started time.Time
	done    chan struct{}
	// found and ended are set before done closes.
	found []peer.ID
	ended time.Time
}

// walks holds each blob's last walk, and the one under way.
type walks struct {
	m map[digest.Digest]*walkPair
}

type walkPair struct{ last, running *walk }

// Providers returns up to limit peers that announced dgst and that
// memberlist reports alive, this node and avoided or silent peers
// excluded, best first: peers that answered "busy" lately last, then
// those this node is already fetching the least from, then the lowest
// measured latency. A limit of zero or less means all. When it finds none
// the error wraps errdefs.ErrNotFound.
//
// The node's own provider records answer at once. Every announcement is
// sent to the members closest to the blob's key, and in a mesh no larger
// than the DHT's buckets (20) that is every member, so these records are
// the mesh's. A walk of the DHT finds the records only other members keep
// (announced before this node joined, or while it could not be reached),
// and it waits on the slowest member it asks: one frozen, or behind a
// link cut to a tenth, would hold every look-up until FindTimeout, and a
// download looks its holders up again at each round. So the walk runs in
// the background, one per blob at a time and at most one per walkFresh,
// and what it found is merged into the blob's look-ups for walkKeep. A
// look-up whose own records and earlier walks name no peer waits for the
// walk, up to ctx's end.
func (n *Node) Providers(ctx context.Context, dgst digest.Digest, limit int) ([]peer.ID, error) {
	c, err := CID(dgst)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	known := n.ownRecords(ctx, c)
	last, running := n.walkFor(dgst, c, now)
	if last != nil {
		known = append(known, last.found...)
	}
	found := n.usable(known, now)
	if len(found) == 0 && running != nil {
		select {
		case <-running.done:
			found = n.usable(running.found, time.Now())
		case <-ctx.Done():
		}
	}
	if len(found) == 0 {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("providers of %s: %w", dgst, err)
		}
		return nil, fmt.Errorf("providers of %s: %w", dgst, errdefs.ErrNotFound)
	}
	n.rank(found, now)
	if limit > 0 && len(found) > limit {
		found = found[:limit]
	}
	return found, nil
}

// ownRecords lists the providers of c in this node's own DHT records.
func (n *Node) ownRecords(ctx context.Context, c cid.Cid) []peer.ID {
	ais, err := n.dht.ProviderStore().GetProviders(ctx, c.Hash())
	if err != nil {
		return nil
	}
	out := make([]peer.ID, len(ais))
	for i, ai := range ais {
		out[i] = ai.ID
	}
	return out
}

// usable keeps, once each, the peers of ps that a look-up may return: not
// this node, alive as memberlist sees it, neither avoided nor silent.
func (n *Node) usable(ps []peer.ID, now time.Time) []peer.ID {
	seen := map[peer.ID]bool{}
	var out []peer.ID
	for _, p := range ps {
		if p == n.id || seen[p] {
			continue
		}
		seen[p] = true
		if n.members.live(p) && !n.stats.avoided(p, now) {
			out = append(out, p)
		}
	}
	return out
}

// walkFor returns dgst's last ended walk, if it ended within walkKeep, and
// the walk under way, starting one unless one started within walkFresh.
func (n *Node) walkFor(dgst digest.Digest, c cid.Cid, now time.Time) (last, running *walk) {
	n.walksMu.Lock()
	defer n.walksMu.Unlock()
	w := &n.walks
	if w.m == nil {
		w.m = map[digest.Digest]*walkPair{}
	}
	pair := w.m[dgst]
	if pair == nil {
		pair = &walkPair{}
		w.m[dgst] = pair
	}
	if pair.last != nil && now.Sub(pair.last.ended) < walkKeep {
		last = pair.last
	}
	if pair.running != nil {
		return last, pair.running
	}
	if pair.last != nil && now.Sub(pair.last.started) < walkFresh {
		return last, nil
	}
	if !n.enterHandler() {
		return last, nil // stopping
	}
	for d, p := range w.m {
		if p.running == nil && p.last != nil && now.Sub(p.last.ended) >= walkKeep {
			delete(w.m, d)
		}
	}
	run := &walk{started: now, done: make(chan struct{})}
	pair.running = run
	go func() {
		defer n.handlers.Done()
		found := n.walkDHT(c)
		n.walksMu.Lock()
		run.found, run.ended = found, time.Now()
		pair.last, pair.running = run, nil
		n.walksMu.Unlock()
		close(run.done)
	}()
	return last, run
}

// walkDHT walks the DHT for c's providers, up to FindTimeout or
// maxWalkFound.
func (n *Node) walkDHT(c cid.Cid) []peer.ID {
	ctx, cancel := context.WithTimeout(n.life, n.cfg.Timing.FindTimeout)
	defer cancel()
	var found []peer.ID
	// count 0: the DHT's count would include this node and dead peers.
	for ai := range n.dht.FindProvidersAsync(ctx, c, 0) {
		if ai.ID == n.id {
			continue
		}
		if found = append(found, ai.ID); len(found) == maxWalkFound {
			break
		}
	}
	return found
}
