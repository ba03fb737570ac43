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

// OwnLinkQueue is how much later than the quickest round trip seen to the
// same peer an answer within OwnLinkBudget may come before it, too, says
// the node's own link is full: the ping waited in the link's queue. Behind
// a link cut to a tenth, answers came in 0.16 to 0.25 s in the lab, within
// the budget, from peers that answer in a millisecond over an idle link;
// the node then left a healthy peer as silent, and, with the peers it
// left, had none to compare its link with when the next one waited on it.
// The rule is asked only while the node receives under half its best rate
// (see resolver.Resolver.ownLinkExcuses): a queue of that length on a link
// that slowed is the link's, while a node whose link carries its full rate
// is not excused by any queue. 150 ms is above the 100 ms a ping waits
// behind one full 100 Mbit/s link in the lab, a peer's uplink busy with
// its uploads.
const OwnLinkQueue = 150 * time.Millisecond

// OwnLinkQueued says whether an answer after rtt, from a peer whose
// quickest round trip seen is quickest (0: none seen yet), waited in a
// queue of OwnLinkQueue or more.
func OwnLinkQueued(rtt, quickest time.Duration) bool {
	return quickest > 0 && rtt-quickest >= OwnLinkQueue
}

// PeerLinkQueued is the rule for a relay starved beside a busy link (it
// brings a small part of its share of what the node receives, and may be
// as slow as its own source, which it judges itself): it is left only
// when a ping shows the relay's own link holds its bytes up. Another peer
// answered within OwnLinkBudget without waiting in a queue (otherAnswered,
// and otherQueued false: see OwnLinkQueued), and the relay did not answer
// in that time (peerAnswered false) or its answer waited in a queue
// (peerQueued).
//
// Behind a link cut to a tenth, a relay's answers wait a second and more
// behind what it sends, and it crawls for as long as it answers pings
// while its own source and this node are fine. A relay that waits on a
// slow source answers as quickly as the others; left for its rate alone,
// this node would lead beside it, and the registry send the rest of the
// blob twice.
func PeerLinkQueued(peerAnswered, peerQueued, otherAnswered, otherQueued bool) bool {
	return otherAnswered && !otherQueued && (!peerAnswered || peerQueued)
}

// BusyPeerShare is the share of the node's best rate at which a peer's
// other streams to this node must bring bytes while the peer's answer to
// a ping is awaited, for the bytes to count as its answer (see
// BytesAnswerPing): the share under which a stream counts as slow.
const BusyPeerShare = 0.2

// BytesAnswerPing is the rule for a peer that did not answer a ping in
// time while it kept this node waiting (a stream silent, a request
// unanswered): it counts as answering when its other streams brought
// this node got bytes over the wait, at BusyPeerShare or more of the
// node's best rate (best, bytes per second), and some of them came
// during the last ping (recent).
//
// A peer whose uplink is full answers late: the ping waits behind the
// bytes of its streams, which share one connection, and a stream it
// writes little to can be silent for half a second meanwhile. Given up as
// silent, it is left out of every download of the cluster while it
// serves them at full rate: in the lab a node found such a peer silent
// beside its own stream from the same peer, which delivered throughout,
// and read the rest from the registry. A frozen peer sends what its
// socket held when it stopped and then nothing: a fraction of a second
// at the link's rate, while the first ping waits. A peer behind a link
// cut to a tenth brings under a fifth of the node's rate, and is still
// left as silent.
func BytesAnswerPing(got int64, wait time.Duration, best float64, recent bool) bool {
	return recent && best > 0 && wait > 0 && float64(got) >= BusyPeerShare*best*wait.Seconds()
}
