package bench

import (
	"context"
	"io"
	"math"
	"net/http"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/store"
)

// limitBurst is the largest chunk a limiter lets through at once.
const limitBurst = 512 << 10

// newLimiter returns a limiter of bytesPerSec, or nil (unlimited) for 0.
func newLimiter(bytesPerSec float64) *rate.Limiter {
	if bytesPerSec <= 0 || math.IsInf(bytesPerSec, 1) {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bytesPerSec), limitBurst)
}

// wait blocks until l lets n bytes through.
func wait(ctx context.Context, l *rate.Limiter, n int) error {
	for l != nil && n > 0 {
		k := min(n, limitBurst)
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// limitedReader passes bytes at the limiter's pace.
type limitedReader struct {
	ctx context.Context
	r   io.ReadCloser
	l   *rate.Limiter
}

func limitReader(ctx context.Context, r io.ReadCloser, l *rate.Limiter) io.ReadCloser {
	if l == nil {
		return r
	}
	return &limitedReader{ctx: ctx, r: r, l: l}
}

func (lr *limitedReader) Read(p []byte) (int, error) {
	if len(p) > limitBurst {
		p = p[:limitBurst]
	}
	n, err := lr.r.Read(p)
	if werr := wait(lr.ctx, lr.l, n); werr != nil && err == nil {
		err = werr
	}
	return n, err
}

func (lr *limitedReader) Close() error { return lr.r.Close() }

// limitedBlob serves a blob's bytes at an upload limiter's pace.
type limitedBlob struct {
	store.Blob
	l        *rate.Limiter
	uploaded *atomic.Int64
}

func (b limitedBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.Blob.ReadAt(p, off)
	_ = wait(context.Background(), b.l, n)
	b.uploaded.Add(int64(n))
	return n, err
}

// Arriving and Have pass on what a blob still arriving says of itself, so
// that a simulated node treats it as the daemon does: a blob held in part.
func (b limitedBlob) Arriving() bool {
	a, ok := b.Blob.(interface{ Arriving() bool })
	return ok && a.Arriving()
}

func (b limitedBlob) Have() int64 {
	if h, ok := b.Blob.(interface{ Have() int64 }); ok {
		return h.Have()
	}
	return b.Size()
}

// egressWriter paces and counts what the registry writes.
type egressWriter struct {
	http.ResponseWriter
	ctx   context.Context
	l     *rate.Limiter
	count *atomic.Int64
}

func (w egressWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), limitBurst)
		if err := wait(w.ctx, w.l, k); err != nil {
			return written, err
		}
		n, err := w.ResponseWriter.Write(p[:k])
		written += n
		w.count.Add(int64(n))
		if err != nil {
			return written, err
		}
		p = p[k:]
	}
	return written, nil
}

func (w egressWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
