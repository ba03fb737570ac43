package store

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"
)

// fsSpool is an ingest's temp file in <dir>/ingest. After publish the same
// open file is the committed blob, so readers that followed the ingest keep
// reading it even if it is evicted meanwhile.
type fsSpool struct {
	s    *FS
	dgst digest.Digest
	size int64
	f    *os.File
}

func (sp *fsSpool) ReadAt(p []byte, off int64) (int, error)  { return sp.f.ReadAt(p, off) }
func (sp *fsSpool) WriteAt(p []byte, off int64) (int, error) { return sp.f.WriteAt(p, off) }

func (sp *fsSpool) publish() error {
	if err := sp.f.Sync(); err != nil {
		return err
	}
	if err := sp.f.Chmod(0o444); err != nil {
		return err
	}
	if err := sp.s.publish(sp.dgst, sp.f.Name(), sp.size); err != nil {
		return err
	}
	// The blob is visible now; a failed directory sync only risks losing it
	// in a crash, which costs a download, not correctness.
	if err := syncDir(sp.s.blobDir); err != nil {
		sp.s.log.Warn("sync blob directory", "digest", sp.dgst, "err", err)
	}
	return nil
}

func (sp *fsSpool) forget() { sp.s.forget(sp.dgst) }

func (sp *fsSpool) discard() {
	if err := os.Remove(sp.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		sp.s.log.Warn("remove spool", "digest", sp.dgst, "err", err)
	}
}

func (sp *fsSpool) close() {
	if err := sp.f.Close(); err != nil {
		sp.s.log.Warn("close spool", "digest", sp.dgst, "err", err)
	}
}

func (sp *fsSpool) open(ctx context.Context) (Blob, error) { return sp.s.Open(ctx, sp.dgst) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// fileBlob is a committed blob's open file.
type fileBlob struct {
	f    *os.File
	size int64
}

func (b *fileBlob) ReadAt(p []byte, off int64) (int, error) { return b.f.ReadAt(p, off) }
func (b *fileBlob) Size() int64                             { return b.size }
func (b *fileBlob) Close() error                            { return b.f.Close() }
