package p2p

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"

	"github.com/hashicorp/memberlist"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"
)

// TestDesignatedKeepsTheDepartedRanked: when a member departs, only the
// blobs it came first for move, each to the next peer in its own order. The
// other blobs of the image keep their designated fetchers, the ones the
// nodes that have not learned of the departure yet still count on: were
// the departed dropped from the ranking, Spread would hand the first fetch
// of other blobs to other nodes, and two nodes could each take the other
// for the fetcher.
func TestDesignatedKeepsTheDepartedRanked(t *testing.T) {
	t.Parallel()
	ids := make([]peer.ID, 6)
	for i := range ids {
		seed := make([]byte, ed25519.SeedSize)
		seed[0] = byte(i + 1)
		k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(seed))
		if err != nil {
			t.Fatal(err)
		}
		if ids[i], err = peer.IDFromPrivateKey(k); err != nil {
			t.Fatal(err)
		}
	}
	group := make([]digest.Digest, 5)
	for i := range group {
		group[i] = digest.FromString(fmt.Sprintf("layer-%d", i))
	}
	addr := ma.StringCast("/ip4/127.0.0.1/tcp/7501")
	node := func(i int) *memberlist.Node {
		meta, err := encodeMeta(ids[i], []ma.Multiaddr{addr}, memberlist.MetaMaxSize)
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: fmt.Sprintf("node-%d", i), Addr: net.ParseIP("127.0.0.1"), Port: uint16(7500 + i), Meta: meta}
	}

	moved := 0
	for victim := 1; victim < len(ids); victim++ {
		m := newMembers(ids[0], slog.New(slog.DiscardHandler))
		for i := 1; i < len(ids); i++ {
			m.upsert(node(i))
		}
		n := &Node{id: ids[0], members: m, stats: newStats()}
		before := map[digest.Digest][]peer.ID{}
		for _, d := range group {
			before[d] = n.Designated(d, group)
		}
		gone := node(victim)
		gone.State = memberlist.StateDead
		eventDelegate{m: m, selfName: "node-0"}.NotifyLeave(gone)
		var live []peer.ID
		for i, id := range ids {
			if i != victim {
				live = append(live, id)
			}
		}
		for _, d := range group {
			want := slices.DeleteFunc(slices.Clone(before[d]), func(p peer.ID) bool { return p == ids[victim] })
			if got := n.Designated(d, group); !slices.Equal(got, want) {
				t.Errorf("node %d departed: %s ranked %v, want %v", victim, d.Encoded()[:8], got, want)
			}
			if Spread(d, group, live)[0] != want[0] {
				moved++
			}
		}
	}
	// Ranking the live members alone would have moved some first fetches:
	// the case above is not empty.
	if moved == 0 {
		t.Fatal("no departure would have moved another blob's first fetch: pick other IDs")
	}
	t.Logf("ranking the live members alone would have moved %d first fetches", moved)
}
