package swarm

import (
	"slices"
	"time"
)

// Sources is the rule for the order in which a download asks for a blob,
// and so for when it goes to the registry: first the designated peers
// above this node (above, best first; the first maxDesignated that did
// not fail this download), which fetch the blob once and stream it to
// everyone, unless this node fetches it for a peer (forPeer: it is
// designated itself); then the peers that hold it (holders); then the
// registry, attempts times, when there is one (upstream).
func Sources(above []string, maxDesignated int, failed map[string]bool, forPeer bool, holders []string, upstream bool, attempts int) []Source {
	var out []Source
	if !forPeer {
		for _, p := range designatedOf(above, maxDesignated, failed) {
			out = append(out, Source{Peer: p, Designated: true})
		}
	}
	for _, p := range holders {
		out = append(out, Source{Peer: p})
	}
	if upstream {
		for range attempts {
			out = append(out, Source{Upstream: true})
		}
	}
	return out
}

// StaleList is how old a round's list of sources may be when the round
// reaches the registry (see Relist).
const StaleList = time.Second

// Relist is the rule for a round that reaches the registry with a list of
// sources made at listed: when the list is StaleList old or more, and the
// round did not look again yet (relisted), the peers that hold the blob
// are looked up again, and those that did not fail the download are asked
// before the registry. A round lasts as long as its sources stream: a
// node that read from one peer for seconds, and then lost it, would
// otherwise go to the registry for bytes that other peers came to hold
// meanwhile, whole copies among them. A fresh list is the look-up's
// answer as it stands; a second look at it would find the same.
func Relist(listed, now time.Time, relisted bool) bool {
	return !relisted && now.Sub(listed) >= StaleList
}

// designatedOf is the first n peers of above that did not fail.
func designatedOf(above []string, n int, failed map[string]bool) []string {
	var out []string
	for _, p := range above {
		if len(out) >= n {
			break
		}
		if !failed[p] {
			out = append(out, p)
		}
	}
	return out
}

// Replan is the rule for a round whose designated peers (listed) all
// failed while it went on, the last ones gone silent, say: when the blob's
// ranking as it stands now (above, the silent left out) names a peer
// above this node that the round did not list and that did not fail,
// the round starts over with it as designated, as the failed peers'
// departure would have it. This node leads only once no such peer is
// left: the next peer in the ranking leads in its place and streams what
// it fetches to the peers below it, so the registry sends the bytes the
// lost peers did not deliver once, not once for each node that read
// from them. The new list takes the holders from the round's look-up
// while that is younger than StaleList (see Relist): a second look would
// find the same, and with a peer frozen or behind a cut link a look-up
// may wait on its answer: in the lab's slowpeers runs a third of the
// look-ups took 0.2 s or more, up to 0.8 s.
func Replan(above, listed []string, maxDesignated int, failed map[string]bool) bool {
	for _, p := range designatedOf(above, maxDesignated, failed) {
		if !slices.Contains(listed, p) {
			return true
		}
	}
	return false
}

// HandOver is how long a peer may take to answer, and each next byte,
// once a peer was lost mid-blob: twice peerStall (as long as a stream
// gets to be silent and again to find its next source), at most stall;
// cur (0: stall) for the registry, or when peerStall is not set.
//
// A byte the peer held when it answered gets the same time, not stall:
// a holder behind a link cut to a tenth sends in bursts, which its
// stream's judge measures over seconds before it finds the stream slow,
// and the node that lost a peer would wait that long on a second bad one.
// Left to the judge, an unharmed node of the bench's slowpeers scenario
// measured such a holder over 2.9 s before it left it.
//
// A lost peer hands the rest of the blob to the next in the blob's
// ranking, as its departure would: the designated peers left above this
// node are waited on, and if none is left this node leads, taking what
// peers hold and the rest from the registry. The registry so sends the
// bytes the lost peer did not deliver once for the cluster, not once per
// node that was reading from it. But the peers left may be waiting on the
// lost one too, until they notice: each gets the hand-over time, and then
// the next is asked.
func HandOver(src Source, cur, peerStall, stall time.Duration) time.Duration {
	if src.Peer == "" || peerStall <= 0 {
		return cur
	}
	return min(2*peerStall, stall)
}

// HeldPace is the rate, in bytes per second, a peer's stream is held to
// once it has been measured over a whole window, besides the best it
// showed itself: after a peer was lost mid-blob (lost), the best rate an
// earlier peer stream of the same download reached (best); 0 otherwise,
// for the registry, whose streams are not judged by their pace, and for
// a peer that leads (src.Leads).
//
// The peer that takes over is often slow for the very reason the lost
// one was: its own link was cut, or it relays a fetch that crawls. Judged
// only against its own best, a stream slow from its first byte is never
// "slower than it was", and the download reads it to the end. Held to
// what the download had, it is left after one window like any other slow
// stream, with the same excuses: a node whose link is busy or slow as a
// whole keeps it. A peer that leads relays the registry's bytes as they
// reach it: the lost peer's rate is no measure of what the registry
// gives, and this node, leaving it, would lead beside it and have the
// registry send the rest twice. It is held to its own best.
func HeldPace(src Source, lost bool, best float64) float64 {
	if src.Peer == "" || !lost || src.Leads {
		return 0
	}
	return best
}

// AskOnceMore is the rule for a relay whose own source went quiet while
// it answers a ping (f.Relaying): it is asked once more (asked false),
// after HandOver, rather than given up. By then it has found its next
// source, or leads as the next in the ranking does, and streams the rest;
// given up, it would leave this node to lead beside it. A designated peer
// whose copy stopped growing is not asked once more: when it is the
// throttled node of slowpeers, or relays it, the stream it sends when
// asked again is slow too, and the node below lost three seconds on it
// before its rules left it; it is asked whether it leads now instead
// (see AskIfLeadsNow), which costs one round trip.
func AskOnceMore(src Source, f Failure, asked bool) bool {
	return src.Peer != "" && !asked && f.Relaying
}

// AskIfLeadsNow is the rule for a peer whose stream a download leaves
// while it relayed (f.UnledRelay: past the bytes the peer held when it
// answered, and it did not lead then), slow or its copy no longer
// growing: asked once (asked false) without waiting, the peer that now
// fetches the blob from the registry for the cluster is read again. Its
// own source was lost, and it took up the registry as the next in the
// ranking does; the registry's first bytes come at its pace, not the lost
// peer's. The lead is said only in an answer: leaving it unasked, this
// node would lead beside it, and the registry would send the rest twice.
// A peer that said it leads when it answered is judged as any other.
func AskIfLeadsNow(f Failure, asked bool) bool {
	return f.UnledRelay && !asked && (f.Slow || f.NotArriving)
}
