package resolver

import (
	"context"
	"io"
	"sync"

	"github.com/shoal-dev/shoal/store"
)

// trust tracks how much of a download's prefix came from a source that is
// trusted to stream unverified: the registry, whose bytes containerd would
// have taken anyway. Bytes from peers are untrusted until the whole blob
// verifies: a reader that has taken a corrupt prefix cannot be repaired by
// resuming, so containerd must not see a peer's byte before the digest
// matched.
type trust struct {
	mu      sync.Mutex
	n       int64         // trusted contiguous prefix
	tainted bool          // a peer wrote into the blob: no further trust
	changed chan struct{} // closed and replaced when n grows
}

func newTrust() *trust { return &trust{changed: make(chan struct{})} }

// wrote records bytes [off, off+n) written from a source.
func (t *trust) wrote(off, n int64, trusted bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !trusted {
		t.tainted = true
		return
	}
	if t.tainted || off != t.n {
		return
	}
	t.n += n
	close(t.changed)
	t.changed = make(chan struct{})
}

func (t *trust) state() (int64, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n, t.changed
}

// gatedReader reads an ingest up to its trusted prefix, then waits until
// the ingest is verified before passing on the rest.
type gatedReader struct {
	ctx   context.Context
	ing   store.Ingest
	trust *trust
	off   int64
	rd    io.ReadCloser
	open  bool // the ingest is committed: no gate any more
}

func (g *gatedReader) Read(p []byte) (int, error) {
	for !g.open {
		n, changed := g.trust.state()
		if g.off < n {
			if int64(len(p)) > n-g.off {
				p = p[:n-g.off]
			}
			break
		}
		select {
		case <-changed:
		case <-g.ing.Done():
			if err := g.ing.Err(); err != nil {
				return 0, err
			}
			g.open = true
		case <-g.ctx.Done():
			return 0, g.ctx.Err()
		}
	}
	k, err := g.rd.Read(p)
	g.off += int64(k)
	return k, err
}

// SendFile sends the next bytes from the stored blob's file
// (store.FileSender) once the gate no longer holds them back.
func (g *gatedReader) SendFile(w io.Writer, n int64) (int64, bool, error) {
	fs, ok := g.rd.(store.FileSender)
	if !ok {
		return 0, false, nil
	}
	select {
	case <-g.ing.Done():
		g.open = g.open || g.ing.Err() == nil
	default:
	}
	if !g.open {
		if trusted, _ := g.trust.state(); trusted < min(g.off+n, g.ing.Size()) {
			return 0, false, nil
		}
	}
	sent, ok, err := fs.SendFile(w, n)
	g.off += sent
	return sent, ok, err
}

func (g *gatedReader) Close() error { return g.rd.Close() }
