package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// randomBlob returns n reproducible pseudo-random bytes.
func randomBlob(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// waitProviders waits until node q finds exactly the providers want for d.
func waitProviders(t *testing.T, q *p2p.Node, d digest.Digest, want []peer.ID, timeout time.Duration) {
	t.Helper()
	p2ptest.Eventually(t, timeout, func() error {
		got, err := q.Providers(t.Context(), d, 0)
		if err != nil && !(len(want) == 0 && errors.Is(err, errdefs.ErrNotFound)) {
			return err
		}
		if !samePeers(got, want) {
			return fmt.Errorf("providers of %s: got %v, want %v", d, got, want)
		}
		return nil
	})
}

func samePeers(a, b []peer.ID) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[peer.ID]bool{}
	for _, p := range a {
		set[p] = true
	}
	for _, p := range b {
		if !set[p] {
			return false
		}
	}
	return true
}

// fetchWhenFree fetches d from p, asking again while p answers busy. The
// last bytes of a previous answer can reach this client before the peer's
// handler has given its upload slot back, and a peer short of slots says
// busy: that means "ask again", as the resolver does.
func fetchWhenFree(t *testing.T, n *p2p.Node, p peer.ID, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rc, size, err := n.Fetch(t.Context(), p, d, off)
		if !errors.Is(err, p2p.ErrPeerBusy) || time.Now().After(deadline) {
			return rc, size, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFetch(t *testing.T) {
	t.Parallel()
	data := randomBlob(1, 3<<20+17)
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Content: func(i int) *p2ptest.Content {
			if i == 1 {
				return p2ptest.NewContent(data)
			}
			return nil
		},
	})
	c.WaitMembers(t, 2, 20*time.Second)
	d := digest.FromBytes(data)
	client, server := c.Nodes[0], c.Nodes[1]
	waitProviders(t, client, d, []peer.ID{server.ID()}, 20*time.Second)

	for _, tc := range []struct {
		name string
		off  int64
	}{
		{"from start", 0},
		{"from middle", int64(len(data)) / 2},
		{"last byte", int64(len(data)) - 1},
		{"at end", int64(len(data))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, size, err := fetchWhenFree(t, client, server.ID(), d, tc.off)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if size != int64(len(data)) {
				t.Errorf("size %d, want %d", size, len(data))
			}
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data[tc.off:]) {
				t.Errorf("got %d bytes, not the blob's %d from offset %d", len(got), len(data)-int(tc.off), tc.off)
			}
		})
	}

	t.Run("errors", func(t *testing.T) {
		missing := digest.FromString("missing")
		for _, tc := range []struct {
			name string
			p    peer.ID
			d    digest.Digest
			off  int64
			want error
		}{
			{"unknown blob", server.ID(), missing, 0, errdefs.ErrNotFound},
			{"offset beyond size", server.ID(), d, int64(len(data)) + 1, errdefs.ErrInvalidArgument},
			{"negative offset", server.ID(), d, -1, errdefs.ErrInvalidArgument},
			{"bad digest", server.ID(), "sha256:nothex", 0, errdefs.ErrInvalidArgument},
			{"not sha256", server.ID(), digest.SHA512.FromString("x"), 0, errdefs.ErrInvalidArgument},
			{"self", client.ID(), d, 0, errdefs.ErrInvalidArgument},
		} {
			t.Run(tc.name, func(t *testing.T) {
				rc, _, err := client.Fetch(t.Context(), tc.p, tc.d, tc.off)
				if err == nil {
					rc.Close()
				}
				if !errors.Is(err, tc.want) {
					t.Errorf("got %v, want %v", err, tc.want)
				}
			})
		}
	})

	st := client.Status()
	if st.BytesFetched == 0 || server.Status().BytesServed == 0 {
		t.Errorf("bytes fetched %d, served %d: want both counted", st.BytesFetched, server.Status().BytesServed)
	}
	if !st.Encrypted {
		t.Errorf("a mesh with a cluster key reports itself open")
	}
}

func TestFetchCancel(t *testing.T) {
	t.Parallel()
	data := randomBlob(2, 8<<20)
	c := p2ptest.Start(t, 2, p2ptest.Options{
		Content: func(i int) *p2ptest.Content { return p2ptest.NewContent(data) },
	})
	c.WaitMembers(t, 2, 20*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	rc, _, err := c.Nodes[0].Fetch(ctx, c.Nodes[1].ID(), digest.FromBytes(data), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.Copy(io.Discard, rc); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v, want context.Canceled", err)
	}
}
