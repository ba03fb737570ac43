package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// spool is where an ingest keeps its bytes: a temp file for FS, a slice for
// Memory. The ingest does the bookkeeping and verification; the spool stores
// bytes and tells its store how the ingest ended.
type spool interface {
	io.ReaderAt
	io.WriterAt
	// publish makes the verified bytes visible to Stat and Open and ends the
	// store's in-flight entry. Called at most once, with no ingest lock held.
	publish() error
	// forget ends the store's in-flight entry of a failed ingest. It is
	// called with the ingest locked, before Done closes, so whoever sees the
	// failure can Begin again at once; it must be quick.
	forget()
	// discard throws the bytes of a failed ingest away.
	discard()
	// close releases the spool once the ingest has ended and no reader or
	// writer uses it any more.
	close()
	// open reopens the committed blob, for readers that arrive after commit.
	open(ctx context.Context) (Blob, error)
}

type phase uint8

const (
	writing   phase = iota // accepting writes
	verifying              // Commit is hashing and publishing; writes are refused
	committed
	failed
)

// hashChunk is how much is read back from the spool at a time to hash bytes
// that a write did not bring in itself.
const hashChunk = 1 << 20

// ingest implements Ingest on top of a spool.
//
// A byte is stored once: a later write of an already claimed range drops
// those bytes, so what was hashed or handed to a reader never changes under
// it, whether a source sent a piece twice or sent two different versions.
type ingest struct {
	dgst  digest.Digest
	size  int64
	spool spool

	// hashMu orders hashing, which must go in offset order. It is never
	// acquired while mu is held.
	hashMu sync.Mutex
	h      hash.Hash // guarded by hashMu
	hashed int64     // guarded by hashMu

	// mu guards what follows. It may be held while the spool takes its
	// store's lock (forget), never the other way round.
	mu       sync.Mutex
	claimed  ranges // written or being written
	written  ranges
	contig   int64 // written.prefix()
	phase    phase
	err      error         // why the ingest failed
	abortErr error         // Abort during verifying; applied if the digest checks out
	users    int           // the ingest itself until it ends, plus active readers and writers
	progress chan struct{} // closed and replaced when contig or phase changes
	done     chan struct{}
}

var _ Ingest = (*ingest)(nil)

func newIngest(dgst digest.Digest, size int64, sp spool) *ingest {
	return &ingest{
		dgst:     dgst,
		size:     size,
		spool:    sp,
		h:        sha256.New(),
		users:    1,
		progress: make(chan struct{}),
		done:     make(chan struct{}),
	}
}

func (in *ingest) Digest() digest.Digest { return in.dgst }
func (in *ingest) Size() int64           { return in.size }
func (in *ingest) Done() <-chan struct{} { return in.done }

func (in *ingest) Contiguous() int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.contig
}

func (in *ingest) Err() error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.err
}

// wakeLocked tells every waiting reader that something changed.
func (in *ingest) wakeLocked() {
	close(in.progress)
	in.progress = make(chan struct{})
}

// refusedLocked says why an ingest no longer takes writes.
func (in *ingest) refusedLocked() error {
	if in.phase == failed {
		return in.err
	}
	return fmt.Errorf("blob %s: write after commit began: %w", in.dgst, errdefs.ErrFailedPrecondition)
}

// release drops one user; the last one closes the spool.
func (in *ingest) release() {
	in.mu.Lock()
	in.users--
	last := in.users == 0
	in.mu.Unlock()
	if last {
		in.spool.close()
	}
}

// WriteAt stores p at off. Bytes already stored by an earlier write are kept
// and those of p dropped (see ingest).
func (in *ingest) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("blob %s: write at offset %d: %w", in.dgst, off, errdefs.ErrInvalidArgument)
	}
	if off > in.size || int64(len(p)) > in.size-off {
		return 0, fmt.Errorf("blob %s: write of %d bytes at offset %d past size %d: %w",
			in.dgst, len(p), off, in.size, ErrSizeMismatch)
	}
	in.mu.Lock()
	if in.phase != writing {
		err := in.refusedLocked()
		in.mu.Unlock()
		return 0, err
	}
	mine := in.claimed.gaps(span{off, off + int64(len(p))})
	for _, s := range mine {
		in.claimed.add(s)
	}
	in.users++
	in.mu.Unlock()
	defer in.release()

	for _, s := range mine {
		if _, err := in.spool.WriteAt(p[s.start-off:s.end-off], s.start); err != nil {
			return 0, in.fail(writing, fmt.Errorf("blob %s: write spool: %w", in.dgst, err))
		}
	}

	in.mu.Lock()
	for _, s := range mine {
		in.written.add(s)
	}
	grew := in.written.prefix() > in.contig
	if grew {
		in.contig = in.written.prefix()
		in.wakeLocked()
	}
	var err error
	if in.phase == failed {
		err = in.err
	}
	in.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if grew {
		if err := in.hash(context.Background(), p, off, mine); err != nil {
			// If Commit is already verifying, it retries the hash and decides.
			return 0, in.fail(writing, fmt.Errorf("blob %s: hash spool: %w", in.dgst, err))
		}
	}
	return len(p), nil
}

// hash feeds the hash up to the contiguous prefix. Bytes this write stored
// (the spans mine, of p at off) are hashed from p; bytes other writes stored,
// such as those after a hole this write filled, are read back from the spool.
func (in *ingest) hash(ctx context.Context, p []byte, off int64, mine []span) error {
	in.hashMu.Lock()
	defer in.hashMu.Unlock()
	in.mu.Lock()
	target := in.contig
	in.mu.Unlock()

	var buf []byte
	for in.hashed < target {
		if err := ctx.Err(); err != nil {
			return err
		}
		for len(mine) > 0 && mine[0].end <= in.hashed {
			mine = mine[1:]
		}
		if len(mine) > 0 && mine[0].start <= in.hashed {
			end := min(mine[0].end, target)
			in.h.Write(p[in.hashed-off : end-off])
			in.hashed = end
			continue
		}
		end := min(target, in.hashed+hashChunk)
		if len(mine) > 0 {
			end = min(end, mine[0].start)
		}
		if buf == nil {
			buf = make([]byte, hashChunk)
		}
		b := buf[:end-in.hashed]
		if err := readFullAt(in.spool, b, in.hashed); err != nil {
			return err
		}
		in.h.Write(b)
		in.hashed = end
	}
	return nil
}

// Commit verifies size and digest, then publishes the blob. A Commit whose
// ctx ends while it hashes leaves the ingest open, to be committed again.
func (in *ingest) Commit(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	in.mu.Lock()
	for in.phase == verifying {
		// Another Commit is at work: wait for its outcome, or for it to give up.
		ch := in.progress
		in.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		in.mu.Lock()
	}
	if in.phase != writing {
		err := in.err
		in.mu.Unlock()
		return err
	}
	if in.contig < in.size {
		in.mu.Unlock()
		return in.fail(writing, fmt.Errorf("blob %s: commit with %d of %d bytes written: %w",
			in.dgst, in.contig, in.size, ErrSizeMismatch))
	}
	in.phase = verifying
	in.mu.Unlock()

	if err := in.hash(ctx, nil, 0, nil); err != nil {
		if ctx.Err() == nil {
			return in.fail(verifying, fmt.Errorf("blob %s: hash spool: %w", in.dgst, err))
		}
		in.mu.Lock()
		abortErr := in.abortErr
		in.phase = writing
		in.wakeLocked()
		in.mu.Unlock()
		if abortErr != nil {
			in.fail(writing, abortErr)
		}
		return err
	}
	in.hashMu.Lock()
	got := digest.NewDigest(digest.SHA256, in.h)
	in.hashMu.Unlock()
	if got != in.dgst {
		return in.fail(verifying, fmt.Errorf("blob %s: content hashes to %s: %w", in.dgst, got, ErrDigestMismatch))
	}

	in.mu.Lock()
	abortErr := in.abortErr
	in.mu.Unlock()
	if abortErr != nil {
		return in.fail(verifying, abortErr)
	}
	if err := in.spool.publish(); err != nil {
		return in.fail(verifying, fmt.Errorf("blob %s: publish: %w", in.dgst, err))
	}
	in.mu.Lock()
	in.phase = committed
	close(in.done)
	in.wakeLocked()
	in.mu.Unlock()
	in.release()
	return nil
}

// Abort ends the ingest with err, or with a wrapped errdefs.ErrAborted if err
// is nil. It has no effect once the ingest has ended, nor when it comes during
// a Commit that goes on to fail; during a Commit that would succeed, it wins.
func (in *ingest) Abort(err error) {
	if err == nil {
		err = fmt.Errorf("blob %s: %w", in.dgst, errdefs.ErrAborted)
	}
	in.mu.Lock()
	switch in.phase {
	case writing:
		in.endLocked(err)
		in.mu.Unlock()
		in.cleanup()
		return
	case verifying:
		if in.abortErr == nil {
			in.abortErr = err
		}
	}
	in.mu.Unlock()
}

// fail ends the ingest with err if it is still in phase from. It returns the
// error the ingest ended with, which may be an earlier one.
func (in *ingest) fail(from phase, err error) error {
	in.mu.Lock()
	if in.phase != from {
		if in.phase == failed {
			err = in.err
		}
		in.mu.Unlock()
		return err
	}
	in.endLocked(err)
	in.mu.Unlock()
	in.cleanup()
	return err
}

// endLocked marks the ingest failed; the caller runs cleanup after unlocking.
func (in *ingest) endLocked(err error) {
	in.phase = failed
	in.err = err
	in.spool.forget()
	close(in.done)
	in.wakeLocked()
}

func (in *ingest) cleanup() {
	in.spool.discard()
	in.release()
}

// readFullAt reads exactly len(b) bytes at off.
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}
