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
