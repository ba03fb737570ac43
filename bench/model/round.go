package model

import (
	"slices"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

// round is a download's round over its sources, as the resolver's: in
// the order swarm.Sources gives (after the peer this node left the blob
// to, see sources), each passed over, tried or ending the round as
// swarm.Download.Skip says; a peer without a free slot, or without the
// next byte, is busy; a designated peer that does not want the blob
// coordinates (see answer). With no source taken, the download waits and
// tries again (swarm.Download.WaitAgain), or fails.
func (s *sim) round(t *stream) {
	i, b := t.node, t.blob
	srcs, fetchers := s.sources(t)
	now := s.at(s.now)
	if s.lastByte[i] > 0 {
		t.sw.NodeReceived(s.at(s.lastByte[i]))
	}
	var st swarm.Round
	// designated lists the designated peers among srcs, for swarm.Leads;
	// listed again only when the round adds one.
	var designated []string
	listed := false
	for k := 0; k < len(srcs); k++ {
		src := srcs[k]
		step := t.sw.Skip(src, st, false, now)
		if step == swarm.Stop {
			break
		}
		if step != swarm.Try {
			continue
		}
		if src.Upstream {
			lead := t.sw.LeftToUs || swarm.Leads(true, designatedIn(srcs), t.sw.FailedPeers)
			s.start(t, registry, true, s.size)
			t.leads = swarm.LeadsNow(lead, true)
			return
		}
		if !listed && !t.sw.LeftToUs {
			designated, listed = designatedIn(srcs), true
		}
		lead := t.sw.LeftToUs || swarm.Leads(true, designated, t.sw.FailedPeers)
		if lead && !t.sw.LeftToUs && !t.forPeer && swarm.Replan(s.above(i, b), designated, s.cfg.DesignatedPeers, t.sw.FailedPeers) {
			// The resolver's replan: the next peer above leads.
			srcs, fetchers = s.sources(t)
			k, listed = -1, false
			continue
		}
		j := s.node(src.Peer)
		f, at, served := s.answer(t, j, src, slices.Contains(fetchers, src.Peer), lead)
		if served {
			return
		}
		t.sw.Failed(src, f, lead, &st, now)
		if at != "" && !t.sw.FailedPeers[at] && !slices.Contains(fetchers, at) {
			// The resolver's follow: the fetcher named is asked next, and
			// first in the next rounds.
			t.sw.Pointed = at
			srcs = slices.Insert(srcs, k+1, swarm.Source{Peer: at, Designated: true})
			fetchers = append(fetchers, at)
			listed = false
		}
	}
	if t.sw.WaitAgain(st, now) {
		s.retry[t.key] = s.now + t.sw.Backoff(int64(s.held[i][b]), now).Seconds()
		return
	}
	// containerd would fetch the blob itself: counted as a failure.
	s.failed++
	s.complete(t, s.now)
}

// ask asks node j for t's blob from what t holds, and says whether j
// serves it: it holds the next byte, or t may wait on it (swarm.WaitOn,
// swarm.NotYet; always on a fetcher a designated peer named), and it has
// a free upload slot (swarm.UploadSlot, swarm.SlowReaders,
// swarm.BlobUploadCap).
func (s *sim) ask(t *stream, j int, src swarm.Source, above, lead, fetcher bool) bool {
	b := t.blob
	arriving := !s.streams[j][b].done
	// What j's answer says: it reads the registry for the cluster now.
	peerLeads := arriving && s.streams[j][b].leads
	wait, heldOnly := swarm.WaitOn(swarm.Reader{Ranked: true, Above: above, Designated: src.Designated, Leading: lead, PeerLeads: peerLeads})
	if fetcher {
		// The resolver's fetcherSource: the peer a designated peer left
		// the blob to waits on no one, so it is waited on.
		wait, heldOnly = true, false
	}
	have := s.held[j][b]
	ask := swarm.Ask{Off: int64(s.held[t.node][b]), Ranged: true, Wait: wait}
	c := swarm.Copy{Size: int64(s.size), Have: int64(have), Arriving: arriving}
	if swarm.NotYet(ask, c) || (heldOnly && have <= s.held[t.node][b]) {
		return false
	}
	if !swarm.UploadSlot(s.open[j], s.uploads[j].Open(s.blobs[b]), s.cfg.MaxUploads, s.slowReaders(j, t.node)) || !s.uploads[j].Take(s.blobs[b], swarm.BlobUploadCap(arriving, s.cfg.MaxUploadsPerBlob, s.cfg.MaxUploads)) {
		return false
	}
	s.open[j]++
	if arriving {
		s.led[[2]int{j, b}] = s.now
	}
	limit := s.size
	if heldOnly {
		limit = have
	}
	s.start(t, j, wait, limit)
	return true
}

// slowReaders says whether slow readers, reader not among them, hold node
// j's upload slots (swarm.SlowReaders): the streams it serves that flow below an even share
// of its uplink while they have bytes to send (not caught up with what j
// holds) are limited by their readers. The daemon measures the best second
// its uploads have seen, which the model's uplink reaches as soon as it is
// shared: j's uplink, once it has sent anything.
func (s *sim) slowReaders(j, reader int) bool {
	up := s.cfg.Up * s.cfg.Goodput
	var rate, best float64
	waiting, asker := 0, false
	for k := s.reading.next(0); k >= 0; k = s.reading.next(k + 1) {
		t := s.stream(k)
		if t.src != j || s.now < t.startAt {
			continue
		}
		rate += t.rate
		if !s.caughtUp(t) && t.rate*float64(s.open[j]) < up {
			waiting++
			asker = asker || t.node == reader
		}
	}
	if s.sent[j] > 0 {
		best = up
	}
	return swarm.SlowReaders(s.open[j], waiting, rate, best, asker)
}

// start opens t's stream from src: its first byte comes a round trip on.
func (s *sim) start(t *stream, src int, wait bool, limit float64) {
	t.src, t.wait, t.limit, t.reading, t.leads = src, wait, limit, true, false
	t.startAt = s.now + s.cfg.RTT.Seconds()
	if src >= 0 {
		t.srcKey = s.key(src, t.blob)
	}
	s.waiting.clear(t.key)
	s.reading.set(t.key)
}

// end closes t's stream, giving back its source's slot.
func (s *sim) end(t *stream) {
	if t.src >= 0 {
		s.open[t.src]--
		s.uploads[t.src].Release(s.blobs[t.blob])
	}
	t.src, t.reading, t.rate = none, false, 0
	s.reading.clear(t.key)
	s.waiting.set(t.key)
	s.retry[t.key] = s.now
}

// done marks t done: it neither waits nor reads again.
func (s *sim) done(t *stream) {
	t.done = true
	s.waiting.clear(t.key)
}

// complete marks t done at virtual time at; its node's pull ends once
// the last of its layers is unpacked (see downloaded).
func (s *sim) complete(t *stream, at float64) {
	s.end(t)
	s.done(t)
	s.left--
	s.list(t)
	s.downloaded(t, at)
}
