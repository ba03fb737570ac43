package p2p

import (
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
