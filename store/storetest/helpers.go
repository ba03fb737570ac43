package storetest

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/shoal-dev/shoal/store"
)

// joiner is what a store offers to let a second client follow an ingest.
// It is optional; the suite tests it where a store has it.
type joiner interface {
	InFlight(dgst digest.Digest) (store.Ingest, bool)
}

// blob returns n pseudo-random bytes named by seed, and their digest.
func blob(seed uint64, n int) ([]byte, digest.Digest) {
	b := make([]byte, n)
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)}))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b, digest.FromBytes(b)
}

// begin starts an ingest that is aborted when the test ends, unless it was
// committed; so no test leaves a spool behind.
func begin(t *testing.T, s store.Store, dgst digest.Digest, size int64) store.Ingest {
	t.Helper()
	in, err := s.Begin(t.Context(), dgst, size)
	if err != nil {
		t.Fatalf("Begin(%s, %d): %v", dgst, size, err)
	}
	t.Cleanup(func() { in.Abort(nil) })
	return in
}

// put stores data under its digest.
func put(t *testing.T, s store.Store, data []byte, dgst digest.Digest) {
	t.Helper()
	in := begin(t, s, dgst, int64(len(data)))
	writeAt(t, in, data, 0)
	if err := in.Commit(t.Context()); err != nil {
		t.Fatalf("Commit(%s): %v", dgst, err)
	}
}

func writeAt(t *testing.T, in store.Ingest, p []byte, off int64) {
	t.Helper()
	if n, err := in.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(p), off, n, err)
	}
}

// reader opens a reader that is closed when the test ends.
func reader(t *testing.T, in store.Ingest, off int64) io.ReadCloser {
	r := in.Reader(t.Context(), off)
	t.Cleanup(func() { r.Close() })
	return r
}

// readBlob opens dgst and returns its content.
func readBlob(t *testing.T, s store.Store, dgst digest.Digest) []byte {
	t.Helper()
	b, err := s.Open(t.Context(), dgst)
	if err != nil {
		t.Fatalf("Open(%s): %v", dgst, err)
	}
	defer b.Close()
	got, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size()))
	if err != nil {
		t.Fatalf("read %s: %v", dgst, err)
	}
	return got
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error %v, want %v", what, err, target)
	}
}

func wantBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("%s: got %d bytes, want %d; equal prefix %d", what, len(got), len(want), commonPrefix(got, want))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// wantAbsent checks that no committed blob dgst can be seen.
func wantAbsent(t *testing.T, s store.Store, dgst digest.Digest) {
	t.Helper()
	_, err := s.Stat(t.Context(), dgst)
	wantErr(t, "Stat", err, errdefs.ErrNotFound)
	b, err := s.Open(t.Context(), dgst)
	if err == nil {
		b.Close()
	}
	wantErr(t, "Open", err, errdefs.ErrNotFound)
}
