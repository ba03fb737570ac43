package p2p

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestPacedConn: what a paced connection writes reaches the other end
// whole, at no more than the cap and its margin over clock time, and
// closing the connection ends a write waiting for its turn.
func TestPacedConn(t *testing.T) {
	t.Parallel()
	t.Run("paced", func(t *testing.T) {
		const capRate, total = 5_000_000, 8 << 20
		clk := &fakeClock{now: time.Unix(0, 0)}
		wire := wireCap(capRate, clk)
		a, b := net.Pipe()
		defer b.Close()
		c := newPacedConn(a, wire)
		defer c.Close()
		got := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(io.Discard, b)
			got <- n
		}()
		start := clk.Now()
		if _, err := c.Write(make([]byte, total)); err != nil {
			t.Fatal(err)
		}
		took := clk.elapsed(start)
		c.Close()
		if n := <-got; n != total {
			t.Fatalf("the other end read %d bytes, want %d", n, total)
		}
		rate := float64(capRate) * (1 + wireMargin)
		// The bucket starts full: one burst is free; a byte's leeway for
		// the float arithmetic.
		if most := rate*took.Seconds() + float64(wire.burst) + 1; total > most {
			t.Errorf("%d bytes written in %v of clock time, %.3f × the cap; at most %.0f may", total, took, total/took.Seconds()/capRate, most)
		}
		if least := rate * took.Seconds(); total < least-float64(wire.burst) {
			t.Errorf("%d bytes took %v of clock time: slower than the cap and its margin", total, took)
		}
	})
	t.Run("closed while waiting", func(t *testing.T) {
		wire := wireCap(1000, realClock{})
		a, b := net.Pipe()
		defer b.Close()
		go func() { _, _ = io.Copy(io.Discard, b) }()
		c := newPacedConn(a, wire)
		done := make(chan error, 1)
		// The first burst passes at once; the rest waits seconds.
		go func() {
			_, err := c.Write(make([]byte, 10*wire.burst))
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		c.Close()
		select {
		case err := <-done:
			if err == nil || errors.Is(err, io.EOF) {
				t.Errorf("a write waiting under the cap ended with %v after Close, want an error", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a write waiting under the cap did not end when its connection closed")
		}
	})
}
