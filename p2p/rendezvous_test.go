package p2p_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
)

func ids(n int) []peer.ID {
	out := make([]peer.ID, n)
	for i := range out {
		out[i] = peer.ID(fmt.Sprintf("peer-%02d", i))
	}
	return out
}

func TestRendezvous(t *testing.T) {
	t.Parallel()
	members := ids(10)
	const blobs = 2000
	t.Run("same order whatever the input order", func(t *testing.T) {
		t.Parallel()
		d := digest.FromString("x")
		rev := slices.Clone(members)
		slices.Reverse(rev)
		if a, b := p2p.Rendezvous(d, members), p2p.Rendezvous(d, rev); !slices.Equal(a, b) {
			t.Fatalf("%v != %v", a, b)
		}
	})
	t.Run("spread over members", func(t *testing.T) {
		t.Parallel()
		first := map[peer.ID]int{}
		for i := range blobs {
			first[p2p.Rendezvous(digest.FromString(fmt.Sprint(i)), members)[0]]++
		}
		for _, m := range members {
			// 200 expected each; a member with less than half or more than
			// twice that would funnel the cluster through few nodes.
			if c := first[m]; c < 100 || c > 400 {
				t.Errorf("%s designated for %d of %d blobs", m, c, blobs)
			}
		}
	})
	t.Run("a member leaving moves only its own blobs, to the next in order", func(t *testing.T) {
		t.Parallel()
		gone := members[3]
		rest := slices.DeleteFunc(slices.Clone(members), func(p peer.ID) bool { return p == gone })
		moved := 0
		for i := range blobs {
			d := digest.FromString(fmt.Sprint(i))
			before, after := p2p.Rendezvous(d, members), p2p.Rendezvous(d, rest)
			if before[0] != gone {
				if after[0] != before[0] {
					t.Fatalf("blob %d moved from %s, which stayed", i, before[0])
				}
				continue
			}
			moved++
			if after[0] != before[1] {
				t.Fatalf("blob %d went to %s, not to the runner-up %s", i, after[0], before[1])
			}
		}
		if moved == 0 {
			t.Fatal("the leaving member was designated for nothing")
		}
	})
	t.Run("a member joining takes only blobs it now ranks first for", func(t *testing.T) {
		t.Parallel()
		joined := append(slices.Clone(members), peer.ID("peer-new"))
		for i := range blobs {
			d := digest.FromString(fmt.Sprint(i))
			before, after := p2p.Rendezvous(d, members), p2p.Rendezvous(d, joined)
			if after[0] != before[0] && after[0] != "peer-new" {
				t.Fatalf("blob %d moved from %s to %s", i, before[0], after[0])
			}
		}
	})
	t.Run("duplicates collapse", func(t *testing.T) {
		t.Parallel()
		got := p2p.Rendezvous(digest.FromString("d"), append(ids(3), ids(3)...))
		if len(got) != 3 {
			t.Fatalf("got %v", got)
		}
	})
}

func TestSpread(t *testing.T) {
	t.Parallel()
	peers := make([]peer.ID, 8)
	for i := range peers {
		peers[i] = peer.ID(fmt.Sprintf("peer-%d", i))
	}
	group := make([]digest.Digest, 5)
	for i := range group {
		group[i] = digest.FromString(fmt.Sprintf("layer-%d", i))
	}
	firsts := map[peer.ID]digest.Digest{}
	for _, d := range group {
		order := p2p.Spread(d, group, peers)
		if len(order) != len(peers) {
			t.Fatalf("%s: %d peers, want %d", d, len(order), len(peers))
		}
		if !sameSet(order, peers) {
			t.Fatalf("%s: order %v is not a permutation of the peers", d, order)
		}
		if other, ok := firsts[order[0]]; ok {
			t.Fatalf("%s and %s both go first to %s", d, other, order[0])
		}
		firsts[order[0]] = d
		// The same whatever order the peers are listed in, so a takeover
		// goes where every node expects it.
		rev := slices.Clone(peers)
		slices.Reverse(rev)
		if got := p2p.Spread(d, group, rev); !slices.Equal(got, order) {
			t.Fatalf("%s: order depends on the input order", d)
		}
	}
	// More blobs than peers: every peer goes first for one before any for two.
	many := make([]digest.Digest, 11)
	for i := range many {
		many[i] = digest.FromString(fmt.Sprintf("blob-%d", i))
	}
	count := map[peer.ID]int{}
	for _, d := range many {
		count[p2p.Spread(d, many, peers[:4])[0]]++
	}
	for _, p := range peers[:4] {
		if count[p] < 2 || count[p] > 3 {
			t.Fatalf("first-fetch counts %v: want 2 or 3 each for 11 blobs over 4 peers", count)
		}
	}
	// Outside its group, or with none, a blob is ranked by Rendezvous.
	d := digest.FromString("alone")
	if !slices.Equal(p2p.Spread(d, group, peers), p2p.Rendezvous(d, peers)) || !slices.Equal(p2p.Spread(group[0], nil, peers), p2p.Rendezvous(group[0], peers)) {
		t.Fatal("without its group a blob is not ranked by Rendezvous")
	}
}

func sameSet(a, b []peer.ID) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}
