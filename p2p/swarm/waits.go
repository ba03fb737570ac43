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
func WaitOn(r Reader) (wait, heldOnly bool) {
	if r.Designated {
		return !r.Leading, false
	}
	heldOnly = r.Ranked && (r.Leading || !r.Above)
	return !heldOnly && !r.Jumped, heldOnly
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
