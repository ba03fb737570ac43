package resolver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/containerd/errdefs"

	"github.com/shoal-dev/shoal/store"
)

// download fetches req's blob from upstream into the store, resuming from
// the bytes it has when the body breaks or stalls, and publishes the ingest
// on f as soon as the size is known so readers can follow it.
func (r *Resolver) download(req BlobRequest, f *flight) {
	defer r.wg.Done()
	defer r.finish(req.Digest)
	log := r.cfg.Logger.With("digest", req.Digest, "registry", req.Registry, "repo", req.Repo)
	r.m.inflightBlobs.Inc()
	defer r.m.inflightBlobs.Dec()

	published := false
	fail := func(err error) {
		r.m.upstreamFetch.WithLabelValues("error").Inc()
		if !published {
			f.err = err
			close(f.ready)
		}
	}
	if r.upstream == nil {
		fail(fmt.Errorf("blob %s: no upstream: %w", req.Digest, errdefs.ErrNotFound))
		return
	}

	var ing store.Ingest
	var off int64
	var lastErr error
	start := time.Now()
	for attempt := 0; attempt < r.cfg.FetchAttempts; attempt++ {
		if r.ctx.Err() != nil {
			lastErr = r.ctx.Err()
			break
		}
		n, size, err := r.fetchOnce(req, ing, off, func(size int64) (store.Ingest, error) {
			var err error
			ing, err = r.store.Begin(r.ctx, req.Digest, size)
			if err != nil {
				return nil, err
			}
			f.ingest, f.source = ing, SourceUpstream
			published = true
			close(f.ready)
			return ing, nil
		})
		off += n
		if err == nil && ing != nil && off == size {
			lastErr = nil
			break
		}
		lastErr = err
		if !retryable(err) {
			break
		}
		log.Info("upstream download interrupted, resuming", "offset", off, "attempt", attempt+1, "err", err)
	}
	if lastErr == nil && ing == nil {
		lastErr = fmt.Errorf("blob %s: upstream sent no body: %w", req.Digest, errdefs.ErrNotFound)
	}
	if lastErr != nil {
		log.Warn("upstream download failed", "offset", off, "err", lastErr)
		if ing != nil {
			ing.Abort(lastErr)
		}
		fail(lastErr)
		return
	}
	if err := ing.Commit(r.ctx); err != nil {
		if errors.Is(err, store.ErrDigestMismatch) || errors.Is(err, store.ErrSizeMismatch) {
			r.m.verifyFailures.Inc()
			r.m.upstreamFetch.WithLabelValues("mismatch").Inc()
		} else {
			r.m.upstreamFetch.WithLabelValues("error").Inc()
		}
		log.Error("upstream blob rejected", "err", err)
		return
	}
	r.m.upstreamFetch.WithLabelValues("ok").Inc()
	log.Info("upstream blob stored", "bytes", off, "seconds", time.Since(start).Seconds())
}

// retryable says whether a failed attempt is worth resuming.
func retryable(err error) bool {
	switch {
	case err == nil:
		return true
	case errdefs.IsNotFound(err), errdefs.IsPermissionDenied(err), errdefs.IsUnauthorized(err),
		errdefs.IsInvalidArgument(err), errdefs.IsAlreadyExists(err),
		errors.Is(err, store.ErrSizeMismatch), errors.Is(err, context.Canceled):
		return false
	}
	return true
}

// errStalled marks a source that stopped sending.
var errStalled = errors.New("source stalled")

// fetchOnce opens the upstream body at off and copies it into the ingest
// (created through begin on the first attempt, once the size is known). It
// returns how many bytes it wrote.
func (r *Resolver) fetchOnce(req BlobRequest, ing store.Ingest, off int64, begin func(int64) (store.Ingest, error)) (int64, int64, error) {
	ctx, cancel := context.WithCancelCause(r.ctx)
	defer cancel(nil)
	// The watchdog cancels the request when no byte came for StallTimeout,
	// headers included.
	watchdog := time.AfterFunc(r.cfg.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()

	if ing != nil {
		req.Size = ing.Size()
	}
	body, size, err := r.upstream.Blob(ctx, req, off)
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errStalled) {
			err = fmt.Errorf("blob %s: upstream headers: %w", req.Digest, errStalled)
		}
		return 0, 0, err
	}
	defer body.Close()
	if ing == nil {
		if ing, err = begin(size); err != nil {
			return 0, size, err
		}
	} else if size != ing.Size() {
		return 0, size, fmt.Errorf("blob %s: upstream size changed from %d to %d: %w", req.Digest, ing.Size(), size, store.ErrSizeMismatch)
	}
	watchdog.Reset(r.cfg.StallTimeout)

	buf := make([]byte, 256<<10)
	var n int64
	for off+n < size {
		k, rerr := body.Read(buf)
		if k > 0 {
			watchdog.Reset(r.cfg.StallTimeout)
			if off+n+int64(k) > size {
				return n, size, fmt.Errorf("blob %s: upstream sent more than %d bytes: %w", req.Digest, size, store.ErrSizeMismatch)
			}
			if _, werr := ing.WriteAt(buf[:k], off+n); werr != nil {
				return n, size, werr
			}
			n += int64(k)
			r.m.upstreamBytes.Add(float64(k))
		}
		if rerr == io.EOF {
			if off+n < size {
				return n, size, fmt.Errorf("blob %s: upstream body ended at %d of %d bytes: %w", req.Digest, off+n, size, io.ErrUnexpectedEOF)
			}
			break
		}
		if rerr != nil {
			if c := context.Cause(ctx); errors.Is(c, errStalled) {
				rerr = fmt.Errorf("blob %s: no byte for %s at offset %d: %w", req.Digest, r.cfg.StallTimeout, off+n, errStalled)
			}
			return n, size, rerr
		}
	}
	return n, size, nil
}
