package p2p

import (
	"encoding/hex"
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
	"github.com/opencontainers/go-digest"
)

// CID names a blob in the DHT: CIDv1, raw codec, and a sha2-256 multihash
// whose digest bytes are the blob's sha256 digest itself (not a hash of it),
// so the CID names the same bytes the OCI digest does.
func CID(dgst digest.Digest) (cid.Cid, error) {
	if err := checkDigest(dgst); err != nil {
		return cid.Undef, err
	}
	raw, err := hex.DecodeString(dgst.Encoded())
	if err != nil {
		return cid.Undef, fmt.Errorf("digest %q: %w: %v", dgst, errdefs.ErrInvalidArgument, err)
	}
	mh, err := multihash.Encode(raw, multihash.SHA2_256)
	if err != nil {
		return cid.Undef, fmt.Errorf("digest %q: %w: %v", dgst, errdefs.ErrInvalidArgument, err)
	}
	return cid.NewCidV1(cid.Raw, mh), nil
}

// DigestOf is the inverse of CID.
func DigestOf(c cid.Cid) (digest.Digest, error) {
	if !c.Defined() || c.Version() != 1 || c.Type() != cid.Raw {
		return "", fmt.Errorf("cid %s: %w: want a CIDv1 with the raw codec", c, errdefs.ErrInvalidArgument)
	}
	dec, err := multihash.Decode(c.Hash())
	if err != nil || dec.Code != multihash.SHA2_256 || len(dec.Digest) != 32 {
		return "", fmt.Errorf("cid %s: %w: want a sha2-256 multihash", c, errdefs.ErrInvalidArgument)
	}
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(dec.Digest)), nil
}

// checkDigest accepts well-formed sha256 digests only: the DHT and the
// transfer protocol name blobs by sha256.
func checkDigest(dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w: %v", dgst, errdefs.ErrInvalidArgument, err)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q: %w: only sha256 is supported", dgst, errdefs.ErrInvalidArgument)
	}
	return nil
}
