package p2p_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// TestMesh runs 20 nodes: they converge, find the providers of every blob,
// and, once 5 of them have left, never return those while still finding
// the rest. goleak in TestMain checks that nothing outlives the nodes.
func TestMesh(t *testing.T) {
	t.Parallel()
	const (
		nodes   = 20
		leaving = 5 // the last five
	)
	// Each node holds its own blob; the shared blob sits on nodes 0, 5, 10, 15.
	shared := []byte("shared layer")
	holdsShared := func(i int) bool { return i%5 == 0 }
	own := func(i int) []byte { return fmt.Appendf(nil, "layer of node %d", i) }
	c := p2ptest.Start(t, nodes, p2ptest.Options{
		Content: func(i int) *p2ptest.Content {
			if holdsShared(i) {
				return p2ptest.NewContent(own(i), shared)
			}
			return p2ptest.NewContent(own(i))
		},
	})
	start := time.Now()
	c.WaitMembers(t, nodes, 60*time.Second)
	t.Logf("%d nodes converged in %v", nodes, time.Since(start))

	sharedHolders := func(running func(int) bool) []peer.ID {
		var ps []peer.ID
		for i, n := range c.Nodes {
			if holdsShared(i) && running(i) {
				ps = append(ps, n.ID())
			}
		}
		return ps
	}
	all := func(int) bool { return true }

	// Every blob is found, from a node other than its holder.
	start = time.Now()
	checkAll := func(running func(int) bool) {
		t.Helper()
		var wg sync.WaitGroup
		for i := range nodes {
			q := (i + 7) % nodes
			for !running(q) {
				q = (q + 1) % nodes
			}
			var want []peer.ID
			if running(i) {
				want = []peer.ID{c.Nodes[i].ID()}
			}
			wg.Go(func() { waitProviders(t, c.Nodes[q], digest.FromBytes(own(i)), want, 60*time.Second) })
		}
		wg.Wait()
		waitProviders(t, c.Nodes[1], digest.FromBytes(shared), sharedHolders(running), 60*time.Second)
	}
	checkAll(all)
	t.Logf("providers of %d blobs found in %v", nodes+1, time.Since(start))

	// Five nodes leave.
	for i := nodes - leaving; i < nodes; i++ {
		if err := c.Stop(i); err != nil {
			t.Fatalf("stopping node %d: %v", i, err)
		}
	}
	start = time.Now()
	c.WaitMembers(t, nodes-leaving, 30*time.Second)
	checkAll(func(i int) bool { return i < nodes-leaving })
	t.Logf("after %d left: converged and found in %v", leaving, time.Since(start))
}
