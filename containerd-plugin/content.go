package containerdplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/store"
)

// Open returns a committed blob of containerd's content store, or an error
// wrapping errdefs.ErrNotFound. Garbage collection may remove content at any
// moment, so NotFound is an ordinary miss.
//
// With Config.ContentDir the blob is the file itself. Otherwise reads go
// through the Read RPC, bound to ctx and to the blob's Close; each RPC reads
// at least a MiB, and small sequential reads are served from that.
func (c *Client) Open(ctx context.Context, dgst digest.Digest) (store.Blob, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("content %q: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	if c.cfg.ContentDir != "" {
		return c.openFile(dgst)
	}
	size, err := c.info(ctx, dgst)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	return &remoteBlob{
		ctx:    rctx,
		cancel: cancel,
		client: contentapi.NewContentClient(c.conn),
		c:      c,
		dgst:   dgst,
		size:   size,
	}, nil
}

// Stat returns the size of a committed blob, or an error wrapping
// errdefs.ErrNotFound.
func (c *Client) Stat(ctx context.Context, dgst digest.Digest) (int64, error) {
	if err := dgst.Validate(); err != nil {
		return 0, fmt.Errorf("content %q: %w: %w", dgst, err, errdefs.ErrInvalidArgument)
	}
	if c.cfg.ContentDir != "" {
		fi, err := os.Stat(c.blobPath(dgst))
		if err != nil {
			return 0, fileErr(dgst, err)
		}
		return fi.Size(), nil
	}
	return c.info(ctx, dgst)
}

// Walk calls fn for every blob of the namespace's content, in no particular
// order, and stops at the first error fn returns, returning it.
func (c *Client) Walk(ctx context.Context, fn func(dgst digest.Digest, size int64) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream when fn stops early
	stream, err := contentapi.NewContentClient(c.conn).List(ctx, &contentapi.ListContentRequest{})
	if err != nil {
		return c.rpcErr(err, "list content")
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.rpcErr(err, "list content")
		}
		for _, info := range resp.Info {
			dgst, err := digest.Parse(info.Digest)
			if err != nil {
				c.log.Warn("skipping content with an invalid digest", "digest", info.Digest, "err", err)
				continue
			}
			if err := fn(dgst, info.Size); err != nil {
				return err
			}
		}
	}
}

func (c *Client) info(ctx context.Context, dgst digest.Digest) (int64, error) {
	resp, err := contentapi.NewContentClient(c.conn).Info(ctx, &contentapi.InfoRequest{Digest: dgst.String()})
	if err != nil {
		return 0, c.rpcErr(err, "content "+dgst.String())
	}
	return resp.Info.Size, nil
}

// blobPath is where containerd's local content store keeps a committed blob.
// dgst must be valid, so the path cannot leave the directory.
func (c *Client) blobPath(dgst digest.Digest) string {
	return filepath.Join(c.cfg.ContentDir, "blobs", dgst.Algorithm().String(), dgst.Encoded())
}

func (c *Client) openFile(dgst digest.Digest) (store.Blob, error) {
	// Once open, the file stays readable even if GC unlinks it.
	f, err := os.Open(c.blobPath(dgst))
	if err != nil {
		return nil, fileErr(dgst, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, fileErr(dgst, err)
	}
	return fileBlob{File: f, size: fi.Size()}, nil
}

func fileErr(dgst digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("content %s: %w", dgst, errdefs.ErrNotFound)
	}
	return fmt.Errorf("content %s: %w", dgst, err)
}

// fileBlob is a blob read straight from containerd's content directory.
type fileBlob struct {
	*os.File
	size int64
}

func (b fileBlob) Size() int64 { return b.size }

// remoteBlob reads a blob through the content API's Read RPC.
type remoteBlob struct {
	ctx    context.Context // Open's, so the caller can abandon a stalled read
	cancel context.CancelFunc
	client contentapi.ContentClient
	c      *Client
	dgst   digest.Digest
	size   int64

	mu     sync.Mutex
	win    []byte // the last read-ahead window, which starts at winOff
	winOff int64
}

func (b *remoteBlob) Size() int64 { return b.size }

func (b *remoteBlob) Close() error {
	b.cancel()
	return nil
}

// readAhead is the least a Read RPC asks for. Each RPC costs about as much
// as streaming a MiB, so small sequential reads (io.Copy's 32 KiB) are
// served from one window of this size instead of one RPC each.
const readAhead = 1 << 20

// ReadAt implements io.ReaderAt. Reads of readAhead or more are one Read
// RPC each; smaller ones come from a window fetched at their offset.
func (b *remoteBlob) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("content %s: read at negative offset %d: %w", b.dgst, off, errdefs.ErrInvalidArgument)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= b.size {
		return 0, io.EOF
	}
	want := p
	if rest := b.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	var n int
	if len(want) >= readAhead {
		if err := b.fetch(want, off); err != nil {
			return 0, err
		}
		n = len(want)
	} else {
		n = b.fromWindow(want, off)
		if n == 0 {
			win := make([]byte, min(readAhead, b.size-off))
			if err := b.fetch(win, off); err != nil {
				return 0, err
			}
			n = copy(want, win)
			b.mu.Lock()
			b.win, b.winOff = win, off
			b.mu.Unlock()
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fromWindow copies want from the read-ahead window if it holds all of it.
func (b *remoteBlob) fromWindow(want []byte, off int64) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if off < b.winOff || off+int64(len(want)) > b.winOff+int64(len(b.win)) {
		return 0
	}
	return copy(want, b.win[off-b.winOff:])
}

// fetch fills p from off with one Read RPC; the range must lie in the blob.
func (b *remoteBlob) fetch(p []byte, off int64) error {
	// Cancel the stream when returning, or gRPC keeps it until ctx ends.
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	// Size is never zero here: containerd reads the whole blob for zero.
	stream, err := b.client.Read(ctx, &contentapi.ReadContentRequest{
		Digest: b.dgst.String(),
		Offset: off,
		Size:   int64(len(p)),
	})
	if err != nil {
		return b.c.rpcErr(err, "read content "+b.dgst.String())
	}
	n := 0
	for n < len(p) {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			// The store had fewer bytes than Info said: the blob changed
			// under us, which content addressing forbids.
			return fmt.Errorf("content %s: %d bytes short at offset %d: %w",
				b.dgst, len(p)-n, off+int64(n), io.ErrUnexpectedEOF)
		}
		if err != nil {
			return b.c.rpcErr(err, "read content "+b.dgst.String())
		}
		// containerd counts Offset from the start of this read.
		if resp.Offset != int64(n) {
			return fmt.Errorf("content %s: containerd sent read offset %d, want %d: %w",
				b.dgst, resp.Offset, n, errdefs.ErrDataLoss)
		}
		n += copy(p[n:], resp.Data)
	}
	return nil
}
