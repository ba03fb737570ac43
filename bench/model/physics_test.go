package model_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/bench/model"
)

// No run beats the physical bound, the registry sends every byte at least
// once, no byte is lost or made up, and a seed gives the same run every
// time.
func TestColdPhysics(t *testing.T) {
	t.Parallel()
	link := 200e6 / 8
	for _, n := range []int{2, 3, 8, 16} {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("N=%d seed=%d", n, seed), func(t *testing.T) {
				t.Parallel()
				cfg := model.Config{Nodes: n, Layers: 4, LayerSize: 8 << 20, Up: link, Down: link, RegistryUp: link, RTT: time.Millisecond, Seed: seed}
				r, err := model.Cold(cfg)
				if err != nil {
					t.Fatal(err)
				}
				s := r.Summary()
				if s.MakespanOverBound < 1-1e-9 || s.EgressOverSize < 1-1e-9 || r.Failed != 0 {
					t.Fatalf("%+v, %d failed: beats the bound, or the registry sent less than the image", s, r.Failed)
				}
				// Every byte a node received left the registry or a peer.
				total := r.Egress
				for _, b := range r.NodeUploadBytes {
					total += b
				}
				if want := int64(n) * r.Size; total < want-int64(n+1) || total > want+int64(n+1) {
					t.Fatalf("the registry and the peers sent %d bytes, the nodes received %d", total, want)
				}
				if s.P50 > s.P99 || s.P99 > s.Max || s.Max != s.MakespanOverBound {
					t.Fatalf("%+v: the node times are out of order", s)
				}
				again, err := model.Cold(cfg)
				if err != nil || !reflect.DeepEqual(again, r) {
					t.Fatalf("the same seed gave %+v, then %+v (%v)", r, again, err)
				}
			})
		}
	}
}

func TestColdConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  model.Config
	}{
		{"no nodes", model.Config{Layers: 1, LayerSize: 1, Up: 1, Down: 1, RegistryUp: 1}},
		{"no layers", model.Config{Nodes: 1, LayerSize: 1, Up: 1, Down: 1, RegistryUp: 1}},
		{"no registry", model.Config{Nodes: 1, Layers: 1, LayerSize: 1, Up: 1, Down: 1}},
		{"negative round trip", model.Config{Nodes: 1, Layers: 1, LayerSize: 1, Up: 1, Down: 1, RegistryUp: 1, RTT: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := model.Cold(tc.cfg); err == nil {
				t.Fatal("no error")
			}
		})
	}
}
