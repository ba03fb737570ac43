package p2p

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// How a silent peer is watched: pinged every silentProbeInterval, each
// ping given silentProbeTimeout, for at most silentProbeFor; after that,
// memberlist alone says whether it is alive.
const (
	silentProbeInterval = 200 * time.Millisecond
	silentProbeTimeout  = 500 * time.Millisecond
	silentProbeFor      = 10 * time.Minute
)

// Silent leaves p out of Providers and Designated, for every download of
// this node, until p answers a ping again: a stream from it went silent
// mid-blob (the process frozen, its link down). memberlist takes seconds
// to call such a member dead, and until then each download that chose it
// would first wait for its answer. A peer that answers again is used
// again within silentProbeInterval.
func (n *Node) Silent(p peer.ID) {
	if p == n.id || !n.stats.markSilent(p) {
		return // this node, or already watched
	}
	if !n.enterHandler() {
		n.stats.clearSilent(p)
		return
	}
	n.metrics.silenced.Inc()
	n.log.Info("peer went silent mid-transfer: left out until it answers a ping", "peer", p)
	go func() {
		defer n.handlers.Done()
		defer n.stats.clearSilent(p)
		n.watchSilent(p)
	}()
}

// watchSilent pings p until it answers, it leaves the mesh, silentProbeFor
// has passed or the node stops.
func (n *Node) watchSilent(p peer.ID) {
	start := time.Now()
	t := time.NewTicker(silentProbeInterval)
	defer t.Stop()
	for time.Since(start) < silentProbeFor && n.life.Err() == nil {
		if n.members.departed(p) {
			n.log.Info("silent peer left the mesh", "peer", p)
			return
		}
		if n.answers(p) {
			n.log.Info("silent peer answers again", "peer", p, "after", time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-t.C:
		case <-n.life.Done():
		}
	}
}

// answers says whether p answers one ping within silentProbeTimeout. The
// dial ignores libp2p's back-off: a link that came back is found at once.
func (n *Node) answers(p peer.ID) bool {
	ctx, cancel := context.WithTimeout(network.WithForceDirectDial(n.life, "silent peer probe"), silentProbeTimeout)
	defer cancel()
	res, ok := <-ping.Ping(ctx, n.host, p)
	return ok && res.Error == nil
}
