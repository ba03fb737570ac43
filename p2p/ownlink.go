package p2p

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// ownLinkPeers is how many of its other peers a node pings to measure its
// own link: the first answer counts, so that peers frozen or cut off
// together (the ones the node was reading from, whose bytes crossed last)
// do not make the link look slow while one of the others answers.
const ownLinkPeers = 4

// errNoOtherPeer: the node has no connected peer besides the one judged,
// so its own link cannot be told apart from that peer.
var errNoOtherPeer = errors.New("no other connected peer to compare with")

// roundTripBeside pings up to ownLinkPeers of the peers this node is
// connected to other than exclude (see comparePeers), over the connections
// already open, and returns the first answer's round trip, and the
// quickest round trip seen before to the peer that gave it (0: none). It
// pings exclude as well, whose answer counts only when it did not wait in
// a queue (see swarm.OwnLinkQueued; with no round trip seen before, when it
// came within swarm.OwnLinkQueue): its pings cross the connection its
// bytes would, so an answer that came straight back shows that nothing on
// the way, this node's link included, holds them up; any answer of it is
// noted (see stats.answeredSince). It fails with
// errNoOtherPeer when there is no other peer to ask, and with ctx's error
// when none answered in time.
//
// A node whose own link is cut or full sees every peer slow at once: its
// pings queue behind what it sends and receives. A peer that alone is
// slow or silent is the peer's doing. Where the node's other peers are
// frozen or throttled themselves, the peer's own quick answer is what
// tells a peer that has nothing to send from a link that carries nothing.
func (n *Node) roundTripBeside(ctx context.Context, exclude peer.ID) (rtt, quickest time.Duration, err error) {
	others := n.comparePeers(exclude)
	if len(others) == 0 {
		return 0, 0, errNoOtherPeer
	}
	ctx, cancel := context.WithCancel(network.WithNoDial(ctx, "own link probe"))
	defer cancel() // ends the other pings
	type answer struct{ rtt, quickest time.Duration }
	answers := make(chan answer, len(others)+1)
	for _, p := range append(others, exclude) {
		go func() {
			if res, ok := <-ping.Ping(ctx, n.host, p); ok && res.Error == nil {
				st := n.stats.peer(p)
				quickest := time.Duration(st.quickest.Load())
				st.roundTrip(res.RTT)
				if p == exclude {
					n.stats.answered(p, time.Now())
					if res.RTT-quickest >= swarm.OwnLinkQueue {
						// Late: its own uplink may be what it waited behind.
						return
					}
				}
				answers <- answer{res.RTT, quickest}
			}
		}()
	}
	select {
	case a := <-answers:
		return a.rtt, a.quickest, nil
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// comparePeers lists the peers roundTripBeside asks, at most ownLinkPeers:
// the connected peers but exclude, those not left out as silent first,
// each group by whose blob bytes crossed last. A silent peer is asked too
// where too few others are: a node whose own link is full finds every
// peer slow in turn and leaves each out as silent, and with none left to
// compare with it would lay its own link's slowness to the last peer it
// reads from. A silent peer that answers in time shows the link is fine;
// one that does not shows nothing the others did not.
func (n *Node) comparePeers(exclude peer.ID) []peer.ID {
	type cand struct {
		id     peer.ID
		silent bool
		last   int64
	}
	var cs []cand
	for _, p := range n.host.Network().Peers() {
		if p == exclude || p == n.id {
			continue
		}
		cs = append(cs, cand{p, n.stats.isSilent(p), n.stats.peer(p).lastByte.Load()})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		if a.silent != b.silent {
			if a.silent {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.last, a.last)
	})
	out := make([]peer.ID, 0, ownLinkPeers)
	for _, c := range cs[:min(len(cs), ownLinkPeers)] {
		out = append(out, c.id)
	}
	return out
}

// ownLinkSlow says whether, exclude having kept this node waiting for
// wait, none of the node's other peers (see roundTripBeside) answers a
// ping within swarm.OwnLinkBudget, or the first to answer does so
// swarm.OwnLinkQueue later than its quickest round trip, and exclude does
// not answer at once either: the node's own link, not exclude, is what
// holds exclude's bytes and answers up. False when there is no other peer
// to ask.
func (n *Node) ownLinkSlow(exclude peer.ID, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(n.life, swarm.OwnLinkBudget)
	defer cancel()
	start := time.Now()
	rtt, quickest, err := n.roundTripBeside(ctx, exclude)
	n.log.Debug("own link probed", "peer", exclude, "wait", wait, "rtt", rtt, "quickest", quickest, "took", time.Since(start), "err", err)
	if err == nil {
		return swarm.OwnLinkQueued(rtt, quickest)
	}
	return !errors.Is(err, errNoOtherPeer) && n.life.Err() == nil
}

// peerLinkQueued says whether a ping shows p's link, not this node's,
// holds p's bytes up (see swarm.PeerLinkQueued): p and up to ownLinkPeers
// of the node's other peers (see comparePeers) are pinged at once, over
// the connections already open, and within swarm.OwnLinkBudget one of the
// others answers without waiting in a queue while p does not answer, or
// its answer waited in one. False when there is no other peer to ask.
func (n *Node) peerLinkQueued(p peer.ID) bool {
	others := n.comparePeers(p)
	if len(others) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(network.WithNoDial(n.life, "peer link probe"), swarm.OwnLinkBudget)
	defer cancel() // ends the other pings
	type answer struct {
		peer   bool // p's answer, not another's
		queued bool
	}
	answers := make(chan answer, len(others)+1)
	for _, q := range append(others, p) {
		go func() {
			if res, ok := <-ping.Ping(ctx, n.host, q); ok && res.Error == nil {
				st := n.stats.peer(q)
				quickest := time.Duration(st.quickest.Load())
				st.roundTrip(res.RTT)
				queued := swarm.OwnLinkQueued(res.RTT, quickest)
				if q == p {
					n.stats.answered(p, time.Now())
				} else if quickest == 0 {
					// No round trip seen to it yet: it answered at once
					// only if within OwnLinkQueue at all.
					queued = res.RTT >= swarm.OwnLinkQueue
				}
				answers <- answer{q == p, queued}
			}
		}()
	}
	var peerAnswered, peerQueued, otherAnswered, otherQueued bool
	// Settled once p answered at once (its link holds nothing up), or
	// answered late beside another peer's quick answer.
	settled := func() bool { return peerAnswered && (!peerQueued || (otherAnswered && !otherQueued)) }
wait:
	for !settled() {
		select {
		case a := <-answers:
			switch {
			case a.peer:
				peerAnswered, peerQueued = true, a.queued
			case !otherAnswered || otherQueued:
				otherAnswered, otherQueued = true, a.queued
			}
		case <-ctx.Done():
			break wait
		}
	}
	queued := swarm.PeerLinkQueued(peerAnswered, peerQueued, otherAnswered, otherQueued)
	n.log.Debug("peer link probed", "peer", p, "answered", peerAnswered, "late", peerQueued, "other_answered", otherAnswered, "queued", queued)
	return queued
}
