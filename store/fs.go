package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// Config tunes an FS. The zero Config is valid: no size cap, no logging.
type Config struct {
	// MaxBytes caps the total size of committed blobs. After each commit the
	// least recently used blobs (last Open or commit) are deleted until the
	// total fits; the blob just committed and the pinned blobs (SetPinned)
	// are kept even when they alone exceed the cap, and count in it. Zero means no cap. A lower cap saves disk but serves fewer
	// blobs locally, so more bytes come from peers or the registry. In-flight
	// ingests are not counted: the disk may briefly hold that much more.
	MaxBytes int64
	// Logger receives startup cleanup and evictions. Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the settings for a node that lets the disk fill:
// no cap, no logging.
func DefaultConfig() Config { return Config{} }

// FS is a Store in a directory:
//
//	<dir>/blobs/sha256/<hex>  committed, verified blobs
//	<dir>/ingest/<hex>-<rand> spool files of ingests in flight
//
// A blob reaches blobs/ only by a rename after its digest verified and its
// spool was synced, so a crash never leaves a partial blob that would later
// be served as whole; NewFS deletes what a crash left in ingest/.
type FS struct {
	blobDir   string
	ingestDir string
	maxBytes  int64
	log       *slog.Logger

	mu       sync.Mutex
	index    *lru
	inflight map[digest.Digest]*ingest
	// pinned are never evicted (see SetPinned).
	pinned map[digest.Digest]bool
}

var _ Store = (*FS)(nil)

// NewFS opens or creates the store in dir.
func NewFS(dir string, cfg Config) (*FS, error) {
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("store: MaxBytes %d is negative: %w", cfg.MaxBytes, errdefs.ErrInvalidArgument)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &FS{
		blobDir:   filepath.Join(dir, "blobs", string(digest.SHA256)),
		ingestDir: filepath.Join(dir, "ingest"),
		maxBytes:  cfg.MaxBytes,
		log:       log.With("component", "store"),
		index:     newLRU(),
		inflight:  make(map[digest.Digest]*ingest),
	}
	if err := s.clearIngests(); err != nil {
		return nil, err
	}
	for _, d := range []string{s.blobDir, s.ingestDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.evictLocked("")
	s.mu.Unlock()
	return s, nil
}

// clearIngests deletes the spools of ingests that a previous run left.
func (s *FS) clearIngests() error {
	entries, err := os.ReadDir(s.ingestDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.ingestDir, e.Name())); err != nil {
			return fmt.Errorf("store: remove unfinished ingest: %w", err)
		}
		s.log.Info("removed unfinished ingest", "file", e.Name())
	}
	return nil
}

// load indexes the committed blobs, least recently used (oldest mtime) first.
func (s *FS) load() error {
	entries, err := os.ReadDir(s.blobDir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	type blob struct {
		dgst  digest.Digest
		size  int64
		mtime time.Time
	}
	var blobs []blob
	for _, e := range entries {
		dgst := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if !e.Type().IsRegular() || dgst.Validate() != nil {
			s.log.Warn("ignoring unexpected file", "file", filepath.Join(s.blobDir, e.Name()))
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		blobs = append(blobs, blob{dgst, fi.Size(), fi.ModTime()})
	}
	slices.SortFunc(blobs, func(a, b blob) int {
		return cmp.Or(a.mtime.Compare(b.mtime), cmp.Compare(a.dgst, b.dgst))
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range blobs {
		s.index.add(b.dgst, b.size)
	}
	return nil
}

func (s *FS) path(dgst digest.Digest) string { return filepath.Join(s.blobDir, dgst.Encoded()) }

func (s *FS) Stat(ctx context.Context, dgst digest.Digest) (Info, error) {
	if err := validate(dgst); err != nil {
		return Info{}, err
	}
	s.mu.Lock()
	size, ok := s.index.get(dgst)
	s.mu.Unlock()
	if !ok {
		return Info{}, notFound(dgst)
	}
	return Info{Digest: dgst, Size: size}, nil
}

// Open marks the blob used, also on disk (its mtime), so that the order of
// eviction survives a restart.
func (s *FS) Open(ctx context.Context, dgst digest.Digest) (Blob, error) {
	if err := validate(dgst); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	size, ok := s.index.get(dgst)
	s.index.touch(dgst)
	s.mu.Unlock()
	if !ok {
		return nil, notFound(dgst)
	}
	p := s.path(dgst)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(dgst) // deleted since we looked
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	if err := os.Chtimes(p, time.Time{}, time.Now()); err != nil {
		s.log.Debug("mark blob used", "digest", dgst, "err", err)
	}
	return &fileBlob{f: f, size: size}, nil
}

func (s *FS) Begin(ctx context.Context, dgst digest.Digest, size int64) (Ingest, error) {
	if err := validateBegin(dgst, size); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index.get(dgst); ok {
		return nil, fmt.Errorf("blob %s: %w", dgst, errdefs.ErrAlreadyExists)
	}
	if _, ok := s.inflight[dgst]; ok {
		return nil, fmt.Errorf("blob %s: ingest in progress: %w", dgst, errdefs.ErrAlreadyExists)
	}
	f, err := os.CreateTemp(s.ingestDir, dgst.Encoded()+"-*")
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", dgst, err)
	}
	in := newIngest(dgst, size, &fsSpool{s: s, dgst: dgst, size: size, f: f})
	s.inflight[dgst] = in
	return in, nil
}

// InFlight returns the running ingest of dgst, for a second reader to join.
func (s *FS) InFlight(dgst digest.Digest) (Ingest, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, ok := s.inflight[dgst]; ok {
		return in, true
	}
	return nil, false
}

// Delete removes a committed blob. Blobs already open stay readable.
func (s *FS) Delete(ctx context.Context, dgst digest.Digest) error {
	if err := validate(dgst); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index.get(dgst); !ok {
		return notFound(dgst)
	}
	if err := os.Remove(s.path(dgst)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob %s: %w", dgst, err)
	}
	s.index.remove(dgst)
	return nil
}

func (s *FS) Walk(ctx context.Context, fn func(Info) error) error {
	s.mu.Lock()
	infos := make([]Info, 0, len(s.index.items))
	for d, it := range s.index.items {
		infos = append(infos, Info{Digest: d, Size: it.size})
	}
	s.mu.Unlock()
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

// Usage reports the number and total size of committed blobs.
func (s *FS) Usage() (blobs int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.index.items), s.index.bytes
}

// publish moves a verified spool into blobs/ and evicts to make room.
// Renaming under s.mu keeps the file and the index in step with Delete.
func (s *FS) publish(dgst digest.Digest, spool string, size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(spool, s.path(dgst)); err != nil {
		return err
	}
	delete(s.inflight, dgst)
	s.index.add(dgst, size)
	s.evictLocked(dgst)
	return nil
}

// evictLocked deletes least recently used blobs other than keep until the
// total fits in MaxBytes.
func (s *FS) evictLocked(keep digest.Digest) {
	if s.maxBytes == 0 || s.index.bytes <= s.maxBytes {
		return
	}
	for _, d := range s.index.victims(s.maxBytes, keep, s.pinned) {
		size, _ := s.index.get(d)
		if err := os.Remove(s.path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("evict blob", "digest", d, "err", err)
			continue
		}
		s.index.remove(d)
		s.log.Info("evicted blob", "digest", d, "bytes", size)
	}
	if s.index.bytes > s.maxBytes {
		s.log.Warn("blobs exceed MaxBytes after eviction", "bytes", s.index.bytes, "max_bytes", s.maxBytes, "kept", keep)
	}
}

// SetPinned replaces the set of blobs eviction leaves alone, held yet or
// not: the node's share of the cluster's pinned copies. They count in
// MaxBytes, so the other blobs make room for them.
func (s *FS) SetPinned(ds []digest.Digest) {
	pinned := make(map[digest.Digest]bool, len(ds))
	for _, d := range ds {
		pinned[d] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pinned = pinned
}

// PinnedUsage reports the number and total size of the pinned blobs the
// store holds.
func (s *FS) PinnedUsage() (blobs int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for d := range s.pinned {
		if size, ok := s.index.get(d); ok {
			blobs++
			bytes += size
		}
	}
	return blobs, bytes
}

// MaxBytes is the store's cap; 0 means none.
func (s *FS) MaxBytes() int64 { return s.maxBytes }

func (s *FS) forget(dgst digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inflight, dgst)
}
