package p2p

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Burst bounds of a bandwidth cap. The burst is what the cap lets through
// at once after a quiet spell, so it is also how far any window can exceed
// the cap: 20 ms worth of bytes keeps every 1 s window within 2 % of it.
// The floor keeps chunks worth a system call at low rates; the ceiling is
// the copy buffer, which fast links drain in well under 20 ms anyway.
const (
	burstWindow = 20 * time.Millisecond
	minBurst    = 4 << 10
	maxBurst    = copyBufferSz
)

// clock is what a bandwidth cap reads time from and sleeps on; tests
// substitute one that only moves when told.
type clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx ends, whichever is first.
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bandwidth caps one direction of a node's peer traffic, shared by all its
// streams in that direction. A nil *bandwidth is no cap.
//
// The times it gives the limiter never go backwards (see now): the
// limiter counts the tokens since the last reservation's time, and takes
// an earlier time as its new last one, so a stream that read the clock
// before another reserved, and reserved after it, would make the limiter
// count the time between the two again, as bytes the cap never allowed.
type bandwidth struct {
	lim   *rate.Limiter
	burst int
	clock clock

	mu   sync.Mutex
	last time.Time // the latest time the limiter was given
}

// newBandwidth returns a cap of bytesPerSec, or nil for 0 (no cap).
func newBandwidth(bytesPerSec int64, c clock) *bandwidth {
	if bytesPerSec <= 0 {
		return nil
	}
	burst := int(min(max(int64(float64(bytesPerSec)*burstWindow.Seconds()), minBurst), maxBurst))
	return &bandwidth{lim: rate.NewLimiter(rate.Limit(bytesPerSec), burst), burst: burst, clock: c}
}

// now is the clock's time, or the latest time the limiter was given if
// the clock reads earlier; b.mu is held.
func (b *bandwidth) now() time.Time {
	now := b.clock.Now()
	if now.Before(b.last) {
		now = b.last
	}
	b.last = now
	return now
}

// reserve takes n bytes' tokens and says when they may pass.
func (b *bandwidth) reserve(n int) (*rate.Reservation, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	return b.lim.ReserveN(now, n), now
}

// cancel gives back the tokens of r not yet due.
func (b *bandwidth) cancel(r *rate.Reservation) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r.CancelAt(b.now())
}

// wait blocks until n bytes (at most b.burst) may pass.
func (b *bandwidth) wait(ctx context.Context, n int) error {
	r, now := b.reserve(n)
	if !r.OK() {
		return fmt.Errorf("bandwidth: %d bytes exceed the burst of %d", n, b.burst)
	}
	d := r.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	if err := b.clock.Sleep(ctx, d); err != nil {
		// Give back the tokens not used, so the other streams are not
		// held back by a transfer that was abandoned.
		b.cancel(r)
		return err
	}
	return nil
}

// writer returns w capped by b: every Write waits for its bytes, in chunks
// of at most the burst, before they go out. ctx ends the waits.
func (b *bandwidth) writer(ctx context.Context, w io.Writer) io.Writer {
	if b == nil {
		return w
	}
	return &rateWriter{ctx: ctx, w: w, b: b}
}

type rateWriter struct {
	ctx context.Context
	w   io.Writer
	b   *bandwidth
}

func (w *rateWriter) Write(p []byte) (int, error) {
	var total int
	for len(p) > 0 {
		k := min(len(p), w.b.burst)
		if err := w.b.wait(w.ctx, k); err != nil {
			return total, err
		}
		m, err := w.w.Write(p[:k])
		total += m
		if err != nil {
			return total, err
		}
		p = p[k:]
	}
	return total, nil
}

// readLimit is the most a capped reader asks for at once: the bytes it
// receives are paid for after they arrive, and at most a burst is owed.
func (b *bandwidth) readLimit(n int) int {
	if b == nil {
		return n
	}
	return min(n, b.burst)
}

// paid waits for n bytes already read. Nothing is waited for on a nil cap.
func (b *bandwidth) paid(ctx context.Context, n int) error {
	if b == nil || n <= 0 {
		return nil
	}
	return b.wait(ctx, n)
}
