package p2p

import (
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

func testPeerID(t testing.TB) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMetaRoundTrip(t *testing.T) {
	t.Parallel()
	id := testPeerID(t)
	var addrs []ma.Multiaddr
	for _, s := range []string{"/ip4/10.0.0.1/tcp/7501", "/ip6/fd00::1/tcp/7501", "/ip4/127.0.0.1/tcp/7501"} {
		addrs = append(addrs, ma.StringCast(s))
	}
	b, err := encodeMeta(id, addrs, metaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	gotID, gotAddrs, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if gotID != id || len(gotAddrs) != len(addrs) {
		t.Fatalf("got %s %v", gotID, gotAddrs)
	}

	// Too many addresses for the limit: keep those that fit, in order.
	var many []ma.Multiaddr
	for i := range 40 {
		many = append(many, ma.StringCast("/ip4/10.0.0."+itoa(i)+"/tcp/7501"))
	}
	b, err = encodeMeta(id, many, metaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > metaMaxSize {
		t.Fatalf("metadata of %d bytes", len(b))
	}
	_, gotAddrs, err = decodeMeta(b)
	if err != nil || len(gotAddrs) == 0 || !gotAddrs[0].Equal(many[0]) {
		t.Fatalf("truncated metadata: %v %v", gotAddrs, err)
	}
	if _, err := encodeMeta(id, addrs, 20); err == nil {
		t.Errorf("encoded metadata into 20 bytes")
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func TestMetaRejects(t *testing.T) {
	t.Parallel()
	id := testPeerID(t).String()
	for _, tc := range []struct {
		name, meta string
	}{
		{"empty", ""},
		{"garbage", "\x00\xff\x13garbage"},
		{"not json object", `[1,2,3]`},
		{"wrong version", `{"v":2,"id":"` + id + `","a":["/ip4/10.0.0.1/tcp/1"]}`},
		{"bad peer ID", `{"v":1,"id":"12D3KooWnotapeer","a":["/ip4/10.0.0.1/tcp/1"]}`},
		{"no addresses", `{"v":1,"id":"` + id + `","a":[]}`},
		{"bad address", `{"v":1,"id":"` + id + `","a":["/ip4/999.0.0.1/tcp/1"]}`},
		{"no tcp", `{"v":1,"id":"` + id + `","a":["/ip4/10.0.0.1/udp/1"]}`},
		{"too many addresses", `{"v":1,"id":"` + id + `","a":[` + strings.Repeat(`"/ip4/1.2.3.4/tcp/1",`, 16) + `"/ip4/1.2.3.4/tcp/1"]}`},
		{"oversized", `{"v":1,"id":"` + id + `","a":["/ip4/10.0.0.1/tcp/1"],"pad":"` + strings.Repeat("x", 600) + `"}`},
		{"wrong types", `{"v":"1","id":7,"a":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := decodeMeta([]byte(tc.meta)); err == nil {
				t.Errorf("accepted %q", tc.meta)
			}
		})
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"12D3KooWA","a":["/ip4/10.0.0.1/tcp/1"]}`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _ = decodeMeta(b) // must not panic
	})
}
