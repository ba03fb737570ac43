package p2p

import (
	"bytes"
	"crypto/rand"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// FuzzLoadClusterKey loads arbitrary bytes as a cluster key file: a key it
// accepts has at least ClusterKeySize bytes and survives EncodeClusterKey
// and loading again, and any key of that size EncodeClusterKey writes loads
// back unchanged.
func FuzzLoadClusterKey(f *testing.F) {
	key := bytes.Repeat([]byte{0xa5}, ClusterKeySize)
	f.Add(EncodeClusterKey(key))
	f.Add([]byte("  \n" + strings.TrimSpace(string(EncodeClusterKey(key))) + "\r\n\t"))
	f.Add([]byte(strings.TrimRight(string(EncodeClusterKey(key[:31])), "=\n")))
	f.Add(EncodeClusterKey(key[:31]))
	f.Add([]byte(strings.TrimRight(string(EncodeClusterKey(append(key, 1))), "=\n")))
	f.Add([]byte("-_" + strings.Repeat("A", 42)))
	f.Add([]byte(strings.Repeat("A", 43) + "=\n" + strings.Repeat("A", 44)))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "key")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := LoadClusterKey(path)
		if err == nil {
			if len(got) < ClusterKeySize {
				t.Fatalf("accepted a %d-byte key from %q", len(got), data)
			}
			if again := loadKeyText(t, path, EncodeClusterKey(got)); !bytes.Equal(again, got) {
				t.Fatalf("key from %q does not survive EncodeClusterKey", data)
			}
		}
		if len(data) >= ClusterKeySize && len(data) <= 3*clusterKeyFileMax/4-1 {
			if again := loadKeyText(t, path, EncodeClusterKey(data)); !bytes.Equal(again, data) {
				t.Fatalf("EncodeClusterKey(%x) loads as %x", data, again)
			}
		}
	})
}

func loadKeyText(t *testing.T, path string, text []byte) []byte {
	t.Helper()
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := LoadClusterKey(path)
	if err != nil {
		t.Fatalf("%q: %v", text, err)
	}
	return key
}

// FuzzCID checks the digest–CID mapping on arbitrary input: a digest
// checkDigest accepts maps to a CID that maps back to the same digest
// string, and a CID DigestOf accepts (from arbitrary bytes) maps back to
// the same CID.
func FuzzCID(f *testing.F) {
	d := digest.FromString("x")
	c, err := CID(d)
	if err != nil {
		f.Fatal(err)
	}
	v0, _ := cid.Decode("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n")
	mh512, _ := multihash.Sum([]byte("x"), multihash.SHA2_512, -1)
	for _, seed := range []struct {
		s string
		b []byte
	}{
		{d.String(), c.Bytes()},
		{strings.ToUpper(d.String()), v0.Bytes()},
		{"sha256:" + strings.Repeat("0", 63), cid.NewCidV1(cid.Raw, mh512).Bytes()},
		{d.String() + "\n", cid.NewCidV1(cid.DagProtobuf, c.Hash()).Bytes()},
		{"sha512:" + strings.Repeat("0", 128), nil},
	} {
		f.Add(seed.s, seed.b)
	}
	f.Fuzz(func(t *testing.T, s string, b []byte) {
		if checkDigest(digest.Digest(s)) == nil {
			c, err := CID(digest.Digest(s))
			if err != nil {
				t.Fatalf("%q: %v", s, err)
			}
			back, err := DigestOf(c)
			if err != nil || back.String() != s {
				t.Fatalf("%q maps to %s and back to %q: %v", s, c, back, err)
			}
		}
		c, err := cid.Cast(b)
		if err != nil {
			return
		}
		d, err := DigestOf(c)
		if err != nil {
			return
		}
		if checkDigest(d) != nil {
			t.Fatalf("%s maps to a bad digest %q", c, d)
		}
		back, err := CID(d)
		if err != nil || !back.Equals(c) {
			t.Fatalf("%s maps to %s and back to %s: %v", c, d, back, err)
		}
	})
}

// FuzzSplitAddr parses arbitrary --gossip-addr and --p2p-addr values: an
// accepted one is an IP and a 16-bit port that join back into an address
// splitAddr reads the same way.
func FuzzSplitAddr(f *testing.F) {
	for _, s := range []string{":7502", "10.0.0.1:7501", "[fd00::1]:0", "[::ffff:1.2.3.4]:65535", "host:1", ":65536", ":-1", ":+1", "1.2.3.4", "[fe80::1%eth0]:1", ":0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, port, err := splitAddr(s)
		if err != nil {
			return
		}
		if ip == nil || port < 0 || port > 65535 {
			t.Fatalf("%q: accepted %v port %d", s, ip, port)
		}
		ip2, port2, err := splitAddr(net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err != nil || !ip2.Equal(ip) || port2 != port {
			t.Fatalf("%q: %v:%d reads back as %v:%d: %v", s, ip, port, ip2, port2, err)
		}
	})
}

// FuzzLoadIdentity loads arbitrary bytes as the node's identity.key: it
// never panics, and a key it accepts marshals back into a file that loads
// as the same key.
func FuzzLoadIdentity(f *testing.F) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)-1])
	f.Add(append(bytes.Clone(b), 0))
	f.Add([]byte{8, 1, 18, 0})
	f.Add([]byte{8, 2, 18, 1, 0})
	dir := f.TempDir()
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, identityFile)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		key, err := loadIdentity(dir, false, log)
		if err != nil {
			return
		}
		out, err := crypto.MarshalPrivateKey(key)
		if err != nil {
			t.Fatalf("accepted a key that does not marshal: %v", err)
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := loadIdentity(dir, false, log)
		if err != nil || !again.Equals(key) {
			t.Fatalf("key from %x does not load back: %v", data, err)
		}
	})
}

// FuzzBackoffMessage: whatever a member gossips, parsing returns an error
// or a back-off for a valid registry, of at most the cap, that encodes back
// to a message parsing the same.
func FuzzBackoffMessage(f *testing.F) {
	f.Add(backoffMsg{origin: "node-1", registry: "registry.example:5000", left: time.Minute}.encode())
	f.Add([]byte{1, 0, 0, 1, 0, 0, 'd'})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseBackoffMsg(b)
		if err != nil {
			return
		}
		if m.left <= 0 || m.left > resolver.MaxRetryAfter || !validRegistry(m.registry) {
			t.Fatalf("parsed %+v", m)
		}
		again, err := parseBackoffMsg(m.encode())
		if err != nil || again != m {
			t.Fatalf("re-encoded %+v: %+v, %v", m, again, err)
		}
	})
}

// FuzzSilentMessage: whatever a member gossips, parsing returns an error
// or a valid peer ID that encodes back to a message parsing the same.
func FuzzSilentMessage(f *testing.F) {
	f.Add([]byte{msgSilent, 1, 'n', 0, 36, 8, 1, 18, 32})
	if id, err := peer.Decode("12D3KooWGC6TvWhfapngX6wvJHMYvKpDMXPb3ZnCZ6dMoaMtimQ5"); err == nil {
		f.Add(silentMsg{origin: "node-1", peer: id}.encode())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseSilentMsg(b)
		if err != nil {
			return
		}
		if m.peer.Validate() != nil {
			t.Fatalf("parsed %+v", m)
		}
		again, err := parseSilentMsg(m.encode())
		if err != nil || again != m {
			t.Fatalf("re-encoded %+v: %+v, %v", m, again, err)
		}
	})
}
