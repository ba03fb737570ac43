package model

import (
	"math"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// members are the nodes that died and those the others know left.
type members struct {
	// dead: the node was killed; gone: the others know, by memberlist,
	// and leave it out of the rankings and look-ups.
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
		t.done = true
		s.left--
	}
	peer := swarm.Source{Peer: s.ids[i]}
	now := s.at(s.now)
	for _, row := range s.streams {
		for _, t := range row {
			if t == nil || t.done || !t.reading || t.src != i {
				continue
			}
			s.end(t)
			// A reset stream: no busy, no stall; the peer failed this
			// download (lead does not matter for such a failure).
			var st swarm.Round
			t.sw.Failed(peer, swarm.Failure{}, false, &st, now)
		}
	}
	s.after(s.cfg.Detect.Seconds(), func() {
		s.gone[i] = true
		s.rankings()
	})
}
