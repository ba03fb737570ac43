package swarm

import "time"

// OwnLinkBudget is how long this node's other peers get to answer a ping
// when a peer has kept it waiting (a stream silent, a request or a ping
// unanswered), however long the wait. If none of them answers within it,
// the node's own link is what holds the bytes up, and the peer is kept,
// up to the stall timeout; if one does, the peer alone is slow, and it is
// given up as its own rules say.
//
// On an idle LAN a ping takes a millisecond; over full links it waits
// behind their queues, 0.1 to 0.2 s in the lab at 100 Mbit/s, hence 250
// ms: a frozen or cut-off peer is found as fast as on an idle link. Behind
// a link cut to a tenth with its queue full, a ping waits 0.2 to 0.45 s in
// the lab, while a stream over that link can go silent for seconds (TCP
// waits out a retransmission timeout that grows with the round trip):
// the budget does not grow with the wait, for a silence of 3 s beside
// other peers answering in 0.4 s is the link's doing, not the peer's. Given
// up, the peer would only move the download to the registry, through the
// same link: the registry would send what the peer was sending.
const OwnLinkBudget = 250 * time.Millisecond
