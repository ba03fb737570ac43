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
		prefetch   bool
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
			// shoal starts all four at once (1 MiB/s each) from 0.03 to
			// 4.03; containerd takes layer 3 from it once a slot frees.
			name: "three at a time, prefetched", concurrent: 3, prefetch: true, makespan: 4.03,
		},
		{
			// The same, each layer unpacked (1 s) after the one before:
			// 4.03 + 4.
			name: "three at a time, prefetched, unpacked", concurrent: 3, prefetch: true, unpack: perLayer, makespan: 8.03,
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
				Manifest: 20 * time.Millisecond, Concurrent: tc.concurrent, Prefetch: tc.prefetch, UnpackPerByte: tc.unpack,
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

// Two nodes one at a time, computed by hand: the first pulls from the
// registry (2 MiB/s) while the second, not pulling, leaves the blob to it
// if asked; the second then reads it from the first at its downlink
// (8 MiB/s). Each batch costs the manifest and a round trip.
func TestRollingByHand(t *testing.T) {
	t.Parallel()
	cfg := model.Config{Nodes: 2, Layers: 1, LayerSize: 8 * mib, Up: 8 * mib, Down: 8 * mib, RegistryUp: 2 * mib, RTT: 10 * time.Millisecond, Manifest: 5 * time.Millisecond}
	for seed := range uint64(4) { // either node may be designated
		cfg.Seed = seed
		r, err := model.Rolling(cfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		first, second := 4+0.015, 4+0.015+1+0.015
		if len(r.NodeTimes) != 2 || !near(r.NodeTimes[0].Seconds(), first, 1e-6) || !near(r.NodeTimes[1].Seconds(), second, 1e-6) ||
			r.Egress != r.Size || r.NodeUploadBytes[0] != r.Size || r.Failed != 0 {
			t.Fatalf("seed %d: times %v, egress %d, uploads %v, %d failed; want %.3fs and %.3fs, one copy from the registry, one from node 0",
				seed, r.NodeTimes, r.Egress, r.NodeUploadBytes, r.Failed, first, second)
		}
	}
}

func TestDetectAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int
		want time.Duration
	}{
		{1, 5500 * time.Millisecond},   // 1 + 0.5 + 4 × 1
		{10, 5500 * time.Millisecond},  // log10 10 = 1
		{100, 9500 * time.Millisecond}, // 1 + 0.5 + 4 × 2
	}
	for _, tc := range tests {
		if got := model.DetectAfter(tc.n); got != tc.want {
			t.Errorf("DetectAfter(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// With Spread, a node's pull begins within Spread of the start, so a lone
// node's time grows by less than Spread; the same seed draws the same
// start, and the run is the same.
func TestSpreadStartsWithinIt(t *testing.T) {
	t.Parallel()
	base := model.Config{
		Nodes: 1, Layers: 4, LayerSize: 4 * mib, Up: 8 * mib, Down: 8 * mib, RegistryUp: 4 * mib, RTT: 10 * time.Millisecond,
		Manifest: 20 * time.Millisecond, Concurrent: 3,
	}
	still, err := model.Cold(base)
	if err != nil {
		t.Fatal(err)
	}
	spread := base
	spread.Spread = 500 * time.Millisecond
	var later int
	for seed := range uint64(8) {
		spread.Seed, base.Seed = seed, seed
		a, err := model.Cold(spread)
		if err != nil {
			t.Fatal(err)
		}
		b, err := model.Cold(spread)
		if err != nil {
			t.Fatal(err)
		}
		if a.Makespan != b.Makespan {
			t.Fatalf("seed %d: %v, then %v", seed, a.Makespan, b.Makespan)
		}
		d := a.Makespan - still.Makespan
		if d < 0 || d >= spread.Spread {
			t.Fatalf("seed %d: the pull took %v, %v without a spread: want less than %v more", seed, a.Makespan, still.Makespan, spread.Spread)
		}
		if d > 0 {
			later++
		}
	}
	if later == 0 {
		t.Errorf("no seed started the pull later")
	}
}
