package model_test

import (
	"math"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
)

const mib = 1 << 20

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(math.Abs(b), 1e-9) }

// Cases whose answer is computed by hand.
func TestColdByHand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      model.Config
		makespan float64 // seconds
		egress   float64 // over S
	}{
		{
			// One node, one flow: S/min(U, d) + rtt.
			name:     "one node, the registry narrower",
			cfg:      model.Config{Nodes: 1, Layers: 1, LayerSize: 8 * mib, Up: 4 * mib, Down: 4 * mib, RegistryUp: 2 * mib, RTT: 10 * time.Millisecond},
			makespan: 4 + 0.01, egress: 1,
		},
		{
			name:     "one node, its downlink narrower",
			cfg:      model.Config{Nodes: 1, Layers: 1, LayerSize: 8 * mib, Up: 4 * mib, Down: 1 * mib, RegistryUp: 2 * mib, RTT: 50 * time.Millisecond},
			makespan: 8 + 0.05, egress: 1,
		},
		{
			// Two layers share the registry's uplink: 2·L/U + rtt.
			name:     "one node, two layers",
			cfg:      model.Config{Nodes: 1, Layers: 2, LayerSize: 4 * mib, Up: 4 * mib, Down: 8 * mib, RegistryUp: 2 * mib},
			makespan: 4, egress: 1,
		},
		{
			// The designated node fetches from the registry, the other
			// waits on it (above it) and receives the bytes as they
			// arrive: both finish at S/U plus a round trip, the two
			// round trips at once.
			name:     "two nodes, one layer: the first copy relayed as it arrives",
			cfg:      model.Config{Nodes: 2, Layers: 1, LayerSize: 8 * mib, Up: 8 * mib, Down: 8 * mib, RegistryUp: 2 * mib, RTT: 10 * time.Millisecond},
			makespan: 4 + 0.01, egress: 1,
		},
		{
			// One upload slot each: the designated node's goes to the
			// first asker; the other finds it busy, waits (the registry
			// is spared), and then reads from the node above it that
			// now receives the blob, caught up with it: a chain, all
			// done at S/U plus a round trip.
			name:     "three nodes, one slot each: a chain",
			cfg:      model.Config{Nodes: 3, Layers: 1, LayerSize: 8 * mib, Up: 8 * mib, Down: 8 * mib, RegistryUp: 2 * mib, RTT: 10 * time.Millisecond, MaxUploads: 1, MaxUploadsPerBlob: 1},
			makespan: 4 + 0.01, egress: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := model.Cold(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			s := r.Summary()
			if !near(r.Makespan.Seconds(), tc.makespan, 1e-3) || !near(s.EgressOverSize, tc.egress, 1e-6) || r.Failed != 0 {
				t.Fatalf("makespan %v, egress/S %.4f, %d failed; want %.3fs, %.2f, none", r.Makespan, s.EgressOverSize, r.Failed, tc.makespan, tc.egress)
			}
		})
	}
}
