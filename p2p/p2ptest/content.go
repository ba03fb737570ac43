package p2ptest

import (
	"bytes"
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/store"
)

// Content is an in-memory p2p.Content.
type Content struct {
	mu       sync.RWMutex
	blobs    map[digest.Digest][]byte
	arriving map[digest.Digest]bool
	have     map[digest.Digest]int64
	leads    map[digest.Digest]bool
}

var _ p2p.Content = (*Content)(nil)

// NewContent holds the given blobs.
func NewContent(blobs ...[]byte) *Content {
	c := &Content{blobs: make(map[digest.Digest][]byte), arriving: make(map[digest.Digest]bool), have: make(map[digest.Digest]int64), leads: make(map[digest.Digest]bool)}
	for _, b := range blobs {
		c.Add(b)
	}
	return c
}

// Add stores b and returns its digest.
func (c *Content) Add(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	c.mu.Lock()
	c.blobs[d] = b
	c.mu.Unlock()
	return d
}

// SetArriving marks a blob as still being downloaded (its Arriving method
// reports true), or as whole again.
func (c *Content) SetArriving(d digest.Digest, arriving bool) {
	c.mu.Lock()
	c.arriving[d] = arriving
	c.mu.Unlock()
}

// SetHave marks a blob as still being downloaded with only its first n
// bytes arrived, as its Have method then reports; ranged requests beyond
// them without wait are answered "not yet". The bytes served are the
// blob's all the same.
func (c *Content) SetHave(d digest.Digest, n int64) {
	c.mu.Lock()
	c.arriving[d] = true
	c.have[d] = n
	c.mu.Unlock()
}

// SetLeads marks a blob still being downloaded as fetched from the
// registry for the cluster now, as its Leads method then reports, or not.
func (c *Content) SetLeads(d digest.Digest, leads bool) {
	c.mu.Lock()
	c.leads[d] = leads
	c.mu.Unlock()
}

// Remove forgets a blob.
func (c *Content) Remove(d digest.Digest) {
	c.mu.Lock()
	delete(c.blobs, d)
	c.mu.Unlock()
}

// Open implements p2p.Content.
func (c *Content) Open(_ context.Context, d digest.Digest) (store.Blob, error) {
	c.mu.RLock()
	b, ok := c.blobs[d]
	arriving := c.arriving[d]
	have, set := c.have[d]
	leads := c.leads[d]
	c.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	if !set || !arriving {
		have = int64(len(b))
	}
	return blob{bytes.NewReader(b), arriving, have, leads}, nil
}

// Walk implements p2p.Content.
func (c *Content) Walk(ctx context.Context, fn func(digest.Digest, int64) error) error {
	c.mu.RLock()
	type item struct {
		d digest.Digest
		n int64
	}
	items := make([]item, 0, len(c.blobs))
	for d, b := range c.blobs {
		items = append(items, item{d, int64(len(b))})
	}
	c.mu.RUnlock()
	for _, it := range items {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(it.d, it.n); err != nil {
			return err
		}
	}
	return nil
}

type blob struct {
	*bytes.Reader
	arriving bool
	have     int64
	leads    bool
}

func (blob) Close() error { return nil }

// Have reports what SetHave set, or the size.
func (b blob) Have() int64 { return b.have }

// Arriving reports what SetArriving set.
func (b blob) Arriving() bool { return b.arriving }

// Leads reports what SetLeads set.
func (b blob) Leads() bool { return b.leads }
