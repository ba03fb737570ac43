package swarm

import "time"

// ownLinkShare: see OwnLinkBudget.
const ownLinkShare = 4

// OwnLinkBudget is how long this node's other peers get to answer a ping
// when a peer has kept it waiting for wait (a stream silent, a request
// or a ping unanswered): a quarter of the wait. If none of them answers
// within it, the node's own link is what holds the bytes up, and the
// peer is kept, up to the stall timeout; if one does, the peer alone is
// slow, and it is given up as its own rules say.
//
// On a LAN a ping takes a millisecond, so a frozen or cut-off peer is
// found as fast as before. Behind a link cut to a tenth with its queue
// full, a ping takes as long as the silences it explains (0.4 to 1 s in
// the lab), and giving the peer up would only move the download to the
// registry, through the same link: the registry would send what the
// peer was sending.
func OwnLinkBudget(wait time.Duration) time.Duration {
	return wait / ownLinkShare
}
