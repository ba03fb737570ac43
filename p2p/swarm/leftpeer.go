package swarm

import "time"

// LeftPeerFor is how long after a node gave up a peer's stream, as
// silent or slow, or heard a member say the peer went silent, the peer's
// other streams to the node are held to LeavesWithPeer.
const LeftPeerFor = 2 * time.Second

// LeavesWithPeer is the rule for a stream from a peer whose stream this
// node gave up lately (left, leftAgo ago: it went silent or slow), which
// a member said went silent (leftAgo ago), or which the node left out as
// silent now: the stream is left too once, over a span in which the
// download waited on it, it brings under half an even share of what the
// node receives (rate, against nodeRate over streams) while the node
// reads from another source besides (peers: its sources, the registry
// counting as one). The span is a whole window; from the stream's start,
// half a window, when the node left the peer out as silent, its own ping
// unanswered: a stream the node opened just before it found the peer
// silent was read for 1.7 s more, at 384 KiB/s while the node received
// 10 MB/s, where its first half second had shown as much. Each stream is
// otherwise judged alone, and a peer behind a link cut to a tenth sends
// every stream in bursts, each found slow over spans of its own: an
// unharmed node left such a peer's stream of one layer as silent and read
// its next layer from it for 1.4 s more, at a twentieth of the node's rate,
// and another read a relay of it for 2.1 s after it had left the peer's
// stream of another layer as slow; each was the node's last layer. A
// stream that brings its share says the peer still sends; a node that
// reads from that one peer alone keeps its streams, and one whose own
// link slowed every stream alike keeps them (the caller's own-link
// excuses apply as to any slow stream).
func LeavesWithPeer(left bool, leftAgo time.Duration, rate, nodeRate float64, streams, peers int) bool {
	return left && leftAgo < LeftPeerFor && peers >= 2 && rate*2*float64(streams) < nodeRate
}
