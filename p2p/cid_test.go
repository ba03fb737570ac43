package p2p_test

import (
	"encoding/hex"
	"errors"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
)

func TestCID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		data string
		want string // as IPFS names the raw block holding data
	}{
		{"empty", "", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"},
		{"hello world", "hello world", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"},
		{"shoal", "shoal", "bafkreieiq2lmhdujlxlufocjj5cjegobfiswufwqqqnzhaj4qqnctdpzfq"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := digest.FromString(tc.data)
			c, err := p2p.CID(d)
			if err != nil {
				t.Fatal(err)
			}
			if c.String() != tc.want {
				t.Errorf("CID(%s) = %s, want %s", d, c, tc.want)
			}
			// The same CID as go-cid computes by hashing the bytes: the
			// multihash carries the digest, not a hash of it.
			mh, err := multihash.Sum([]byte(tc.data), multihash.SHA2_256, -1)
			if err != nil {
				t.Fatal(err)
			}
			if ref := cid.NewCidV1(cid.Raw, mh); !ref.Equals(c) {
				t.Errorf("CID(%s) = %s, go-cid says %s", d, c, ref)
			}
			dec, err := multihash.Decode(c.Hash())
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(dec.Digest) != d.Encoded() {
				t.Errorf("multihash digest %x, want %s", dec.Digest, d.Encoded())
			}
			// Round trip, through the string form too.
			parsed, err := cid.Decode(c.String())
			if err != nil {
				t.Fatal(err)
			}
			back, err := p2p.DigestOf(parsed)
			if err != nil {
				t.Fatal(err)
			}
			if back != d {
				t.Errorf("DigestOf(CID(%s)) = %s", d, back)
			}
		})
	}
}

func TestCIDRejects(t *testing.T) {
	t.Parallel()
	for _, d := range []digest.Digest{
		"",
		"sha256:",
		"sha256:abc",
		"sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
		"md5:d41d8cd98f00b204e9800998ecf8427e",
		digest.SHA512.FromString(""),
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	} {
		if _, err := p2p.CID(d); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("CID(%q): %v, want ErrInvalidArgument", d, err)
		}
	}
	mh, _ := multihash.Sum([]byte("x"), multihash.SHA2_256, -1)
	for name, c := range map[string]cid.Cid{
		"undefined": cid.Undef,
		"v0":        cid.NewCidV0(mh),
		"dag-pb":    cid.NewCidV1(cid.DagProtobuf, mh),
	} {
		if _, err := p2p.DigestOf(c); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("DigestOf(%s): %v, want ErrInvalidArgument", name, err)
		}
	}
}
