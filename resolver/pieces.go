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

// errOvertaken ends a piece the primary stream reached first.
var errOvertaken = errors.New("the stream reached the piece")

// errComplete ends a primary stream whose bytes the helpers already wrote.
var errComplete = errors.New("the rest of the blob has arrived from other peers")

// helpers runs PieceWorkers helpers for the download of req into ing until
// ctx ends; when a helper's piece makes the blob whole, it calls complete. pos is where the
// primary stream is, primary the peer it reads from. Peers that sent bytes
// are added to used.
func (r *Resolver) helpers(ctx context.Context, req BlobRequest, f *flight, ing store.Ingest, rr Ranger, pos *atomic.Int64, primary *atomic.Value, waiting *atomic.Bool, complete func(), usedMu *sync.Mutex, used map[string]bool) {
	size, psize := ing.Size(), r.cfg.PieceSize
	n := swarm.Count(size, psize)
	var (
		mu sync.Mutex
		ps = swarm.Pieces{Size: size, PieceSize: psize, Done: make([]bool, n), Taken: make([]bool, n)}
		// from is where a piece's next attempt starts: a helper writes
		// a piece in order, so what an attempt wrote is not asked again.
		from = make([]int64, n)
		srcs []*swarm.PieceSource
		seen = map[string]bool{}
		wg   sync.WaitGroup
	)
	refresh := func() {
		lctx, cancel := context.WithTimeout(ctx, r.cfg.PeerLookupTimeout)
		peers, _ := r.router.Providers(lctx, req.Digest)
		cancel()
		mu.Lock()
		defer mu.Unlock()
		for _, p := range peers {
			if !seen[p] {
				seen[p] = true
				srcs = append(srcs, &swarm.PieceSource{Peer: p, Have: -1})
			}
		}
	}
	// next picks a piece and a peer to ask for it (see swarm.NextPiece).
	next := func(now time.Time) (int, *swarm.PieceSource) {
		ps.Waiting = waiting.Load()
		ps.Contiguous = ing.Contiguous()
		ps.Pos = pos.Load()
		ps.Primary, _ = primary.Load().(string)
		return swarm.NextPiece(ps, srcs, now)
	}
	worker := func() {
		for ctx.Err() == nil {
			mu.Lock()
			i, s := next(time.Now())
			if i < 0 || s == nil {
				mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(pieceRetry):
				}
				continue
			}
			ps.Contiguous = ing.Contiguous()
			start, end := ps.Range(i, from[i])
			if start >= end {
				// Written already, from the start of the blob on.
				ps.Done[i] = true
				mu.Unlock()
				continue
			}
			ps.Taken[i], s.Busy = true, true
			mu.Unlock()

			k, have, err := r.fetchPiece(ctx, req, f, ing, rr, s.Peer, start, end, pos, waiting)

			mu.Lock()
			ps.Taken[i], s.Busy = false, false
			from[i] = start + k
			if have > 0 {
				s.Have = max(s.Have, have)
			}
			if k > 0 {
				usedMu.Lock()
				used[s.Peer] = true
				usedMu.Unlock()
			}
			res := pieceResult(ctx, err)
			if res == swarm.PieceFailed {
				r.cfg.Logger.Debug("piece failed", "digest", req.Digest, "peer", s.Peer, "offset", start, "err", err)
			}
			if swarm.AfterPiece(s, res, time.Now(), pieceRetry) {
				ps.Done[i] = true
			}
			finished := err == nil && ing.Contiguous() == size
			mu.Unlock()
			if finished {
				complete()
				return
			}
		}
	}
	refresh()
	for range r.cfg.PieceWorkers {
		wg.Go(worker)
	}
	t := time.NewTicker(providerRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
			refresh()
		}
	}
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
	}
	return swarm.PieceFailed
}

// fetchPiece copies [start, end) of req's blob from peer p into ing, and
// returns the bytes it wrote and what p said it holds.
// It stops when the primary stream, at pos, reaches the piece; while the
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
