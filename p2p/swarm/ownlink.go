package swarm

import "time"

// ownLinkShare, ownLinkFloor: see OwnLinkBudget.
const (
	ownLinkShare = 4
	ownLinkFloor = 250 * time.Millisecond
)

// OwnLinkBudget is how long this node's other peers get to answer a ping
// when a peer has kept it waiting for wait (a stream silent, a request
// or a ping unanswered): a quarter of the wait, and at least 250 ms. If
// none of them answers within it, the node's own link is what holds the
// bytes up, and the peer is kept, up to the stall timeout; if one does,
// the peer alone is slow, and it is given up as its own rules say.
//
// On an idle LAN a ping takes a millisecond; over full links it waits
// behind their queues, 0.1 to 0.2 s in the lab at 100 Mbit/s, hence the
// floor: a frozen or cut-off peer is found as fast as before. Behind a
// link cut to a tenth with its queue full, a ping takes as long as the
// silences it explains (up to a second in the lab), and giving the peer
// up would only move the download to the registry, through the same
// link: the registry would send what the peer was sending.
func OwnLinkBudget(wait time.Duration) time.Duration {
	return max(wait/ownLinkShare, ownLinkFloor)
}
