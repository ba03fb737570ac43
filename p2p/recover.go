package p2p

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// A node cut off from the others (its link down) suspects every member it
// probes, and they suspect it. When the link comes back, neither kind of
// suspicion ends by itself: a suspicion is refuted only by its subject,
// who must first hear of it, and the gossip about it went out while the
// link was down. memberlist would leave them to run out their timeouts
// (up to SuspicionMult × AwarenessMaxMultiplier probe intervals), and a
// member declared dead is then joined again by the lost-member watch: the
// mesh takes seconds to be whole again.
//
// memberlist keeps a health score for its own side (Lifeguard): it grows
// with each probe of another member that failed without a word from the
// members asked to help, and with each suspicion of itself it had to
// refute. While the score is above zero the node pings a member every
// watchInterval; the first answer means the link is back, and the node
// exchanges its whole state with up to maxSeedsPerAttempt members
// (reconcile). Each side then learns whom the other suspects: a suspected
// member hears of it and refutes it within a gossip round, and this node
// refutes its own death.
//
// One exchange per episode: another one only when the score has grown
// since, and a new episode once it is back at zero. A score raised by a
// busy host rather than a cut link costs one exchange with a few members.

// recoverLoop runs until ctx ends; see above.
func (n *Node) recoverLoop(ctx context.Context) {
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	var ep episode
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		score := n.ml.GetHealthScore()
		if !ep.due(score) {
			continue
		}
		p, ok := n.anyLivePeer()
		if !ok || !n.answersWithin(p, watchPingTimeout) {
			continue
		}
		ep.reconciled(score)
		n.reconcile(ctx, score)
	}
}

// episode is a span of doubt: the health score above zero.
type episode struct {
	at int // the score at the episode's last exchange; 0: none yet
}

// due says whether, at this health score, the node should look for a
// member that answers and exchange state with it: the node doubts its own
// side, and has not exchanged state since the score last grew.
func (e *episode) due(score int) bool {
	if score <= 0 {
		e.at = 0 // back to health: the next doubt is a new episode
		return false
	}
	return e.at == 0 || score > e.at
}

func (e *episode) reconciled(score int) { e.at = score }

// anyLivePeer picks a live member's peer at random.
func (n *Node) anyLivePeer() (peer.ID, bool) {
	live := n.members.livePeers()
	if len(live) == 0 {
		return "", false
	}
	return live[rand.N(len(live))].ID, true
}

// reconcile exchanges the whole member state with up to
// maxSeedsPerAttempt live members at once.
func (n *Node) reconcile(ctx context.Context, score int) {
	addrs := n.members.liveAddrs()
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	addrs = addrs[:min(len(addrs), maxSeedsPerAttempt)]
	start := time.Now()
	var (
		mu      sync.Mutex
		reached int
		wg      sync.WaitGroup
	)
	for _, a := range addrs {
		wg.Go(func() {
			if ctx.Err() != nil {
				return
			}
			if k, _ := n.ml.Join([]string{a}); k > 0 {
				mu.Lock()
				reached++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	n.metrics.reconciled.Inc()
	n.log.Info("a member answers again after this node's failure detector doubted its own side: exchanged state with members",
		"health_score", score, "reached", reached, "asked", len(addrs), "took", time.Since(start).Round(time.Millisecond))
}
