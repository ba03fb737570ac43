package p2p

import (
	"fmt"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestSilentMessage(t *testing.T) {
	t.Parallel()
	id, err := peer.Decode("12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5")
	if err != nil {
		t.Fatal(err)
	}
	m := silentMsg{origin: "node-3", peer: id}
	got, err := parseSilentMsg(m.encode())
	if err != nil || got != m {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, m)
	}
	for _, tc := range []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"kind only", []byte{msgSilent}},
		{"unknown kind", append([]byte{9}, m.encode()[1:]...)},
		{"no peer", silentMsg{origin: "node-3"}.encode()},
		{"not a peer ID", append(silentMsg{origin: "n"}.encode(), "not a peer"...)},
		{"name longer than the message", []byte{msgSilent, 200, 'a', 'b'}},
		{"too long", append(m.encode(), strings.Repeat("a", maxSilentMsg)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got, err := parseSilentMsg(tc.msg); err == nil {
				t.Fatalf("parsed %+v from %q", got, tc.msg)
			}
		})
	}
}

// TestSilentChecksBounded: one check of a peer runs at a time, and at
// most maxHintChecks at once; a slot comes back when its check ends.
func TestSilentChecksBounded(t *testing.T) {
	t.Parallel()
	n := &Node{hints: make(chan struct{}, maxHintChecks), checking: map[peer.ID]bool{}}
	ids := make([]peer.ID, maxHintChecks+1)
	for i := range ids {
		ids[i] = peer.ID(fmt.Sprintf("peer-%d", i))
	}
	if !n.startCheck(ids[0]) {
		t.Fatal("no check of a first word")
	}
	if n.startCheck(ids[0]) {
		t.Fatal("a second check of a peer being checked")
	}
	for _, id := range ids[1:maxHintChecks] {
		if !n.startCheck(id) {
			t.Fatalf("no check of %s with slots free", id)
		}
	}
	if n.startCheck(ids[maxHintChecks]) {
		t.Fatalf("a check past the %d slots", maxHintChecks)
	}
	n.endCheck(ids[0])
	if !n.startCheck(ids[maxHintChecks]) {
		t.Fatal("no check once a slot came back")
	}
	if n.startCheck(ids[0]) {
		t.Fatal("a check past the slots, the one that came back taken")
	}
}
