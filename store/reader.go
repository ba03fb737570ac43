package store

import (
	"context"
	"fmt"
	"io"
	"io/fs"

	"github.com/containerd/errdefs"
)

// Reader streams the blob from off as it arrives. A reader created after the
// ingest committed reads the committed blob, and fails with errdefs.ErrNotFound
// if that was evicted or deleted meanwhile.
func (in *ingest) Reader(ctx context.Context, off int64) io.ReadCloser {
	r := &reader{ctx: ctx, in: in, off: off}
	if off < 0 || off > in.size {
		r.err = fmt.Errorf("blob %s: read at offset %d of %d: %w", in.dgst, off, in.size, errdefs.ErrInvalidArgument)
		return r
	}
	in.mu.Lock()
	switch in.phase {
	case writing, verifying:
		in.users++
		r.held = true
	case failed:
		r.err = in.err
	case committed:
		r.reopen = true
	}
	in.mu.Unlock()
	return r
}

// reader follows an ingest. The ctx is kept because io.Reader has no room
// for one; it is the ctx of the Reader call that made it.
type reader struct {
	ctx    context.Context
	in     *ingest
	off    int64
	held   bool // holds a use of in's spool
	reopen bool // the ingest had committed: read the stored blob
	blob   Blob
	err    error // sticky
	closed bool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.reopen {
		return r.readBlob(p)
	}
	in := r.in
	for {
		in.mu.Lock()
		avail := in.contig
		if in.phase != committed {
			avail = min(avail, in.size-1) // the last byte waits for verification
		}
		switch {
		case in.phase == failed:
			r.err = in.err
			in.mu.Unlock()
			return 0, r.err
		case r.off < avail:
			in.mu.Unlock()
			b := p[:min(int64(len(p)), avail-r.off)]
			if err := readFullAt(in.spool, b, r.off); err != nil {
				r.err = fmt.Errorf("blob %s: read spool: %w", in.dgst, err)
				return 0, r.err
			}
			r.off += int64(len(b))
			return len(b), nil
		case in.phase == committed:
			in.mu.Unlock()
			return 0, io.EOF
		}
		ch := in.progress
		in.mu.Unlock()
		select {
		case <-ch:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *reader) readBlob(p []byte) (int, error) {
	if r.blob == nil {
		b, err := r.in.spool.open(r.ctx)
		if err != nil {
			r.err = err
			return 0, err
		}
		r.blob = b
	}
	if r.off >= r.blob.Size() {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.blob.Size()-r.off)]
	n, err := r.blob.ReadAt(p, r.off)
	r.off += int64(n)
	if n == len(p) {
		err = nil
	}
	return n, err
}

func (r *reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.err = fs.ErrClosed
	if r.held {
		r.held = false
		r.in.release()
	}
	if r.blob != nil {
		return r.blob.Close()
	}
	return nil
}
