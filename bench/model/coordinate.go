package model

import (
	"github.com/shoal-dev/shoal/p2p/swarm"
)

// coord is what designated nodes that did not want a blob told the peers
// that asked them to fetch it (swarm.Coordinate).
type coord struct {
	// given is, by designated node and blob, the asker it left the blob
	// to, and when.
	given map[[2]int]leftTo
	// first is, by node and blob held whole there, the first peer it
	// streamed the blob to from its first byte as the designated node,
	// and when; led, when it last streamed the blob while the blob was
	// still arriving (swarm.PointAtReader).
	first map[[2]int]leftTo
	led   map[[2]int]float64
}

type leftTo struct {
	peer int
	at   float64
}

// leftFetcher is the peer node j left blob b to within swarm.LeftFor, if
// any (the resolver's leftFetcher).
func (s *sim) leftFetcher(j, b int) (int, bool) {
	l, ok := s.given[[2]int{j, b}]
	if !ok || s.at(s.now).Sub(s.at(l.at)) >= swarm.LeftFor {
		return 0, false
	}
	return l.peer, true
}

// sources are t's sources in the order it asks them, as the resolver's:
// first the fetchers swarm.Download.Fetchers names (the peer its node
// left the blob to lately, the peer a designated peer pointed t at: each
// is waited on); then swarm.Sources. fetchers lists the fetchers among
// them: a round has one to three.
func (s *sim) sources(t *stream) (srcs []swarm.Source, fetchers []string) {
	i, b := t.node, t.blob
	var left string
	if p, ok := s.leftFetcher(i, b); ok {
		left = s.ids[p]
	}
	for _, p := range t.sw.Fetchers(left, t.forPeer) {
		srcs = append(srcs, swarm.Source{Peer: p, Designated: true})
		fetchers = append(fetchers, p)
	}
	above := s.above(i, b)
	rest := swarm.Sources(above, s.cfg.DesignatedPeers, t.sw.FailedPeers, t.forPeer, t.sw.Holders(s.holders(i, b)), true, 1)
	if srcs == nil {
		return rest, fetchers // not copied: it is new
	}
	return append(srcs, rest...), fetchers
}

// designatedIn lists the designated peers among srcs.
func designatedIn(srcs []swarm.Source) []string {
	var out []string
	for _, src := range srcs {
		if src.Designated {
			out = append(out, src.Peer)
		}
	}
	return out
}

// answer is node j's answer to t's request, src being j as t's round sees
// it (fetcher: the peer a designated peer named): served, or the failure
// as the resolver sorts it, and the peer j points at when it names one. A
// member that died refuses the connection. A designated node that neither
// holds nor downloads the blob asks swarm.Coordinate, as the resolver's
// PullFor does: wanting it, it starts the download for the cluster;
// else it leaves the blob to the first asker and points the next at it.
// A fetcher that has not begun the download answers "not yet". A
// designated node that holds the blob whole and is asked for its first
// byte asks swarm.PointAtReader, as the p2p node's openForPeer does.
func (s *sim) answer(t *stream, j int, src swarm.Source, fetcher, lead bool) (f swarm.Failure, at string, served bool) {
	if s.dead[j] {
		return swarm.Failure{}, "", false
	}
	b := t.blob
	started := s.streams[j] != nil && s.streams[j][b] != nil
	fresh := src.Designated && !fetcher && started && s.streams[j][b].done && s.held[t.node][b] == 0
	if fresh {
		if p, ok := s.pointAt(j, t.node, b); ok {
			return swarm.Failure{PointedOn: true}, s.ids[p], false
		}
	}
	switch {
	case fetcher && !started:
		// errFetcherNotStarted wraps errdefs.ErrOutOfRange.
		return swarm.Failure{NotNow: true, Partial: true}, "", false
	case src.Designated && !fetcher && !started:
		switch ans, p := s.coordinate(j, t.node, b); ans {
		case swarm.FetchYourself:
			return swarm.Failure{LeftToUs: true}, "", false
		case swarm.ReadFromFetcher:
			return swarm.Failure{PointedOn: true}, s.ids[p], false
		}
		s.download(j, b, true)
	}
	if s.ask(t, j, src, s.ranksAbove(b, j, t.node), lead, fetcher) {
		if fresh {
			s.streaming(j, t.node, b)
		}
		return swarm.Failure{}, "", true
	}
	held := s.held[j][b]
	// Busy or "not yet", the answer says whether j reads the registry for
	// the cluster now (swarm.WaitsOnLeader).
	leads := !s.streams[j][b].done && s.streams[j][b].leads
	return swarm.Failure{NotNow: true, Partial: held > 0 && held < s.size, Whole: held == s.size, Have: int64(held), Behind: held <= s.held[t.node][b], Leads: leads}, "", false
}

// coordinate is designated node j's answer to asker, which asked it to
// fetch blob b that j neither holds nor downloads (the resolver's
// coordinate): j wants the blob while it pulls the image; p is the
// fetcher it points at.
func (s *sim) coordinate(j, asker, b int) (ans swarm.Answer, p int) {
	now := s.at(s.now)
	l, ok := s.given[[2]int{j, b}]
	a := swarm.Asked{Wanted: s.pulls[j] != nil, Asker: s.ids[asker]}
	if ok {
		a.Fetcher, a.Told = s.ids[l.peer], s.at(l.at)
	}
	ans = swarm.Coordinate(a, now)
	if ans == swarm.FetchYourself {
		s.given[[2]int{j, b}] = leftTo{peer: asker, at: s.now}
	}
	return ans, l.peer
}

// pointAt is the first reader node j, holding blob b whole, points asker
// at (swarm.PointAtReader), if any.
func (s *sim) pointAt(j, asker, b int) (int, bool) {
	k := [2]int{j, b}
	r, ok := s.first[k]
	led, wasLed := s.led[k]
	now := s.at(s.now)
	h := swarm.Holding{Asker: s.ids[asker], Led: wasLed && now.Sub(s.at(led)) < swarm.LeftFor}
	if ok {
		h.Reader, h.Since = s.ids[r.peer], s.at(r.at)
	}
	return r.peer, swarm.PointAtReader(h, now)
}

// streaming notes that node j streams blob b, held whole, to reader from
// its first byte: reader becomes its first reader as swarm.NewReader says.
func (s *sim) streaming(j, reader, b int) {
	k := [2]int{j, b}
	if r, ok := s.first[k]; ok && !swarm.NewReader(swarm.Holding{Reader: s.ids[r.peer], Since: s.at(r.at)}, s.at(s.now)) {
		return
	}
	s.first[k] = leftTo{peer: reader, at: s.now}
}
