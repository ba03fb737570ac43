package model

import (
	"math"
	"slices"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// members are the nodes that died, and those the others do not count as
// members: known to have died, or not joined yet.
type members struct {
	// dead: the node was killed; gone: the others leave it out of the
	// rankings and look-ups, by memberlist, having learnt that it died,
	// or not having learnt yet that it joined.
	dead, gone []bool
}

func newMembers(n int) members {
	return members{dead: make([]bool, n), gone: make([]bool, n)}
}

func (m *members) isGone(i int) bool { return m.gone[i] }

// memberlist's failure detection with the daemon's timing (p2p.LANTiming):
// a member is probed every probeInterval and fails a probe after
// probeTimeout; it is then suspected for suspicionMult × max(1, log10 N)
// probe intervals before it is declared dead. The suspicion can last up
// to six times longer while few members confirm it; in a cluster whose
// members all see the death it lasts about the least.
const (
	probeInterval = time.Second
	probeTimeout  = 500 * time.Millisecond
	suspicionMult = 4
)

// DetectAfter is how long after a member of an n-node cluster dies the
// others know it left, by memberlist's rule: a probe interval for
// someone to probe it, the probe's timeout, and the least suspicion.
func DetectAfter(n int) time.Duration {
	scale := max(1, math.Log10(float64(max(1, n))))
	return probeInterval + probeTimeout + time.Duration(suspicionMult*scale*float64(probeInterval))
}

// kill kills node i now, containerd and daemon: its downloads end, and so
// do its uploads, whose readers' streams fail and go on through the
// swarm's rules (swarm.Download.Failed) to their next source. Until
// Config.Detect has passed the others still rank it and find it in
// look-ups, and fail when they ask it; then it leaves the rankings.
func (s *sim) kill(i int) {
	if s.dead[i] {
		return
	}
	s.dead[i] = true
	for _, t := range s.streams[i] {
		if t == nil || t.done {
			continue
		}
		s.end(t)
		s.done(t)
		s.left--
	}
	peer := swarm.Source{Peer: s.ids[i]}
	now := s.at(s.now)
	for k := s.reading.next(0); k >= 0; k = s.reading.next(k + 1) {
		t := s.stream(k)
		if t.src != i {
			continue
		}
		s.end(t)
		// A reset stream: no busy, no stall; the peer failed this
		// download (lead does not matter for such a failure).
		var st swarm.Round
		t.sw.Failed(peer, swarm.Failure{}, false, &st, now)
	}
	s.after(s.cfg.Detect.Seconds(), func() {
		s.gone[i] = true
		s.stale = true
	})
}

// memberlist's gossip with the daemon's timing (p2p.LANTiming): every
// gossipInterval a member passes what it learnt to gossipNodes others.
const (
	gossipInterval = 200 * time.Millisecond
	gossipNodes    = 3
)

// JoinAfter is how long after a node joins an n-node cluster the others
// all count it as a member, by memberlist's gossip: its news reaches
// gossipNodes more members a round, about log3 n rounds.
func JoinAfter(n int) time.Duration {
	rounds := math.Ceil(math.Log(float64(max(2, n))) / math.Log(gossipNodes))
	return time.Duration(rounds) * gossipInterval
}

// join makes node i, not a member until now, join the cluster and pull
// the image: it knows the members at once (memberlist's join exchanges
// their list), and asks the designated peers of a ranking without
// itself; after JoinAfter the others rank it and find it in look-ups.
func (s *sim) join(i int) {
	s.pull(i)
	s.after(JoinAfter(s.cfg.Nodes).Seconds(), func() {
		if !s.dead[i] {
			s.gone[i] = false
			s.stale = true
		}
	})
}

// above lists the peers node i ranks above itself for blob b, best
// first (swarm.Above). A node that joined knows itself a member before
// the others do, and ranks itself among them.
func (s *sim) above(i, b int) []string {
	if !s.isGone(i) || s.dead[i] {
		return s.order[b][:s.rank[b][i]] // by the rank kept
	}
	use := make(map[string]bool, len(s.ids))
	for k, id := range s.ids {
		use[id] = k == i || !s.isGone(k)
	}
	above, _ := swarm.Above(swarm.Designated(s.blobs[b], s.blobs, s.ids, use), s.ids[i])
	return above
}

// ranksAbove says whether node i ranks node j above itself for blob b.
func (s *sim) ranksAbove(b, j, i int) bool {
	if !s.isGone(i) || s.dead[i] {
		return s.rank[b][j] < s.rank[b][i]
	}
	return slices.Contains(s.above(i, b), s.ids[j])
}
