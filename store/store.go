package store

import (
	"context"
	"errors"
	"io"

	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch reports bytes whose digest is not the one they were stored
// under. Not-found, already-exists and invalid-argument conditions use the
// sentinels of github.com/containerd/errdefs, wrapped with the digest at hand.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrSizeMismatch reports a blob whose length differs from the size announced.
var ErrSizeMismatch = errors.New("size mismatch")

// Info describes a committed blob.
type Info struct {
	Digest digest.Digest
	Size   int64
}

// Blob is a committed, verified blob open for random access.
// It is safe for concurrent ReadAt calls.
type Blob interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Ingest is a blob being written. Bytes may arrive in any order through
// WriteAt; readers created with Reader see the contiguous prefix as it grows,
// except the final byte, which is released only once Commit has verified the
// whole blob. So a reader never receives a complete body that is wrong.
//
// A byte is stored once: writing a range again keeps the bytes written first,
// so what was hashed or handed to a reader never changes. WriteAt fails with
// ErrSizeMismatch past Size, errdefs.ErrInvalidArgument before 0, and once the
// ingest has ended with its error (errdefs.ErrFailedPrecondition after Commit).
//
// WriteAt, Commit, Abort and Reader are safe for concurrent use.
type Ingest interface {
	io.WriterAt
	// Digest and Size are what the blob must turn out to be.
	Digest() digest.Digest
	Size() int64
	// Contiguous is the length of the prefix written so far without holes.
	Contiguous() int64
	// Commit verifies digest and size and makes the blob visible to Open.
	// On a mismatch it discards the data, fails every reader with an error
	// wrapping ErrDigestMismatch or ErrSizeMismatch, and returns that error.
	Commit(ctx context.Context) error
	// Abort discards the ingest; readers fail with err, or with an
	// errdefs.ErrAborted if err is nil. It does nothing once the ingest ended.
	Abort(err error)
	// Reader streams [off, Size()) as bytes arrive, blocking while none are
	// available, until ctx ends (then it returns ctx's error), the ingest
	// is aborted (the abort error) or the blob is complete (io.EOF).
	// A Reader made after Commit reads the stored blob, so it fails with
	// errdefs.ErrNotFound if that has been deleted or evicted since.
	// Close releases what the reader holds open.
	Reader(ctx context.Context, off int64) io.ReadCloser
	// Done is closed when the ingest is committed or aborted; Err then says which.
	Done() <-chan struct{}
	Err() error
}

// Store is a content-addressed blob store.
type Store interface {
	// Stat returns the info of a committed blob or an errdefs.ErrNotFound.
	Stat(ctx context.Context, dgst digest.Digest) (Info, error)
	// Open returns a committed blob or an errdefs.ErrNotFound, and marks it used.
	Open(ctx context.Context, dgst digest.Digest) (Blob, error)
	// Begin starts an ingest of a blob of the given size. It returns
	// errdefs.ErrAlreadyExists when the blob is committed or already being ingested.
	Begin(ctx context.Context, dgst digest.Digest, size int64) (Ingest, error)
	// Delete removes a committed blob; errdefs.ErrNotFound when absent.
	Delete(ctx context.Context, dgst digest.Digest) error
	// Walk calls fn for every committed blob, in no particular order.
	Walk(ctx context.Context, fn func(Info) error) error
}
