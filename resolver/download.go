package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/store"
)

// source is one place a download can read from.
type source struct {
	kind Source
	peer string // for SourcePeer
	// designated marks a designated peer, asked to fetch for the cluster.
	designated bool
	open       func(ctx context.Context, off int64, size int64) (io.ReadCloser, int64, error)
}

func (s source) String() string {
	if s.peer != "" {
		return string(s.kind) + " " + s.peer
	}
	return string(s.kind)
}

// sources lists where req's blob can come from, in the order to try them:
// peers that hold it (best first), then the registry, several times.
// Peers that are not designated are asked to wait for bytes they have not
// received yet unless noWait is set: after a download jumped ahead over
// bytes its helpers wrote, it may be ahead of the peer it asks, and two
// nodes that each waited on the other's next byte would stall until
// StallTimeout.
func (r *Resolver) sources(req BlobRequest, noWait *atomic.Bool) []source {
	var out []source
	if d, ok := r.router.(Designator); ok && !req.ForPeer {
		// The peers designated to fetch this digest for the cluster come
		// first: they download it once and stream it to everyone.
		peers, _ := d.Designated(req.Digest, r.group(req.Digest))
		for _, p := range peers[:min(len(peers), r.cfg.DesignatedPeers)] {
			out = append(out, source{kind: SourcePeer, peer: p, designated: true, open: func(ctx context.Context, off, _ int64) (io.ReadCloser, int64, error) {
				return d.FetchThrough(ctx, p, req.Digest, off, req.Registry, req.Repo)
			}})
		}
	}
	if r.router != nil {
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.PeerLookupTimeout)
		peers, err := r.router.Providers(ctx, req.Digest)
		cancel()
		if err != nil && !errdefs.IsNotFound(err) {
			r.cfg.Logger.Debug("provider look-up failed", "digest", req.Digest, "err", err)
		}
		rr, ranges := r.router.(Ranger)
		for _, p := range peers {
			out = append(out, source{kind: SourcePeer, peer: p, open: func(ctx context.Context, off, _ int64) (io.ReadCloser, int64, error) {
				if ranges && noWait.Load() {
					body, size, _, err := rr.FetchRange(ctx, p, req.Digest, PeerRange{Off: off})
					return body, size, err
				}
				return r.router.Fetch(ctx, p, req.Digest, off)
			}})
		}
	}
	if r.upstream != nil {
		up := source{kind: SourceUpstream, open: func(ctx context.Context, off, size int64) (io.ReadCloser, int64, error) {
			q := req
			q.Size = size
			return r.upstream.Blob(ctx, q, off)
		}}
		for range r.cfg.FetchAttempts {
			out = append(out, up)
		}
	}
	return out
}

// download fetches req's blob into the store from the first source that
// delivers, resuming at the same offset from the next source when one
// breaks or stalls, and publishes the ingest on f as soon as the size is
// known so readers can follow it.
func (r *Resolver) download(req BlobRequest, f *flight) {
	defer r.wg.Done()
	defer r.finish(req.Digest)
	log := r.cfg.Logger.With("digest", req.Digest, "registry", req.Registry, "repo", req.Repo)
	r.m.inflightBlobs.Inc()
	defer r.m.inflightBlobs.Dec()

	published := false
	fail := func(err error) {
		r.m.downloads.WithLabelValues("error").Inc()
		if !published {
			f.err = err
			close(f.ready)
		}
	}
	var ing store.Ingest
	var off int64
	var lastErr error
	var peersUsed []string
	// Peers that failed this download are not asked again by it: a peer
	// listed twice (designated, and a provider) that went silent or was cut
	// off would cost the stall timeout, then a dial timeout, once more.
	failedPeers := map[string]bool{}
	localFailed := false
	start := time.Now()
	backoff := 50 * time.Millisecond
	if req.Size > 0 {
		// The size is known (from the manifest that named the blob):
		// publish now. Readers then wait for bytes, up to the mirror's
		// HeaderWait, rather than for a source to answer, which must
		// happen within MissTimeout; so a download may wait longer for a
		// busy peer before it turns to the registry.
		var err error
		if ing, err = r.store.Begin(r.ctx, req.Digest, req.Size); err != nil {
			fail(err)
			return
		}
		f.ingest = ing
		published = true
		close(f.ready)
	}
	// Announced once a source answers, not before: a node that announced
	// an ingest no source feeds yet could be picked as a source by the very
	// peer it waits for.
	announced := false
	opened := func(kind Source) {
		f.setSource(kind)
		if !announced {
			announced = true
			close(f.fed)
			r.announce(req.Digest)
		}
	}
	// The primary stream: where it reads, and from which peer.
	var pos atomic.Int64
	var noWait atomic.Bool
	var primary atomic.Value
	primary.Store("")
	// waiting is set while the download waits for a slot at a peer, every
	// source having answered busy: no stream is open, and the helpers
	// fetch from the front.
	var waiting atomic.Bool
	dctx, dcancel := context.WithCancelCause(r.ctx)
	defer dcancel(nil)
	var usedMu sync.Mutex
	used := map[string]bool{}
	helping := false
	startHelpers := func() {
		rr, ok := r.router.(Ranger)
		if helping || !ok || ing == nil || r.cfg.PieceSize <= 0 || r.cfg.PieceWorkers == 0 || ing.Size() < 2*r.cfg.PieceSize {
			return
		}
		helping = true
		// They end with the download (dctx), or make the blob whole and
		// end the primary stream.
		r.wg.Go(func() {
			r.helpers(dctx, req, f, ing, rr, &pos, &primary, &waiting, func() { dcancel(errComplete) }, &usedMu, used)
		})
	}
	for round := 0; ; round++ {
		sources := r.sources(req, &noWait)
		if len(sources) == 0 {
			lastErr = fmt.Errorf("blob %s: no peer holds it and no upstream: %w", req.Digest, errdefs.ErrNotFound)
		}
		busy, designatedBusy := false, false
		for _, src := range sources {
			if r.ctx.Err() != nil {
				lastErr = r.ctx.Err()
				break
			}
			if src.peer != "" && failedPeers[src.peer] {
				continue
			}
			if src.designated && designatedBusy {
				// The first designated peer is fetching the blob and only
				// out of slots: the next would fetch it from the registry a
				// second time. The peers it feeds come next.
				continue
			}
			if src.kind == SourceUpstream && busy && time.Since(start) < busyLimit(published, r.cfg) {
				// A peer holds it but has no free slot: waiting for one
				// spares the registry. Before the first byte the wait is
				// short, containerd is waiting for an answer; once bytes
				// flow it may be longer.
				break
			}
			primary.Store(src.peer)
			var n int64
			var err error
			sent := false
			for {
				if ing != nil {
					// The helpers may have written the next bytes while
					// no stream was open.
					off = max(off, ing.Contiguous())
				}
				pos.Store(off)
				startHelpers()
				var k int64
				k, _, err = r.fetchOnce(dctx, req, src, f.trust, ing, off, &pos, func(size int64) (store.Ingest, error) {
					var err error
					ing, err = r.store.Begin(r.ctx, req.Digest, size)
					if err != nil {
						if errdefs.IsAlreadyExists(err) {
							return nil, err
						}
						return nil, fmt.Errorf("%w: %w", errLocalStore, err)
					}
					f.ingest = ing
					f.setSource(src.kind)
					published = true
					close(f.ready)
					startHelpers()
					return ing, nil
				}, func(kind Source) {
					waiting.Store(false)
					opened(kind)
				})
				n += k
				sent = sent || k > 0
				if !errors.Is(err, errCaughtUp) {
					break
				}
				// The stream reached bytes the helpers wrote: ask the same
				// source again from the next hole rather than read them
				// twice, and from now on without waiting (see sources).
				off = ing.Contiguous()
				noWait.Store(true)
				n = 0
			}
			if sent && src.peer != "" {
				peersUsed = append(peersUsed, src.peer)
			}
			off += n
			if ing != nil && ing.Contiguous() == ing.Size() {
				// Whole: this source's bytes, or the helpers' too.
				off, lastErr = ing.Size(), nil
				break
			}
			lastErr = err
			if errors.Is(err, errLocalStore) || (ing != nil && ing.Err() != nil) {
				// shoal's own store failed (a full disk), not the source:
				// every other source would fail the same way.
				localFailed = true
				break
			}
			if src.peer != "" && (errdefs.IsResourceExhausted(err) || errdefs.IsOutOfRange(err)) {
				// Busy, or not there yet: either way it will be soon.
				busy = true
				designatedBusy = designatedBusy || src.designated
			} else if src.peer != "" {
				failedPeers[src.peer] = true
			}
			if !retryable(err) || (src.kind == SourceUpstream && (errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err) || errdefs.IsResourceExhausted(err))) {
				// The registry does not have it, refuses shoal, or rate
				// limits it (429): asking again will not help, and after a
				// 429 it costs more of the quota.
				break
			}
			log.Info("source failed, trying the next", "source", src.String(), "offset", off, "err", err)
		}
		if lastErr == nil || !busy || localFailed || r.ctx.Err() != nil || time.Since(start) > r.cfg.BusyRetryFor {
			break
		}
		// Every source failed but a peer that holds the blob was only busy:
		// a slot frees up soon, and by then more peers may hold it.
		waiting.Store(true)
		select {
		case <-time.After(backoff):
		case <-r.ctx.Done():
		}
		backoff = min(2*backoff, time.Second)
	}
	dcancel(nil)
	usedMu.Lock()
	for p := range used {
		if !slices.Contains(peersUsed, p) {
			peersUsed = append(peersUsed, p)
		}
	}
	usedMu.Unlock()
	if lastErr == nil && ing == nil {
		lastErr = fmt.Errorf("blob %s: no source sent it: %w", req.Digest, errdefs.ErrNotFound)
	}
	if lastErr != nil {
		if localFailed {
			now := time.Now()
			r.mu.Lock()
			for d, until := range r.unstorable {
				if now.After(until) {
					delete(r.unstorable, d)
				}
			}
			r.unstorable[req.Digest] = now.Add(unstorableFor)
			r.mu.Unlock()
			log.Error("shoal's store cannot hold the blob: requests for it are misses for a while, so containerd fetches it from the registry",
				"offset", off, "for", unstorableFor, "err", lastErr)
		}
		log.Warn("download failed", "offset", off, "err", lastErr)
		if ing != nil {
			ing.Abort(lastErr)
		}
		fail(lastErr)
		return
	}
	if err := ing.Commit(r.ctx); err != nil {
		if errors.Is(err, store.ErrDigestMismatch) || errors.Is(err, store.ErrSizeMismatch) {
			r.m.verifyFailures.Inc()
			r.m.downloads.WithLabelValues("mismatch").Inc()
			// Which of them lied is unknown: avoid every peer that sent a part.
			for _, p := range peersUsed {
				r.router.Avoid(p, err)
			}
		} else {
			r.m.downloads.WithLabelValues("error").Inc()
		}
		log.Error("downloaded blob rejected", "err", err, "peers", peersUsed)
		return
	}
	r.m.downloads.WithLabelValues("ok").Inc()
	log.Info("blob stored", "bytes", off, "seconds", time.Since(start).Seconds(), "peers", peersUsed)
	r.announce(req.Digest)
}

// announce tells the mesh, in the background, that this node holds dgst.
func (r *Resolver) announce(dgst digest.Digest) {
	if r.router == nil {
		return
	}
	r.wg.Go(func() {
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		defer cancel()
		if err := r.router.Provide(ctx, dgst); err != nil && r.ctx.Err() == nil {
			r.cfg.Logger.Warn("could not announce blob", "digest", dgst, "err", err)
		}
	})
}

// retryable says whether a failed source is worth following with the next.
func retryable(err error) bool {
	switch {
	case err == nil:
		return true
	case errdefs.IsAlreadyExists(err), errors.Is(err, store.ErrSizeMismatch), errors.Is(err, context.Canceled):
		return false
	}
	return true
}

// errLocalStore marks a failure of shoal's own store, not of a source.
var errLocalStore = errors.New("shoal's store failed")

// errCaughtUp ends a stream that reached bytes helpers wrote.
var errCaughtUp = errors.New("the stream reached bytes other peers sent")

// errStalled marks a source that stopped sending.
var errStalled = errors.New("source stalled")

// fetchOnce opens src at off and copies it into the ingest (created through
// begin on the first success, once the size is known). It returns how many
// bytes it wrote.
// opened is called once the source answered, before any byte is copied.
// pos follows where it writes.
func (r *Resolver) fetchOnce(ctx context.Context, req BlobRequest, src source, tr *trust, ing store.Ingest, off int64, pos *atomic.Int64, begin func(int64) (store.Ingest, error), opened func(Source)) (int64, int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// The watchdog cancels the request when no byte came for StallTimeout,
	// headers included.
	watchdog := time.AfterFunc(r.cfg.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()

	var known int64
	if ing != nil {
		known = ing.Size()
	}
	body, size, err := src.open(ctx, off, known)
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errStalled) {
			err = fmt.Errorf("blob %s from %s: no answer: %w", req.Digest, src, errStalled)
		}
		return 0, 0, err
	}
	defer body.Close()
	if ing == nil {
		if ing, err = begin(size); err != nil {
			return 0, size, err
		}
	} else if size != ing.Size() {
		// A source that disagrees on the size is not the same blob.
		return 0, size, fmt.Errorf("blob %s: %s says %d bytes, not %d: %w", req.Digest, src, size, ing.Size(), errdefs.ErrDataLoss)
	}
	// Announced now: peers may read what arrives.
	opened(src.kind)
	watchdog.Reset(r.cfg.StallTimeout)

	buf := make([]byte, 256<<10)
	var n int64
	// Counted as they arrive, so the metric shows a long transfer's progress.
	counted := r.m.sourceBytes.WithLabelValues(string(src.kind))
	for off+n < size {
		k, rerr := body.Read(buf)
		if k > 0 {
			watchdog.Reset(r.cfg.StallTimeout)
			if off+n+int64(k) > size {
				return n, size, fmt.Errorf("blob %s: %s sent more than %d bytes: %w", req.Digest, src, size, errdefs.ErrDataLoss)
			}
			if _, werr := ing.WriteAt(buf[:k], off+n); werr != nil {
				return n, size, werr
			}
			tr.wrote(off+n, int64(k), src.kind == SourceUpstream)
			n += int64(k)
			pos.Store(off + n)
			counted.Add(float64(k))
			if c := ing.Contiguous(); c == size {
				// The helpers sent the rest.
				return n, size, nil
			} else if c > off+n {
				return n, size, errCaughtUp
			}
		}
		if rerr == io.EOF {
			if off+n < size {
				return n, size, fmt.Errorf("blob %s: %s ended at %d of %d bytes: %w", req.Digest, src, off+n, size, io.ErrUnexpectedEOF)
			}
			break
		}
		if rerr != nil {
			if c := context.Cause(ctx); errors.Is(c, errStalled) {
				rerr = fmt.Errorf("blob %s: no byte from %s for %s at offset %d: %w", req.Digest, src, r.cfg.StallTimeout, off+n, errStalled)
			}
			return n, size, rerr
		}
	}
	return n, size, nil
}

// busyLimit is how long a download prefers waiting for a busy peer to
// asking the registry.
func busyLimit(published bool, cfg Config) time.Duration {
	if published {
		return cfg.BusyRetryFor / 2
	}
	return cfg.BusyWait
}
