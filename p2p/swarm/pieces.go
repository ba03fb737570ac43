package swarm

import "time"

// PieceSource is a peer that helpers may ask for pieces of a blob.
type PieceSource struct {
	Peer string
	// Have is how many bytes from the start the peer said it holds, at
	// HaveAt; -1 while unknown.
	Have   int64
	HaveAt time.Time
	// Retry is when the peer may be asked again, after it was busy or did
	// not hold a piece yet.
	Retry time.Time
	// Failed says the peer failed a piece: it is not asked again.
	Failed bool
	// Busy says a helper is fetching from it.
	Busy bool
	// Silent says the node leaves the peer out for now: a stream from it
	// went silent, and it has not answered a ping since.
	Silent bool
}

// Pieces is a download's blob cut into pieces, as its helpers see it.
type Pieces struct {
	Size, PieceSize int64
	// Done marks the pieces a helper wrote; Taken those a helper fetches.
	Done, Taken []bool
	// Contiguous is how many bytes from the start the node holds.
	Contiguous int64
	// Pos is where the primary stream writes, Primary the peer it reads
	// from.
	Pos     int64
	Primary string
	// Waiting says no stream is open: every peer that holds the blob
	// answered busy.
	Waiting bool
	// Lagging says the primary stream delivers under half the rate it is
	// held to (see NextPiece).
	Lagging bool
}

// Count is how many pieces a blob of size cut in pieces of psize has.
func Count(size, psize int64) int { return int((size + psize - 1) / psize) }

// Range is the bytes a helper asks for piece i: from its start, or from
// where its last attempt got to (from), or from the first byte the node
// does not hold (Contiguous), whichever is furthest, to the piece's end.
// Empty (start >= end) when the piece is written already. The piece a
// lagging stream is in starts at RaceStart.
func (p Pieces) Range(i int, from int64) (start, end int64) {
	start, end = max(from, int64(i)*p.PieceSize, p.Contiguous), min(int64(i+1)*p.PieceSize, p.Size)
	if p.Lagging && start <= p.Pos && p.Pos < end {
		start = RaceStart(p.Pos, end)
	}
	return start, end
}

// RaceStart is where a helper racing a lagging stream within the piece the
// stream is in starts: halfway from the stream's position (pos) to the
// piece's end. A helper gives a piece up once the stream reaches where it
// started (the stream would then write what the helper fetches); asked
// from the stream's position it would give up at once, and the stream,
// under half the rate it is held to, would carry the rest of its piece
// alone. From halfway, a helper at that rate ends the piece before the
// stream reaches the helper's first byte, and the stream ends there.
func RaceStart(pos, end int64) int64 {
	return pos + (end-pos+1)/2
}

// HaveStale is how long what a peer said it holds stands. A peer that
// held too little of the blob for a piece is asked again once it is
// stale: it may have received the rest since. Taken as final, what a peer
// said in the first second of a pull, when it held little, would keep it
// from that download's helpers for good, and a node whose primary stream
// is slow (its source throttled, or the registry behind its own cut link)
// would read the whole rest from it while its peers hold the blob whole.
const HaveStale = time.Second

// Holds says whether the peer may hold the bytes up to end, as far as
// the node knows at now: it said it holds them, it has not said, or what
// it said is stale (see HaveStale).
func (s *PieceSource) Holds(end int64, now time.Time) bool {
	return s.Have < 0 || s.Have >= end || now.Sub(s.HaveAt) >= HaveStale
}

// Learned notes that the peer said it holds have bytes at now.
func (s *PieceSource) Learned(have int64, now time.Time) {
	if have > s.Have {
		s.Have = have
	}
	s.HaveAt = now
}

// PieceSourceFor is the rule for whom a helper asks for piece i: a peer
// that may hold it (see Holds), not cur (the peer the primary stream
// reads from), not failed, not silent, free and due now; of those, the
// one furthest ahead. Nil when none is.
func PieceSourceFor(p Pieces, i int, srcs []*PieceSource, now time.Time, cur string) *PieceSource {
	end := min(int64(i+1)*p.PieceSize, p.Size)
	var best *PieceSource
	for _, s := range srcs {
		if s.Failed || s.Busy || s.Silent || s.Peer == cur || now.Before(s.Retry) || !s.Holds(end, now) {
			continue
		}
		if best == nil || s.Have > best.Have {
			best = s
		}
	}
	return best
}

// NextPiece is the helpers' piece choice: the highest missing piece at
// least a piece ahead of the primary stream, working backwards from the
// end, so that a node whose source is slow catches up from peers that are
// ahead of it; and the peer to ask for it (see PieceSourceFor), nil when
// none is free. While no stream is open (Waiting), the first missing piece
// that some peer can send comes first, so the node holds a longer start of
// the blob and can pass it on. While the stream lags (Lagging), the piece
// it is in and the next are taken too, last: helpers race the stream for
// the next piece and for the second half of what is left of its own (see
// RaceStart) from other peers, and the stream ends where the helpers'
// bytes begin. A stream from a peer whose link was cut would otherwise
// carry up to two pieces at a tenth of the rate, the pieces no helper
// takes. -1 when no piece is left to take.
func NextPiece(p Pieces, srcs []*PieceSource, now time.Time) (int, *PieceSource) {
	n := Count(p.Size, p.PieceSize)
	if p.Waiting {
		for i := int(p.Contiguous / p.PieceSize); i < n; i++ {
			if p.Done[i] || p.Taken[i] {
				continue
			}
			if s := PieceSourceFor(p, i, srcs, now, ""); s != nil {
				return i, s
			}
			break
		}
	}
	first := int((p.Pos+p.PieceSize-1)/p.PieceSize) + 1
	if p.Lagging {
		first = int(p.Pos / p.PieceSize)
	}
	for i := n - 1; i >= first; i-- {
		if p.Done[i] || p.Taken[i] {
			continue
		}
		return i, PieceSourceFor(p, i, srcs, now, p.Primary)
	}
	return -1, nil
}

// PieceResult is how a helper's attempt at a piece ended.
type PieceResult int

const (
	// PieceWritten: the piece is whole.
	PieceWritten PieceResult = iota
	// PieceStopped: the download ended, or the primary stream reached the
	// piece first.
	PieceStopped
	// PieceNotNow: the peer was busy, or did not hold the piece yet.
	PieceNotNow
	// PieceCut: the connection to the peer failed or ended mid-piece.
	PieceCut
	// PieceFailed: the peer's own failure: it did not answer or send in
	// time, lacks the blob, or sent the wrong size.
	PieceFailed
)

// PieceCutRetry is how soon a peer whose connection failed during a
// piece is asked again (if it is not silent by then). Over a node's own
// saturated link, connections to live peers are closed and reset (pings
// queue behind the bytes and go unanswered); given up for good, the peers
// that hold the blob whole would be lost to the download's helpers, and
// the registry stream beside them would send the whole rest.
const PieceCutRetry = time.Second

// AfterPiece is the rule for a piece's source after an attempt: a peer
// that was busy or not there yet is asked again after retry, one whose
// connection was cut after PieceCutRetry; one that failed otherwise is
// not asked again by this download. It says whether the piece is done.
func AfterPiece(s *PieceSource, res PieceResult, now time.Time, retry time.Duration) (done bool) {
	switch res {
	case PieceWritten:
		return true
	case PieceNotNow:
		s.Retry = now.Add(retry)
	case PieceCut:
		s.Retry = now.Add(max(retry, PieceCutRetry))
	case PieceFailed:
		s.Failed = true
	}
	return false
}
