package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// Memory is a Store that keeps blobs in memory, for tests of the packages
// that use a Store. It has the semantics of FS without the eviction; Begin
// allocates the whole blob up front.
type Memory struct {
	mu       sync.Mutex
	blobs    map[digest.Digest][]byte
	inflight map[digest.Digest]*ingest
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{
		blobs:    make(map[digest.Digest][]byte),
		inflight: make(map[digest.Digest]*ingest),
	}
}

func (m *Memory) Stat(ctx context.Context, dgst digest.Digest) (Info, error) {
	if err := validate(dgst); err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	b, ok := m.blobs[dgst]
	m.mu.Unlock()
	if !ok {
		return Info{}, notFound(dgst)
	}
	return Info{Digest: dgst, Size: int64(len(b))}, nil
}

func (m *Memory) Open(ctx context.Context, dgst digest.Digest) (Blob, error) {
	if err := validate(dgst); err != nil {
		return nil, err
	}
	m.mu.Lock()
	b, ok := m.blobs[dgst]
	m.mu.Unlock()
	if !ok {
		return nil, notFound(dgst)
	}
	return memBlob{bytes.NewReader(b)}, nil
}

func (m *Memory) Begin(ctx context.Context, dgst digest.Digest, size int64) (Ingest, error) {
	if err := validateBegin(dgst, size); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[dgst]; ok {
		return nil, fmt.Errorf("blob %s: %w", dgst, errdefs.ErrAlreadyExists)
	}
	if _, ok := m.inflight[dgst]; ok {
		return nil, fmt.Errorf("blob %s: ingest in progress: %w", dgst, errdefs.ErrAlreadyExists)
	}
	in := newIngest(dgst, size, &memSpool{m: m, dgst: dgst, buf: make([]byte, size)})
	m.inflight[dgst] = in
	return in, nil
}

// InFlight returns the running ingest of dgst, for a second reader to join.
func (m *Memory) InFlight(dgst digest.Digest) (Ingest, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if in, ok := m.inflight[dgst]; ok {
		return in, true
	}
	return nil, false
}

func (m *Memory) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := validate(dgst); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[dgst]; !ok {
		return notFound(dgst)
	}
	delete(m.blobs, dgst)
	return nil
}

func (m *Memory) Walk(ctx context.Context, fn func(Info) error) error {
	m.mu.Lock()
	infos := make([]Info, 0, len(m.blobs))
	for d, b := range m.blobs {
		infos = append(infos, Info{Digest: d, Size: int64(len(b))})
	}
	m.mu.Unlock()
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

// memSpool keeps an ingest's bytes in a slice, which becomes the blob.
// Concurrent access is safe because the ingest hands out disjoint ranges to
// writers and lets readers at written ranges only.
type memSpool struct {
	m    *Memory
	dgst digest.Digest
	buf  []byte
}

func (s *memSpool) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.buf)) {
		return 0, io.EOF
	}
	n := copy(p, s.buf[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *memSpool) WriteAt(p []byte, off int64) (int, error) {
	return copy(s.buf[off:], p), nil
}

func (s *memSpool) publish() error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.m.blobs[s.dgst] = s.buf
	delete(s.m.inflight, s.dgst)
	return nil
}

func (s *memSpool) forget() {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	delete(s.m.inflight, s.dgst)
}

func (s *memSpool) discard() {}

func (s *memSpool) close() {}

func (s *memSpool) open(ctx context.Context) (Blob, error) { return s.m.Open(ctx, s.dgst) }

// memBlob hides the cursor of its bytes.Reader: a Blob is read at offsets only.
type memBlob struct{ r *bytes.Reader }

func (b memBlob) ReadAt(p []byte, off int64) (int, error) { return b.r.ReadAt(p, off) }
func (b memBlob) Size() int64                             { return b.r.Size() }
func (b memBlob) Close() error                            { return nil }
