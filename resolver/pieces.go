package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"

	"github.com/shoal-dev/shoal/p2p/swarm"
	"github.com/shoal-dev/shoal/store"
)

// A download from a peer streams the blob in order from one source (the
// primary stream), which keeps up with a blob still arriving anywhere in
// the cluster. Beside it, helpers fetch the blob's last missing pieces from
// other peers that already hold them, working backwards from the end, so a
// node whose source is slow catches up from the peers that are ahead of it.
// A helper asks a peer only for a piece that starts below what the peer
// said it holds (or to learn that), and never asks it to wait for bytes it
// does not have: so no node waits on one that waits on it. When the
// primary stream reaches what the helpers wrote, the blob is whole and the
// stream ends. While no stream is open (every peer that holds the blob
// answered busy: each serves its few streams of a blob already) the
// helpers fetch from the first missing piece instead, so the node still
// gains a start of the blob it can pass on, and the stream, once a peer
// has room, carries on from where they got to.

// pieceRetry is how soon a peer that was busy, or did not hold a piece
// yet, is asked again.
const pieceRetry = 200 * time.Millisecond

// providerRefresh is how often helpers look for more peers.
const providerRefresh = 500 * time.Millisecond

// errOvertaken ends a range the primary stream reached first.
var errOvertaken = errors.New("the stream reached the piece")

// errComplete ends a primary stream whose bytes the helpers already wrote.
var errComplete = errors.New("the rest of the blob has arrived from other peers")

// primaryView is what the helpers see of the download's primary stream:
// where it is, the peer it reads from, whether none is open (waiting), and
// whether it lags.
type primaryView struct {
	pos              *atomic.Int64
	peer             *atomic.Value
	waiting, lagging *atomic.Bool
}

// helpers runs PieceWorkers helpers for the download of req into ing until
// ctx ends; when a helper's piece makes the blob whole, it calls complete.
// Peers that sent bytes are added to used.
func (r *Resolver) helpers(ctx context.Context, req BlobRequest, f *flight, ing store.Ingest, rr Ranger, pv primaryView, complete func(), usedMu *sync.Mutex, used map[string]bool) {
	size, psize := ing.Size(), r.cfg.PieceSize
	n := swarm.Count(size, psize)
	h := &helping{
		r: r, req: req, f: f, ing: ing, rr: rr, pos: pv.pos, primary: pv.peer, waiting: pv.waiting, lagging: pv.lagging,
		complete: complete, usedMu: usedMu, used: used,
		ps:   swarm.Pieces{Size: size, PieceSize: psize, Done: make([]bool, n), Taken: make([]bool, n)},
		from: make([]int64, n),
		seen: map[string]bool{},
	}
	var wg sync.WaitGroup
	h.refresh(ctx)
	for range r.cfg.PieceWorkers {
		wg.Go(func() { h.work(ctx) })
	}
	t := time.NewTicker(providerRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			h.refresh(ctx)
		}
	}
}

// helping is the state the helpers of one download share.
type helping struct {
	r        *Resolver
	req      BlobRequest
	f        *flight
	ing      store.Ingest
	rr       Ranger
	pos      *atomic.Int64
	primary  *atomic.Value
	waiting  *atomic.Bool
	lagging  *atomic.Bool
	complete func()
	usedMu   *sync.Mutex
	used     map[string]bool

	mu sync.Mutex
	ps swarm.Pieces
	// from is where a piece's next attempt starts: a helper writes a
	// piece in order, so what an attempt wrote is not asked again.
	from []int64
	srcs []*swarm.PieceSource
	seen map[string]bool
}

// refresh adds the peers a look-up finds to the helpers' sources.
func (h *helping) refresh(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, h.r.cfg.PeerLookupTimeout)
	peers, _ := h.r.router.Providers(lctx, h.req.Digest)
	cancel()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range peers {
		if !h.seen[p] {
			h.seen[p] = true
			h.srcs = append(h.srcs, &swarm.PieceSource{Peer: p, Have: -1})
		}
	}
}

// next picks a piece and a peer to ask for it (see swarm.NextPiece).
// h.mu is held.
func (h *helping) next(now time.Time) (int, *swarm.PieceSource) {
	h.ps.Waiting = h.waiting.Load()
	h.ps.Lagging = h.lagging.Load()
	h.ps.Contiguous = h.ing.Contiguous()
	h.ps.Pos = h.pos.Load()
	h.ps.Primary, _ = h.primary.Load().(string)
	if sl, ok := h.r.router.(Silencer); ok {
		for _, s := range h.srcs {
			s.Silent = sl.Silenced(s.Peer)
		}
	}
	return swarm.NextPiece(h.ps, h.srcs, now)
}

// work is one helper: it fetches pieces until ctx ends or the blob is
// whole.
func (h *helping) work(ctx context.Context) {
	for ctx.Err() == nil {
		h.mu.Lock()
		i, s := h.next(time.Now())
		if i < 0 || s == nil {
			h.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(pieceRetry):
			}
			continue
		}
		h.ps.Contiguous = h.ing.Contiguous()
		start, end := h.ps.Range(i, h.from[i])
		if start >= end {
			// Written already, from the start of the blob on.
			h.ps.Done[i] = true
			h.mu.Unlock()
			continue
		}
		h.ps.Taken[i], s.Busy = true, true
		h.mu.Unlock()

		k, have, err := h.r.fetchPiece(ctx, h.req, h.f, h.ing, h.rr, s.Peer, start, end, h.pos, h.waiting)
		if h.done(ctx, i, s, start, k, have, err) {
			h.complete()
			return
		}
	}
}

// done takes in how an attempt at piece i from s ended, and says whether
// it made the blob whole.
func (h *helping) done(ctx context.Context, i int, s *swarm.PieceSource, start, k, have int64, err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ps.Taken[i], s.Busy = false, false
	h.from[i] = start + k
	if have > 0 {
		s.Learned(have, time.Now())
	}
	if k > 0 {
		h.usedMu.Lock()
		h.used[s.Peer] = true
		h.usedMu.Unlock()
	}
	res := pieceResult(ctx, err)
	if res == swarm.PieceFailed || res == swarm.PieceCut {
		h.r.cfg.Logger.Debug("piece failed", "digest", h.req.Digest, "peer", s.Peer, "offset", start, "err", err)
	}
	if swarm.AfterPiece(s, res, time.Now(), pieceRetry) {
		h.ps.Done[i] = true
	}
	return err == nil && h.ing.Contiguous() == h.ps.Size
}

// pieceResult sorts how a helper's attempt at a piece ended.
func pieceResult(ctx context.Context, err error) swarm.PieceResult {
	switch {
	case err == nil:
		return swarm.PieceWritten
	case ctx.Err() != nil, errors.Is(err, errOvertaken):
		return swarm.PieceStopped
	case errdefs.IsOutOfRange(err), errdefs.IsResourceExhausted(err):
		return swarm.PieceNotNow
	case errors.Is(err, errStalled):
		return swarm.PieceFailed
	case errdefs.IsUnavailable(err):
		return swarm.PieceCut
	}
	return swarm.PieceFailed
}

// fetchPiece copies [start, end) of req's blob from peer p into ing, and
// returns the bytes it wrote and what p said it holds.
// It stops when the primary stream, at pos, reaches start; while the
// download waits for a slot at a peer (waiting set), no stream can.
func (r *Resolver) fetchPiece(ctx context.Context, req BlobRequest, f *flight, ing store.Ingest, rr Ranger, p string, start, end int64, pos *atomic.Int64, waiting *atomic.Bool) (int64, int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(r.cfg.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()

	body, size, have, err := rr.FetchRange(ctx, p, req.Digest, PeerRange{Off: start, Length: end - start})
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errStalled) {
			err = fmt.Errorf("blob %s from %s: no answer: %w", req.Digest, p, errStalled)
		}
		return 0, have, err
	}
	defer body.Close()
	if size != ing.Size() {
		return 0, have, fmt.Errorf("blob %s: peer %s says %d bytes, not %d: %w", req.Digest, p, size, ing.Size(), errdefs.ErrDataLoss)
	}
	watchdog.Reset(r.cfg.StallTimeout)
	bp := pieceBuffers.Get().(*[]byte)
	defer pieceBuffers.Put(bp)
	buf := *bp
	counted := r.counter(req.Digest, SourcePeer, p)
	var n int64
	for off := start; off < end; {
		if !waiting.Load() && pos.Load() >= start {
			return n, have, errOvertaken
		}
		k, rerr := body.Read(buf[:min(int64(len(buf)), end-off)])
		if k > 0 {
			watchdog.Reset(r.cfg.StallTimeout)
			if _, werr := ing.WriteAt(buf[:k], off); werr != nil {
				return n, have, werr
			}
			f.trust.wrote(off, int64(k), false)
			off += int64(k)
			n += int64(k)
			counted.Add(k)
		}
		if rerr == io.EOF && off < end {
			return n, have, fmt.Errorf("blob %s: peer %s ended at %d, not %d: %w", req.Digest, p, off, end, io.ErrUnexpectedEOF)
		}
		if rerr != nil && rerr != io.EOF {
			if c := context.Cause(ctx); errors.Is(c, errStalled) {
				rerr = fmt.Errorf("blob %s: no byte from peer %s for %s at offset %d: %w", req.Digest, p, r.cfg.StallTimeout, off, errStalled)
			}
			return n, have, rerr
		}
	}
	return n, have, nil
}

var pieceBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}
