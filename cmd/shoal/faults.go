//go:build shoalfaults

package main

import (
	"context"
	"log/slog"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/pflag"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/store"
)

// faultOptions are the fault hooks of a test build (go build -tags
// shoalfaults): the e2e suite uses them to prove that peers reject bad
// bytes. A release build has neither the flags nor the code.
type faultOptions struct {
	corruptUploads bool
}

func addFaultFlags(f *pflag.FlagSet, o *faultOptions) {
	f.BoolVar(&o.corruptUploads, "fault-corrupt-uploads", false, "TEST BUILD ONLY: flip a byte in every blob served to peers, to prove they reject it (default off)")
}

// content wraps what the node serves its peers with the enabled faults.
func (o faultOptions) content(c p2p.Content, log *slog.Logger) p2p.Content {
	if !o.corruptUploads {
		return c
	}
	log.Warn("FAULT INJECTION: every blob served to peers is corrupted (--fault-corrupt-uploads)")
	return corruptContent{c}
}

// blob wraps a blob served to a peer that asked this node to fetch it.
func (o faultOptions) blob(b store.Blob) store.Blob {
	if !o.corruptUploads {
		return b
	}
	return corruptBlob{b}
}

// corruptContent serves every blob with bytes flipped, the first of every
// read, so no resume can assemble a good copy from it.
type corruptContent struct{ p2p.Content }

func (c corruptContent) Open(ctx context.Context, dgst digest.Digest) (store.Blob, error) {
	b, err := c.Content.Open(ctx, dgst)
	if err != nil {
		return nil, err
	}
	return corruptBlob{b}, nil
}

type corruptBlob struct{ store.Blob }

func (b corruptBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.Blob.ReadAt(p, off)
	if n > 0 {
		p[0] ^= 0xff
	}
	return n, err
}
