package swarm_test

import (
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

func TestHolders(t *testing.T) {
	t.Parallel()
	d := digest.FromString("pinned")
	peers := names(6)
	order := swarm.Rendezvous(d, peers)
	// The two best-ranked peers share zone "a"; the others are in "b", or
	// have none.
	zones := map[string]string{order[0]: "a", order[1]: "a", order[2]: "b", order[3]: "b"}
	zoned := func(p string) string { return zones[p] }
	oneZone := func(string) string { return "" }
	tests := []struct {
		name string
		zone func(string) string
		k    int
		want []string
	}{
		{"one zone: by rank", oneZone, 3, order[:3]},
		{"zones first", zoned, 3, []string{order[0], order[2], order[4]}},
		{"then by rank", zoned, 4, []string{order[0], order[2], order[4], order[1]}},
		{"more than there are", oneZone, 10, order},
		{"none", zoned, 0, []string{}},
		{"negative", zoned, -1, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := swarm.Holders(d, peers, tc.zone, tc.k)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Holders = %v, want %v", got, tc.want)
			}
			if again := swarm.Holders(d, reversed(peers), tc.zone, tc.k); !slices.Equal(again, got) {
				t.Fatalf("Holders depends on the input order: %v, then %v", got, again)
			}
		})
	}
}
