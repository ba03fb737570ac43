package p2p_test

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// TestBandwidthCapOverStream fetches a blob over a loopback libp2p stream
// from a node with an upload cap, and with a download cap on the fetching
// node. The cap is the only thing slow on loopback, so the transfer takes
// at least (size − burst) / cap: a fact of the limiter, asserted as a lower
// bound; the upper side (how close to the cap it gets) is only logged, and
// measured as a ratio by BenchmarkCappedStream.
func TestBandwidthCapOverStream(t *testing.T) {
	t.Parallel()
	const rate = 2_000_000 // bytes per second
	data := randomBlob(11, 6<<20)
	d := digest.FromBytes(data)
	for _, tc := range []struct {
		name string
		cfg  func(i int, cfg *p2p.Config) // node 0 fetches from node 1
	}{
		{"upload", func(i int, cfg *p2p.Config) {
			if i == 1 {
				cfg.MaxUploadRate = rate
			}
		}},
		{"download", func(i int, cfg *p2p.Config) {
			if i == 0 {
				cfg.MaxDownloadRate = rate
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := p2ptest.Start(t, 2, p2ptest.Options{
				Config: tc.cfg,
				Content: func(i int) *p2ptest.Content {
					if i == 1 {
						return p2ptest.NewContent(data)
					}
					return nil
				},
			})
			c.WaitMembers(t, 2, 20*time.Second)
			client, server := c.Nodes[0], c.Nodes[1]
			waitProviders(t, client, d, []peer.ID{server.ID()}, 20*time.Second)

			start := time.Now()
			if err := fetchAll(t.Context(), client, server.ID(), d, len(data)); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			floor := time.Duration(float64(len(data)-p2p.Burst(rate)) / rate * float64(time.Second))
			if took < floor {
				t.Errorf("%d bytes under a %d B/s cap took %v, want at least %v", len(data), rate, took, floor)
			}
			t.Logf("%d bytes in %v: %.3f × the cap", len(data), took, float64(len(data))/took.Seconds()/rate)
			if got := server.Status().BytesServed; got != int64(len(data)) {
				t.Errorf("server counted %d bytes served, want %d", got, len(data))
			}
		})
	}
}

// BenchmarkCappedStream reports the throughput of one capped stream over
// loopback as a ratio of the cap (x_cap, want 0.9 to 1.0):
//
//	go test -run '^$' -bench CappedStream -benchtime 3x ./p2p/
func BenchmarkCappedStream(b *testing.B) {
	const size = 24 << 20
	data := randomBlob(12, size)
	d := digest.FromBytes(data)
	for _, rate := range []int64{5_000_000, 25_000_000} { // 40 and 200 Mbit/s
		b.Run(fmt.Sprintf("%dMbit", rate*8/1_000_000), func(b *testing.B) {
			c := p2ptest.Start(b, 2, p2ptest.Options{
				Config: func(i int, cfg *p2p.Config) { cfg.MaxUploadRate = rate },
				Content: func(i int) *p2ptest.Content {
					if i == 1 {
						return p2ptest.NewContent(data)
					}
					return nil
				},
			})
			c.WaitMembers(b, 2, 20*time.Second)
			client, server := c.Nodes[0], c.Nodes[1]
			b.SetBytes(size)
			var moved int64
			start := time.Now()
			for b.Loop() {
				rc, _, err := client.Fetch(b.Context(), server.ID(), d, 0)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, rc)
				rc.Close()
				if err != nil || n != size {
					b.Fatalf("read %d bytes: %v", n, err)
				}
				moved += n
			}
			b.ReportMetric(float64(moved)/time.Since(start).Seconds()/float64(rate), "x_cap")
		})
	}
}
