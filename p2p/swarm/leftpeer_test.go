package swarm_test

import (
	"testing"
	"time"

	"github.com/shoal-dev/shoal/p2p/swarm"
)

func TestLeavesWithPeer(t *testing.T) {
	t.Parallel()
	const mb = 1 << 20
	for _, tc := range []struct {
		name           string
		left           bool
		leftAgo        time.Duration
		rate, nodeRate float64
		streams, peers int
		want           bool
	}{
		{"left a second ago, a twentieth of the node's rate over two streams", true, time.Second, 0.5 * mb, 10 * mb, 2, 2, true},
		{"left out as silent now, silent itself", true, 0, 0, 8 * mb, 3, 2, true},
		{"never left", false, 0, 0.5 * mb, 10 * mb, 2, 2, false},
		{"left longer ago than LeftPeerFor", true, swarm.LeftPeerFor, 0.5 * mb, 10 * mb, 2, 2, false},
		{"half an even share: the peer still sends", true, time.Second, 2.5 * mb, 10 * mb, 2, 2, false},
		{"the node's one stream", true, time.Second, 0.5 * mb, 0.5 * mb, 1, 1, false},
		{"the node reads from this peer alone", true, time.Second, 0.5 * mb, 10 * mb, 3, 1, false},
		{"every stream as slow: the node's own link", true, time.Second, 0.3 * mb, 1.2 * mb, 4, 3, false},
	} {
		if got := swarm.LeavesWithPeer(tc.left, tc.leftAgo, tc.rate, tc.nodeRate, tc.streams, tc.peers); got != tc.want {
			t.Errorf("%s: LeavesWithPeer = %v, want %v", tc.name, got, tc.want)
		}
	}
}
