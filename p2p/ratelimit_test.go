package p2p

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// fakeClock moves only when a capped stream sleeps on it, so the time a
// transfer took under a cap is exact: the test asserts bytes over clock
// time, never wall-clock speed.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return nil
}

func (c *fakeClock) elapsed(start time.Time) time.Duration { return c.Now().Sub(start) }

// TestBandwidthCap moves bytes through a capped writer and reader on a
// clock that only the cap moves: the throughput, bytes over elapsed clock
// time, is the cap within the one burst the bucket starts with.
func TestBandwidthCap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		rate  int64 // bytes per second
		total int
		write int // size of each Write or Read buffer
	}{
		{"40 Mbit in large writes", 5_000_000, 64 << 20, 1 << 20},
		{"40 Mbit in small writes", 5_000_000, 8 << 20, 1000},
		{"1 Mbit, floor burst", 125_000, 1 << 20, 32 << 10},
		{"1 Gbit, ceiling burst", 125_000_000, 512 << 20, 4 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			check := func(t *testing.T, b *bandwidth, moved int, took time.Duration) {
				t.Helper()
				if moved != tc.total {
					t.Fatalf("moved %d bytes, want %d", moved, tc.total)
				}
				// The bucket starts full: one burst is free, the rest
				// paces at the rate.
				floor := time.Duration(float64(tc.total-b.burst) / float64(tc.rate) * float64(time.Second))
				ceil := time.Duration(float64(tc.total) / float64(tc.rate) * float64(time.Second))
				if took < floor-time.Millisecond || took > ceil+time.Millisecond {
					t.Errorf("%d bytes took %v of clock time, want between %v and %v", tc.total, took, floor, ceil)
				}
				got := float64(tc.total) / took.Seconds()
				if r := got / float64(tc.rate); r < 0.999 || r > 1.10 {
					t.Errorf("throughput %.0f B/s is %.3f × the cap", got, r)
				}
				// Any one-second window: at most the rate and one burst.
				if over := float64(b.burst) / float64(tc.rate); over > 0.1 {
					t.Errorf("burst %d is %.2f s worth of bytes; a 1 s window could exceed the cap by more than 10%%", b.burst, over)
				}
			}

			t.Run("writer", func(t *testing.T) {
				clk := &fakeClock{now: time.Unix(0, 0)}
				b := newBandwidth(tc.rate, clk)
				w := b.writer(t.Context(), io.Discard)
				buf := make([]byte, tc.write)
				start := clk.Now()
				moved := 0
				for moved < tc.total {
					n, err := w.Write(buf[:min(len(buf), tc.total-moved)])
					moved += n
					if err != nil {
						t.Fatal(err)
					}
				}
				check(t, b, moved, clk.elapsed(start))
			})

			t.Run("reader", func(t *testing.T) {
				clk := &fakeClock{now: time.Unix(0, 0)}
				b := newBandwidth(tc.rate, clk)
				r := io.LimitReader(zeros{}, int64(tc.total))
				buf := make([]byte, tc.write)
				start := clk.Now()
				moved := 0
				for {
					n, err := r.Read(buf[:b.readLimit(len(buf))])
					if n > b.burst {
						t.Fatalf("read %d bytes at once, more than the burst %d", n, b.burst)
					}
					moved += n
					if perr := b.paid(t.Context(), n); perr != nil {
						t.Fatal(perr)
					}
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
				}
				check(t, b, moved, clk.elapsed(start))
			})
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestBandwidthShared: two streams under one cap share it; together they
// move no faster than the cap. Their writes interleave in one goroutine:
// the fake clock adds up sleeps, so sleeps that would overlap in real time
// cannot be run concurrently on it.
func TestBandwidthShared(t *testing.T) {
	t.Parallel()
	clk := &fakeClock{now: time.Unix(0, 0)}
	const rate, each, chunk = 1_000_000, 4 << 20, 64 << 10
	b := newBandwidth(rate, clk)
	w1, w2 := b.writer(t.Context(), io.Discard), b.writer(t.Context(), io.Discard)
	start := clk.Now()
	buf := make([]byte, chunk)
	for moved := 0; moved < each; moved += chunk {
		for _, w := range []io.Writer{w1, w2} {
			if _, err := w.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	floor := time.Duration(float64(2*each-b.burst) / rate * float64(time.Second))
	ceil := time.Duration(float64(2*each) / rate * float64(time.Second))
	if took := clk.elapsed(start); took < floor-time.Millisecond || took > ceil+time.Millisecond {
		t.Errorf("two streams moved %d bytes in %v of clock time, want between %v and %v", 2*each, took, floor, ceil)
	}
}

// staleClock reads a fakeClock, every other time as it was lag before: the
// time a stream read before another stream's reservation, and reserves at
// after it.
type staleClock struct {
	*fakeClock
	lag   time.Duration
	reads int
}

func (c *staleClock) Now() time.Time {
	c.reads++
	if c.reads%2 == 0 {
		return c.fakeClock.Now().Add(-c.lag)
	}
	return c.fakeClock.Now()
}

// TestBandwidthStaleTimes: streams that reserve at times older than a
// reservation already made move no more than the cap. The limiter counts
// the tokens since the time of the last reservation and takes an older
// time as the last one; given such times, it counted the stretch between
// them again, and a 40 Mbit/s cap passed about twice that.
func TestBandwidthStaleTimes(t *testing.T) {
	t.Parallel()
	const rate, total = 5_000_000, 16 << 20
	clk := &staleClock{fakeClock: &fakeClock{now: time.Unix(0, 0)}, lag: burstWindow}
	b := newBandwidth(rate, clk)
	w := b.writer(t.Context(), io.Discard)
	start := clk.fakeClock.Now()
	buf := make([]byte, b.burst)
	for moved := 0; moved < total; moved += len(buf) {
		if _, err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	took := clk.elapsed(start)
	if most := float64(rate)*took.Seconds() + float64(b.burst); float64(total) > most {
		t.Errorf("%d bytes passed in %v of clock time, %.2f × the cap; at most %.0f may", total, took, float64(total)/took.Seconds()/rate, most)
	}
}

// TestBandwidthCancel: a stream waiting under the cap stops when its
// context ends, and a nil cap passes everything through untouched.
func TestBandwidthCancel(t *testing.T) {
	t.Parallel()
	b := newBandwidth(1000, realClock{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	w := b.writer(ctx, io.Discard)
	// The first burst is free; the next must wait, and the wait is over.
	n, err := w.Write(make([]byte, 3*b.burst))
	if !errors.Is(err, context.Canceled) || n != b.burst {
		t.Fatalf("Write: %d bytes, %v; want %d bytes and context.Canceled", n, err, b.burst)
	}

	var none *bandwidth
	var buf bytes.Buffer
	if w := none.writer(t.Context(), &buf); w != &buf {
		t.Errorf("a nil cap wrapped the writer")
	}
	if got := none.readLimit(1 << 30); got != 1<<30 {
		t.Errorf("a nil cap limits reads to %d", got)
	}
	if err := none.paid(ctx, 1<<30); err != nil {
		t.Errorf("a nil cap made a reader wait: %v", err)
	}
	if newBandwidth(0, realClock{}) != nil {
		t.Errorf("rate 0 made a cap")
	}
}
