package swarm_test

import (
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

func TestSources(t *testing.T) {
	t.Parallel()
	a, b := swarm.Source{Peer: "a", Designated: true}, swarm.Source{Peer: "b", Designated: true}
	h := swarm.Source{Peer: "h"}
	up := swarm.Source{Upstream: true}
	tests := []struct {
		name     string
		above    []string
		max      int
		forPeer  bool
		holders  []string
		upstream bool
		attempts int
		want     []swarm.Source
	}{
		{"nothing", nil, 2, false, nil, false, 3, nil},
		{"designated, holders, the registry", []string{"a", "b", "c"}, 2, false, []string{"h"}, true, 2, []swarm.Source{a, b, h, up, up}},
		{"fewer designated than the cap", []string{"a"}, 2, false, nil, true, 1, []swarm.Source{a, up}},
		{"for a peer: designated itself", []string{"a", "b"}, 2, true, []string{"h"}, true, 1, []swarm.Source{h, up}},
		{"no registry", []string{"a"}, 1, false, []string{"h"}, false, 3, []swarm.Source{a, h}},
		{"a holder listed as designated too", []string{"a"}, 1, false, []string{"a"}, false, 0, []swarm.Source{a, {Peer: "a"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := swarm.Sources(tc.above, tc.max, tc.forPeer, tc.holders, tc.upstream, tc.attempts)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Sources = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestHandOver(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                  string
		src                   swarm.Source
		cur, peerStall, stall time.Duration
		want                  time.Duration
	}{
		{"a peer: twice the peer stall", swarm.Source{Peer: "a"}, 0, 2 * time.Second, 30 * time.Second, 4 * time.Second},
		{"at most the stall timeout", swarm.Source{Peer: "a"}, 0, 20 * time.Second, 30 * time.Second, 30 * time.Second},
		{"the registry keeps its own", swarm.Source{Upstream: true}, 5 * time.Second, 2 * time.Second, 30 * time.Second, 5 * time.Second},
		{"no peer stall set", swarm.Source{Peer: "a"}, 0, 0, 30 * time.Second, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.HandOver(tc.src, tc.cur, tc.peerStall, tc.stall); got != tc.want {
				t.Fatalf("HandOver = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHeldPace(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		src  swarm.Source
		lost bool
		best float64
		want float64
	}{
		{"after a lost peer, the next is held to the best the download had", swarm.Source{Peer: "b"}, true, 4 << 20, 4 << 20},
		{"a designated peer too", swarm.Source{Peer: "b", Designated: true}, true, 4 << 20, 4 << 20},
		{"no peer lost: only its own best counts", swarm.Source{Peer: "b"}, false, 4 << 20, 0},
		{"the registry is not judged by its pace", swarm.Source{Upstream: true}, true, 4 << 20, 0},
		{"nothing measured yet", swarm.Source{Peer: "b"}, true, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.HeldPace(tc.src, tc.lost, tc.best); got != tc.want {
				t.Fatalf("HeldPace = %v, want %v", got, tc.want)
			}
		})
	}
}
