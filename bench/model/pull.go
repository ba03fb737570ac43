package model

import "github.com/shoal-dev/shoal/p2p/swarm"

// nodePull is one node's pull as containerd runs it: the manifest first,
// then the blobs in the manifest's layer order, at most Config.Concurrent
// downloading at once, and the layers unpacked in order, one at a time.
type nodePull struct {
	// next is the next blob containerd asks for; asking how many of the
	// blobs it asked for are still downloading.
	next, asking int
	// asked says, by blob, that containerd asked for it (and holds a slot
	// until its download ends).
	asked []bool
	// doneAt is, by blob, when its download ended (-1: not yet).
	doneAt []float64
	// unpacked layers so far, the last of them unpacked at unpackEnd.
	unpacked  int
	unpackEnd float64
	returned  bool
}

// pull starts node i's pull: now, or, with Config.Spread, once its ctr
// has started (a time the seed draws).
func (s *sim) pull(i int) {
	if s.cfg.Spread > 0 {
		s.after(s.rng.Float64()*s.cfg.Spread.Seconds(), func() { s.begin(i) })
		return
	}
	s.begin(i)
}

// begin starts node i's pull now: the manifest, then the blobs. The node
// wants the image's blobs from now on (see coordinate).
func (s *sim) begin(i int) {
	n := len(s.blobs)
	s.newRow(i)
	p := &nodePull{asked: make([]bool, n), doneAt: make([]float64, n)}
	for b := range p.doneAt {
		p.doneAt[b] = -1
	}
	s.pulls[i] = p
	if s.cfg.Manifest == 0 {
		s.manifest(i)
		return
	}
	s.after(s.cfg.Manifest.Seconds(), func() { s.manifest(i) })
}

// manifest takes in that node i's manifest arrived: with Config.Prefetch
// its shoal starts downloading every blob the manifest names, and
// containerd asks for its first blobs.
func (s *sim) manifest(i int) {
	if s.cfg.Prefetch && !s.dead[i] {
		for b, t := range s.streams[i] {
			if t == nil {
				s.download(i, b, false)
			}
		}
	}
	s.admit(i)
}

// admit asks for node i's next blobs while containerd has free slots
// (Config.Concurrent, none: every blob). A blob whose download a peer
// started already is joined, and one that is done takes no slot.
func (s *sim) admit(i int) {
	p := s.pulls[i]
	if p == nil || s.dead[i] {
		return
	}
	for p.next < len(s.blobs) && (s.cfg.Concurrent == 0 || p.asking < s.cfg.Concurrent) {
		b := p.next
		p.next++
		t := s.streams[i][b]
		if t == nil {
			t = s.download(i, b, false)
		}
		if !t.done {
			p.asked[b] = true
			p.asking++
		}
	}
}

// download starts node i's download of blob b now, for containerd or,
// forPeer, for a peer that asked it to fetch the blob for the cluster.
func (s *sim) download(i, b int, forPeer bool) *stream {
	d := swarm.NewDownload(s.cfg.Limits, s.at(s.now))
	// The manifest named the blob's size: readers follow at once.
	d.Published = true
	t := s.newStream(stream{node: i, blob: b, sw: d, src: none, forPeer: forPeer})
	s.streams[i][b] = t
	k := s.key(i, b)
	s.waiting.set(k)
	s.retry[k] = s.now
	s.left++
	return t
}

// downloaded takes in that t's download ended at virtual time at: its
// slot goes to the next blob, and the layers downloaded in order are
// unpacked.
func (s *sim) downloaded(t *stream, at float64) {
	i := t.node
	p := s.pulls[i]
	if p == nil {
		return
	}
	p.doneAt[t.blob] = at
	if p.asked[t.blob] {
		p.asking--
	}
	s.admit(i)
	s.unpack(i)
}

// unpack unpacks node i's layers in order, each once it is downloaded and
// the one before it is unpacked, taking Config.UnpackPerByte for each
// byte; with the last, the node's pull returns.
func (s *sim) unpack(i int) {
	p := s.pulls[i]
	for p.unpacked < len(s.blobs) && p.doneAt[p.unpacked] >= 0 {
		p.unpackEnd = max(p.unpackEnd, p.doneAt[p.unpacked]) + s.cfg.UnpackPerByte*s.size
		p.unpacked++
	}
	if p.unpacked < len(s.blobs) || p.returned {
		return
	}
	p.returned = true
	s.finish[i] = p.unpackEnd
	if s.onReturn != nil {
		s.after(max(0, p.unpackEnd-s.now), func() { s.onReturn(i) })
	}
}
