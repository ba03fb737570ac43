package p2p_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
)

func cands(zones ...string) []p2p.Candidate {
	out := make([]p2p.Candidate, len(zones))
	for i, z := range zones {
		out[i] = p2p.Candidate{ID: peer.ID(fmt.Sprintf("peer-%02d", i)), Name: fmt.Sprintf("node%d", i), Zone: z}
	}
	return out
}

func holderIDs(hs []p2p.Candidate) []peer.ID {
	out := make([]peer.ID, len(hs))
	for i, h := range hs {
		out[i] = h.ID
	}
	return out
}

func TestHolders(t *testing.T) {
	t.Parallel()
	const blobs = 500
	tests := []struct {
		name  string
		zones []string
		k     int
		check func(t *testing.T, d digest.Digest, all, got []p2p.Candidate)
	}{
		{"no zones: the k best ranked", []string{"", "", "", "", ""}, 2, func(t *testing.T, d digest.Digest, all, got []p2p.Candidate) {
			if want := p2p.Rendezvous(d, holderIDs(all))[:2]; !slices.Equal(holderIDs(got), want) {
				t.Errorf("holders %v, want %v", holderIDs(got), want)
			}
		}},
		{"more copies than members: every member", []string{"", "", ""}, 5, func(t *testing.T, d digest.Digest, all, got []p2p.Candidate) {
			if len(got) != 3 {
				t.Errorf("%d holders of 3 members", len(got))
			}
		}},
		{"two zones: one holder in each", []string{"a", "a", "a", "b", "b", "b"}, 2, func(t *testing.T, d digest.Digest, all, got []p2p.Candidate) {
			if len(got) != 2 || got[0].Zone == got[1].Zone {
				t.Errorf("holders %+v share a zone", got)
			}
		}},
		{"fewer zones than copies: zones first, then the ranking", []string{"a", "a", "a", "b"}, 3, func(t *testing.T, d digest.Digest, all, got []p2p.Candidate) {
			zones := map[string]int{}
			for _, h := range got {
				zones[h.Zone]++
			}
			if len(got) != 3 || zones["b"] != 1 || zones["a"] != 2 {
				t.Errorf("holders %+v, want one in b and two in a", got)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			all := cands(tc.zones...)
			for i := range blobs {
				d := digest.FromString(fmt.Sprint(i))
				got := p2p.Holders(d, all, tc.k)
				rev := slices.Clone(all)
				slices.Reverse(rev)
				if again := p2p.Holders(d, rev, tc.k); !slices.Equal(holderIDs(got), holderIDs(again)) {
					t.Fatalf("blob %d: holders depend on the order of the members: %v, %v", i, holderIDs(got), holderIDs(again))
				}
				tc.check(t, d, all, got)
				if t.Failed() {
					return
				}
			}
		})
	}
}

// TestHoldersAfterLoss removes the holders of each blob: the new holders
// keep every survivor that held the blob, and the blobs whose holders all
// survive keep them, so only lost copies are made again.
func TestHoldersAfterLoss(t *testing.T) {
	t.Parallel()
	all := cands("", "", "", "", "", "")
	moved := 0
	for i := range 500 {
		d := digest.FromString(fmt.Sprint(i))
		before := p2p.Holders(d, all, 2)
		lost := all[0].ID
		left := slices.DeleteFunc(slices.Clone(all), func(c p2p.Candidate) bool { return c.ID == lost })
		after := p2p.Holders(d, left, 2)
		for _, h := range before {
			if h.ID != lost && !slices.Contains(holderIDs(after), h.ID) {
				t.Fatalf("blob %d: surviving holder %s dropped: %v → %v", i, h.ID, holderIDs(before), holderIDs(after))
			}
		}
		if !slices.Contains(holderIDs(before), lost) && !slices.Equal(holderIDs(before), holderIDs(after)) {
			t.Fatalf("blob %d: holders changed though none was lost: %v → %v", i, holderIDs(before), holderIDs(after))
		}
		if !slices.Equal(holderIDs(before), holderIDs(after)) {
			moved++
		}
	}
	// A member holds about 2 in 6 of the blobs; those, and only those, move.
	if moved < 100 || moved > 240 {
		t.Errorf("%d of 500 blobs moved when one of 6 members left", moved)
	}
}
