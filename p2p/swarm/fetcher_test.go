package swarm_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i)
	}
	return out
}

func reversed[T any](s []T) []T {
	out := slices.Clone(s)
	slices.Reverse(out)
	return out
}

func without(s []string, x string) []string {
	return slices.DeleteFunc(slices.Clone(s), func(p string) bool { return p == x })
}

func TestRendezvous(t *testing.T) {
	t.Parallel()
	d := digest.FromString("blob")
	all := names(8)
	order := swarm.Rendezvous(d, all)
	tests := []struct {
		name  string
		peers []string
		want  []string
	}{
		{"none", nil, []string{}},
		{"one", []string{"a"}, []string{"a"}},
		{"any input order", reversed(all), order},
		{"duplicates listed once", append(slices.Clone(all), all...), order},
		{"the first leaves: the others keep their order", without(all, order[0]), order[1:]},
		{"a later one leaves: the first stays first", without(all, order[5]), without(order, order[5])},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.Rendezvous(d, tc.peers); !slices.Equal(got, tc.want) {
				t.Fatalf("Rendezvous = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSpread(t *testing.T) {
	t.Parallel()
	peers := names(4)
	group := make([]digest.Digest, 4)
	for i := range group {
		group[i] = digest.FromString(fmt.Sprint("layer", i))
	}
	firsts := map[string]bool{}
	for _, d := range group {
		order := swarm.Spread(d, group, peers)
		firsts[order[0]] = true
		if !slices.Equal(swarm.Spread(d, group, reversed(peers)), order) {
			t.Errorf("%s: the order depends on the input order", d)
		}
		if got := slices.Sorted(slices.Values(order)); !slices.Equal(got, peers) {
			t.Errorf("%s: order %v is not a permutation of the peers", d, order)
		}
	}
	if len(firsts) != len(group) {
		t.Errorf("4 layers over 4 peers have %d distinct first peers, want 4", len(firsts))
	}
	tests := []struct {
		name  string
		dgst  digest.Digest
		group []digest.Digest
		peers []string
	}{
		{"no group", group[0], nil, peers},
		{"not in its group", digest.FromString("other"), group, peers},
		{"one peer", group[2], group, peers[:1]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, want := swarm.Spread(tc.dgst, tc.group, tc.peers), swarm.Rendezvous(tc.dgst, tc.peers); !slices.Equal(got, want) {
				t.Fatalf("Spread = %v, want the Rendezvous order %v", got, want)
			}
		})
	}
}

// TestSpreadTakeover: when any two of the nodes that fetch an image's
// four layers first fail, on four nodes, their layers pass to two
// different nodes; on nine, each layer's next fetcher is a node that
// fetches no blob of the image first, a different one for each layer.
func TestSpreadTakeover(t *testing.T) {
	t.Parallel()
	for seed := range 20 {
		group := make([]digest.Digest, 5) // four layers, then the config
		for i := range group {
			group[i] = digest.FromString(fmt.Sprint("blob", i, "-", seed))
		}
		layers := group[:4]
		peers := names(4)
		orders := map[digest.Digest][]string{}
		for _, d := range layers {
			orders[d] = swarm.Spread(d, group, peers)
		}
		for i, a := range layers {
			for _, b := range layers[i+1:] {
				failed := map[string]bool{orders[a][0]: true, orders[b][0]: true}
				next := func(d digest.Digest) string {
					return orders[d][slices.IndexFunc(orders[d], func(p string) bool { return !failed[p] })]
				}
				if next(a) == next(b) {
					t.Errorf("seed %d: %s and %s failing hand both their layers to %s (orders %v, %v)", seed, orders[a][0], orders[b][0], next(a), orders[a], orders[b])
				}
			}
		}
		peers = names(9)
		firsts, seconds := map[string]bool{}, map[string]bool{}
		for _, d := range group {
			firsts[swarm.Spread(d, group, peers)[0]] = true
		}
		for _, d := range layers {
			second := swarm.Spread(d, group, peers)[1]
			if firsts[second] || seconds[second] {
				t.Errorf("seed %d: %s's next fetcher %s fetches another blob first or is another layer's next", seed, d.Encoded()[:8], second)
			}
			seconds[second] = true
		}
	}
}

// TestGroupOrder: an image's layers get distinct first peers when there
// are as many as peers, the config listed first in the manifest.
func TestGroupOrder(t *testing.T) {
	t.Parallel()
	config := digest.FromString("config")
	manifest := []digest.Digest{config}
	sizes := map[digest.Digest]int64{config: 700}
	for i := range 4 {
		d := digest.FromString(fmt.Sprint("layer", i))
		manifest = append(manifest, d)
		sizes[d] = 16 << 20
	}
	small := digest.FromString("small layer")
	sizes[small] = 1 << 20
	manifest = append(manifest[:2], append([]digest.Digest{small}, manifest[2:]...)...)

	group := swarm.GroupOrder(manifest, func(d digest.Digest) int64 { return sizes[d] })
	if want := []digest.Digest{manifest[1], manifest[3], manifest[4], manifest[5], small, config}; !slices.Equal(group, want) {
		t.Fatalf("GroupOrder = %v, want the 16 MiB layers in the manifest's order, then the 1 MiB one, then the config: %v", group, want)
	}
	for seed := range 20 {
		peers := names(4)
		for i := range peers {
			peers[i] += fmt.Sprint("-", seed)
		}
		firsts := map[string]bool{}
		for _, d := range group[:4] {
			firsts[swarm.Spread(d, group, peers)[0]] = true
		}
		if len(firsts) != 4 {
			t.Fatalf("peers %v: the four large layers have %d distinct first peers, want 4", peers, len(firsts))
		}
	}
}

func TestDesignated(t *testing.T) {
	t.Parallel()
	peers := names(6)
	group := []digest.Digest{digest.FromString("a"), digest.FromString("b"), digest.FromString("c")}
	order := swarm.Spread(group[1], group, peers)
	use := map[string]bool{}
	for _, p := range peers {
		use[p] = true
	}
	gone := except(use, order[0])
	tests := []struct {
		name string
		use  map[string]bool
		want []string
	}{
		{"all in use", use, order},
		{"none in use", nil, []string{}},
		{"the first left out: the next fetches", gone, order[1:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.Designated(group[1], group, peers, tc.use); !slices.Equal(got, tc.want) {
				t.Fatalf("Designated = %v, want %v", got, tc.want)
			}
		})
	}
	// A peer left out keeps its place in the ranking of the other blobs.
	for _, d := range []digest.Digest{group[0], group[2]} {
		if first := swarm.Spread(d, group, peers)[0]; first != order[0] && swarm.Designated(d, group, peers, gone)[0] != first {
			t.Errorf("%s: leaving out %s moved its first fetch", d, order[0])
		}
	}
}

func except(use map[string]bool, off string) map[string]bool {
	out := map[string]bool{}
	for k, v := range use {
		out[k] = v && k != off
	}
	return out
}

func TestAbove(t *testing.T) {
	t.Parallel()
	order := []string{"a", "b", "c"}
	tests := []struct {
		name      string
		self      string
		wantAbove []string
		wantFirst bool
	}{
		{"first", "a", []string{}, true},
		{"middle", "b", []string{"a"}, false},
		{"last", "c", []string{"a", "b"}, false},
		{"absent: all above", "z", order, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			above, first := swarm.Above(order, tc.self)
			if !slices.Equal(above, tc.wantAbove) || first != tc.wantFirst {
				t.Fatalf("Above(%q) = %v, %v; want %v, %v", tc.self, above, first, tc.wantAbove, tc.wantFirst)
			}
		})
	}
}
