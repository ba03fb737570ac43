package swarm_test

import (
	"testing"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

func TestWaitOn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		r            swarm.Reader
		wait, heldOn bool
	}{
		{"no ranking: wait on anyone", swarm.Reader{}, true, false},
		{"no ranking, jumped ahead", swarm.Reader{Jumped: true}, false, false},
		{"above: wait", swarm.Reader{Ranked: true, Above: true}, true, false},
		{"below: what it holds", swarm.Reader{Ranked: true}, false, true},
		{"above, but this node leads", swarm.Reader{Ranked: true, Above: true, Leading: true}, false, true},
		{"above, jumped ahead", swarm.Reader{Ranked: true, Above: true, Jumped: true}, false, false},
		{"designated", swarm.Reader{Ranked: true, Above: true, Designated: true}, true, false},
		{"designated, jumped ahead", swarm.Reader{Ranked: true, Above: true, Designated: true, Jumped: true}, true, false},
		{"designated, this node leads", swarm.Reader{Ranked: true, Above: true, Designated: true, Leading: true}, false, false},
		{"below, it leads now", swarm.Reader{Ranked: true, PeerLeads: true}, true, false},
		{"both lead, it reads the registry now", swarm.Reader{Ranked: true, Above: true, Leading: true, PeerLeads: true}, true, false},
		{"no ranking, jumped ahead, it leads now", swarm.Reader{Jumped: true, PeerLeads: true}, false, false},
		{"designated, after a peer lost as slow: what it holds", swarm.Reader{Ranked: true, Above: true, Designated: true, LostSlow: true}, false, true},
		{"designated, after a peer lost as slow, it leads now", swarm.Reader{Ranked: true, Above: true, Designated: true, LostSlow: true, PeerLeads: true}, true, false},
		{"designated, after a peer lost as slow, both lead", swarm.Reader{Ranked: true, Above: true, Designated: true, LostSlow: true, Leading: true}, false, true},
		{"above, after a peer lost as slow: wait", swarm.Reader{Ranked: true, Above: true, LostSlow: true}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wait, held := swarm.WaitOn(tc.r)
			if wait != tc.wait || held != tc.heldOn {
				t.Fatalf("WaitOn = wait %v, held only %v; want %v, %v", wait, held, tc.wait, tc.heldOn)
			}
		})
	}
}

// No two nodes wait on each other: of two ranked nodes, one is above the
// other, and the lower one is never waited on.
func TestWaitOnPointsUp(t *testing.T) {
	t.Parallel()
	for _, lead := range []bool{false, true} {
		up, _ := swarm.WaitOn(swarm.Reader{Ranked: true, Above: true, Leading: lead})
		down, _ := swarm.WaitOn(swarm.Reader{Ranked: true, Above: false, Leading: lead})
		if down || (up && lead) {
			t.Errorf("leading %v: waits on the peer above %v, below %v", lead, up, down)
		}
	}
}

func TestLeads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		ranked     bool
		designated []string
		failed     map[string]bool
		want       bool
	}{
		{"no ranking", false, nil, nil, false},
		{"first: none above", true, nil, nil, true},
		{"a designated peer above", true, []string{"a"}, nil, false},
		{"it failed", true, []string{"a"}, map[string]bool{"a": true}, true},
		{"one of two failed", true, []string{"a", "b"}, map[string]bool{"a": true}, false},
		{"listed twice, failed", true, []string{"a", "a"}, map[string]bool{"a": true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := swarm.Leads(tc.ranked, tc.designated, tc.failed); got != tc.want {
				t.Fatalf("Leads = %v, want %v", got, tc.want)
			}
		})
	}
}
