package p2p

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/routing"
	"github.com/opencontainers/go-digest"
)

// advertiser remembers what this node announced and when.
type advertiser struct {
	kick chan struct{}

	mu       sync.Mutex
	provided map[digest.Digest]time.Time
	// fullAt is the member count when every blob was last announced in one
	// sweep. Announcements go to the peers closest to a key at the time, so
	// while the cluster grows (a rollout) they are repeated each time it has
	// doubled.
	fullAt int
}

func newAdvertiser() *advertiser {
	return &advertiser{kick: make(chan struct{}, 1), provided: make(map[digest.Digest]time.Time)}
}

func (a *advertiser) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *advertiser) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.provided)
}

// advertiseLoop announces the node's content at start, at every
// RescanInterval, and sooner while announcing fails (no routing table yet).
func (n *Node) advertiseLoop(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-n.adv.kick:
		}
		next := n.cfg.RescanInterval
		if !n.sweep(ctx) {
			next = min(next, 2*n.cfg.Timing.ConnectInterval)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// sweep walks the content, announces what is new or due for refresh, and
// forgets what disappeared. It reports whether everything went out.
func (n *Node) sweep(ctx context.Context) bool {
	if n.dht.RoutingTable().Size() == 0 {
		return false // nobody to announce to yet; the connector kicks us
	}
	var held []digest.Digest
	err := n.content.Walk(ctx, func(dgst digest.Digest, _ int64) error {
		if checkDigest(dgst) == nil {
			held = append(held, dgst)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() == nil {
			n.log.Warn("cannot list content to announce", "error", err)
		}
		return false
	}

	now := time.Now()
	live := n.members.livePeerCount() + 1
	a := n.adv
	a.mu.Lock()
	force := live > 2*a.fullAt
	keep := make(map[digest.Digest]bool, len(held))
	var due []digest.Digest
	for _, d := range held {
		keep[d] = true
		at, ok := a.provided[d]
		if force || !ok || now.Sub(at) >= n.cfg.ProvideTTL/2 {
			due = append(due, d)
		}
	}
	for d := range a.provided {
		if !keep[d] {
			// The DHT has no withdrawal: the record expires by itself.
			delete(a.provided, d)
		}
	}
	n.metrics.provided.Set(float64(len(a.provided)))
	a.mu.Unlock()

	var failed atomic.Int64
	sem := make(chan struct{}, n.cfg.ProvideConcurrency)
	var wg sync.WaitGroup
	for _, d := range due {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := n.provide(ctx, d); err != nil {
				failed.Add(1)
				n.log.Debug("announcement failed", "digest", d, "error", err)
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		if ctx.Err() == nil {
			n.log.Warn("some announcements failed", "failed", f, "due", len(due))
		}
		return false
	}
	if force {
		a.mu.Lock()
		a.fullAt = live
		a.mu.Unlock()
	}
	if len(due) > 0 {
		n.log.Debug("announced content", "blobs", len(due), "held", len(held), "members", live)
	}
	return true
}

// Provide announces at once that this node holds dgst, for content that
// just arrived; the periodic rescan would find it later anyway.
func (n *Node) Provide(ctx context.Context, dgst digest.Digest) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	return n.provide(ctx, dgst)
}

// Withdraw stops announcing dgst unless this node still holds it (its
// Content opens it), and reports whether it stopped. Content that went
// away without a word (garbage collection) is found by the rescan instead.
// The DHT has no withdrawal: the records other nodes keep expire within
// ProvideTTL, and a peer that asks this node meanwhile is answered "not
// found" and goes on to its next source.
func (n *Node) Withdraw(ctx context.Context, dgst digest.Digest) bool {
	b, err := n.content.Open(ctx, dgst)
	if err == nil {
		_ = b.Close()
		return false
	}
	if !errdefs.IsNotFound(err) {
		return false // not known to be gone: the rescan decides
	}
	a := n.adv
	a.mu.Lock()
	_, ok := a.provided[dgst]
	delete(a.provided, dgst)
	n.metrics.provided.Set(float64(len(a.provided)))
	a.mu.Unlock()
	return ok
}

// Rescan asks for a walk of the content soon, as at RescanInterval, and
// returns at once; requests made while one is due are merged.
func (n *Node) Rescan() { n.adv.poke() }

func (n *Node) provide(ctx context.Context, dgst digest.Digest) error {
	c, err := CID(dgst)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, n.cfg.Timing.ProvideTimeout)
	defer cancel()
	if err := n.dht.Provide(pctx, c, true); err != nil {
		n.metrics.provides.WithLabelValues("error").Inc()
		if ctx.Err() != nil {
			return fmt.Errorf("provide %s: %w", dgst, ctx.Err())
		}
		return fmt.Errorf("provide %s: %w: %v", dgst, errdefs.ErrUnavailable, err)
	}
	n.metrics.provides.WithLabelValues("ok").Inc()
	n.adv.mu.Lock()
	n.adv.provided[dgst] = time.Now()
	n.metrics.provided.Set(float64(len(n.adv.provided)))
	n.adv.mu.Unlock()
	return nil
}

// Providers returns up to limit peers that announced dgst and that
// memberlist reports alive, this node and avoided peers excluded, best
// first: peers that answered "busy" lately last, then those this node is
// already fetching the least from, then the lowest measured latency. A
// limit of zero or less means all. The search is bounded by FindTimeout,
// and ends early as walkProviders says; when it finds none the error
// wraps errdefs.ErrNotFound.
func (n *Node) Providers(ctx context.Context, dgst digest.Digest, limit int) ([]peer.ID, error) {
	c, err := CID(dgst)
	if err != nil {
		return nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, n.cfg.Timing.FindTimeout)
	defer cancel()
	// Look for a few more than asked, to have some choice when ranking.
	want := 0
	if limit > 0 {
		want = 2 * limit
	}
	now := time.Now()
	found := n.walkProviders(fctx, c, want, now)
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

// walkProviders collects the live, not avoided peers that announced c:
// first from this node's own records, then from the members the DHT walk
// asks. It stops at want peers (zero: no such limit), when the walk ends,
// or once it found one and no member answered for FindQuiet: a member
// whose answers queue behind a throttled link would hold every look-up
// for as long as its link is slow, and the records it holds are on the
// other members too (in a small cluster every member keeps them all;
// in a large one the K closest to the key do).
func (n *Node) walkProviders(ctx context.Context, c cid.Cid, want int, now time.Time) []peer.ID {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the walk if it stopped early; it closes its channels
	qctx, events := routing.RegisterForQueryEvents(ctx)
	provs := n.dht.FindProvidersAsync(qctx, c, 0) // count 0: the DHT's count would include this node and dead peers
	quiet := time.NewTimer(time.Hour)
	quiet.Stop()
	defer quiet.Stop()
	answered := false
	seen := map[peer.ID]bool{}
	var found []peer.ID
	for {
		select {
		case ai, ok := <-provs:
			if !ok {
				return found
			}
			p := ai.ID
			if p == n.id || seen[p] {
				continue
			}
			seen[p] = true
			if !n.members.live(p) || n.stats.avoided(p, now) {
				continue
			}
			found = append(found, p)
			if want > 0 && len(found) >= want {
				return found
			}
		case ev, ok := <-events:
			if !ok {
				events = nil // the context ended: provs closes too
				continue
			}
			if ev.Type != routing.PeerResponse {
				continue
			}
			answered = true
		case <-quiet.C:
			return found
		}
		if answered && len(found) > 0 {
			quiet.Reset(n.cfg.Timing.FindQuiet)
		}
	}
}

func (n *Node) rank(ps []peer.ID, now time.Time) {
	type ranked struct {
		id  peer.ID
		key rankKey
		lat time.Duration
	}
	rs := make([]ranked, len(ps))
	for i, p := range ps {
		lat := n.host.Peerstore().LatencyEWMA(p)
		if lat == 0 {
			lat = time.Hour // unmeasured: after the measured ones
		}
		rs[i] = ranked{id: p, key: n.stats.rank(p, now), lat: lat}
	}
	// Shuffle first, so equal peers share the load.
	rand.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
	slices.SortStableFunc(rs, func(a, b ranked) int {
		switch {
		case a.key.busy != b.key.busy:
			if a.key.busy {
				return 1
			}
			return -1
		case a.key.inflight != b.key.inflight:
			return a.key.inflight - b.key.inflight
		case a.lat != b.lat:
			if a.lat < b.lat {
				return -1
			}
			return 1
		}
		return 0
	})
	for i := range rs {
		ps[i] = rs[i].id
	}
}

// Avoid leaves p out of Providers for Config.AvoidFor: it sent bytes that
// did not verify, or misbehaved otherwise.
func (n *Node) Avoid(p peer.ID, why error) {
	reason := "unspecified"
	if why != nil {
		reason = why.Error()
	}
	n.log.Warn("avoiding peer", "peer", p, "for", n.cfg.AvoidFor, "reason", reason)
	n.metrics.avoided.Inc()
	n.stats.avoid(p, time.Now().Add(n.cfg.AvoidFor), reason)
}
