package model_test

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
)

// containerd's pull on one node, computed by hand: 4 layers of 4 MiB from
// a registry of 4 MiB/s (the node's downlink 8 MiB/s), a 10 ms round
// trip, the manifest 20 ms; unpacking at 1 s a layer where it is on.
func TestContainerdPullByHand(t *testing.T) {
	t.Parallel()
	const perLayer = 1.0 / (4 * mib) // seconds per byte: 1 s a layer
	tests := []struct {
		name       string
		concurrent int
		unpack     float64
		makespan   float64 // seconds
	}{
		{
			// Layers 0–2 share the registry (4/3 MiB/s each) from
			// 0.02 + 0.01 to 3.03; layer 3 then takes a round trip and
			// 1 s alone: 4.04.
			name: "three at a time", concurrent: 3, makespan: 4.04,
		},
		{
			// Unpacked one after the other from 3.03: layers 0, 1, 2
			// end at 4.03, 5.03, 6.03; layer 3, downloaded at 4.04,
			// waits for layer 2: 7.03.
			name: "three at a time, unpacked", concurrent: 3, unpack: perLayer, makespan: 7.03,
		},
		{
			// All four share the registry (1 MiB/s each) from 0.03 to
			// 4.03, then are unpacked one after the other: 8.03.
			name: "all at once, unpacked", concurrent: 0, unpack: perLayer, makespan: 8.03,
		},
		{
			// One after the other, each a round trip and 1 s: 0.02 +
			// 4 × 1.01.
			name: "one at a time", concurrent: 1, makespan: 4.06,
		},
		{
			// Layer k is downloaded at 1.03 + 1.01·k; each unpack (1 s)
			// ends just before the next download: 4.06 + 1.
			name: "one at a time, unpacked", concurrent: 1, unpack: perLayer, makespan: 5.06,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := model.Config{
				Nodes: 1, Layers: 4, LayerSize: 4 * mib, Up: 8 * mib, Down: 8 * mib, RegistryUp: 4 * mib, RTT: 10 * time.Millisecond,
				Manifest: 20 * time.Millisecond, Concurrent: tc.concurrent, UnpackPerByte: tc.unpack,
			}
			r, err := model.Cold(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !near(r.Makespan.Seconds(), tc.makespan, 1e-6) || r.Egress != r.Size || r.Failed != 0 {
				t.Fatalf("makespan %v, egress %d of %d, %d failed; want %.3fs, one copy, none", r.Makespan, r.Egress, r.Size, r.Failed, tc.makespan)
			}
		})
	}
}
