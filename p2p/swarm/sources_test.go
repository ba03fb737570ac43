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
		failed   []string
		forPeer  bool
		holders  []string
		upstream bool
		attempts int
		want     []swarm.Source
	}{
		{"nothing", nil, 2, nil, false, nil, false, 3, nil},
		{"designated, holders, the registry", []string{"a", "b", "c"}, 2, nil, false, []string{"h"}, true, 2, []swarm.Source{a, b, h, up, up}},
		{"fewer designated than the cap", []string{"a"}, 2, nil, false, nil, true, 1, []swarm.Source{a, up}},
		{"for a peer: designated itself", []string{"a", "b"}, 2, nil, true, []string{"h"}, true, 1, []swarm.Source{h, up}},
		{"no registry", []string{"a"}, 1, nil, false, []string{"h"}, false, 3, []swarm.Source{a, h}},
		{"a holder listed as designated too", []string{"a"}, 1, nil, false, []string{"a"}, false, 0, []swarm.Source{a, {Peer: "a"}}},
		{"the failed passed over for the next above", []string{"x", "a", "y", "b", "c"}, 2, []string{"x", "y"}, false, nil, true, 1, []swarm.Source{a, b, up}},
		{"every peer above failed", []string{"x", "y"}, 2, []string{"x", "y"}, false, nil, true, 1, []swarm.Source{up}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := swarm.Sources(tc.above, tc.max, set(tc.failed...), tc.forPeer, tc.holders, tc.upstream, tc.attempts)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Sources = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestReplan: a round whose designated peers failed starts over when the
// ranking names a peer above this node it did not list; not when the
// peers it would list are the ones it had, or failed too.
func TestReplan(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		above  []string
		listed []string
		failed []string
		want   bool
	}{
		{"both listed gone silent: the third above is next", []string{"c"}, []string{"a", "b"}, []string{"a", "b"}, true},
		{"both listed failed, still ranked: the third is next", []string{"a", "b", "c"}, []string{"a", "b"}, []string{"a", "b"}, true},
		{"one of the listed left", []string{"a", "b", "c"}, []string{"a", "b"}, []string{"a"}, true},
		{"nobody else above", []string{"a", "b"}, []string{"a", "b"}, []string{"a", "b"}, false},
		{"the one above failed too", []string{"a", "b", "c"}, []string{"a", "b"}, []string{"a", "b", "c"}, false},
		{"the same peers as listed", []string{"a", "b"}, []string{"a", "b"}, nil, false},
		{"this node ranks first", nil, nil, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.Replan(tc.above, tc.listed, 2, set(tc.failed...)); got != tc.want {
				t.Fatalf("Replan(%v, listed %v, failed %v) = %v, want %v", tc.above, tc.listed, tc.failed, got, tc.want)
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
		{"a peer that leads: only its own best counts", swarm.Source{Peer: "b", Leads: true}, true, 4 << 20, 0},
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

func TestRelist(t *testing.T) {
	t.Parallel()
	listed := time.Unix(1000, 0)
	tests := []struct {
		name     string
		age      time.Duration
		relisted bool
		want     bool
	}{
		{"a list as old as StaleList", swarm.StaleList, false, true},
		{"a fresh list", swarm.StaleList - time.Millisecond, false, false},
		{"looked up again already in this round", 10 * swarm.StaleList, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.Relist(listed, listed.Add(tc.age), tc.relisted); got != tc.want {
				t.Fatalf("Relist = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAskOnceMore(t *testing.T) {
	t.Parallel()
	peer, designated := swarm.Source{Peer: "b"}, swarm.Source{Peer: "b", Designated: true}
	tests := []struct {
		name  string
		src   swarm.Source
		f     swarm.Failure
		asked bool
		want  bool
	}{
		{"a relay whose own source went quiet", peer, swarm.Failure{Relaying: true}, false, true},
		{"a designated peer whose copy stopped growing: asked whether it leads instead", designated, swarm.Failure{NotArriving: true}, false, false},
		{"a holder below whose copy stopped growing", peer, swarm.Failure{NotArriving: true}, false, false},
		{"asked once already", peer, swarm.Failure{Relaying: true}, true, false},
		{"a designated peer gone silent", designated, swarm.Failure{Stalled: true}, false, false},
		{"the registry", swarm.Source{Upstream: true}, swarm.Failure{Relaying: true}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.AskOnceMore(tc.src, tc.f, tc.asked); got != tc.want {
				t.Fatalf("AskOnceMore = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAskIfLeadsNow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		f     swarm.Failure
		asked bool
		want  bool
	}{
		{"a relay that did not lead, its copy no longer growing", swarm.Failure{UnledRelay: true, NotArriving: true}, false, true},
		{"a relay that did not lead, slow", swarm.Failure{UnledRelay: true, Slow: true}, false, true},
		{"asked once already", swarm.Failure{UnledRelay: true, Slow: true}, true, false},
		{"a relay that led, or a stream of bytes the peer held", swarm.Failure{Slow: true}, false, false},
		{"a relay that went silent: frozen or cut off", swarm.Failure{UnledRelay: true, Stalled: true}, false, false},
		{"a relay that cut the stream", swarm.Failure{UnledRelay: true, Cut: true}, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.AskIfLeadsNow(tc.f, tc.asked); got != tc.want {
				t.Fatalf("AskIfLeadsNow = %v, want %v", got, tc.want)
			}
		})
	}
}

// set is a set of peers.
func set(peers ...string) map[string]bool {
	out := map[string]bool{}
	for _, p := range peers {
		out[p] = true
	}
	return out
}
