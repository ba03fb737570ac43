package swarm

// Reader is how a node stands to a peer it reads a blob from, for the
// who-waits-on-whom rule (see WaitOn).
type Reader struct {
	// Ranked says the node knows the blob's ranking (see Designated);
	// without one, every peer may be waited on.
	Ranked bool
	// Above says the peer ranks above this node for the blob.
	Above bool
	// Designated says the peer is asked to fetch the blob for the cluster.
	Designated bool
	// Leading says this node fetches the blob for the cluster now (see
	// Leads).
	Leading bool
	// Jumped says this node's stream jumped ahead over bytes its helpers
	// wrote: it asks no peer to wait any more.
	Jumped bool
	// PeerLeads says the peer answered that it fetches the blob from the
	// registry for the cluster now (see LeadsNow).
	PeerLeads bool
	// LostSlow says this node's download gave up a peer's stream as slow
	// (see Download.LostSlow).
	LostSlow bool
}

// WaitOn is the who-waits-on-whom rule: whether the node asks the peer to
// wait for bytes it does not hold yet, and whether it takes only the bytes
// the peer held when asked (heldOnly: the next bytes come later, or from
// another source).
//
// Waits point up the ranking: a peer still receiving the blob is waited on
// only when it ranks above this node, so no two nodes can each wait on the
// other's next byte, which would stall both (when the node that fed them
// died, say). A peer ranked below sends only what it holds, and so does
// every peer once this node leads. A designated peer is waited on until
// this node leads, whatever the stream jumped over.
//
// Once the download gave up a peer as slow (LostSlow), a designated peer
// too sends only what it holds: it is waited on only when it leads. A slow
// peer, unlike a silent one, is not told to the mesh, and a designated peer
// that reads the blob from it, or from a relay of it, finds it slow only
// when its own stream does, if ever: waited on, it relays the slow peer's
// bytes, and this node with it. Seen: two unharmed nodes left a throttled
// leader as slow and waited on the designated peer behind them for 1.4 s
// before anyone read the registry.
//
// A peer that would send only what it holds, but answers that it leads
// now (LeadsNow), is waited on whatever the ranking, even by a node that
// leads too: it reads the registry and waits on no one, so no wait points
// back at the waiter, and the registry sends the rest of the blob once
// rather than to both. The waiter is not reading the registry while it
// waits, so it does not lead now in turn.
func WaitOn(r Reader) (wait, heldOnly bool) {
	if r.Designated && !r.LostSlow {
		return !r.Leading, false
	}
	heldOnly = r.Designated || (r.Ranked && (r.Leading || !r.Above))
	if heldOnly && r.PeerLeads {
		return true, false
	}
	return !heldOnly && !r.Jumped, heldOnly
}

// LeadsNow says whether a node tells the peers that read a blob from it
// that it fetches the blob from the registry for the cluster now: it
// leads (see Leads, or a peer left the blob to it) and its stream reads
// the registry. Such a node waits on no peer, so any peer may wait on it
// (see WaitOn).
func LeadsNow(leading, fromRegistry bool) bool {
	return leading && fromRegistry
}

// Leads is the rule for when a node fetches a blob for the cluster: it
// knows the ranking (ranked) and every designated peer above it failed
// this download (one that died mid-transfer, say), or none is above it (it
// ranks first, or a peer asked it to fetch). The peers still receiving the
// blob then got it from a source that is gone, or wait on this node: it
// takes the bytes they hold and asks the registry for the rest, where
// waiting for their next byte would stall both.
func Leads(ranked bool, designated []string, failed map[string]bool) bool {
	if !ranked {
		return false
	}
	for _, p := range designated {
		if !failed[p] {
			return false
		}
	}
	return true
}
