package p2p_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/p2p"
	"github.com/shoal-dev/shoal/p2p/p2ptest"
)

// waitPins waits until every running node lists refs as its pins.
func waitPins(t *testing.T, c *p2ptest.Cluster, refs []string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i, n := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		for {
			var got []string
			for _, p := range n.Pins() {
				got = append(got, p.Ref)
			}
			if slices.Equal(got, refs) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d pins %v, want %v", i, got, refs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// TestPinsReachEveryMember: a pin made on one member reaches every other
// through the gossip, an unpin made on another removes it everywhere, and
// a member that joins afterwards gets the table.
func TestPinsReachEveryMember(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 3, p2ptest.Options{})
	c.WaitMembers(t, 3, 10*time.Second)
	pin := func(ref string) p2p.Pin {
		return p2p.Pin{Ref: ref, Registry: "registry.example:5000", Repo: "team/app", Digest: digest.FromString(ref), Copies: 2}
	}
	for _, ref := range []string{"registry.example:5000/team/app:v1", "registry.example:5000/team/app:v2"} {
		if _, err := c.Nodes[0].SetPin(pin(ref)); err != nil {
			t.Fatal(err)
		}
	}
	waitPins(t, c, []string{"registry.example:5000/team/app:v1", "registry.example:5000/team/app:v2"}, 10*time.Second)
	if _, err := c.Nodes[2].SetPin(p2p.Pin{Ref: "registry.example:5000/team/app:v1", Deleted: true}); err != nil {
		t.Fatal(err)
	}
	waitPins(t, c, []string{"registry.example:5000/team/app:v2"}, 10*time.Second)
	i, err := c.Add(t)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitMembers(t, 4, 10*time.Second)
	waitPins(t, c, []string{"registry.example:5000/team/app:v2"}, 10*time.Second)
	got := c.Nodes[i].Pins()[0]
	if want := c.Nodes[0].Pins()[0]; got != want {
		t.Errorf("the member that joined holds %+v, want %+v", got, want)
	}
	cands := c.Nodes[i].PinCandidates()
	if len(cands) != 4 {
		t.Errorf("%d candidates, want 4: %+v", len(cands), cands)
	}
}

// TestPinsNeedAKey: in an open mesh a pin is refused.
func TestPinsNeedAKey(t *testing.T) {
	t.Parallel()
	c := p2ptest.Start(t, 1, p2ptest.Options{Open: true})
	_, err := c.Nodes[0].SetPin(p2p.Pin{Ref: "r/a:v1", Registry: "r", Repo: "a", Digest: digest.FromString("a"), Copies: 1})
	if !errors.Is(err, p2p.ErrPinsOpenMesh) {
		t.Errorf("a pin in an open mesh: %v", err)
	}
}
