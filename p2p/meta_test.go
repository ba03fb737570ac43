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

// FuzzDecodeMeta reads arbitrary bytes as a member's gossip metadata: what
// it accepts has 1 to metaMaxAddrs addresses, each with a TCP port, and
// encodeMeta renders it back into metadata that decodes to the same peer
// ID and the same addresses (all of them when they fit, else a prefix).
func FuzzDecodeMeta(f *testing.F) {
	id := testPeerID(f).String()
	f.Add([]byte(`{"v":1,"id":"12D3KooWA","a":["/ip4/10.0.0.1/tcp/1"]}`))
	f.Add([]byte(`{"v":1,"id":"` + id + `","a":["/ip4/10.0.0.1/tcp/7501","/ip6/fd00::1/tcp/7501"]}`))
	f.Add([]byte(`{"v":1,"id":"` + id + `","a":["/dns4/node-1.example/tcp/7501/p2p/` + id + `"]}`))
	f.Add([]byte(`{"v":1,"id":"` + id + `","a":["/ip6/0:0:0:0:0:0:0:1/tcp/01"]} trailing`))
	f.Add([]byte(`{"v":1,"id":"` + id + `","a":["/dns4/<&>/tcp/1"]}`))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		pid, addrs, err := decodeMeta(b)
		if err != nil {
			return
		}
		if pid == "" || len(addrs) == 0 || len(addrs) > metaMaxAddrs {
			t.Fatalf("accepted %q with %d addresses", pid, len(addrs))
		}
		for _, a := range addrs {
			if _, err := a.ValueForProtocol(ma.P_TCP); err != nil {
				t.Fatalf("accepted %s without a TCP port", a)
			}
		}
		enc, err := encodeMeta(pid, addrs, metaMaxSize)
		if err != nil {
			// Re-encoding may grow an address past the limit (JSON escapes
			// HTML characters): then no address fits, which is an error.
			return
		}
		pid2, addrs2, err := decodeMeta(enc)
		if err != nil || pid2 != pid || len(addrs2) == 0 || len(addrs2) > len(addrs) {
			t.Fatalf("%q re-encodes as %q: %v", b, enc, err)
		}
		for i := range addrs2 {
			if !addrs2[i].Equal(addrs[i]) {
				t.Fatalf("address %d: %s re-encodes as %s", i, addrs[i], addrs2[i])
			}
		}
	})
}

// TestMetaCarriesVersion: a member's version travels in its metadata, and
// metadata without one (an older member) still decodes.
func TestMetaCarriesVersion(t *testing.T) {
	t.Parallel()
	id := testPeerID(t)
	addrs := []ma.Multiaddr{ma.StringCast("/ip4/10.0.0.1/tcp/7501")}
	b, err := encodeMetaVersion(id, "v1.2.3", nil, addrs, metaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := decodeMeta(b); err != nil {
		t.Fatal(err)
	}
	if got := metaShoalVersion(b); got != "v1.2.3" {
		t.Errorf("version %q, want v1.2.3", got)
	}
	old, err := encodeMeta(id, addrs, metaMaxSize)
	if err != nil {
		t.Fatal(err)
	}
	if got := metaShoalVersion(old); got != "" {
		t.Errorf("version %q from metadata without one", got)
	}
}
