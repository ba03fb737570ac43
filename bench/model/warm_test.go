package model_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
)

// Cases whose answer is computed by hand.
func TestWarmByHand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      model.Config
		makespan float64 // seconds
	}{
		{
			// One puller, one flow: S/min(u, d) + rtt.
			name:     "one puller, the holder's uplink narrower",
			cfg:      model.Config{Nodes: 2, Layers: 2, LayerSize: 4 * mib, Up: 2 * mib, Down: 4 * mib, RegistryUp: 8 * mib, RTT: 10 * time.Millisecond},
			makespan: 4 + 0.01,
		},
		{
			name:     "one puller, its downlink narrower",
			cfg:      model.Config{Nodes: 2, Layers: 1, LayerSize: 8 * mib, Up: 8 * mib, Down: 2 * mib, RegistryUp: 8 * mib, RTT: 10 * time.Millisecond},
			makespan: 4 + 0.01,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := model.Warm(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !near(r.Makespan.Seconds(), tc.makespan, 1e-3) || r.Egress != 0 || r.Failed != 0 || len(r.NodeTimes) != tc.cfg.Nodes-1 {
				t.Fatalf("makespan %v, egress %d, %d failed, %d pullers; want %.3fs, 0, none, %d", r.Makespan, r.Egress, r.Failed, len(r.NodeTimes), tc.makespan, tc.cfg.Nodes-1)
			}
		})
	}
}

// No warm run beats its bound, and no byte is lost or made up. The
// registry may send some: a download that waited for a busy holder for
// BusyLimit asks it for the rest, as the daemon does.
func TestWarmPhysics(t *testing.T) {
	t.Parallel()
	link := 200e6 / 8
	for _, n := range []int{2, 3, 8, 16} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("N=%d seed=%d", n, seed), func(t *testing.T) {
				t.Parallel()
				r, err := model.Warm(model.Config{Nodes: n, Layers: 4, LayerSize: 8 << 20, Up: link, Down: link, RegistryUp: link, RTT: time.Millisecond, Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				s := r.Summary()
				if s.MakespanOverBound < 1-1e-9 || r.Failed != 0 {
					t.Fatalf("%+v, %d failed", s, r.Failed)
				}
				total := r.Egress
				for _, b := range r.NodeUploadBytes {
					total += b
				}
				if want := int64(n-1) * r.Size; total < want-int64(n) || total > want+int64(n) {
					t.Fatalf("the registry and the peers sent %d bytes, the pullers received %d", total, want)
				}
			})
		}
	}
	if _, err := model.Warm(model.Config{Nodes: 1, Layers: 1, LayerSize: 1, Up: 1, Down: 1, RegistryUp: 1}); err == nil {
		t.Error("a warm run with no puller: no error")
	}
}

// TestWarmHolderSendsEachLayerOnce: the node that holds the image sends
// each layer once, whichever node is the layer's designated fetcher. When
// it is the holder itself, the first node to ask reads the layer from it
// and the next is pointed at that one (swarm.PointAtReader); otherwise the
// designated node reads it from the holder and the next from that node.
func TestWarmHolderSendsEachLayerOnce(t *testing.T) {
	t.Parallel()
	for seed := range uint64(8) {
		r, err := model.Warm(model.Config{Nodes: 3, Layers: 1, LayerSize: 8 * mib, Up: 8 * mib, Down: 8 * mib, RegistryUp: 8 * mib, RTT: time.Millisecond, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		if r.NodeUploadBytes[0] != r.Size || r.Egress != 0 || r.Failed != 0 {
			t.Errorf("seed %d: the holder sent %d bytes of a %d-byte image (uploads %v), egress %d, %d failed; want one copy", seed, r.NodeUploadBytes[0], r.Size, r.NodeUploadBytes, r.Egress, r.Failed)
		}
	}
}
