package store

import (
	"fmt"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// validate accepts well-formed sha256 digests only. Besides rejecting what
// the store cannot verify, it keeps a digest safe to use as a file name.
func validate(dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil {
		return fmt.Errorf("blob %q: %w: %w", dgst, errdefs.ErrInvalidArgument, err)
	}
	if dgst.Algorithm() != digest.SHA256 {
		return fmt.Errorf("blob %s: only sha256 is supported: %w", dgst, errdefs.ErrInvalidArgument)
	}
	return nil
}

// validateBegin also checks the announced size.
func validateBegin(dgst digest.Digest, size int64) error {
	if err := validate(dgst); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("blob %s: negative size %d: %w", dgst, size, errdefs.ErrInvalidArgument)
	}
	return nil
}

func notFound(dgst digest.Digest) error {
	return fmt.Errorf("blob %s: %w", dgst, errdefs.ErrNotFound)
}
