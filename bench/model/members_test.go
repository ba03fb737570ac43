package model

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/report"
)

// A node that is no member is in no ranking; once it is, it is in every
// one, and a member the others know left is in none again.
func TestRankingsFollowTheMembers(t *testing.T) {
	t.Parallel()
	cfg := Config{Nodes: 8, Layers: 4, LayerSize: 1, Up: 1, Down: 1, RegistryUp: 1}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	s := newSim(cfg)
	in := func(i int) (n int) {
		for b := range s.blobs {
			if slices.Contains(s.order[b], s.ids[i]) {
				n++
			}
		}
		return n
	}
	s.gone[3] = true
	s.rankings()
	if n := in(3); n != 0 || s.rank[0][3] != len(s.order[0]) {
		t.Fatalf("a node that is no member is in %d rankings, rank %d", n, s.rank[0][3])
	}
	s.gone[3] = false
	s.rankings()
	if n := in(3); n != len(s.blobs) {
		t.Fatalf("a member is in %d rankings of %d", n, len(s.blobs))
	}
}

// Nodes that join mid-pull pull the image too, and the others rank them
// once they know: every node finishes, the joiners after they joined, no
// byte is lost or made up, and a seed gives the same run.
func TestJoinMidPull(t *testing.T) {
	t.Parallel()
	link := 200e6 / 8
	for _, n := range []int{2, 8, 16} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("N=%d seed=%d", n, seed), func(t *testing.T) {
				t.Parallel()
				cfg := Config{Nodes: n, Layers: 4, LayerSize: 8 << 20, Up: link, Down: link, RegistryUp: link, RTT: time.Millisecond, Seed: seed, Manifest: time.Millisecond, Concurrent: 3}
				if err := cfg.defaults(); err != nil {
					t.Fatal(err)
				}
				joiners := []int{n - 1}
				if n > 8 {
					joiners = append(joiners, n-2)
				}
				const at = 0.3 // seconds: the others hold about half the image
				p := plan{join: joiners, joinAt: at, bound: report.ColdBound(float64(cfg.Layers)*float64(cfg.LayerSize), link, link, link, n)}
				r, err := scenario(cfg, p)
				if err != nil {
					t.Fatal(err)
				}
				if len(r.NodeTimes) != n || r.Failed != 0 || r.Egress < r.Size {
					t.Fatalf("%d node times, %d failed, egress %d; want %d, none, at least %d", len(r.NodeTimes), r.Failed, r.Egress, n, r.Size)
				}
				for _, i := range joiners {
					if r.NodeTimes[i].Seconds() <= at {
						t.Fatalf("joiner %d finished at %v, before it joined", i, r.NodeTimes[i])
					}
				}
				sent := r.Egress
				for _, b := range r.NodeUploadBytes {
					sent += b
				}
				if want := int64(n) * r.Size; sent < want-int64(n+1) || sent > want+int64(n+1) || r.Received < want-int64(n+1) {
					t.Fatalf("the registry and the peers sent %d bytes, the nodes received %d, want %d", sent, r.Received, want)
				}
				again, err := scenario(cfg, p)
				if err != nil || !reflect.DeepEqual(again, r) {
					t.Fatalf("the same seed gave %+v, then %+v (%v)", r, again, err)
				}
			})
		}
	}
}
