package swarm

import "time"

// LeftPeerFor is how long after a node gave up a peer's stream of one
// blob, as silent or slow, its streams of other blobs from that peer are
// held to LeavesWithPeer.
const LeftPeerFor = 2 * time.Second

// LeavesWithPeer is the rule for a stream from a peer that this node gave
// up lately for another blob (left, leftAgo ago: its stream went silent or
// slow, or the peer is left out as silent now): the stream is left too
// once, over a whole window in which the download waited on it, it brings
// under half an even share of what the node receives (rate, against
// nodeRate over streams). Each stream is otherwise judged alone, and a
// peer behind a link cut to a tenth sends every stream in bursts, each
// found slow over spans of its own: an unharmed node left such a peer's
// stream of one layer as silent and read its next layer from it for 1.4
// s more, at a twentieth of the node's rate, and another read a relay of
// it for 2.1 s after it had left the peer's stream of another layer as
// slow; each was the node's last layer. A stream that brings its share
// says the peer still sends, and a node reading from the one peer alone,
// or whose own link slowed every stream alike, keeps it.
func LeavesWithPeer(left bool, leftAgo time.Duration, rate, nodeRate float64, streams int) bool {
	return left && leftAgo < LeftPeerFor && streams >= 2 && rate*2*float64(streams) < nodeRate
}
