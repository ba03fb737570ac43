package p2p

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	ma "github.com/multiformats/go-multiaddr"
)

// How a silent or lost peer is watched: pinged every watchInterval, each
// ping given watchPingTimeout. A silent peer is watched for at most
// silentWatchFor, a lost member for lostWatchFor (then LostRetryInterval
// rejoins it, more slowly), and at most maxLostWatches lost members at
// once: one member that answers and is joined again brings the others'
// state with it.
const (
	watchInterval    = 200 * time.Millisecond
	watchPingTimeout = 500 * time.Millisecond
	silentWatchFor   = 10 * time.Minute
	lostWatchFor     = 2 * time.Minute
	maxLostWatches   = 8
	// flowKeeps: a connection over which a blob's byte crossed within
	// this long is not closed by the watch. Behind a link cut to a tenth
	// with its queue full, a stream's bytes arrive in bursts a second and
	// more apart (the window updates queue too), and closing the
	// connection would end the peer's downloads from this node: it would
	// fetch the rest from the registry, through the same slow link.
	flowKeeps = 2 * time.Second
	// lateAnswerFor is how long a watch's ping may take to be answered at
	// all. An answer after watchPingTimeout does not end the watch (the
	// peer is still too slow to read from), but it shows the connection
	// carries the peer's bytes: it waits behind a full link and is not
	// dead, and closing it would end the streams it carries (see watch).
	lateAnswerFor = flowKeeps
)

// Silent leaves p out of Providers and Designated, for every download of
// this node, until p answers a ping again: a stream from it went silent
// mid-blob (the process frozen, its link down). memberlist takes seconds
// to call such a member dead, and until then each download that chose it
// would first wait for its answer. The DHT leaves it out too: a look-up
// that asked it would wait for its answer until the look-up's timeout,
// each round of each download again. A peer that answers again is used
// again within watchInterval. The node tells the members (see
// receiveSilent), which then check p for themselves.
func (n *Node) Silent(p peer.ID) {
	if n.silence(p, "") {
		n.tellSilent(p)
	}
}

// silence leaves p out until it answers a ping, as this node found it
// (origin "") or as the member origin said, and says whether p was not
// left out already.
func (n *Node) silence(p peer.ID, origin string) bool {
	if p == n.id || !n.stats.markSilent(p) {
		return false // this node, or already watched
	}
	if !n.enterHandler() {
		n.stats.clearSilent(p)
		return false
	}
	n.dht.RoutingTable().RemovePeer(p)
	if origin == "" {
		n.metrics.silenced.Inc()
		n.log.Info("peer went silent mid-transfer: left out until it answers a ping", "peer", p)
	} else {
		n.metrics.silentHeard.Inc()
		n.log.Info(noteSilentMsg, "peer", p, "member", origin)
	}
	go func() {
		defer n.handlers.Done()
		start := time.Now()
		res := n.watch(p, nil, silentWatchFor, func() bool { return n.members.departed(p) })
		n.stats.clearSilent(p)
		switch res {
		case watchAnswered:
			if n.members.live(p) {
				_, _ = n.dht.RoutingTable().TryAddPeer(p, true, false)
			}
			n.log.Info("silent peer answers again", "peer", p, "after", time.Since(start).Round(time.Millisecond))
		case watchGaveUp:
			n.log.Info("silent peer left the mesh, or stayed silent", "peer", p)
		}
	}()
	return true
}

// watchLost pings a member memberlist declared failed (not left) until it
// answers, then joins it at gossipAddr: a frozen process that resumed, or
// a link that came back, is in the mesh again within a ping, where
// memberlist's own refutation and LostRetryInterval take seconds.
func (n *Node) watchLost(p peer.ID, gossipAddr string, addrs []ma.Multiaddr) {
	n.lostMu.Lock()
	if n.lostWatches[p] || len(n.lostWatches) >= maxLostWatches {
		n.lostMu.Unlock()
		return
	}
	n.lostWatches[p] = true
	n.lostMu.Unlock()
	if !n.enterHandler() {
		n.endLostWatch(p)
		return
	}
	go func() {
		defer n.handlers.Done()
		defer n.endLostWatch(p)
		start := time.Now()
		if n.watch(p, addrs, lostWatchFor, func() bool { return n.members.live(p) }) != watchAnswered {
			return
		}
		k, err := n.ml.Join([]string{gossipAddr})
		n.log.Info("lost member answers again: joined it", "peer", p, "addr", gossipAddr,
			"after", time.Since(start).Round(time.Millisecond), "members", n.ml.NumMembers(), "joined", k, "error", err)
	}()
}

func (n *Node) endLostWatch(p peer.ID) {
	n.lostMu.Lock()
	defer n.lostMu.Unlock()
	delete(n.lostWatches, p)
}

// watchResult is how a watch ended.
type watchResult int

const (
	watchAnswered watchResult = iota
	watchGaveUp               // done() said so, or the time was up
	watchStopped              // the node is stopping
)

// watch pings p every watchInterval, at addrs when given (a departed
// member's are no longer in the peerstore), until it answers, done says
// to stop, or d has passed.
func (n *Node) watch(p peer.ID, addrs []ma.Multiaddr, d time.Duration, done func() bool) watchResult {
	start := time.Now()
	// Jitter, so that the nodes that lost a member do not ping in step.
	t := time.NewTicker(watchInterval + rand.N(watchInterval/4))
	defer t.Stop()
	for time.Since(start) < d {
		if n.life.Err() != nil {
			return watchStopped
		}
		if done() {
			return watchGaveUp
		}
		if len(addrs) > 0 {
			n.host.Peerstore().AddAddrs(p, addrs, peerstore.TempAddrTTL)
		}
		pinged := time.Now()
		if n.watchPing(p) {
			return watchAnswered
		}
		// The next ping dials anew: over a connection whose packets were
		// lost while a link was down, TCP would deliver it only at its
		// next retransmission, seconds after the link came back. Unless
		// blob bytes crossed it, or p answered one of these pings late,
		// within flowKeeps: the ping queued behind bytes on a full link,
		// and closing the connection would end its streams, the peer's
		// downloads from this node among them. Nor when this node's other
		// peers do not answer either: its own link holds the ping up, and
		// the connection carries its reads from p. The probe of the link
		// pings p too, and an answer to it counts as one to these.
		since := pinged.Add(-flowKeeps)
		quiet := func() bool { return !n.stats.flowedSince(p, since) && !n.stats.answeredSince(p, since) }
		if quiet() && n.host.Network().Connectedness(p) == network.Connected && !n.ownLinkSlow(p, watchPingTimeout) && quiet() {
			_ = n.host.Network().ClosePeer(p)
		}
		select {
		case <-t.C:
		case <-n.life.Done():
		}
	}
	return watchGaveUp
}

// watchPing pings p and says whether it answered within watchPingTimeout.
// The ping itself is given lateAnswerFor: a later answer is noted (see
// stats.answeredSince) when it comes.
func (n *Node) watchPing(p peer.ID) bool {
	if !n.enterHandler() {
		return false
	}
	answered := make(chan bool, 1)
	go func() {
		defer n.handlers.Done()
		ctx, cancel := context.WithTimeout(n.life, lateAnswerFor)
		defer cancel()
		ok := n.answers(ctx, p)
		if ok {
			n.stats.answered(p, time.Now())
		}
		answered <- ok
	}()
	t := time.NewTimer(watchPingTimeout)
	defer t.Stop()
	select {
	case ok := <-answered:
		return ok
	case <-t.C:
		return false
	}
}

// answersWithin says whether p answers one ping within d.
func (n *Node) answersWithin(p peer.ID, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(n.life, d)
	defer cancel()
	return n.answers(ctx, p)
}

// answers says whether p answers one ping before ctx ends. The dial
// ignores libp2p's back-off: a link that came back is found at once.
func (n *Node) answers(ctx context.Context, p peer.ID) bool {
	ctx, cancel := context.WithCancel(network.WithForceDirectDial(ctx, "watch"))
	defer cancel() // ends the pinging
	res, ok := <-ping.Ping(ctx, n.host, p)
	if ok && res.Error == nil {
		n.stats.peer(p).roundTrip(res.RTT)
	}
	return ok && res.Error == nil
}
