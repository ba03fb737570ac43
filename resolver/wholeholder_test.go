package resolver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/resolver"
)

// wholeRouter is a mesh where this node ranks first for the blob (it
// leads: it fetches for the cluster) and two peers hold it: "whole", all
// of it but with no free slot for its first busyFor answers, and "part",
// which is receiving it and holds its first MiB. After the first round
// the look-up lists "part" only, as a look-up that returns a few holders,
// best first, lists a busy one last or not at all.
type wholeRouter struct {
	data    []byte
	busyFor int

	mu      sync.Mutex
	lookups int
	busy    int
	served  int64
}

func (r *wholeRouter) Providers(context.Context, digest.Digest) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	if r.lookups == 1 {
		return []string{"whole", "part"}, nil
	}
	return []string{"part"}, nil
}

func (r *wholeRouter) Fetch(ctx context.Context, p string, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	body, size, _, err := r.FetchRange(ctx, p, d, resolver.PeerRange{Off: off})
	return body, size, err
}

func (r *wholeRouter) FetchRange(_ context.Context, p string, d digest.Digest, rg resolver.PeerRange) (io.ReadCloser, int64, int64, error) {
	size := int64(len(r.data))
	if d != digest.FromBytes(r.data) {
		return nil, 0, 0, errdefs.ErrNotFound
	}
	switch p {
	case "whole":
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.busy < r.busyFor {
			r.busy++
			return nil, size, size, fmt.Errorf("peer whole: %w", errdefs.ErrResourceExhausted)
		}
		r.served += size - rg.Off
		return io.NopCloser(bytes.NewReader(r.data[rg.Off:])), size, size, nil
	case "part":
		have := int64(1 << 20)
		if rg.Off >= have {
			return nil, size, have, fmt.Errorf("peer part holds %d bytes: %w", have, errdefs.ErrOutOfRange)
		}
		return io.NopCloser(bytes.NewReader(r.data[rg.Off:have])), size, have, nil
	}
	return nil, 0, 0, errdefs.ErrNotFound
}

func (r *wholeRouter) Avoid(string, error)                          {}
func (r *wholeRouter) Provide(context.Context, digest.Digest) error { return nil }

// Designated ranks this node first: it leads.
func (r *wholeRouter) Designated(digest.Digest, []digest.Digest) ([]string, bool) {
	return nil, true
}

func (r *wholeRouter) FetchThrough(ctx context.Context, p string, d digest.Digest, off int64, _, _ string) (io.ReadCloser, int64, error) {
	return r.Fetch(ctx, p, d, off)
}

// TestBusyWholeHolderIsWaitedFor: a node that fetches a blob for the
// cluster takes what a receiving peer holds; for the rest it waits for the
// peer that holds the whole blob and was only busy, even once the look-up
// no longer lists it, rather than asking the registry: the registry sends
// nothing while a whole copy is in the cluster.
func TestBusyWholeHolderIsWaitedFor(t *testing.T) {
	t.Parallel()
	body := randomBytes(t, 4<<20)
	router := &wholeRouter{data: body, busyFor: 4}
	f := newFixture(t, resolver.Config{PieceSize: -1, BusyWait: 10 * time.Second}, resolver.Sources{Router: router})
	pullPushed(t, f, body)
	router.mu.Lock()
	defer router.mu.Unlock()
	if n := f.up.blobGets.Load(); n != 0 {
		t.Errorf("registry asked %d times, want 0 (the whole holder served %d bytes)", n, router.served)
	}
	if router.served != int64(len(body))-(1<<20) {
		t.Errorf("the whole holder served %d bytes, want the %d past what the receiving peer held", router.served, len(body)-(1<<20))
	}
}
