package p2p

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// busyPenalty is how long a peer that answered "busy" ranks behind others.
const busyPenalty = 5 * time.Second

// peerStat is what this node measured of one peer.
type peerStat struct {
	served  atomic.Int64 // bytes this node sent to the peer
	fetched atomic.Int64 // bytes this node received from the peer
	// lastByte is when the last byte either way crossed the connection, in
	// Unix nanoseconds: written to it, or read from it.
	lastByte atomic.Int64
	// lastRead is when this node last read a blob's byte from the peer,
	// in Unix nanoseconds.
	lastRead atomic.Int64
	// lastAnswer is when the peer last answered a ping of a silent
	// peer's watch or of an own-link probe, however late, in Unix
	// nanoseconds (see Node.watch, Node.roundTripBeside).
	lastAnswer atomic.Int64
	// quickest is the shortest round trip seen to the peer, a ping's or a
	// request's up to its answer's header, in nanoseconds; 0: none yet
	// (see swarm.OwnLinkQueued).
	quickest atomic.Int64
	// heardSilent is when a member last said the peer went silent, in
	// Unix nanoseconds (see Node.receiveSilent); 0: never.
	heardSilent atomic.Int64

	// Guarded by stats.mu.
	inflight   int
	busyAt     time.Time
	avoidUntil time.Time
	avoidWhy   string
	silent     bool // see Node.Silent
}

// roundTrip records a round trip of d to the peer.
func (st *peerStat) roundTrip(d time.Duration) {
	for {
		q := st.quickest.Load()
		if d <= 0 || (q != 0 && q <= int64(d)) || st.quickest.CompareAndSwap(q, int64(d)) {
			return
		}
	}
}

type stats struct {
	served, fetched atomic.Int64

	mu    sync.Mutex
	peers map[peer.ID]*peerStat
}

func newStats() *stats { return &stats{peers: make(map[peer.ID]*peerStat)} }

func (s *stats) peer(p peer.ID) *peerStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peerLocked(p)
}

func (s *stats) peerLocked(p peer.ID) *peerStat {
	st := s.peers[p]
	if st == nil {
		st = &peerStat{}
		s.peers[p] = st
	}
	return st
}

func (s *stats) addInflight(p peer.ID, d int) *peerStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peerLocked(p)
	st.inflight += d
	return st
}

// flowedSince says whether a blob's byte crossed the connection with p,
// either way, at or after t: a connection whose data flows is not dead,
// whatever a ping queued behind that data says.
func (s *stats) flowedSince(p peer.ID, t time.Time) bool {
	s.mu.Lock()
	st := s.peers[p]
	s.mu.Unlock()
	return st != nil && st.lastByte.Load() >= t.UnixNano()
}

// answered notes that p answered a watch's or a probe's ping at t.
func (s *stats) answered(p peer.ID, t time.Time) {
	s.peer(p).lastAnswer.Store(t.UnixNano())
}

// answeredSince says whether p answered a watch's or a probe's ping at or
// after t, however late: its connection carries its bytes.
func (s *stats) answeredSince(p peer.ID, t time.Time) bool {
	s.mu.Lock()
	st := s.peers[p]
	s.mu.Unlock()
	return st != nil && st.lastAnswer.Load() >= t.UnixNano()
}

// receivedSince says whether this node read a blob's byte from p at or
// after t: p is alive, and its connection carries bytes to this node.
func (s *stats) receivedSince(p peer.ID, t time.Time) bool {
	s.mu.Lock()
	st := s.peers[p]
	s.mu.Unlock()
	return st != nil && st.lastRead.Load() >= t.UnixNano()
}

func (s *stats) markBusy(p peer.ID, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peerLocked(p).busyAt = now
}

func (s *stats) avoid(p peer.ID, until time.Time, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peerLocked(p)
	st.avoidUntil, st.avoidWhy = until, why
}

// avoided says whether p is left out of the peers this node asks: it sent
// bad bytes lately, or went silent and has not answered since.
func (s *stats) avoided(p peer.ID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peers[p]
	return st != nil && (now.Before(st.avoidUntil) || st.silent)
}

// isSilent says whether p is marked silent.
func (s *stats) isSilent(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peers[p]
	return st != nil && st.silent
}

// markSilent marks p silent; false when it already was.
func (s *stats) markSilent(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peerLocked(p)
	if st.silent {
		return false
	}
	st.silent = true
	return true
}

func (s *stats) clearSilent(p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.peers[p]; st != nil {
		st.silent = false
	}
}

// rankKey is what Providers sorts by: peers recently busy last, then fewer
// transfers from this node in flight, then lower latency.
type rankKey struct {
	busy     bool
	inflight int
}

func (s *stats) rank(p peer.ID, now time.Time) rankKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.peers[p]
	if st == nil {
		return rankKey{}
	}
	return rankKey{busy: now.Sub(st.busyAt) < busyPenalty, inflight: st.inflight}
}

// prune forgets peers that are no longer members and have nothing in
// flight and no avoidance pending.
func (s *stats) prune(now time.Time, live func(peer.ID) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p, st := range s.peers {
		if st.inflight == 0 && !now.Before(st.avoidUntil) && !st.silent && !live(p) {
			delete(s.peers, p)
		}
	}
}
