package p2p

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	ma "github.com/multiformats/go-multiaddr"
)

const (
	// wantConns is how many members the node keeps a libp2p connection to
	// by itself; the DHT finds and dials the rest as it needs them.
	wantConns = 16
	// dialParallel bounds the dials of one top-up round.
	dialParallel = 8
	// pruneInterval is how often departed members and idle peer counters
	// are forgotten.
	pruneInterval = time.Minute
)

// connectLoop keeps libp2p in step with memberlist: the addresses of live
// members in the peerstore, gone members out of the routing table (and,
// with the gater, disconnected), and a few connections up so the DHT has a
// routing table.
func (n *Node) connectLoop(ctx context.Context) {
	applied := map[peer.ID]string{}
	tick := time.NewTicker(n.cfg.Timing.ConnectInterval)
	defer tick.Stop()
	lastPrune := time.Now()
	for {
		n.syncPeers(ctx, applied)
		if time.Since(lastPrune) > pruneInterval {
			now := time.Now()
			n.members.prune(now)
			n.stats.prune(now, n.members.live)
			lastPrune = now
		}
		select {
		case <-ctx.Done():
			return
		case <-n.members.change:
		case <-tick.C:
		}
	}
}

func (n *Node) syncPeers(ctx context.Context, applied map[peer.ID]string) {
	ps := n.host.Peerstore()
	for _, p := range n.members.takeGone() {
		delete(applied, p)
		if n.members.live(p) {
			continue // came back under another name
		}
		if addr, addrs, ok := n.members.failedAt(p); ok {
			n.watchLost(p, addr, addrs)
		}
		ps.ClearAddrs(p)
		n.dht.RoutingTable().RemovePeer(p)
		if n.gater.strict {
			_ = n.host.Network().ClosePeer(p)
		}
	}

	live := n.members.livePeers()
	n.metrics.members.Set(float64(len(live) + 1))
	var idle []peer.AddrInfo
	connected := 0
	for _, ai := range live {
		if key := addrsKey(ai.Addrs); applied[ai.ID] != key {
			ps.ClearAddrs(ai.ID)
			ps.AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
			applied[ai.ID] = key
			// A dial that failed before the peer was a member (refused by
			// its gater while it had not yet heard of us, or made while it
			// was down) must not hold back dials now that it is one.
			if sw, ok := n.host.Network().(*swarm.Swarm); ok {
				sw.Backoff().Clear(ai.ID)
			}
		}
		if n.host.Network().Connectedness(ai.ID) == network.Connected {
			connected++
		} else {
			idle = append(idle, ai)
		}
	}
	need := min(wantConns-connected, len(idle))
	if need <= 0 {
		return
	}
	rand.Shuffle(len(idle), func(i, j int) { idle[i], idle[j] = idle[j], idle[i] })
	sem := make(chan struct{}, dialParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := 0
	for _, ai := range idle[:need] {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "member"), n.cfg.Timing.DialTimeout)
			defer cancel()
			if err := n.host.Connect(dctx, ai); err != nil {
				n.log.Debug("cannot connect to member", "peer", ai.ID, "error", err)
				return
			}
			mu.Lock()
			made++
			mu.Unlock()
		})
	}
	wg.Wait()
	if made > 0 {
		n.adv.poke()
	}
}

func addrsKey(addrs []ma.Multiaddr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}
