package p2p_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// TestClusterKeyKeepsOut checks, for both protections, that members with
// the key fetch from one another while a node with another key, or none,
// can neither join the gossip nor open a stream, in either direction.
func TestClusterKeyKeepsOut(t *testing.T) {
	t.Parallel()
	key, err := p2p.GenerateClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := p2p.GenerateClusterKey()
	if err != nil {
		t.Fatal(err)
	}
	data := randomBlob(4, 1<<20)
	d := digest.FromBytes(data)

	for _, prot := range []p2p.Protection{p2p.ProtectGater, p2p.ProtectPSK} {
		for _, in := range []struct {
			name string
			key  []byte
		}{{"no key", nil}, {"other key", otherKey}} {
			t.Run(fmt.Sprintf("%s/%s", prot, in.name), func(t *testing.T) {
				t.Parallel()
				c := p2ptest.Start(t, 2, p2ptest.Options{
					Config: func(i int, cfg *p2p.Config) {
						cfg.ClusterKey = key
						cfg.Protection = prot
					},
					Content: func(int) *p2ptest.Content { return p2ptest.NewContent(data) },
				})
				c.WaitMembers(t, 2, 20*time.Second)
				member, holder := c.Nodes[0], c.Nodes[1]
				if st := member.Status(); !st.Encrypted || st.Protection != prot {
					t.Errorf("status says encrypted=%v protection=%q", st.Encrypted, st.Protection)
				}
				if err := fetchAll(t.Context(), member, holder.ID(), d, len(data)); err != nil {
					t.Fatalf("member fetch: %v", err)
				}

				cfg := p2ptest.Config(t, "intruder")
				cfg.ClusterKey = in.key
				cfg.Protection = prot
				cfg.Join = []string{member.Status().GossipAddr}
				intruder, err := p2p.New(cfg, p2ptest.NewContent(data))
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- intruder.Run(ctx) }()
				defer func() {
					cancel()
					if err := <-done; err != nil {
						t.Errorf("intruder: %v", err)
					}
				}()

				p2ptest.Eventually(t, 10*time.Second, func() error {
					if intruder.Status().LastJoinError == "" {
						return errors.New("intruder has not failed to join yet")
					}
					return nil
				})
				t.Logf("intruder joining: %s", intruder.Status().LastJoinError)
				for i, n := range []*p2p.Node{member, holder, intruder} {
					want := 2
					if n == intruder {
						want = 1
					}
					if got := n.Status().LiveMembers; got != want {
						t.Errorf("node %d sees %d live members, want %d", i, got, want)
					}
				}
				for _, m := range member.Status().Members {
					if m.Name == "intruder" {
						t.Errorf("member lists the intruder: %+v", m)
					}
				}

				// Streams fail both ways, even knowing the addresses.
				p2p.AddAddrs(intruder, peer.AddrInfo{ID: holder.ID(), Addrs: holder.Status().Addrs})
				if err := fetchAll(t.Context(), intruder, holder.ID(), d, len(data)); err == nil {
					t.Errorf("intruder fetched from a member")
				} else {
					t.Logf("intruder fetching: %v", err)
				}
				p2p.AddAddrs(member, peer.AddrInfo{ID: intruder.ID(), Addrs: intruder.Status().Addrs})
				if err := fetchAll(t.Context(), member, intruder.ID(), d, len(data)); err == nil {
					t.Errorf("member fetched from the intruder")
				} else {
					t.Logf("member fetching from the intruder: %v", err)
				}
				if got := holder.Status().BytesServed; got != int64(len(data)) {
					t.Errorf("holder served %d bytes, want only the member's %d", got, len(data))
				}
			})
		}
	}
}

func fetchAll(ctx context.Context, n *p2p.Node, p peer.ID, d digest.Digest, size int) error {
	rc, _, err := n.Fetch(ctx, p, d, 0)
	if err != nil {
		return err
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	if digest.FromBytes(got) != d || len(got) != size {
		return errors.New("wrong bytes")
	}
	return nil
}
